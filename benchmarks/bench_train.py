"""Epoch time of clay_transfer with a frozen encoder, with and without the embedding cache.

Without the cache every batch runs the encoder (no grad) before the head; with it, each chunk is
embedded once (the one-time cost is printed separately) and the head trains on the embedding files.
Both runs use train_run on the same synthetic chunks; the epoch time is metrics.csv's mean of
``seconds`` (training pass + validation), median over the epochs, after a short warm-up run.

    .venv/bin/python benchmarks/bench_train.py [--preset tiny --files 4 --rows 2048 --epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from chunk_factory import compute_stats, write_chunks  # noqa: E402

from ta2d.embed import embed_chunks  # noqa: E402
from ta2d.models import build_model  # noqa: E402
from ta2d.train import load_stats, resolve_device, resolve_run_config, train_run  # noqa: E402


def epoch_seconds(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv") as f:
        secs = sorted(float(r["seconds"]) for r in csv.DictReader(f))
    return secs[len(secs) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--patch-mode", default="area8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dir", type=Path, default=Path(__file__).parent / "out" / "train")
    a = ap.parse_args()
    shutil.rmtree(a.dir, ignore_errors=True)
    train = write_chunks(a.dir / "patch_pt", "train", a.files, a.rows, seed=1)
    val = write_chunks(a.dir / "patch_pt", "val", 1, a.rows // 4, seed=2)
    stats = compute_stats(train)
    cfg = {"preset": a.preset, "epochs": a.epochs, "batch_size": a.batch_size, "patch_mode": a.patch_mode,
           "device": a.device}
    dev = resolve_device(a.device)
    n = sum(torch.load(p, weights_only=True, mmap=True)["y"].shape[0] for p in train)
    print(
        f"clay_transfer preset={a.preset} patch_mode={a.patch_mode}, {n} train samples, "
        f"batch {a.batch_size}, "
        f"device {dev}, {torch.get_num_threads()} threads"
    )
    quiet = dict(progress=False, log=lambda s: None)
    for cache in (False, True):  # warm-up: first-call kernel selection would land in the first timed epoch
        train_run(
            {**cfg, "epochs": 1, "embed_cache": cache}, val, val, stats, a.dir / f"warmup{cache}", **quiet
        )

    train_run({**cfg, "embed_cache": False}, train, val, stats, a.dir / "no_cache", **quiet)
    t_no = epoch_seconds(a.dir / "no_cache")

    resolved = resolve_run_config(cfg)
    model = build_model(resolved, load_stats(stats, train)).to(dev)
    amp = resolved["amp_dtype"] if resolved["amp"] and dev.type == "cuda" else None
    t0 = time.perf_counter()
    embed_chunks(
        train + val, a.dir / "embed", model, batch_size=max(a.batch_size, 256), device=dev, amp_dtype=amp
    )
    t_embed = time.perf_counter() - t0
    train_run(
        {**cfg, "embed_cache": True}, train, val, stats, a.dir / "cache", embed_dir=a.dir / "embed", **quiet
    )
    t_yes = epoch_seconds(a.dir / "cache")

    print(f"epoch without cache: {t_no:8.3f} s")
    print(f"epoch with cache:    {t_yes:8.3f} s   ({t_no / t_yes:.1f}x faster)")
    payoff = t_embed / max(t_no - t_yes, 1e-9)
    print(f"one-time embedding:  {t_embed:8.3f} s   (pays off after {payoff:.1f} epochs)")


if __name__ == "__main__":
    main()
