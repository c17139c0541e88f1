"""Training of one run (clay_transfer, cnn, ridge or gbt): the loop, its schedule, early stopping, resume.

``train_run`` writes into out_dir (see ta2d.training.checkpoints for what each file holds):
  metrics.csv  one row per epoch: epoch, train_mse, val_mse, train_rmse_norm, val_rmse_norm,
               train_rmse_k, val_rmse_k, lr, seconds (MSE/RMSE norm on z-scored TA; RMSE_K = RMSE_norm*TA std)
  current.pt   after every epoch; best.pt when val MSE improves. Both hold model / optimizer / scheduler /
               epoch / best_val (as in the seed) plus stats, run_config, data_fingerprint, history, rng_state;
               current.pt of a run with frozen encoder weights (finetune: frozen, or the blocks below the
               last k of finetune: last_k) leaves them out (encoder_fingerprint of the frozen part instead).
  embed/       embedding files (clay_transfer, frozen encoder, embed_cache), unless embed_dir is given.
A rerun resumes from current.pt when its run config, stats, data fingerprint (and encoder fingerprint)
match, else starts over; a resumed run restores best.pt (from the hidden hard link .best.pt.keep) and
metrics.csv if they were deleted, as Snakemake does with a job's declared outputs before rerunning it.
Declare best.pt and metrics.csv as outputs, never current.pt.

Under torchrun (ta2d.training.launch, run key gpus > 1) the same function runs on every rank: each
reads its share of every batch, the model is wrapped in DistributedDataParallel, sums are reduced across
ranks and rank 0 alone writes. On CUDA: batches in pinned memory copied non-blocking, loss sums kept on
the GPU (one sync per epoch, or every 25 steps for the progress bar), cuDNN autotuning, TF32 (run key
tf32), autocast (amp: bfloat16 where the GPU has it, else float16 with a GradScaler), torch.compile
(compile, opt-in).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ta2d.atomic import ensure_dir
from ta2d.chunks.contract import write_row_subset
from ta2d.chunks.loader import CHUNK_FIELDS, ChunkBatches, make_loader, memory_budget
from ta2d.config import FITTED_KINDS, uses_embedding_cache
from ta2d.models import build_model, input_fields
from ta2d.splits import training_station
from ta2d.training.checkpoints import (
    atomic_save,
    data_fingerprint,
    epoch_state,
    frozen_encoder_keys,
    frozen_fingerprint,
    load_model_state,
    read_checkpoint,
    restore_best,
    resume_mismatch,
    save_best,
    trainable_state,
    write_metrics,
)
from ta2d.training.distributed import (
    RankBatches,
    all_sum,
    barrier,
    context,
    from_main,
    global_batch_size,
    share,
)
from ta2d.training.embed import EMB_FIELDS, embed_chunks
from ta2d.training.head_basis import fit_head_basis
from ta2d.training.inference import autocast_dtype, load_stats, resolve_device, to_device
from ta2d.training.run_config import resolve_run_config


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global state other code may use
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate(model, batches, device: torch.device, autocast=nullcontext) -> float:
    """Sample-weighted MSE of the normalised TA over all batches (nan when there are none); under DDP over
    all ranks' batches (sums and counts all-reduced, so every rank must call it)."""
    model.eval()
    se, n = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in batches:
        if len(batch["y"]) == 0:  # a rank's empty share of a short last batch
            continue
        batch = to_device(batch, device)
        with autocast():
            pred = model(batch).float()
        se += ((pred - model.normalizer.norm_y(batch["y"])) ** 2).sum()
        n += len(pred)
    se, n = all_sum([se, n], device)
    return se / n if n else float("nan")


def train_step(net, batch, normalizer, weight: float, opt, sched, scaler, autocast, grad_clip: float, params):
    """One optimizer step on (this process's share of) a batch; returns its sum of squared errors (detached,
    on the device: no sync).

    loss = SSE * weight. One process: weight = 1 / batch size (the mean). Under DDP, which averages the ranks'
    gradients: weight = world size / global batch size, so the average is the gradient of the mean over the
    global batch, also for a short last batch; 0 for a stand-in sample (ta2d.training.distributed).
    """
    with autocast():
        pred = net(batch).float()
    sse = ((pred - normalizer.norm_y(batch["y"])) ** 2).sum()
    opt.zero_grad(set_to_none=True)
    scaler.scale(sse * weight).backward()
    if grad_clip > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(opt)
    scaler.update()
    if sched is not None:
        sched.step()
    return sse.detach()


def loader_workers(setting: int | str, device: torch.device, threads: int | None) -> int:
    """num_workers of a run: an integer as given; auto: 0 on the CPU (the chunk loader is fast in-process and
    workers would take cores from the model), on CUDA the process's threads minus the main one, at most 8."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return max(0, min(8, (threads or torch.get_num_threads()) - 1))


def set_tf32(on: bool) -> None:
    """TF32 matmuls and convolutions on CUDA (the fp32_precision API where torch has it)."""
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = conv.fp32_precision = "tf32" if on else "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on


def make_scheduler(opt, cfg: Mapping, steps_per_epoch: int):
    """Per-batch learning-rate schedule over at most ``epochs`` epochs (early stopping may end sooner).

    warmup_cosine: linear warm-up over ``warmup_epochs``, then cosine to 0; onecycle: torch's OneCycleLR
    (30 % warm-up, peak = each group's lr); cosine: cosine to 0 without warm-up; none: constant.
    """
    total = max(int(cfg["epochs"]) * max(steps_per_epoch, 1), 1)
    kind = cfg["scheduler"]
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total + 1, pct_start=0.3
        )
    warm = int(round(float(cfg["warmup_epochs"]) * steps_per_epoch)) if kind == "warmup_cosine" else 0

    def factor(step: int) -> float:
        if kind == "none":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total - warm) / max(total - warm, 1)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


NO_DECAY_NAMES = ("cls_token", "weight_tokens", "bias_token")  # learned tokens of the Clay encoder: no weight decay


def encoder_layer_id(name: str, depth: int) -> int:
    """Layer of an encoder parameter for layer-wise lr decay (BEiT/MAE): cls token and patch embedding 0,
    transformer block i (0-based) i + 1, the final norm depth + 1."""
    if name.startswith("transformer.layers."):
        return int(name.split(".")[2]) + 1
    if name.startswith("transformer."):
        return depth + 1
    return 0


def param_groups(model: torch.nn.Module, cfg: Mapping) -> list[dict]:
    """AdamW parameter groups of a resolved run config: the head (or the CNN) at ``lr``, decayed with
    ``weight_decay`` as a whole; for finetune last_k / full the encoder's trainable parameters by layer at
    ``encoder_lr * layer_decay ** (depth + 1 - layer)`` (ta2d.training.loop.encoder_layer_id), weight decay on
    their matrices only (not on norms, biases or the learned tokens). Every group carries its ``lr_scale``
    (the schedules scale each group's own rate) and a ``name``; frozen parameters are in no group."""
    groups = [{
        "name": "head",
        "params": [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad],
        "lr": cfg["lr"], "weight_decay": cfg["weight_decay"], "lr_scale": 1.0,
    }]
    encoder = getattr(model, "encoder", None)
    if cfg["model"] != "clay_transfer" or cfg["finetune"] == "frozen" or encoder is None:
        return groups
    depth, decay = len(encoder.transformer.layers), float(cfg["layer_decay"])
    by_key: dict[tuple[int, bool], list] = {}
    for name, p in encoder.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES
        by_key.setdefault((encoder_layer_id(name, depth), no_decay), []).append(p)
    for (layer, no_decay), params in sorted(by_key.items()):
        scale = decay ** (depth + 1 - layer)
        groups.append({
            "name": f"encoder.layer{layer}{'.no_decay' if no_decay else ''}",
            "params": params,
            "lr": cfg["encoder_lr"] * scale,
            "weight_decay": 0.0 if no_decay else cfg["weight_decay"],
            "lr_scale": scale,
        })
    return groups


def stale_epochs(history: Sequence[Mapping]) -> int:
    """Epochs since the best validation MSE (train MSE without validation data): early stopping's count."""
    if not history:
        return 0
    key = "val_mse" if all(r["val_mse"] == r["val_mse"] for r in history) else "train_mse"
    scores = [r[key] for r in history]
    return len(scores) - 1 - min(range(len(scores)), key=scores.__getitem__)


def _row(epoch, train_mse, val_mse, y_std, lr, seconds) -> dict:
    r = {"epoch": epoch, "train_mse": train_mse, "val_mse": val_mse, "lr": lr, "seconds": round(seconds, 3)}
    for split, mse in (("train", train_mse), ("val", val_mse)):
        r[f"{split}_rmse_norm"] = math.sqrt(mse) if mse == mse else float("nan")
        r[f"{split}_rmse_k"] = r[f"{split}_rmse_norm"] * y_std
    return r


def train_run(
    run_cfg: Mapping,
    train_chunks: Sequence[str | Path],
    val_chunks: Sequence[str | Path],
    stats: Mapping | str | Path,
    out_dir: str | Path,
    *,
    embed_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    threads: int | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) one run; returns {"best_val", "epochs", "resumed_from", "out_dir", "device"}.

    ``device`` overrides run_cfg["device"]. ``threads``: this process's CPU threads (num_workers: auto; None:
    torch's). ``on_epoch_end(epoch, row)`` is called after the epoch's checkpoints are written (tests use it
    to simulate a kill). Run it through ta2d.training.launch.launch for gpus > 1.
    """
    cfg = resolve_run_config(run_cfg)
    ctx = context()
    if cfg["gpus"] > 1 and not ctx.active:
        log(f"gpus: {cfg['gpus']} needs ta2d.training.launch.launch (torchrun); training in this one process")
    progress = progress and ctx.main
    out = ensure_dir(out_dir)
    dev = resolve_device(device if device is not None else cfg["device"])
    train_chunks, val_chunks = [str(p) for p in train_chunks], [str(p) for p in val_chunks]
    if not train_chunks:
        raise ValueError("train_run needs at least one training chunk")
    stats = load_stats(stats, train_chunks)
    fingerprint = from_main(lambda: data_fingerprint(train_chunks, val_chunks))  # reads every chunk: once
    amp_dtype, autocast = _precision(cfg, dev, log)

    seed_everything(cfg["seed"])
    model = build_model(cfg, stats)
    # frozen encoder weights (finetune: frozen, or last_k's lower blocks) stay out of current.pt; their
    # fingerprint (taken on the CPU) lets resume check the rebuilt ones
    frozen_keys = frozen_encoder_keys(model)
    enc_fp = frozen_fingerprint(model, frozen_keys)
    model = model.to(dev)
    data = _training_data(cfg, model, train_chunks, val_chunks, embed_dir or out / "embed", out, dev, amp_dtype,
                          threads, progress, log)
    base = {
        "stats": model.normalizer.stats(),
        "run_config": cfg,
        "data_fingerprint": fingerprint,
        "model_kind": cfg["model"],
        "format_version": 1,
    }
    if enc_fp is not None:
        base["encoder_fingerprint"] = enc_fp

    if cfg["model"] in FITTED_KINDS:
        if ctx.active:
            raise ValueError(f"{cfg['model']} is fitted in one process; run it with gpus: 1")
        return _fitted_run(model, data.train, data.val_loader, dev, base, out, float(model.normalizer.y_std), log)

    opt = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg["weight_decay"])
    sched = make_scheduler(opt, cfg, steps_per_epoch=len(data.train))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == "float16")
    state = _Progress()
    ck = _resumable_checkpoint(out, base, enc_fp, log)
    if ck is not None:
        load_model_state(model, ck["model"], partial="encoder_fingerprint" in ck, frozen_keys=frozen_keys)
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if "scaler" in ck:
            scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["rng_state"])
        state = _Progress(ck["epoch"] + 1, ck["best_val"], list(ck["history"]), ck["epoch"])
        if ctx.main:
            restore_best(out / "best.pt")
            write_metrics(out / "metrics.csv", state.history)
        log(f"resuming {out} from current.pt at epoch {state.start} (best val MSE {state.best_val:.5f})")
    if state.start > cfg["epochs"]:
        log(f"{out}: all {cfg['epochs']} epochs already done")
    if state.resumed_from is None and getattr(model, "head_decorrelate", False):  # a resumed run has it in current.pt
        fit_head_basis(model, data.train_files, data.fields, max(cfg["batch_size"], 256), dev, log=log)

    net = _step_net(model, cfg, ctx, dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    y_std = float(model.normalizer.y_std)
    for epoch in range(state.start, cfg["epochs"] + 1):
        if stale_epochs(state.history) >= cfg["patience"] > 0:
            log(f"early stop: val RMSE has not improved for {cfg['patience']} epochs (best at epoch "
                f"{epoch - 1 - stale_epochs(state.history)})")
            break
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        train_mse = _train_epoch(net, model, data, epoch, cfg, opt, sched, scaler, autocast, trainable, dev, progress)
        val_mse = evaluate(model, tqdm(data.val_loader, total=len(data.val), desc="val", disable=not progress,
                                       leave=False), dev, autocast)
        row = _row(epoch, train_mse, val_mse, y_std, lr, time.perf_counter() - t0)
        state.history.append(row)
        score = val_mse if data.val.n_samples else row["train_mse"]
        _save_epoch(out, base, model, opt, sched, scaler, epoch, state, score, frozen_keys, enc_fp is not None, ctx)
        log(f"epoch {epoch}: train rmse_K {row['train_rmse_k']:.3f}  val rmse_K {row['val_rmse_k']:.3f}  "
            f"({row['seconds']:.1f} s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return {
        "best_val": state.best_val,
        "epochs": len(state.history),
        "resumed_from": state.resumed_from,
        "out_dir": str(out),
        "device": str(dev),
    }


@dataclass
class _Progress:
    """Where a run stands: the next epoch, the best validation score so far, every epoch's metrics row, and the
    epoch it was resumed after (None: started from scratch)."""

    start: int = 1
    best_val: float = float("inf")
    history: list = field(default_factory=list)
    resumed_from: int | None = None


@dataclass
class _Data:
    """A run's batches (a ChunkBatches each), what the steps iterate (this rank's share under DDP, loader
    workers), and the files and fields they read (embedding files for a frozen, cached encoder)."""

    train: ChunkBatches
    val: ChunkBatches
    loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    train_files: list[str]
    fields: tuple[str, ...]


def _precision(cfg: Mapping, dev: torch.device, log) -> tuple[str | None, Callable]:
    """TF32 and cuDNN autotuning on CUDA; the autocast dtype (None: full precision) and its context."""
    if dev.type == "cuda":
        set_tf32(bool(cfg["tf32"]))
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick the fastest kernels once
    amp_dtype = autocast_dtype(cfg["amp_dtype"] if cfg["amp"] else None, dev)
    if amp_dtype is not None and amp_dtype != cfg["amp_dtype"]:
        log(f"AMP: this GPU has no native {cfg['amp_dtype']}; using {amp_dtype} (with a GradScaler)")
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, amp_dtype))) if amp_dtype else nullcontext
    return amp_dtype, autocast


def _training_data(cfg, model, train_chunks: list[str], val_chunks: list[str], embed_dir: str | Path, out: Path,
                   dev: torch.device, amp_dtype, threads: int | None, progress: bool, log) -> _Data:
    ctx = context()
    fields, train_files, val_files = input_fields(model, CHUNK_FIELDS), train_chunks, val_chunks
    if uses_embedding_cache(cfg):
        t0 = time.perf_counter()
        embed = functools.partial(embed_chunks, out_dir=Path(embed_dir), model=model,
                                  batch_size=max(cfg["batch_size"], 256), device=dev, amp_dtype=amp_dtype,
                                  progress=progress)
        if not ctx.main:
            barrier()  # rank 0 embeds what is missing; the others then find every file valid
        train_files, n1 = embed(train_chunks)
        val_files, n2 = embed(val_chunks)
        if ctx.main:
            barrier()
        log(f"embedding cache {embed_dir}: {n1 + n2} of {len(train_files) + len(val_files)} chunks computed "
            f"in {time.perf_counter() - t0:.1f} s, the rest reused")
        fields = input_fields(model, EMB_FIELDS)
    if cfg["train_stations"] < 1:
        train_files = _station_subset(train_files, cfg, ctx, out / "train_stations", log)
    train_b = ChunkBatches(
        train_files, cfg["batch_size"], fields, cfg["shuffle_files"], cfg["shuffle_within_file"], cfg["mix_files"],
        cfg["seed"], max_resident_bytes=memory_budget() // ctx.world,  # every rank holds its own copy
    )
    val_b = ChunkBatches(val_files, cfg["batch_size"], fields)
    train_src, val_src = train_b, val_b
    if ctx.active:  # this rank's share of every batch (a stand-in sample where a short last batch leaves none)
        train_src = RankBatches(train_b, ctx.rank, ctx.world, pad_empty=True)
        val_src = RankBatches(val_b, ctx.rank, ctx.world)
    workers = loader_workers(cfg["num_workers"], dev, threads)
    pin = dev.type == "cuda"
    return _Data(train_b, val_b, make_loader(train_src, workers, pin_memory=pin),
                 make_loader(val_src, workers, pin_memory=pin), list(train_files), fields)


def _station_subset(files: list[str], cfg: Mapping, ctx, out_dir: Path, log) -> list[str]:
    """The training files (chunks or embeddings) cut to the run's train_stations, written into the run's folder by
    rank 0 (a resumed run writes the same rows again)."""
    fraction, seed = cfg["train_stations"], cfg["seed"]
    out = ensure_dir(out_dir)
    subset = [str(out / Path(f).name) for f in files]
    if ctx.main:
        kept = sum(write_row_subset(f, s, lambda stn: training_station(stn, fraction, seed))
                   for f, s in zip(files, subset, strict=True))
        log(f"train_stations {fraction:g}: {kept} training samples of the kept stations, in {out}")
    barrier()
    return subset


def _resumable_checkpoint(out: Path, base: Mapping, enc_fp: str | None, log) -> dict | None:
    """current.pt when it continues this run (same settings, data and frozen encoder), else None (and why)."""
    cur_path = out / "current.pt"
    if not cur_path.exists():
        return None
    ck, why = read_checkpoint(cur_path)
    if ck is not None:
        why = resume_mismatch(ck, base, enc_fp)
    if why is None:
        return ck
    log(f"current.pt in {out} does not belong to this run: {why}; starting from scratch")
    return None


def _step_net(model, cfg: Mapping, ctx, dev: torch.device):
    """What the steps run: DDP on the ranks (frozen encoder weights need no gradient sync), compiled if asked."""
    net = model
    if ctx.active:
        net = torch.nn.parallel.DistributedDataParallel(  # buffers (normaliser stats) are constants: no re-sync
            model, device_ids=[dev.index] if dev.type == "cuda" else None, forward_sync_buffers=False,
            gradient_as_bucket_view=True,
        )
    if cfg["compile"]:
        net = torch.compile(net)
    return net


def _train_epoch(net, model, data: _Data, epoch: int, cfg: Mapping, opt, sched, scaler, autocast, trainable,
                 dev: torch.device, progress: bool) -> float:
    """One epoch of steps; the training MSE (normalised) over every rank's samples."""
    ctx = context()
    bs, n_total, y_std = cfg["batch_size"], data.train.n_samples, float(model.normalizer.y_std)
    data.train.set_epoch(epoch)
    model.train()
    bar = tqdm(data.loader, total=len(data.train), desc=f"epoch {epoch}/{cfg['epochs']} train",
               disable=not progress, leave=False)
    se, n = torch.zeros((), dtype=torch.float64, device=dev), 0
    for k, batch in enumerate(bar):
        n_glob = global_batch_size(k, bs, n_total)
        lo, hi = share(n_glob, ctx.rank, ctx.world)
        weight = ctx.world / n_glob if hi > lo else 0.0
        sse = train_step(net, to_device(batch, dev), model.normalizer, weight, opt, sched, scaler, autocast,
                         cfg["grad_clip"], trainable)
        if hi > lo:
            se += sse
            n += hi - lo
        if progress and (k % 25 == 0 or k == len(data.train) - 1):  # a GPU sync: not every step
            mse = float(se) / max(n, 1)
            bar.set_postfix(loss=f"{mse:.4f}", rmse=f"{math.sqrt(mse):.4f}",
                            rmse_K=f"{math.sqrt(mse) * y_std:.3f}", refresh=False)
    se, n = all_sum([se, n], dev)
    return se / max(n, 1)


def _save_epoch(out: Path, base: Mapping, model, opt, sched, scaler, epoch: int, state: _Progress, score: float,
                frozen_keys, partial: bool, ctx) -> None:
    """best.pt when the epoch improved, then metrics.csv and current.pt (rank 0 only). best.pt goes first: a
    kill in between redoes this epoch. best.pt is self-contained (the frozen encoder too); current.pt holds
    only the trained weights when the encoder is frozen."""
    weights = model.state_dict()
    saved = epoch_state(base, weights, opt, sched, scaler, epoch, state.history)
    if score < state.best_val:
        state.best_val = score
        if ctx.main:
            save_best({**saved, "best_val": state.best_val}, out / "best.pt")
    if ctx.main:
        write_metrics(out / "metrics.csv", state.history)
        current = trainable_state(weights, frozen_keys) if partial else weights
        atomic_save({**saved, "model": current, "best_val": state.best_val}, out / "current.pt")


def _fitted_run(model, train_b, val_loader, dev, base, out: Path, y_std: float, log) -> dict:
    """One fit (ridge: closed form in one pass; gbt: boosting, early stopping on the val chunks); written
    like a one-epoch run so evaluation treats it the same."""
    t0 = time.perf_counter()
    val = {"val_batches": (to_device(b, dev) for b in val_loader)} if base["model_kind"] == "gbt" else {}
    model.fit((to_device(b, dev) for b in train_b), **val)
    train_mse = evaluate(model, train_b, dev)
    val_mse = evaluate(model, val_loader, dev)
    row = _row(1, train_mse, val_mse, y_std, 0.0, time.perf_counter() - t0)
    best = val_mse if val_mse == val_mse else train_mse
    state = {
        **base,
        "model": model.state_dict(),
        "optimizer": {},
        "scheduler": {},
        "epoch": 1,
        "best_val": best,
        "history": [row],
        "rng_state": torch.get_rng_state(),
    }
    save_best(state, out / "best.pt")
    write_metrics(out / "metrics.csv", [row])
    atomic_save(state, out / "current.pt")
    log(f"{base['model_kind']}: train rmse_K {row['train_rmse_k']:.3f}  val rmse_K {row['val_rmse_k']:.3f}")
    return {"best_val": best, "epochs": 1, "resumed_from": None, "out_dir": str(out), "device": str(dev)}
