"""Per-period inventory of the raw archive: which input files exist for the slots of one period.

The workflow writes one small inventory file per period at parse time and declares it (instead of
hundreds of raw paths) as the input of the period's scene job: Snakemake's planning cost grows with the
number of declared inputs (DESIGN.md, "Scale"). The inventory records size and mtime, so a replaced raw
file changes the text and, through :func:`ta2d.atomic.write_text_if_changed`, the inventory's checksum,
so the scene reruns; an unchanged archive leaves every inventory byte-identical and untouched.

Only the directories of the period's own slots are listed (never a walk of the archive): this runs for
every period of a multi-year archive each time the Snakefile is parsed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from ta2d.channels import CHANNELS, l1b_filename
from ta2d.ingest.l1b import parse_l1b_name
from ta2d.periods import period_slots

COLUMNS = ("slot", "channel", "path", "size", "mtime_ns")
SLOT_FORMAT = "%Y%m%d%H%M"  # slot column: nominal slot time, UTC, as in L1B file names


def l1b_inventory(l1b_cfg: dict, slots) -> pd.DataFrame:
    """L1B files of the given slot times found under inputs.l1b (keys: dir, subdir, area).

    `subdir` is a strftime pattern applied to each slot time ("" for a flat archive). Files of another
    area, of other slots, or with names that are not L1B names are ignored. `path` is relative to `dir`.
    """
    return _table(l1b_inventory_rows(l1b_cfg, slots))


def l1b_inventory_rows(l1b_cfg: dict, slots) -> list[tuple]:
    """:func:`l1b_inventory` as sorted (slot, channel, path, size, mtime_ns) tuples, without pandas.

    This runs for every period at every parse of the Snakefile, so it avoids the per-file costs:
    a file with its standard name is recognised by a set lookup (only other names are parsed).
    """
    root = os.fspath(l1b_cfg["dir"])
    subdir = l1b_cfg.get("subdir", "") or ""
    area = str(l1b_cfg["area"]).lower()
    stamps_by_dir: dict[str, set[str]] = {}
    for slot in pd.DatetimeIndex(slots).to_pydatetime():
        stamps_by_dir.setdefault(slot.strftime(subdir), set()).add(slot.strftime(SLOT_FORMAT))

    rows = []
    for rel_dir, stamps in stamps_by_dir.items():
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except (FileNotFoundError, NotADirectoryError):
            continue  # a slot with no data is normal; the scene marks it
        prefix = f"{rel_dir.rstrip('/')}/" if rel_dir else ""
        standard = {l1b_filename(ch, area, stamp): ch for stamp in stamps for ch in CHANNELS}
        for entry in entries:
            channel = standard.get(entry.name)
            if channel is None:  # not a standard name of these slots: the full parse decides
                parsed = parse_l1b_name(entry.name)
                if parsed is None or parsed.area != area or entry.name[-15:-3] not in stamps:
                    continue
                channel = parsed.channel
            if not entry.is_file():
                continue
            st = entry.stat()
            rows.append((entry.name[-15:-3], channel, prefix + entry.name, st.st_size, st.st_mtime_ns))
    return sorted(rows)


def calibrated_inventory(calibrated_cfg: dict, slots) -> pd.DataFrame:
    """Already-calibrated files (inputs.calibrated) of the given slots; channel is "bt", "rf" or "sza"."""
    root = Path(calibrated_cfg["dir"])
    patterns = {kind: calibrated_cfg.get(f"{kind}_pattern") for kind in ("bt", "rf", "sza")}
    rows = []
    for slot in pd.DatetimeIndex(slots):
        for kind, pattern in patterns.items():
            if not pattern:
                continue
            rel = slot.strftime(pattern)
            try:
                st = os.stat(root / rel)
            except (FileNotFoundError, NotADirectoryError):
                continue
            rows.append((slot.strftime(SLOT_FORMAT), kind, Path(rel).as_posix(), st.st_size, st.st_mtime_ns))
    return _table(rows)


def l1b_period_inventory(l1b_cfg: dict, key: str, freq: str, start=None, end=None) -> pd.DataFrame:
    """The L1B inventory of period `key` (slots from inputs.l1b.slot_minutes, clipped to [start, end])."""
    return l1b_inventory(l1b_cfg, period_slots(key, freq, l1b_cfg["slot_minutes"], start, end))


def l1b_period_inventory_text(l1b_cfg: dict, key: str, freq: str, start=None, end=None) -> str:
    """inventory_text(l1b_period_inventory(...)), without the DataFrame (the parse-time refresh)."""
    return rows_text(l1b_inventory_rows(l1b_cfg, period_slots(key, freq, l1b_cfg["slot_minutes"], start, end)))


def calibrated_period_inventory(calibrated_cfg: dict, key: str, freq: str, start=None, end=None) -> pd.DataFrame:
    """The calibrated-input inventory of period `key` (slots from inputs.calibrated.slot_minutes, default [0])."""
    minutes = calibrated_cfg.get("slot_minutes", [0])
    return calibrated_inventory(calibrated_cfg, period_slots(key, freq, minutes, start, end))


def inventory_text(table: pd.DataFrame) -> str:
    """Deterministic TSV (header + rows sorted by slot, channel, path): same files -> same bytes."""
    return rows_text(table.loc[:, list(COLUMNS)].itertuples(index=False, name=None))


def rows_text(rows) -> str:
    """:func:`inventory_text` of (slot, channel, path, size, mtime_ns) tuples (any order)."""
    lines = ["\t".join(COLUMNS)] + [f"{a}\t{b}\t{c}\t{d}\t{e}" for a, b, c, d, e in sorted(rows)]
    return "\n".join(lines) + "\n"


def read_inventory(path) -> pd.DataFrame:
    """The table of an inventory file written from :func:`inventory_text`."""
    text = Path(path).read_text()
    table = pd.read_csv(io.StringIO(text), sep="\t", dtype={"slot": str, "channel": str, "path": str},
                        keep_default_na=False)
    missing = set(COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not an inventory file (missing columns {sorted(missing)})")
    return table.astype({"size": "int64", "mtime_ns": "int64"})


def _table(rows) -> pd.DataFrame:
    # plain Python sort + one DataFrame: pandas' sort/astype would dominate the time per period
    rows = sorted(rows)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    return pd.DataFrame({
        "slot": pd.Series(columns[0], dtype=str), "channel": pd.Series(columns[1], dtype=str),
        "path": pd.Series(columns[2], dtype=str), "size": pd.Series(columns[3], dtype="int64"),
        "mtime_ns": pd.Series(columns[4], dtype="int64"),
    })
