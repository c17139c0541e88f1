"""Normalisation statistics from the train split: per-channel and TA mean/std, and the reanalysis background's
(``background_mean``/``background_std``, °C) when the chunks carry it; a model built from such statistics takes
the background as an input (ta2d.models.ta_model.Normalizer).

Streams chunk by chunk (mmap), accumulating float64 sums, so memory stays at one chunk.
The model stores these in its checkpoint and normalises in its first layer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ta2d.atomic import atomic_path
from ta2d.channels import X_CHANNELS
from ta2d.chunks.contract import BACKGROUND_FIELD, open_chunk, verify_fields


def compute_stats(chunk_paths: list[str | Path]) -> dict:
    n_px = 0
    s = np.zeros(len(X_CHANNELS))
    ss = np.zeros(len(X_CHANNELS))
    n_y, sy, ssy = 0, 0.0, 0.0
    sb, ssb = 0.0, 0.0
    with_background = []
    for path in chunk_paths:
        mapped = open_chunk(path)  # memory-mapped: nothing is read until used
        with_background.append(BACKGROUND_FIELD in mapped)
        d = {k: mapped[k] for k in ("x", "y", BACKGROUND_FIELD) if k in mapped}
        verify_fields(path, d)  # x and y are read whole here anyway
        if with_background[-1]:
            b = d[BACKGROUND_FIELD].numpy().astype(np.float64)
            sb += b.sum()
            ssb += (b**2).sum()
        x = d["x"].numpy().astype(np.float64)
        n_px += x.shape[0] * x.shape[2] * x.shape[3]
        s += x.sum(axis=(0, 2, 3))
        ss += (x**2).sum(axis=(0, 2, 3))
        y = d["y"].numpy().astype(np.float64)
        n_y += len(y)
        sy += y.sum()
        ssy += (y**2).sum()
    if n_y == 0:
        raise ValueError("no train samples: cannot compute normalisation statistics "
                         "(check split.fractions and the rejects in results/summary.json)")
    mean = s / n_px
    std = np.sqrt(np.maximum(ss / n_px - mean**2, 0.0))
    if any(with_background) and not all(with_background):
        mixed = [str(p) for p, has in zip(chunk_paths, with_background, strict=True) if not has]
        raise ValueError(f"{len(mixed)} of {len(chunk_paths)} train chunks have no {BACKGROUND_FIELD} field (e.g. "
                         f"{mixed[0]}): the chunks were built with and without inputs.background; rebuild them")
    y_mean = sy / n_y
    y_std = float(np.sqrt(max(ssy / n_y - y_mean**2, 0.0)))
    extra = {}
    if with_background and all(with_background):
        b_mean = sb / n_y
        b_std = float(np.sqrt(max(ssb / n_y - b_mean**2, 0.0)))
        extra = {"background_mean": float(b_mean), "background_std": b_std if b_std > 1e-6 else 1.0}
    return {
        "channels": list(X_CHANNELS),
        "x_mean": mean.tolist(),
        # a constant channel (e.g. an all-land domain's mask) would divide by zero: use 1
        "x_std": np.where(std > 1e-6, std, 1.0).tolist(),
        "y_mean": float(y_mean),
        "y_std": y_std if y_std > 1e-6 else 1.0,
        **extra,
        "n_samples": int(n_y),
        "n_chunks": len(chunk_paths),
    }


def write_stats(chunk_paths: list[str | Path], out_path: str | Path) -> dict:
    stats = compute_stats(chunk_paths)
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")
    return stats
