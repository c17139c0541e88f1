"""Epoch time of clay_transfer with a frozen encoder, with and without the embedding cache, per Clay preset.

Without the cache every batch runs the encoder (no grad) before the head; with it, each chunk is
embedded once (the one-time cost is printed separately) and the head trains on the embedding files.
Both runs use train_run on the same synthetic chunks (ta2d.demo.synthetic) and the default run config
otherwise (batch 256, global shuffle); the epoch time is metrics.csv's ``seconds`` (training pass +
validation pass), the median over epochs 2.. (epoch 1 is left out), after a one-epoch warm-up run of each
kind. The one-time embedding pass uses a model built as train_run builds it (build_model on the resolved
run config). The large preset (Clay v1.5's shape, random weights) is slow on a CPU: by default it runs
on 256 training samples (+ 64 validation samples).

    .venv/bin/python benchmarks/bench_train.py [--presets tiny,large --samples tiny=8192,large=256 --threads 1]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import time
from pathlib import Path

import torch

from ta2d.chunks.stats import compute_stats
from ta2d.demo.synthetic import write_chunks
from ta2d.models import build_model
from ta2d.training import load_stats, resolve_device, resolve_run_config, train_run
from ta2d.training.embed import embed_chunks


def epoch_seconds(run_dir: Path) -> list[float]:
    """``seconds`` of epochs 2.. from metrics.csv."""
    with open(run_dir / "metrics.csv") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f) if int(r["epoch"]) >= 2]


def bench(preset: str, n_train: int, a: argparse.Namespace) -> None:
    root = a.dir / preset
    shutil.rmtree(root, ignore_errors=True)
    files = max(1, min(a.files, n_train // 64))
    train = write_chunks(root / "patch_pt", "train", files, n_train // files, seed=1)
    val = write_chunks(root / "patch_pt", "val", 1, max(n_train // 4, 16), seed=2)
    stats = compute_stats(train)
    cfg = {"preset": preset, "epochs": a.epochs, "batch_size": a.batch_size, "patch_mode": a.patch_mode,
           "device": a.device, "patience": 0}
    dev = resolve_device(a.device)
    n = sum(torch.load(p, weights_only=True, mmap=True)["y"].shape[0] for p in train)
    nv = sum(torch.load(p, weights_only=True, mmap=True)["y"].shape[0] for p in val)
    print(
        f"\nclay_transfer preset={preset} patch_mode={a.patch_mode}: {n} train samples in {files} chunks, "
        f"{nv} val samples, batch {a.batch_size}, {a.epochs} epochs, device {dev}, "
        f"{torch.get_num_threads()} threads"
    )
    quiet = dict(progress=False, log=lambda s: None)
    for cache in (False, True):  # warm-up: first-call kernel selection would land in the first timed epoch
        train_run({**cfg, "epochs": 1, "embed_cache": cache}, val, val, stats, root / f"warmup{cache}", **quiet)

    train_run({**cfg, "embed_cache": False}, train, val, stats, root / "no_cache", **quiet)
    no = epoch_seconds(root / "no_cache")

    resolved = resolve_run_config(cfg)
    model = build_model(resolved, load_stats(stats, train)).to(dev)
    amp = resolved["amp_dtype"] if resolved["amp"] and dev.type == "cuda" else None
    t0 = time.perf_counter()
    embed_chunks(train + val, root / "embed", model, batch_size=max(a.batch_size, 256), device=dev, amp_dtype=amp)
    t_embed = time.perf_counter() - t0
    train_run({**cfg, "embed_cache": True}, train, val, stats, root / "cache", embed_dir=root / "embed", **quiet)
    yes = epoch_seconds(root / "cache")

    t_no, t_yes = statistics.median(no), statistics.median(yes)
    print(f"epoch >= 2 without cache: {t_no:8.3f} s   (epochs 2..: {', '.join(f'{s:.3f}' for s in no)})")
    print(f"epoch >= 2 with cache:    {t_yes:8.3f} s   (epochs 2..: {', '.join(f'{s:.3f}' for s in yes)})")
    print(f"  cache is {t_no / t_yes:.1f}x faster")
    payoff = t_embed / max(t_no - t_yes, 1e-9)
    print(f"one-time embedding:       {t_embed:8.3f} s   (pays off after {payoff:.1f} epochs)")
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="tiny,large")
    ap.add_argument("--samples", default="tiny=8192,large=256", help="training samples per preset")
    ap.add_argument("--files", type=int, default=4, help="training chunks (fewer when there are few samples)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--patch-mode", default="area8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "out" / "train")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default, the core count)")
    ap.add_argument("--keep", action="store_true", help="keep the chunks, embeddings and runs")
    a = ap.parse_args()
    if a.threads > 0:  # on a machine shared with other jobs, one thread avoids OpenMP's oversubscription stalls
        torch.set_num_threads(a.threads)
    samples = dict(kv.split("=") for kv in a.samples.split(","))
    for preset in a.presets.split(","):
        bench(preset, int(samples.get(preset, 8192)), a)


if __name__ == "__main__":
    main()
