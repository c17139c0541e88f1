"""What checking the recorded checksums costs (ta2d.checksums): `ta2d verify` against a plain read of the same files,
and the chunk loader's first-read CRC check against a training epoch.

On a built workflow folder (--root: the folder, or its results/; e.g. the demo after `snakemake --cores all`):

verify    every file `ta2d verify` reads (those with recorded checksums, and every chunk-like file, which it reads
          whole for the chunk contract anyway), each pass after dropping the files from the page cache
          (posix_fadvise DONTNEED per file: cold-ish, the disk's own cache stays warm):
            plain read   os.read in 8 MiB blocks, file after file: the floor of any check of the same bytes
            ta2d verify  ta2d.verify.verify_products in this process (the CLI adds its imports, ~2 s), with one
                         process and with --jobs (default: the CPUs this process may use, as the CLI)
          GB/s of those bytes (medians of --repeats), the ratio to the plain read's speed, and verify's GB/s per
          kind and process (scenes are deflated: verify inflates every chunk to check the values HDF5 stores).
loader    the first time the loader reads a file it checks the file's fields against their CRCs
          (ta2d.chunks.loader). In training's default order (RUN_DEFAULTS: shuffled files and samples, mix_files
          0, batch 256; mode 'resident' on the demo) over the train chunks each run reads (results/embed/{run}
          for a run with an embedding cache, else results/patch_pt), page cache warm:
            check        the CRCs of every file's fields read into memory: what the first read adds
            first read   the resident copy, check included (prepare())
            epoch        one shuffled epoch of batches from the resident copy (the loader alone)
          and the check as a fraction of the first epoch (first read + epoch) and of each run's recorded
          training epoch (median of the seconds column of results/runs/{run}/metrics.csv: model steps and
          validation included, on the machine that built the tree). Validation's order (not shuffled: mode
          'mapped', the whole mapped file checked when first opened) is timed the same way over the val chunks.

    .venv/bin/python benchmarks/bench_verify.py --root /tmp/demo [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

# torch and the loader are imported where the loader is timed: verify's spawned workers import this script again
from ta2d.verify import PRODUCTS, available_cpus, results_folder, verify_products


def drop_from_page_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)  # DONTNEED drops clean pages only
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def plain_read(paths: list[Path]) -> int:
    n = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while block := os.read(fd, 8 << 20):
                n += len(block)
        finally:
            os.close(fd)
    return n


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_verify(root: Path, repeats: int, jobs: int) -> None:
    report = verify_products(root)
    if report.failed:
        print(f"note: {len(report.failed)} files fail `ta2d verify` (timed all the same)")
    checked = [f.path for f in report.files if f.bytes_read]
    total = sum(f.bytes_read for f in report.files)
    plain, verify, by_kind = [], {1: [], jobs: []}, {}
    for _ in range(repeats):
        drop_from_page_cache(checked)
        plain.append(timed(lambda: plain_read(checked)))
        for n in verify:
            drop_from_page_cache(checked)
            report = verify_products(root, jobs=n)
            verify[n].append(report.seconds)
            for f in report.files if n == 1 else ():
                by_kind.setdefault(f.kind, [0, 0.0])
                by_kind[f.kind][0] += f.bytes_read
                by_kind[f.kind][1] += f.seconds
    t_plain = statistics.median(plain)
    gb = total / 1e9
    print(f"== ta2d verify: {len(checked)} files, {gb:.3f} GB, page cache dropped before each pass, "
          f"median of {repeats}")
    print(f"plain read (os.read, 8 MiB)     {t_plain:7.2f} s  {gb / t_plain:6.2f} GB/s")
    for n, times in verify.items():
        t = statistics.median(times)
        print(f"ta2d verify, {n:2d} process{'es' if n > 1 else '  '}   {t:7.2f} s  {gb / t:6.2f} GB/s   "
              f"ratio {t_plain / t:.2f} of the plain read's speed")
    for kind in PRODUCTS:
        if kind in by_kind and by_kind[kind][0]:
            n_bytes, seconds = by_kind[kind]
            print(f"  {kind:12s} {n_bytes / repeats / 1e9:7.3f} GB  {n_bytes / seconds / 1e9:6.2f} GB/s (1 process)")


def loader(paths: list[Path], fields, shuffled: bool):
    from ta2d.chunks.loader import ChunkBatches
    from ta2d.training.run_config import RUN_DEFAULTS

    if not shuffled:
        return ChunkBatches(paths, RUN_DEFAULTS["batch_size"], fields)
    return ChunkBatches(paths, RUN_DEFAULTS["batch_size"], fields, RUN_DEFAULTS["shuffle_files"],
                        RUN_DEFAULTS["shuffle_within_file"], RUN_DEFAULTS["mix_files"], RUN_DEFAULTS["seed"])


def check_seconds(b) -> float:
    """What the first read's check does, alone: every file's fields (resident copy or mapped) against its CRCs."""
    import torch

    from ta2d.chunks.contract import verify_fields

    t0 = time.perf_counter()
    for f, path in enumerate(b.paths):
        if b._resident is not None:
            lo, hi = int(b.starts[f]), int(b.ends[f])
            verify_fields(path, {k: v[lo:hi] for k, v in b._resident.items()})
        else:
            verify_fields(path, {k: v for k, v in torch.load(path, weights_only=True, mmap=True).items()
                                 if k in b.spec})
    return time.perf_counter() - t0


def epoch_seconds(b, epoch: int) -> float:
    b.set_epoch(epoch)
    t0 = time.perf_counter()
    for batch in b:
        batch["y"].sum()
    return time.perf_counter() - t0


def bench_loader_files(label: str, paths: list[Path], fields, repeats: int, recorded: dict[str, float]) -> None:
    plain_read(paths)  # warm: this part is about the CPU, verify's part above about the disk
    shuffled = loader(paths, fields, shuffled=True)
    checks, firsts, epochs = [], [], []
    for r in range(repeats):
        b = loader(paths, fields, shuffled=True)
        firsts.append(timed(b.prepare))
        checks.append(check_seconds(b))
        epochs.append(epoch_seconds(b, r + 1))
    check, first, epoch = (statistics.median(v) for v in (checks, firsts, epochs))
    gb = shuffled.n_samples * shuffled.row_bytes / 1e9
    print(f"-- {label}: {len(paths)} train files, {shuffled.n_samples:,} samples, {gb:.3f} GB, mode {shuffled.mode}, "
          f"batch {shuffled.batch_size}")
    print(f"check {check:.3f} s ({gb / check:.2f} GB/s) | first read {first:.3f} s, check included | "
          f"epoch {epoch:.3f} s | check = {check / (first + epoch):.1%} of the loader's first epoch")
    for run, seconds in recorded.items():
        print(f"   run {run}: recorded training epoch {seconds:.2f} s -> check = {check / seconds:.1%} of it, once "
              "per run (later epochs read the resident copy)")


def bench_mapped(paths: list[Path], fields, repeats: int) -> None:
    checks, epochs = [], []
    for r in range(repeats):
        b = loader(paths, fields, shuffled=False)
        checks.append(check_seconds(b))
        b._verified = set(range(len(paths)))  # benchmark only: the epoch without the check
        epochs.append(epoch_seconds(b, r + 1))
    check, epoch = statistics.median(checks), statistics.median(epochs)
    b = loader(paths, fields, shuffled=False)
    gb = b.n_samples * b.row_bytes / 1e9
    print(f"-- validation order ({len(paths)} val files, {gb:.3f} GB, mode {b.mode}): check {check:.3f} s "
          f"({gb / check:.2f} GB/s), epoch without it {epoch:.3f} s: the first epoch takes {check / epoch:.0%} longer "
          "(once per run)")


def recorded_epochs(results: Path) -> dict[str, float]:
    """{run: median seconds of its recorded epochs}."""
    out = {}
    for metrics in sorted(results.glob("runs/*/metrics.csv")):
        with open(metrics) as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds")]
        if seconds:
            out[metrics.parent.name] = statistics.median(seconds)
    return out


def bench_loader(results: Path, repeats: int) -> None:
    from ta2d.chunks.loader import CHUNK_FIELDS
    from ta2d.training.embed import EMB_FIELDS  # what a run with an embedding cache reads

    epochs = recorded_epochs(results)
    print(f"== loader's first-read check, page cache warm, median of {repeats}")
    embedded = {d.name for d in results.glob("embed/*") if any(d.glob("train_chunk_*.pt"))}
    plain_runs = {run: s for run, s in epochs.items() if run not in embedded}
    train = sorted(results.glob("patch_pt/train_chunk_*.pt"))
    if train:
        bench_loader_files("patch_pt chunks", train, CHUNK_FIELDS, repeats, plain_runs)
    for run in sorted(embedded):
        files = sorted((results / "embed" / run).glob("train_chunk_*.pt"))
        bench_loader_files(f"embed/{run}", files, EMB_FIELDS, repeats, {run: epochs[run]} if run in epochs else {})
    val = sorted(results.glob("patch_pt/val_chunk_*.pt"))
    if val:
        bench_mapped(val, CHUNK_FIELDS, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a built workflow folder or its results/")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=available_cpus(),
                    help="verify's processes for the second figure (default: the CPUs this process may use)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    results = results_folder(args.root)
    if not results.is_dir():
        raise SystemExit(f"{args.root}: no results/ folder: build the workflow first")
    print(f"{results}: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    bench_verify(results, args.repeats, args.jobs)
    bench_loader(results, args.repeats)


if __name__ == "__main__":
    main()
