"""Synthetic chunk files following the chunk contract (shared/DESIGN.md), with a learnable target.

TA (°C) = 0.8 * (centre BT of ir105 - 273.15) - 0.006 * DEM(centre, m) + 3 * sin(hour angle) + noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ta2d.channels import BT_CHANNELS

I_IR105 = BT_CHANNELS.index("ir105")


def make_chunk(n: int, seed: int = 0, noise: float = 0.3) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(255.0, 305.0, n)
    x = np.empty((n, 19, 9, 9), np.float32)
    x[:, :10] = (
        base[:, None, None, None] + rng.normal(0, 2.0, (n, 10, 9, 9)) - np.arange(10)[None, :, None, None]
    )
    x[:, 10:16] = rng.uniform(0.0, 0.8, (n, 6, 9, 9))
    t = rng.integers(1_704_067_200, 1_735_689_600, n)  # 2024, Unix seconds UTC
    hour = (t % 86400) / 3600.0
    doy = (t // 86400) % 366
    month = (doy // 31).astype(float)
    sza = rng.uniform(10.0, 170.0, n)
    x[:, 16] = sza[:, None, None] + rng.normal(0, 0.2, (n, 9, 9))
    dem = rng.uniform(0.0, 1500.0, n)
    x[:, 17] = dem[:, None, None] + rng.normal(0, 20.0, (n, 9, 9))
    x[:, 18] = (rng.uniform(size=(n, 9, 9)) < 0.9).astype(np.float32)
    x[:, 18, 4, 4] = 1.0
    ha, da, ma = 2 * math.pi * hour / 24, 2 * math.pi * doy / 365.25, 2 * math.pi * month / 12
    time7 = np.stack([np.cos(da), np.sin(da), np.cos(ha), np.sin(ha), np.cos(ma), np.sin(ma), sza], 1)
    y = 0.8 * (x[:, I_IR105, 4, 4] - 273.15) - 0.006 * x[:, 17, 4, 4]
    y = y + 3.0 * np.sin(ha) + rng.normal(0, noise, n)
    lc = np.zeros((n, 17), np.float32)
    lc[np.arange(n), rng.integers(0, 17, n)] = 1.0
    loc = np.stack([rng.uniform(33, 38.5, n), rng.uniform(125, 129.5, n), np.full(n, 2000.0)], 1)
    return {
        "x": torch.from_numpy(x),
        "y": torch.from_numpy(y.astype(np.float32)),
        "time7": torch.from_numpy(time7.astype(np.float32)),
        "loc": torch.from_numpy(loc.astype(np.float32)),
        "landcover_onehot": torch.from_numpy(lc),
        "elev": torch.from_numpy((x[:, 17, 4, 4] + rng.normal(0, 15.0, n)).astype(np.float32)),
        "stn": torch.from_numpy(rng.integers(90, 300, n).astype(np.int32)),
        "time": torch.from_numpy(t.astype(np.int64)),
        "pixel": torch.from_numpy(rng.integers(1, 5500, (n, 2)).astype(np.int32)),
    }


def write_chunks(out_dir: str | Path, split: str, n_files: int, n_per_file: int, seed: int = 0) -> list[Path]:
    """Write {split}_chunk_{key}.pt files (keys are dates) and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        p = out / f"{split}_chunk_2024-04-{i + 1:02d}.pt"
        torch.save(make_chunk(n_per_file + (i % 3), seed=seed * 1000 + i), p)
        paths.append(p)
    return paths


def compute_stats(paths, out: str | Path | None = None) -> dict:
    """Per-plane mean/std of x over all pixels and TA mean/std, as the stats rule writes them."""
    xs = [torch.load(p, weights_only=True, mmap=True) for p in paths]
    x = torch.cat([d["x"] for d in xs]).double()
    y = torch.cat([d["y"] for d in xs]).double()
    stats = {
        "x_mean": x.mean(dim=(0, 2, 3)).tolist(),
        "x_std": x.std(dim=(0, 2, 3)).tolist(),
        "y_mean": float(y.mean()),
        "y_std": float(y.std()),
        "n_samples": len(y),
    }
    if out is not None:
        Path(out).write_text(json.dumps(stats))
    return stats
