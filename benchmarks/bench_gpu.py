"""Training-step throughput (samples/s) of the Clay transfer model: frozen encoder and fine-tuned, AMP off/on.

    .venv/bin/python benchmarks/bench_gpu.py --preset tiny --steps 5           # any CPU, seconds (a test runs it)
    .venv/bin/python benchmarks/bench_gpu.py --preset large --batch-size 256    # a GPU machine [--compile]

Each configuration builds the model as train_run does (build_model with the run defaults, random init), puts
one synthetic batch of chunk-like samples (ta2d.demo.synthetic) in host memory (pinned on CUDA) and times
``--steps`` optimizer steps of ``ta2d.training.loop.train_step``, the loop's own step, after ``--warmup``
untimed ones: every step copies the batch to the device (non-blocking) as the loop does, then forward,
backward, gradient clipping, AdamW and the schedule. The device is synchronised before and after the timed
steps, and on CUDA the peak of allocated GPU memory over the configuration is reported.

* frozen: the encoder runs without gradients and only the head trains: the per-step cost of a frozen run
  without the embedding cache (embed_cache: false); with the cache a step is the head alone.
* finetune: finetune full, the encoder's layer-wise parameter groups as training builds them (param_groups).
* AMP rows (the run's amp_dtype: bfloat16 where the GPU has it natively, else float16 + GradScaler) and TF32
  only on CUDA, as in train_run; ``--compile`` adds torch.compile rows (the first steps compile: raise
  ``--warmup``).
"""

from __future__ import annotations

import argparse
import gc
import time
from contextlib import nullcontext

import torch

from ta2d.chunks.loader import CHUNK_FIELDS
from ta2d.demo.synthetic import make_chunk
from ta2d.models import build_model
from ta2d.training import load_stats, make_scheduler, param_groups, resolve_device, resolve_run_config
from ta2d.training.inference import autocast_dtype, to_device
from ta2d.training.loop import set_tf32, train_step


def synthetic_batch(n: int) -> tuple[dict[str, torch.Tensor], dict]:
    """A batch of n chunk-like samples and stats computed from it (as the stats rule would)."""
    d = make_chunk(n, seed=0)
    x, y, loc = d["x"].double(), d["y"].double(), d["loc"][:, :2].double()
    stats = {
        "x_mean": x.mean(dim=(0, 2, 3)).tolist(),
        "x_std": x.std(dim=(0, 2, 3)).tolist(),
        "y_mean": float(y.mean()),
        "y_std": float(y.std()),
        "loc_mean": loc.mean(0).tolist(),
        "loc_std": loc.std(0).tolist(),
    }
    return {k: d[k] for k in CHUNK_FIELDS}, stats


def bench_one(mode: str, amp: bool, compiled: bool, a, dev: torch.device, batch: dict, stats: dict) -> dict:
    cfg = resolve_run_config({
        "model": "clay_transfer", "preset": a.preset, "patch_mode": a.patch_mode, "batch_size": a.batch_size,
        "finetune": "frozen" if mode == "frozen" else "full", "embed_cache": False, "amp": amp, "compile": compiled,
    })
    torch.manual_seed(cfg["seed"])
    model = build_model(cfg, load_stats(stats)).to(dev)
    opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg["weight_decay"])
    sched = make_scheduler(opt, cfg, steps_per_epoch=a.warmup + a.steps)
    amp_dtype = autocast_dtype(cfg["amp_dtype"] if amp else None, dev)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == "float16")
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, amp_dtype))) if amp_dtype else nullcontext
    net = torch.compile(model) if compiled else model
    trainable = [p for p in model.parameters() if p.requires_grad]
    weight = 1.0 / len(batch["y"])
    model.train()

    args = (model.normalizer, weight, opt, sched, scaler, autocast, cfg["grad_clip"], trainable)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for _ in range(a.warmup):
        train_step(net, to_device(batch, dev), *args)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        sse = train_step(net, to_device(batch, dev), *args)
    float(sse)  # the last step's result on the host
    sync(dev)
    dt = time.perf_counter() - t0
    row = {
        "mode": mode,
        "amp": amp_dtype or "off",
        "compile": compiled,
        "batch": len(batch["y"]),
        "samples_per_s": a.steps * len(batch["y"]) / dt,
        "ms_per_step": 1000 * dt / a.steps,
        "trainable_m": sum(p.numel() for p in trainable) / 1e6,
        "gpu_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan"),
    }
    del model, net, opt, sched, trainable, args
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny", choices=["tiny", "small", "base", "large"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernel selection, compilation)")
    ap.add_argument("--patch-mode", default="area8")
    ap.add_argument("--modes", default="frozen,finetune")
    ap.add_argument("--amp", default="both", choices=["both", "on", "off"], help="AMP rows (CUDA only)")
    ap.add_argument("--compile", action="store_true", help="also torch.compile rows")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = ap.parse_args(argv)
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        return run(a)
    finally:
        torch.set_num_threads(threads)


def run(a) -> list[dict]:
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        set_tf32(True)  # the run default (tf32: true)
        torch.backends.cudnn.benchmark = True
    batch, stats = synthetic_batch(a.batch_size)
    if dev.type == "cuda":
        batch = {k: v.pin_memory() for k, v in batch.items()}
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"clay_transfer preset={a.preset} patch_mode={a.patch_mode} batch {a.batch_size}, device {dev} ({name}), "
          f"torch {torch.__version__}, {a.warmup} warm-up + {a.steps} timed steps per row")
    amps = {"both": [False, True], "on": [True], "off": [False]}[a.amp] if dev.type == "cuda" else [False]
    rows = []
    print(f"{'mode':<9} {'amp':<9} {'compile':<8} {'samples/s':>11} {'ms/step':>9} {'trainable M':>12} "
          f"{'GPU peak MB':>12}")
    for mode in a.modes.split(","):
        for amp in amps:
            for compiled in [False, True] if a.compile else [False]:
                r = bench_one(mode, amp, compiled, a, dev, batch, stats)
                rows.append(r)
                print(f"{r['mode']:<9} {r['amp']:<9} {str(r['compile']):<8} {r['samples_per_s']:>11,.0f} "
                      f"{r['ms_per_step']:>9.1f} {r['trainable_m']:>12.2f} {r['gpu_peak_mb']:>12.0f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
