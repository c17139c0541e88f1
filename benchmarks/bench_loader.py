"""Loader throughput: ta2d.data.ChunkBatches (mmap, whole-batch gathers) vs a seed-style loader.

The seed-style loader torch.loads each whole chunk file, serves samples one at a time through
__getitem__ (a dict of per-sample tensors) and batches them with DataLoader's default collate; its
sampler follows the same shuffle_files / shuffle_within_file options, visiting one file at a time.
Both read the same files, already in the page cache after writing; every batch's x is summed so
that lazily mapped data is really read. Each figure is the best of --repeats passes.

    .venv/bin/python benchmarks/bench_loader.py [--files 8 --rows 8192 --batch-size 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ta2d.data import CHUNK_FIELDS, ChunkBatches


def write_chunks(out: Path, n_files: int, rows: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    g = torch.Generator().manual_seed(0)
    for i in range(n_files):
        p = out / f"train_chunk_{i:05d}.pt"
        if not p.exists() or torch.load(p, weights_only=True, mmap=True)["y"].shape[0] != rows:
            torch.save(
                {
                    "x": torch.rand(rows, 19, 9, 9, generator=g) * 300,
                    "y": torch.rand(rows, generator=g),
                    "time7": torch.rand(rows, 7, generator=g),
                    "loc": torch.rand(rows, 3, generator=g),
                    "landcover_onehot": torch.rand(rows, 17, generator=g),
                    "stn": torch.arange(rows, dtype=torch.int32),
                    "time": torch.arange(rows, dtype=torch.int64),
                    "pixel": torch.zeros(rows, 2, dtype=torch.int32),
                },
                p,
            )
        paths.append(p)
    return paths


class SeedStyleDataset(Dataset):
    """Per-item access; the current file is torch.load-ed whole (no mmap) when the index enters it."""

    def __init__(self, paths):
        self.paths = paths
        self.sizes = [torch.load(p, weights_only=True, mmap=True)["y"].shape[0] for p in paths]
        self.starts = [sum(self.sizes[:i]) for i in range(len(paths))]
        self.cur, self.data = -1, None

    def __len__(self):
        return sum(self.sizes)

    def __getitem__(self, i):
        f = max(k for k, s in enumerate(self.starts) if s <= i)
        if f != self.cur:
            self.cur, self.data = f, torch.load(self.paths[f], weights_only=True)
        j = i - self.starts[f]
        return {k: self.data[k][j] for k in CHUNK_FIELDS}


class FileOrderSampler(Sampler):
    def __init__(self, ds: SeedStyleDataset, shuffle_files: bool, shuffle_within_file: bool, seed: int = 0):
        self.ds, self.sf, self.sw, self.seed = ds, shuffle_files, shuffle_within_file, seed

    def __len__(self):
        return len(self.ds)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        files = torch.randperm(len(self.ds.paths), generator=g) if self.sf else range(len(self.ds.paths))
        for f in files:
            n, s = self.ds.sizes[int(f)], self.ds.starts[int(f)]
            idx = torch.randperm(n, generator=g) if self.sw else range(n)
            yield from (s + int(i) for i in idx)


def run(loader) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    for b in loader:
        b["x"].sum()
        n += len(b["y"])
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--rows", type=int, default=8192, help="samples per chunk file")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="best of this many passes is reported")
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "out" / "loader")
    a = ap.parse_args()
    paths = write_chunks(a.dir, a.files, a.rows)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(
        f"{a.files} chunks x {a.rows} samples ({mb:.0f} MB), batch {a.batch_size}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    head = ("shuffle_files", "within_file", "ta2d samples/s", "seed-style samples/s", "ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (13, 11, 15, 21, 7), strict=True)))
    for sf, sw in [(False, False), (True, False), (True, True)]:
        fast = ChunkBatches(paths, a.batch_size, CHUNK_FIELDS, shuffle_files=sf, shuffle_within_file=sw)
        ds = SeedStyleDataset(paths)
        slow = DataLoader(ds, batch_size=a.batch_size, sampler=FileOrderSampler(ds, sf, sw), num_workers=0)
        run(fast)  # warm the page cache
        r1 = r2 = 0.0
        for _ in range(a.repeats):
            n1, t1 = run(fast)
            n2, t2 = run(slow)
            assert n1 == n2 == sum(ds.sizes)
            r1, r2 = max(r1, n1 / t1), max(r2, n2 / t2)
        print(f"{sf!s:>13} {sw!s:>11} {r1:>15,.0f} {r2:>21,.0f} {r1 / r2:>6.1f}x")


if __name__ == "__main__":
    main()
