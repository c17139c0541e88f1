"""Starting a run: in this process, or data-parallel on one node with torchrun (run key ``gpus``).

``launch`` is what rule train calls. With ``gpus: 1`` it runs ``train_run`` in this process. With
``gpus: N`` it re-executes as

    python -m torch.distributed.run --standalone --nproc_per_node=N -m ta2d.training.launch ARGS.json

waits, forwards every line the ranks print (rank 0's progress, any rank's warnings and tracebacks) to its
own log, and returns rank 0's result; Snakemake's benchmark sees the whole process tree. Each rank
(``main``) joins the process group (nccl on CUDA, one GPU per rank: cuda:LOCAL_RANK; gloo on the CPU) and
calls the same ``train_run``, which then (with ta2d.training.distributed's rank-side helpers)

* reads only its share of every batch: ``RankBatches`` takes the plan of each global batch
  (``ChunkBatches.plan()``, the same on every rank since it depends only on seed and epoch) and keeps the
  rank's contiguous slice (``share``) before gathering it (resident copy or memory-mapped chunks);
* wraps the model in DistributedDataParallel and scales the loss so that the averaged gradients are those
  of one process on the global batch, also for a short last batch: loss = SSE of the share * world size /
  global batch size (a rank whose share is empty, a last batch smaller than the world, trains on a
  stand-in sample with weight 0 so that every rank joins the gradient all-reduce);
* sums the training and validation squared errors and counts across ranks (``all_sum``);
* writes checkpoints, metrics.csv and the log from rank 0 only; every rank resumes from current.pt.

``batch_size`` stays the global batch, so a run's loss trajectory does not depend on ``gpus``
(tests/training/test_distributed.py: 2 CPU processes equal 1 to floating-point tolerance), and ``gpus`` is not part
of the run identity. Ridge and gbt are fitted in one process (resolve_run_config refuses gpus > 1).

Tests only: the environment variable TA2D_KILL_AFTER_EPOCH=N makes every rank exit hard (os._exit) after
epoch N's checkpoints are written, as a killed job would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

import ta2d
from ta2d.atomic import atomic_path, ensure_dir
from ta2d.training.distributed import Context
from ta2d.training.inference import resolve_device
from ta2d.training.loop import train_run
from ta2d.training.run_config import resolve_run_config

KILL_ENV = "TA2D_KILL_AFTER_EPOCH"
_ARGS, _RESULT = ".ddp_args.json", ".ddp_result.json"


def launch(run_cfg: Mapping, train_chunks: Sequence[str | Path], val_chunks: Sequence[str | Path],
           stats: Mapping | str | Path, out_dir: str | Path, *, embed_dir: str | Path | None = None,
           threads: int | None = None, progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) one run with ``gpus`` processes; returns train_run's result (rank 0's). Its arguments
    are train_run's (a drop-in for it: the rule calls this).

    ``threads``: the CPU threads of the job (the rule's), split evenly over the processes (torch threads
    and OMP_NUM_THREADS of each); ``num_workers: auto`` sizes the loader workers from them.
    """
    cfg = resolve_run_config(run_cfg)
    n = cfg["gpus"]
    if n == 1:
        return train_run(
            cfg, train_chunks, val_chunks, stats, out_dir, embed_dir=embed_dir, threads=threads, progress=progress,
            log=log,
        )
    out = ensure_dir(out_dir)
    per_rank = max(1, (threads or os.cpu_count() or 1) // n)
    args = {
        "run_cfg": dict(run_cfg),
        "train": [str(p) for p in train_chunks],
        "val": [str(p) for p in val_chunks],
        "stats": str(stats) if isinstance(stats, str | Path) else dict(stats),
        "out_dir": str(out),
        "embed_dir": None if embed_dir is None else str(embed_dir),
        "threads": per_rank,
        "result": str(out / _RESULT),
    }
    args_path = out / _ARGS
    with atomic_path(args_path) as tmp:
        tmp.write_text(json.dumps(args))
    (out / _RESULT).unlink(missing_ok=True)
    src = str(Path(ta2d.__file__).resolve().parents[1])  # ranks import ta2d as this process does
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(per_rank),
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
        "-m", "ta2d.training.launch", str(args_path),
    ]
    log(f"data-parallel run: {n} processes (torchrun --standalone), {per_rank} CPU threads each")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        try:
            for line in proc.stdout:
                log(line.rstrip("\n"))
            rc = proc.wait()
        except BaseException:  # this job is being stopped: stop the ranks too (torchrun forwards SIGTERM)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    result = out / _RESULT
    if rc != 0 or not result.exists():
        raise RuntimeError(
            f"data-parallel training ({n} processes) failed (torchrun exit status {rc}); the ranks' output is "
            "above in this log"
        )
    res = json.loads(result.read_text())
    result.unlink()
    args_path.unlink(missing_ok=True)
    return res


def _rank_device(spec: str, ctx: Context, world: int) -> torch.device:
    dev = resolve_device(spec)
    if dev.type == "cuda":
        if torch.cuda.device_count() < world:
            raise RuntimeError(
                f"gpus: {world}, but this process sees {torch.cuda.device_count()} CUDA device(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); ask the scheduler for "
                f"{world} GPUs or lower gpus"
            )
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
        return dev
    if dev.type != "cpu":
        raise RuntimeError(f"gpus > 1 runs on CUDA (nccl) or the CPU (gloo), not on {dev}")
    return dev


def main(argv: Sequence[str] | None = None) -> None:
    """One rank, started by torchrun: join the group, train_run, barrier, leave."""
    argv = sys.argv[1:] if argv is None else argv
    args = json.loads(Path(argv[0]).read_text())
    cfg = resolve_run_config(args["run_cfg"])
    world = int(os.environ["WORLD_SIZE"])
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ["LOCAL_RANK"]))
    dev = _rank_device(cfg["device"], ctx, world)
    torch.set_num_threads(int(args["threads"]))
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    try:
        kill_after = int(os.environ.get(KILL_ENV, 0))

        def on_epoch_end(epoch: int, row: dict) -> None:
            if epoch == kill_after:
                dist.barrier()  # rank 0 has written the epoch's checkpoints
                os._exit(75)

        def say(msg: str) -> None:
            print(msg, flush=True)

        res = train_run(
            cfg,
            args["train"],
            args["val"],
            args["stats"],
            args["out_dir"],
            embed_dir=args["embed_dir"],
            device=dev,
            threads=int(args["threads"]),
            progress=False,
            log=say if ctx.main else (lambda msg: None),
            on_epoch_end=on_epoch_end if kill_after else None,
        )
        dist.barrier()
        if ctx.main:
            with atomic_path(Path(args["result"])) as tmp:
                tmp.write_text(json.dumps({**res, "gpus": world}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
