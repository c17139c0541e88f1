"""Synthetic inputs for the tests and benchmarks, beside the demo archive itself (ta2d.demo.generate_demo).

* Chunk files that follow the chunk contract (docs/architecture.md), with a learnable target:
  TA (°C) = 0.8 * (centre BT of ir105 - 273.15) - 0.006 * DEM(centre, m) + 3 * sin(hour angle) + noise.
  `make_chunk` (in memory), `write_chunks` ({split}_chunk_{date}.pt files). Their normalisation statistics
  are those of the stats rule: ta2d.chunks.stats.
* A scratch copy of the workflow (`make_workdir`): the Snakefile and what it needs, copied from the source
  checkout this package is installed from (an editable install), with results/ and resources/ empty, for
  real Snakemake runs that must not touch the checkout.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

from ta2d.channels import BT_CHANNELS
from ta2d.checksums import save_with_checksums

__all__ = ["CHECKOUT", "I_IR105", "WORKFLOW_PARTS", "job_counts", "make_chunk", "make_workdir", "write_chunks"]

# --- chunks ----------------------------------------------------------------------------------------------

I_IR105 = BT_CHANNELS.index("ir105")


def make_chunk(n: int, seed: int = 0, noise: float = 0.3) -> dict[str, torch.Tensor]:
    """n samples of every chunk field, the target TA computed from the centre pixel as the module says."""
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
    """Write {split}_chunk_{key}.pt files (keys are the dates 2024-04-01, -02, ...; file i holds
    n_per_file + i % 3 samples) and return their paths. Saved as ta2d.chunks.contract.save_tensors saves a
    chunk (save_with_checksums: the CRC of every tensor); ta2d.demo sits below ta2d.chunks in the package map."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_files):
        p = out / f"{split}_chunk_2024-04-{i + 1:02d}.pt"
        save_with_checksums(make_chunk(n_per_file + (i % 3), seed=seed * 1000 + i), p)
        paths.append(p)
    return paths


# --- a scratch copy of the workflow ----------------------------------------------------------------------

CHECKOUT = Path(__file__).resolve().parents[3]  # src/ta2d/demo/synthetic.py -> the checkout
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs", "src")


def make_workdir(dest: str | Path) -> Path:
    """A scratch copy of the workflow under `dest` (results/ and resources/ start empty): WORKFLOW_PARTS of
    the source checkout, without caches. Needs ta2d installed from a checkout (pip install -e)."""
    if not (CHECKOUT / "Snakefile").is_file():
        raise FileNotFoundError(f"{CHECKOUT}: no Snakefile; a scratch copy of the workflow needs ta2d installed "
                                "from its source checkout (pip install -e)")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = CHECKOUT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table in a run's or dry run's output: rule -> jobs, without the total; {} when the
    output has none (nothing to be done)."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {}
    for line in table.splitlines()[3:]:  # after the blank, "job count" and dashes lines
        parts = line.split()
        if len(parts) == 2 and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts
