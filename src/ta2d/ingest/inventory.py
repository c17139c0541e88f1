"""Per-period inventory of the raw archive: which input files exist for the slots of one period.

The workflow writes one small inventory file per period at parse time and declares it (instead of
hundreds of raw paths) as the input of the period's scene job: Snakemake's planning cost grows with the
number of declared inputs (docs/performance.md#snakemake-overhead-per-job). The inventory records size
and mtime, so a replaced raw file changes the text and, through :func:`ta2d.atomic.write_text_if_changed`,
the inventory's checksum, so the scene reruns; an unchanged archive leaves every inventory byte-identical and untouched.

Only the directories of the period's own slots are listed (never a walk of the archive): this runs for
every period of a multi-year archive each time the Snakefile is parsed. For L1B archives even that listing
is skipped when it cannot have changed: beside each inventory a sidecar (``{key}.dirs``, not a Snakemake
file) records the mtime of each slot directory at the listing, and the parse-time refresh stats only those
directories (:func:`l1b_inventory_current`). An archive is append-only in practice and a reprocessed file
arrives by rename, both of which change the directory's mtime; a file rewritten in place does not, and
needs the full refresh (``ta2d refresh-inventories``).

A slot's inventory (maps.unit slot: the near-real-time service) records each file's content hash instead of
its mtime (:func:`write_slot_inventory`): a slot delivered twice with the same bytes (a re-sent or re-copied
file: new mtime) leaves the inventory byte-identical and reruns nothing; changed bytes rerun the slot. A hash
is computed only when a file's stat changed since the last listing (a cache beside the inventory), so a cron
invocation reads only the files that are new.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path

import pandas as pd

from ta2d.atomic import atomic_path, write_text_if_changed
from ta2d.channels import CHANNELS, l1b_filename
from ta2d.ingest.l1b import parse_l1b_name
from ta2d.periods import period_days, period_slots

COLUMNS = ("slot", "channel", "path", "size", "mtime_ns")
HASHED_COLUMNS = ("slot", "channel", "path", "size", "blake2b")  # a slot's inventory (write_slot_inventory)
HASH_CACHE_VERSION = "# ta2d inventory hashes 1"
SLOT_FORMAT = "%Y%m%d%H%M"  # slot column: nominal slot time, UTC, as in L1B file names
DIRS_VERSION = "# ta2d inventory dirs 1"  # bump when the inventory text or the sidecar changes meaning
# A directory's mtime only moves in steps (a kernel tick; 1-2 s on some file systems and NFS servers): a file
# added in the same step as our listing leaves the mtime we recorded unchanged, yet is not in the listing.
# So a directory changed less than this before the listing is recorded "unsettled" and listed again next time.
SETTLE_NS = 2_000_000_000


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
    return _list_slot_dirs(l1b_cfg, l1b_slot_dirs(l1b_cfg, slots))


def l1b_slot_dirs(l1b_cfg: dict, slots) -> dict[str, set[str]]:
    """{directory relative to inputs.l1b.dir: slot stamps (YYYYMMDDhhmm) whose files it holds}."""
    subdir = l1b_cfg.get("subdir", "") or ""
    stamps_by_dir: dict[str, set[str]] = {}
    for slot in pd.DatetimeIndex(slots).to_pydatetime():
        stamps_by_dir.setdefault(slot.strftime(subdir), set()).add(slot.strftime(SLOT_FORMAT))
    return stamps_by_dir


def _list_slot_dirs(l1b_cfg: dict, stamps_by_dir: dict[str, set[str]]) -> list[tuple]:
    root = os.fspath(l1b_cfg["dir"])
    area = str(l1b_cfg["area"]).lower()
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


def write_l1b_inventory(l1b_cfg: dict, key: str, freq: str, start, end, out_path) -> bool:
    """List period `key`, write its inventory when the bytes changed and (always) its sidecar; returns whether
    the inventory changed."""
    stamps_by_dir = l1b_slot_dirs(l1b_cfg, period_slots(key, freq, l1b_cfg["slot_minutes"], start, end))
    root = os.fspath(l1b_cfg["dir"])
    # the directories are stat'ed before they are listed: a file arriving in between is in the listing
    # and moves the mtime, so it costs one more listing, never a missed file
    settled_before = time.time_ns() - SETTLE_NS
    states = [(rel_dir, _dir_state(os.path.join(root, rel_dir), settled_before)) for rel_dir in stamps_by_dir]
    out_path = os.fspath(out_path)
    changed, inv = _write_if_changed(out_path, rows_text(_list_slot_dirs(l1b_cfg, stamps_by_dir)).encode())
    lines = [_dirs_fingerprint(l1b_cfg, key, freq, start, end), _inventory_state(inv)]
    lines += [f"{rel_dir}\t{state}" for rel_dir, state in states]
    write_text_if_changed(dirs_path(out_path), "\n".join(lines) + "\n")
    return changed


def l1b_inventory_current(l1b_cfg: dict, key: str, freq: str, start, end, inventory_path) -> bool:
    """Whether the inventory's sidecar vouches for it: same listing parameters, the inventory it was written
    with, and every slot directory as it was then (one stat per directory, no listing, no file stat).

    Anything else (no sidecar, an older format, a directory "unsettled" or changed) answers False.
    """
    try:
        inv = os.stat(inventory_path)
        with open(dirs_path(inventory_path)) as fh:
            lines = fh.read().split("\n")
    except (FileNotFoundError, NotADirectoryError):
        return False
    if lines[:2] != [_dirs_fingerprint(l1b_cfg, key, freq, start, end), _inventory_state(inv)] or lines[-1] != "":
        return False
    root = os.fspath(l1b_cfg["dir"])
    for line in lines[2:-1]:
        rel_dir, _, state = line.partition("\t")
        if state == "unsettled" or _dir_state(os.path.join(root, rel_dir), None) != state:
            return False
    return True


def dirs_path(inventory_path) -> str:
    """The sidecar of an inventory: results/inventory/{key}.tsv -> results/inventory/{key}.dirs."""
    return os.path.splitext(os.fspath(inventory_path))[0] + ".dirs"


def _dirs_fingerprint(l1b_cfg: dict, key: str, freq: str, start, end) -> str:
    # everything the set of slot directories and the inventory's rows depend on besides the directories'
    # contents: the sidecar's directory list is trusted only for the same fingerprint
    days = period_days(key, freq, start, end)
    span = f"{days[0]:%Y%m%d}..{days[-1]:%Y%m%d}" if len(days) else "none"
    minutes = ",".join(str(int(m)) for m in sorted(l1b_cfg["slot_minutes"]))
    return (f"{DIRS_VERSION}\tdir={os.fspath(l1b_cfg['dir'])}\tsubdir={l1b_cfg.get('subdir', '') or ''}"
            f"\tarea={str(l1b_cfg['area']).lower()}\tminutes={minutes}\tdays={span}")


def _inventory_state(st: os.stat_result) -> str:
    # the inventory the sidecar was written with: an inventory rewritten or touched by anything else
    # (older code, a user, `snakemake --touch`) is listed again instead of trusted
    return f"# inventory\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}"


def _dir_state(path: str, settled_before: int | None) -> str:
    """ "mtime_ns<TAB>inode", "missing", or "unsettled" (changed at or after `settled_before`)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if settled_before is not None and st.st_mtime_ns >= settled_before:
        return "unsettled"
    # the inode too: a whole directory renamed into place may carry an old mtime of its own
    return f"{st.st_mtime_ns}\t{st.st_ino}"


def _write_if_changed(path: str, data: bytes) -> tuple[bool, os.stat_result]:
    """write_text_if_changed, returning also the stat of the file as it holds exactly `data` (stat'ed
    through our own handle or temp file: a concurrent writer cannot slip its file under our sidecar)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size == len(data) and fh.read() == data:
                return False, st
    except FileNotFoundError:
        pass
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        st = os.stat(tmp)  # rename keeps the inode and mtime
    return True, st


def write_slot_inventory(rows, root, out_path) -> bool:
    """Write a slot's inventory from listing `rows` (slot, channel, path, size, mtime_ns; path relative to `root`)
    with each file's BLAKE2b-128 content hash in place of its mtime; returns whether the inventory changed.

    Hashes come from the cache beside the inventory (``{key}.hashes``, not a Snakemake file) while a file's
    size, mtime, ctime and inode are those recorded with them (ctime: a rewrite in place that restores the old
    mtime still changes it). A file that vanished since the listing is left out, as if it had not arrived.
    """
    root, out_path = os.fspath(root), os.fspath(out_path)
    cache_path = os.path.splitext(out_path)[0] + ".hashes"
    cache = _read_hash_cache(cache_path)
    hashed, kept = [], []
    for slot, channel, rel, _size, _mtime in rows:
        path = os.path.join(root, rel)
        try:
            st = os.stat(path)
            ident = f"{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t{st.st_ino}"
            digest = cache.get((rel, ident)) or _content_hash(path)
        except FileNotFoundError:
            continue
        hashed.append((slot, channel, rel, st.st_size, digest))
        kept.append(f"{rel}\t{ident}\t{digest}")
    write_text_if_changed(cache_path, "\n".join([HASH_CACHE_VERSION, *sorted(kept)]) + "\n")
    return write_text_if_changed(out_path, rows_text(hashed, HASHED_COLUMNS))


def _content_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def _read_hash_cache(path: str) -> dict[tuple[str, str], str]:
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return {}
    if lines[:1] != [HASH_CACHE_VERSION]:
        return {}
    out = {}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) == 6:  # rel, size, mtime, ctime, inode, digest
            out[(fields[0], "\t".join(fields[1:5]))] = fields[5]
    return out


def calibrated_period_inventory(calibrated_cfg: dict, key: str, freq: str, start=None, end=None) -> pd.DataFrame:
    """The calibrated-input inventory of period `key` (slots from inputs.calibrated.slot_minutes, default [0])."""
    minutes = calibrated_cfg.get("slot_minutes", [0])
    return calibrated_inventory(calibrated_cfg, period_slots(key, freq, minutes, start, end))


def inventory_text(table: pd.DataFrame) -> str:
    """Deterministic TSV (header + rows sorted by slot, channel, path): same files -> same bytes."""
    return rows_text(table.loc[:, list(COLUMNS)].itertuples(index=False, name=None))


def rows_text(rows, columns=COLUMNS) -> str:
    """:func:`inventory_text` of (slot, channel, path, size, mtime_ns or hash) tuples (any order)."""
    lines = ["\t".join(columns)] + [f"{a}\t{b}\t{c}\t{d}\t{e}" for a, b, c, d, e in sorted(rows)]
    return "\n".join(lines) + "\n"


def read_inventory(path) -> pd.DataFrame:
    """The table of an inventory file (:func:`inventory_text` or :func:`write_slot_inventory`)."""
    text = Path(path).read_text()
    table = pd.read_csv(io.StringIO(text), sep="\t", dtype={"slot": str, "channel": str, "path": str,
                                                            "blake2b": str}, keep_default_na=False)
    columns = HASHED_COLUMNS if "blake2b" in table.columns else COLUMNS
    missing = set(columns) - set(table.columns)
    if missing:
        raise ValueError(f"{path}: not an inventory file (missing columns {sorted(missing)})")
    return table.astype({"size": "int64"} if columns is HASHED_COLUMNS else {"size": "int64", "mtime_ns": "int64"})


def _table(rows) -> pd.DataFrame:
    # plain Python sort + one DataFrame: pandas' sort/astype would dominate the time per period
    rows = sorted(rows)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    return pd.DataFrame({
        "slot": pd.Series(columns[0], dtype=str), "channel": pd.Series(columns[1], dtype=str),
        "path": pd.Series(columns[2], dtype=str), "size": pd.Series(columns[3], dtype="int64"),
        "mtime_ns": pd.Series(columns[4], dtype="int64"),
    })
