"""Loader throughput in training's orders: ta2d.chunks.loader.ChunkBatches vs the gather limit and a seed-style loader.

In memory (chunks in the page cache; --shapes ROWSxFILES, --batch-sizes): one epoch each of
  gather limit     all files' fields concatenated in memory, a precomputed random permutation (sorted
                   within each batch, as the loader does), one index_select per field into preallocated
                   buffers: nothing else, the ceiling of any shuffled loader
  global shuffle   ChunkBatches, mix_files 0 (training's default), shuffled files and samples
  per-file         mix_files 1 (the seed's order: one file at a time)
  block            mix_files 4
  sequential       no shuffle: zero-copy slices of the mapped files (so its "loader" figure reads nothing)
  seed-style       whole-file torch.load, per-item __getitem__, DataLoader default collate, per-file
                   shuffle (one pass: it is slow)
"loader" times the loop alone; "+read x" also sums every batch's x as a consumer would. Ratios are to the
gather limit's figure in the same column. ChunkBatches serves shuffled orders from a resident copy of the
files (mode 'resident': read once, on the first epoch; the one-time copy is printed separately and not
in the epoch figures); each figure is the median of --repeats epochs (orders differ per epoch), with the
loaders interleaved so that other jobs' noise spreads over all of them.

Beyond memory (--cold-gb GB of 14,400-sample chunks written under --cold-dir, fsynced, deleted at the
end): the page cache of those files is dropped before every pass (posix_fadvise DONTNEED per file, checked
with fincore when it is installed; with --drop-caches also /proc/sys/vm/drop_caches), then one pass each
is timed: a plain sequential read of the same files (readinto a 16 MB buffer), the same with a thread
asking the kernel to read every file ahead (posix_fadvise WILLNEED), one epoch of the block shuffle
(mix_files --cold-mix, batch 512) and one of the per-file shuffle (mix_files 1), both in mode 'blocks'
(max_resident_bytes forced to half the data: it does not fit, two blocks do). MB/s count the files'
bytes; medians of --cold-repeats; "ratio" is to the faster of the two sequential reads' medians, "paired"
the median over repeats of the ratio to the faster sequential read of the same repeat (robust to other
jobs' load drifting).

    .venv/bin/python benchmarks/bench_loader.py [--shapes 1000x16,5000x16,14400x8 --batch-sizes 256,512]
        [--cold-gb 3 --drop-caches] [--no-cold] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ta2d.chunks.loader import CHUNK_FIELDS, ChunkBatches


def make_chunk(rows: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "x": torch.rand(rows, 19, 9, 9, generator=g) * 300,
        "y": torch.rand(rows, generator=g),
        "time7": torch.rand(rows, 7, generator=g),
        "loc": torch.rand(rows, 3, generator=g),
        "landcover_onehot": torch.rand(rows, 17, generator=g),
        "elev": torch.rand(rows, generator=g) * 1000,
        "stn": torch.arange(rows, dtype=torch.int32),
        "time": torch.arange(rows, dtype=torch.int64),
        "pixel": torch.zeros(rows, 2, dtype=torch.int32),
    }


def write_chunks(out: Path, n_files: int, rows: int, fsync: bool = False) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    g = torch.Generator().manual_seed(rows)
    for i in range(n_files):
        p = out / f"train_chunk_{i:05d}.pt"
        try:
            ok = torch.load(p, weights_only=True, mmap=True)["y"].shape[0] == rows
        except Exception:  # noqa: BLE001 - missing or unreadable: (re)write
            ok = False
        if not ok:
            torch.save(make_chunk(rows, g), p)
        if fsync:  # DONTNEED drops clean pages only
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
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
    """Shuffled files, shuffled samples within each file, one file at a time."""

    def __init__(self, ds: SeedStyleDataset, seed: int = 0):
        self.ds, self.seed = ds, seed

    def __len__(self):
        return len(self.ds)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for f in torch.randperm(len(self.ds.paths), generator=g):
            n, s = self.ds.sizes[int(f)], self.ds.starts[int(f)]
            yield from (s + int(i) for i in torch.randperm(n, generator=g))


class GatherLimit:
    """One index_select per field from in-memory copies into preallocated buffers; nothing else."""

    def __init__(self, paths, batch_size: int):
        ds = [torch.load(p, weights_only=True, mmap=True) for p in paths]
        self.data = {k: torch.cat([d[k] for d in ds]) for k in CHUNK_FIELDS}
        self.out = {k: torch.empty((batch_size, *t.shape[1:]), dtype=t.dtype) for k, t in self.data.items()}
        self.b, self.n = batch_size, len(self.data["y"])
        self.rows = None

    def set_epoch(self, epoch: int) -> None:  # the plan is made before the clock starts
        m = self.n // self.b
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(epoch))
        self.rows = perm[: m * self.b].view(m, self.b).sort(dim=1).values

    def __iter__(self):
        for r in self.rows:
            for k, t in self.data.items():
                torch.index_select(t, 0, r, out=self.out[k])
            yield self.out


def epoch_rate(loader, epoch: int, read_x: bool) -> float:
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    n, t0 = 0, time.perf_counter()
    for b in loader:
        if read_x:
            b["x"].sum()
        n += len(b["y"])
    return n / (time.perf_counter() - t0)


def in_memory(rows: int, n_files: int, batch_sizes: list[int], repeats: int, out: Path) -> None:
    paths = write_chunks(out / f"r{rows}", n_files, rows)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    for bs in batch_sizes:
        print(f"\n{n_files} chunks x {rows:,} samples ({mb:,.0f} MB), batch {bs}")
        loaders: dict[str, object] = {"gather limit": GatherLimit(paths, bs)}
        first: dict[str, float] = {}
        for name, kw in [
            ("global shuffle (mix_files 0)", dict(shuffle_files=True, shuffle_within_file=True, mix_files=0)),
            ("per-file shuffle (mix_files 1)", dict(shuffle_files=True, shuffle_within_file=True, mix_files=1)),
            ("block shuffle (mix_files 4)", dict(shuffle_files=True, shuffle_within_file=True, mix_files=4)),
            ("sequential", dict()),
        ]:
            cb = ChunkBatches(paths, bs, CHUNK_FIELDS, **kw)
            t0 = time.perf_counter()
            cb.prepare()  # the one-time copy into memory (mode 'resident'); when mapped, the first-read CRC check
            if cb.mode == "resident":
                first[name] = time.perf_counter() - t0
            loaders[name] = cb
        for lo in loaders.values():  # warm-up: page faults of fresh mappings and buffers
            epoch_rate(lo, 0, True)
        rates: dict[str, list[list[float]]] = {k: [[], []] for k in loaders}
        for r in range(repeats):
            for name, lo in loaders.items():
                for j, read_x in enumerate((False, True)):
                    rates[name][j].append(epoch_rate(lo, 1 + r, read_x))
        ds = SeedStyleDataset(paths)
        seed = DataLoader(ds, batch_size=bs, sampler=FileOrderSampler(ds), num_workers=0)
        rates["seed-style (per-file shuffle)"] = [[epoch_rate(seed, 0, False)], [epoch_rate(seed, 0, True)]]
        med = {k: [statistics.median(v[0]), statistics.median(v[1])] for k, v in rates.items()}
        lim = med["gather limit"]
        print(f"{'loader':32} {'mode':>8} {'samples/s':>12} {'ratio':>6} {'+read x':>12} {'ratio':>6}")
        for name, (a, b) in med.items():
            mode = getattr(loaders.get(name), "mode", "")
            print(f"{name:32} {mode:>8} {a:>12,.0f} {a / lim[0]:>6.2f} {b:>12,.0f} {b / lim[1]:>6.2f}")
        for name, s in first.items():
            print(f"  one-time copy into memory, {name}: {s:.2f} s ({mb / s:,.0f} MB/s)")
        del loaders


def drop_cache(paths: list[Path], proc: bool) -> None:
    if proc:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def resident_mb(paths: list[Path]) -> float | None:
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", *map(str, paths)], capture_output=True, text=True)
    return sum(int(x) for x in out.stdout.split()) / 1e6 if out.returncode == 0 else None


def willneed(paths: list[Path], step: int = 128 << 10) -> None:
    """Ask the kernel to read the files into the page cache, many reads in flight (since Linux 5.x one
    WILLNEED reads at most the readahead window, hence the steps)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        for off in range(0, os.fstat(fd).st_size, step):
            os.posix_fadvise(fd, off, step, os.POSIX_FADV_WILLNEED)
        os.close(fd)


def sequential_read(paths: list[Path], ahead: bool = False) -> None:
    """Read the files one after the other; ``ahead``: a thread asks the kernel to read ahead (WILLNEED)."""
    buf = memoryview(bytearray(16 << 20))
    if ahead:
        threading.Thread(target=willneed, args=(paths,), daemon=True).start()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def cold(gb: float, out: Path, mix: int, repeats: int, keep: bool, proc: bool) -> None:
    rows = 14_400
    per_file = rows * (19 * 81 + 1 + 7 + 3 + 17 + 1) * 4
    n_files = max(2 * mix, round(gb * 1e9 / per_file))
    t0 = time.perf_counter()
    paths = write_chunks(out, n_files, rows, fsync=True)
    total = sum(p.stat().st_size for p in paths)
    note = ""
    if proc:
        try:
            drop_cache(paths, True)
        except OSError as e:
            proc, note = False, f" (/proc/sys/vm/drop_caches not writable: {e.strerror})"
    method = "posix_fadvise(DONTNEED) per file" + (" + /proc/sys/vm/drop_caches" if proc else "") + note
    print(
        f"\nbeyond memory: {n_files} chunks x {rows:,} samples = {total / 1e9:.2f} GB in {out} "
        f"(written in {time.perf_counter() - t0:.0f} s); page cache dropped before each run by {method}"
    )
    budget = total // 2
    loaders = {
        f"{name} (mix_files {m})": ChunkBatches(paths, 512, CHUNK_FIELDS, True, True, m, max_resident_bytes=budget)
        for name, m in (("block shuffle", mix), ("per-file shuffle", 1))
    }
    for lo in loaders.values():
        epoch_rate(lo, 0, False)  # warm-up: block buffers allocated and touched
    runs: dict[str, Callable[[int], None]] = {
        "sequential read": lambda e: sequential_read(paths),
        "sequential read + readahead thread": lambda e: sequential_read(paths, ahead=True),
    }
    for name, lo in loaders.items():
        runs[name] = lambda e, lo=lo: epoch_rate(lo, e, False)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    left = []
    for r in range(repeats):
        for name, fn in runs.items():
            drop_cache(paths, proc)
            left.append(resident_mb(paths))
            t0 = time.perf_counter()
            fn(1 + r)
            rates[name].append(total / 1e6 / (time.perf_counter() - t0))
    if left and left[0] is not None:
        print(f"  resident after each drop (fincore): at most {max(left):.1f} MB of {total / 1e6:,.0f} MB")
    base = [max(a, b) for a, b in zip(*(rates[k] for k in list(runs)[:2]), strict=True)]
    seq = max(statistics.median(rates[k]) for k in list(runs)[:2])
    print(f"{'cold, one pass':36} {'mode':>8} {'MB/s (median)':>14} {'ratio':>6} {'paired':>7}   all runs")
    for name, v in rates.items():
        mode = getattr(loaders.get(name), "mode", "")
        m = statistics.median(v)
        paired = statistics.median(x / y for x, y in zip(v, base, strict=True))
        print(f"{name:36} {mode:>8} {m:>14,.0f} {m / seq:>6.2f} {paired:>7.2f}   {', '.join(f'{x:,.0f}' for x in v)}")
    if not keep:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="1000x16,5000x16,14400x8", help="ROWSxFILES,... (samples per chunk)")
    ap.add_argument("--batch-sizes", default="256,512")
    ap.add_argument("--repeats", type=int, default=5, help="epochs per loader; the median is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (training's loop runs in one)")
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "out" / "loader")
    ap.add_argument("--no-cold", action="store_true", help="skip the beyond-memory part")
    ap.add_argument("--cold-gb", type=float, default=3.0)
    ap.add_argument("--cold-mix", type=int, default=8)
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--cold-dir", type=Path, default=Path("/tmp/ta2d_bench_loader_cold"))
    ap.add_argument("--keep", action="store_true", help="keep the beyond-memory chunks")
    ap.add_argument("--drop-caches", action="store_true",
                    help="also write 1 to /proc/sys/vm/drop_caches before each run (needs root; drops every clean "
                         "page cache of the machine, so other jobs feel it)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    for shape in a.shapes.split(","):
        rows, files = (int(v) for v in shape.lower().split("x"))
        in_memory(rows, files, [int(b) for b in a.batch_sizes.split(",")], a.repeats, a.dir)
    if not a.no_cold:
        cold(a.cold_gb, a.cold_dir, a.cold_mix, a.cold_repeats, a.keep, a.drop_caches)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
