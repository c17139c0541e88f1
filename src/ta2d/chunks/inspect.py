"""`ta2d inspect FILE.pt [--idx N]` and the chunk part of `ta2d verify` (ta2d.verify): what is in a chunk, whether
it meets the contract (ta2d.chunks.contract) and its recorded CRCs, and whether the chunks of a tree leak samples
between splits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import torch

from ta2d.channels import X_CHANNELS
from ta2d.chunks.contract import (
    ChunkError,
    checksum_problems,
    contract_problems,
    open_chunk,
    stored_checksums,
)
from ta2d.plan import parse_chunk_name
from ta2d.splits import assign_splits, utc_day


def load_chunk(path: str | Path) -> dict:
    """Every tensor of a chunk, memory-mapped; ChunkError (a ValueError) naming the file when unusable.

    Unlike training, inspection reads the file even when its fields disagree in length, so that
    contract_problems can list what is wrong.
    """
    try:
        return open_chunk(path)
    except ChunkError as err:
        if "disagree" not in str(err):
            raise
        return {k: v for k, v in torch.load(path, weights_only=True, mmap=True).items() if isinstance(v, torch.Tensor)}


def file_problems(path: str | Path, data: dict, patch_size: int | None = None) -> list[str]:
    """Contract problems of a chunk's tensors, and fields whose bytes differ from their recorded CRCs
    (this reads every tensor whole)."""
    return contract_problems(data, patch_size) + [
        p.removeprefix(f"{path}: ") for p in checksum_problems(path, data, stored_checksums(path))
    ]


def describe(data: dict, idx: int | None = None) -> str:
    lines = [f"{k:17s} {str(tuple(v.shape)):16s} {v.dtype}" for k, v in data.items() if isinstance(v, torch.Tensor)]
    n = data["y"].shape[0] if isinstance(data.get("y"), torch.Tensor) else 0
    lines.insert(0, f"{n} samples")
    if idx is not None:
        if not -n <= idx < n:
            raise IndexError(f"--idx {idx} is out of range for {n} samples")
        t = int(data["time"][idx])
        lines.append(f"\nsample {idx}: station {int(data['stn'][idx])}, "
                     f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M} UTC, TA {float(data['y'][idx]):.2f} °C, "
                     f"pixel (line, column) {tuple(int(v) for v in data['pixel'][idx])}")
        lat, lon, gsd = (float(v) for v in data["loc"][idx])
        lines.append(f"  loc: lat {lat:.4f}, lon {lon:.4f}, gsd {gsd:.0f} m; land cover class "
                     f"{int(data['landcover_onehot'][idx].argmax()) + 1}"
                     + (f"; station elevation {float(data['elev'][idx]):.1f} m" if "elev" in data else ""))
        lines.append("  time7: " + ", ".join(f"{v:.3f}" for v in data["time7"][idx].tolist()))
        x = data["x"][idx]
        c = x.shape[-1] // 2
        for i, name in enumerate(X_CHANNELS):
            plane = x[i]
            lines.append(f"  {name:14s} centre {float(plane[c, c]):9.3f}  min {float(plane.min()):9.3f}"
                         f"  max {float(plane.max()):9.3f}")
    return "\n".join(lines)


@dataclass
class ChunkCheck:
    """What `ta2d verify` found in one chunk-like file: ``problems``, whether it records CRCs at all, and the
    (file, split, stn, time) of a labelled chunk's samples for :func:`split_problems` (else None)."""

    problems: list[str]
    recorded: bool
    samples: pd.DataFrame | None = None


def check_chunk_file(path: str | Path, whole_contract: bool) -> ChunkCheck:
    """Read a chunk-like file whole: the contract (``whole_contract``: labelled chunks; embedding and tile files
    have their own fields) and the CRCs recorded in it."""
    path = Path(path)
    try:
        data = load_chunk(path)
        stored = stored_checksums(path)
    except (ChunkError, OSError) as err:
        return ChunkCheck([str(err).removeprefix(f"{path}: ")], recorded=False)
    problems = file_problems(path, data) if whole_contract else [
        p.removeprefix(f"{path}: ") for p in checksum_problems(path, data, stored)
    ]
    named = parse_chunk_name(path)
    samples = None
    if whole_contract and named and {"stn", "time"} <= set(data) and len(data["stn"]):
        samples = pd.DataFrame({"file": path, "split": named[0], "stn": data["stn"].numpy().astype("int64"),
                                "time": data["time"].numpy().astype("int64")})
    return ChunkCheck(problems, recorded=bool(stored), samples=samples)


def sample_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The labelled samples of several chunks (ChunkCheck.samples) as one table for :func:`split_problems`."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"file": [], "split": [], "stn": pd.Series(dtype="int64"), "time": pd.Series(dtype="int64")})


def _first(rows: pd.DataFrame) -> str:
    row = rows.iloc[0]
    return f"station {int(row['stn'])}, UTC day {row['day']}"


def split_problems(samples: pd.DataFrame, split_cfg: Mapping | None = None) -> dict[Path, list[str]]:
    """Leaks between splits among labelled ``samples`` (columns file, split, stn, time): {file: problems}.

    Whatever the config: no sample (station, time) in two places, and no (station, UTC day) in two splits:
    the split rule (ta2d.splits) sees only those two, so a station's day lies in one split. With the
    ``split`` config the tree was built with, also: every sample is in the split that rule gives it. (Days
    alone may span splits: with station hold-out a held-out station's samples are in test on train days.)
    """
    bad: dict[Path, list[str]] = {}
    if not len(samples):
        return bad
    table = samples.assign(day=utc_day(samples["time"]).to_numpy())
    repeats = table[table.duplicated(["stn", "time"], keep=False)]
    for path, rows in repeats.groupby("file", sort=True):
        others = sorted({p.name for p in repeats[repeats.set_index(["stn", "time"]).index.isin(
            rows.set_index(["stn", "time"]).index)]["file"]} - {path.name}) or ["this file"]
        bad.setdefault(path, []).append(f"{len(rows)} samples (station, time) also in {', '.join(others)} "
                                        f"(first: {_first(rows)})")
    spans = table.groupby(["stn", "day"])["split"].transform("nunique") > 1
    for path, rows in table[spans].groupby("file", sort=True):
        bad.setdefault(path, []).append(
            f"{len(rows)} samples of station-days that also have samples in another split (first: {_first(rows)})")
    if split_cfg is not None:
        expected = assign_splits(table["stn"], table["day"], dict(split_cfg))["split"].to_numpy()
        misplaced = expected != table["split"].to_numpy()
        for path, rows in table[misplaced].assign(expected=expected[misplaced]).groupby("file", sort=True):
            bad.setdefault(path, []).append(
                f"{len(rows)} samples belong to split {rows['expected'].iloc[0]} by the config's split rule "
                f"(first: {_first(rows)})")
    return bad
