"""Training of one run (clay_transfer, cnn, ridge or gbt): loop, metrics, checkpoints, resume.

``train_run`` writes into out_dir:
  metrics.csv  one row per epoch: epoch, train_mse, val_mse, train_rmse_norm, val_rmse_norm,
               train_rmse_k, val_rmse_k, lr, seconds (MSE/RMSE norm on z-scored TA; RMSE_K = RMSE_norm*TA std)
  current.pt   after every epoch; best.pt when val MSE improves. Both hold model / optimizer / scheduler /
               epoch / best_val (as in the seed) plus stats, run_config, data_fingerprint, history, rng_state.
  embed/       embedding files (clay_transfer, frozen encoder, embed_cache), unless embed_dir is given.
A rerun resumes from current.pt when its run config, stats and data fingerprint match, else starts over;
a resumed run restores best.pt (from the hidden hard link .best.pt.keep) and metrics.csv if they were
deleted, as Snakemake does with a job's declared outputs before rerunning it. Declare best.pt and
metrics.csv as outputs, never current.pt.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ta2d.atomic import atomic_path, ensure_dir
from ta2d.atomic import atomic_torch_save as atomic_save
from ta2d.data import CHUNK_FIELDS, ChunkBatches, make_loader, open_chunk
from ta2d.embed import EMB_FIELDS, embed_chunks, file_digest
from ta2d.models import FEATURE_GROUPS, MODEL_KINDS, PATCH_MODES, PRESETS, build_model, default_waves

RUN_DEFAULTS: dict = {
    "model": "clay_transfer",  # clay_transfer | cnn | ridge | gbt
    "preset": "tiny",  # Clay size; large = the real v1.5 architecture
    "clay_ckpt_path": None,  # clay-v1.5.ckpt (Lightning) or an encoder-only state dict; None = random init
    "waves_um": None,  # 16 wavelengths (µm) in x channel order; None = ta2d.channels effective centres
    "patch_mode": "area8",  # area8 | crop8 | bilinear16: how the 9x9 patch meets Clay's patch size 8
    "pool": "cls_mean",  # cls | cls_mean: encoder features given to the head
    "head_hidden": 256,
    "cnn_channels": [32, 64],
    "ridge_alpha": 1.0,
    "gbt_num_leaves": 63,  # gbt: LightGBM on ta2d.models.hand_features, early stopping on the val chunks
    "gbt_learning_rate": 0.05,
    "gbt_max_rounds": 2000,
    "gbt_early_stopping": 100,  # rounds without val improvement; 0 = off (no val chunks: off)
    "gbt_min_data_in_leaf": 20,
    "gbt_feature_fraction": 0.8,
    "gbt_bagging_fraction": 0.8,
    "gbt_num_threads": 2,  # as the train rule's threads; results are reproducible for a given value
    "freeze_encoder": True,
    "embed_cache": True,  # frozen encoder: embed each chunk once, train the head on the embeddings
    "epochs": 20,  # the schedule's length; early stopping may end a run sooner (README: how chosen)
    "batch_size": 256,
    "lr": 2e-3,  # peak learning rate (after warm-up)
    "encoder_lr": 1e-5,  # used when freeze_encoder is false
    "weight_decay": 0.01,  # AdamW, decoupled
    "scheduler": "warmup_cosine",  # warmup_cosine | onecycle | cosine | none; stepped per batch
    "warmup_epochs": 1.0,  # linear warm-up (warmup_cosine; onecycle warms up over 30 % of the steps)
    "patience": 10,  # epochs without a better val RMSE before stopping; 0 = run all epochs
    "grad_clip": 1.0,  # max global gradient norm; 0 = off
    "drop_features": [],  # input groups this run does not see (ta2d.models.FEATURE_GROUPS), e.g. [doy]
    "amp": True,  # autocast on CUDA only
    "amp_dtype": "bfloat16",  # bfloat16 | float16 (float16 uses a GradScaler)
    "tf32": True,  # TF32 matmul/cudnn on CUDA
    "num_workers": 0,
    "shuffle_files": True,
    "shuffle_within_file": True,
    "mix_files": 0,  # files shuffled together: 0 = all (global shuffle), N = blocks of N files
    "seed": 42,
    "device": "auto",  # auto | cpu | cuda | cuda:N | mps
}
SCHEDULERS = ("warmup_cosine", "onecycle", "cosine", "none")
# Keys that may differ between a killed run and its restart without breaking "the same run".
_NOT_IDENTITY = ("num_workers", "device")
METRIC_COLUMNS = (
    "epoch",
    "train_mse",
    "val_mse",
    "train_rmse_norm",
    "val_rmse_norm",
    "train_rmse_k",
    "val_rmse_k",
    "lr",
    "seconds",
)


def resolve_run_config(cfg: Mapping) -> dict:
    """Defaults filled in, unknown keys and bad values refused; waves_um made explicit."""
    unknown = sorted(set(cfg) - set(RUN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown run config keys {unknown}; known: {sorted(RUN_DEFAULTS)}")
    out = {**RUN_DEFAULTS, **cfg}
    for key, allowed in (
        ("model", MODEL_KINDS),
        ("preset", tuple(PRESETS)),
        ("patch_mode", tuple(PATCH_MODES)),
        ("pool", ("cls", "cls_mean")),
        ("scheduler", SCHEDULERS),
        ("amp_dtype", ("bfloat16", "float16")),
    ):
        if out[key] not in allowed:
            raise ValueError(f"run config {key}={out[key]!r}; choose one of {list(allowed)}")
    out["waves_um"] = [float(w) for w in (out["waves_um"] or default_waves())]
    out["cnn_channels"] = [int(c) for c in out["cnn_channels"]]
    unknown_groups = sorted(set(out["drop_features"]) - set(FEATURE_GROUPS))
    if unknown_groups:
        raise ValueError(f"run config drop_features: unknown groups {unknown_groups}; known: {list(FEATURE_GROUPS)}")
    out["drop_features"] = sorted(set(out["drop_features"]))
    if out["clay_ckpt_path"] is not None:
        out["clay_ckpt_path"] = str(out["clay_ckpt_path"])
    return out


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    if spec not in (None, "auto"):
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds the legacy global state other code may use
    torch.manual_seed(seed)


def load_stats(stats: Mapping | str | Path, train_chunks: Sequence[str | Path] = ()) -> dict:
    """stats.json (or its dict); loc_mean/loc_std (lat, lon) are added from the training chunks if absent."""
    if not isinstance(stats, Mapping):
        stats = json.loads(Path(stats).read_text())
    out = {k: stats[k] for k in ("x_mean", "x_std", "y_mean", "y_std", "loc_mean", "loc_std") if k in stats}
    if "loc_mean" not in out and train_chunks:
        loc = torch.cat([open_chunk(p, ["loc"])["loc"][:, :2].double() for p in train_chunks])
        out["loc_mean"] = loc.mean(0).tolist()
        out["loc_std"] = loc.std(0).nan_to_num(1.0).tolist() if len(loc) > 1 else [1.0, 1.0]
    return out


def data_fingerprint(train_chunks: Sequence[str | Path], val_chunks: Sequence[str | Path] = ()) -> str:
    """Hash of the names and contents of the training (and validation) chunks."""
    h = hashlib.blake2b(digest_size=20)
    for split, paths in (("train", train_chunks), ("val", val_chunks)):
        for p in sorted(paths, key=lambda q: Path(q).name):
            h.update(f"{split}/{Path(p).name}/{file_digest(p)}\n".encode())
    return h.hexdigest()


def write_metrics(path: Path, rows: Sequence[Mapping]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in METRIC_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


@torch.no_grad()
def evaluate(model, batches, device: torch.device, autocast=nullcontext) -> float:
    """Sample-weighted MSE of the normalised TA over all batches (nan when there are none)."""
    model.eval()
    se, n = 0.0, 0
    for batch in batches:
        batch = _to(batch, device)
        with autocast():
            pred = model(batch).float()
        se += float(((pred - model.normalizer.norm_y(batch["y"])) ** 2).sum())
        n += len(pred)
    return se / n if n else float("nan")


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


def _stale_epochs(history: Sequence[Mapping]) -> int:
    """Epochs since the best validation MSE (train MSE without validation data)."""
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


def _save_best(state: dict, best_path: Path) -> None:
    """Write best.pt and a hidden hard link to it (.best.pt.keep, no extra disk).

    Snakemake deletes a job's declared outputs before rerunning it; the link lets a resumed run
    restore best.pt even when no later epoch beats it.
    """
    atomic_save(state, best_path)
    keep = best_path.with_name(f".{best_path.name}.keep")
    with atomic_path(keep) as tmp:
        tmp.unlink()
        os.link(best_path, tmp)


def _restore_best(best_path: Path) -> None:
    keep = best_path.with_name(f".{best_path.name}.keep")
    if not best_path.exists() and keep.exists():
        with atomic_path(best_path) as tmp:
            tmp.unlink()
            os.link(keep, tmp)


def _identity(cfg: Mapping) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


def train_run(
    run_cfg: Mapping,
    train_chunks: Sequence[str | Path],
    val_chunks: Sequence[str | Path],
    stats: Mapping | str | Path,
    out_dir: str | Path,
    *,
    embed_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume) one run; returns {"best_val", "epochs", "resumed_from", "out_dir", "device"}.

    ``device`` overrides run_cfg["device"]. ``on_epoch_end(epoch, row)`` is called after the epoch's
    checkpoints are written (tests use it to simulate a kill).
    """
    cfg = resolve_run_config(run_cfg)
    out = ensure_dir(out_dir)
    dev = resolve_device(device if device is not None else cfg["device"])
    train_chunks, val_chunks = [str(p) for p in train_chunks], [str(p) for p in val_chunks]
    if not train_chunks:
        raise ValueError("train_run needs at least one training chunk")
    stats = load_stats(stats, train_chunks)
    fingerprint = data_fingerprint(train_chunks, val_chunks)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg["tf32"])
    amp_dtype = cfg["amp_dtype"] if cfg["amp"] and dev.type == "cuda" else None
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, amp_dtype))) if amp_dtype else nullcontext

    seed_everything(cfg["seed"])
    model = build_model(cfg, stats).to(dev)
    y_std = float(model.normalizer.y_std)

    # data: embedding files for a frozen, cached encoder; chunk files otherwise
    fields, train_files, val_files = CHUNK_FIELDS, train_chunks, val_chunks
    if cfg["model"] == "clay_transfer" and cfg["freeze_encoder"] and cfg["embed_cache"]:
        edir = Path(embed_dir) if embed_dir is not None else out / "embed"
        t0 = time.perf_counter()
        embed = functools.partial(embed_chunks, out_dir=edir, model=model, batch_size=max(cfg["batch_size"], 256),
                                  device=dev, amp_dtype=amp_dtype, progress=progress)
        train_files, n1 = embed(train_chunks)
        val_files, n2 = embed(val_chunks)
        log(
            f"embedding cache {edir}: {n1 + n2} of {len(train_files) + len(val_files)} chunks computed "
            f"in {time.perf_counter() - t0:.1f} s, the rest reused"
        )
        fields = EMB_FIELDS
    train_b = ChunkBatches(
        train_files,
        cfg["batch_size"],
        fields,
        cfg["shuffle_files"],
        cfg["shuffle_within_file"],
        cfg["mix_files"],
        cfg["seed"],
    )
    val_b = ChunkBatches(val_files, cfg["batch_size"], fields)
    loader = make_loader(train_b, cfg["num_workers"], pin_memory=dev.type == "cuda")
    val_loader = make_loader(val_b, cfg["num_workers"], pin_memory=dev.type == "cuda")

    base = {
        "stats": model.normalizer.stats(),
        "run_config": cfg,
        "data_fingerprint": fingerprint,
        "model_kind": cfg["model"],
        "format_version": 1,
    }
    cur_path, best_path = out / "current.pt", out / "best.pt"

    if cfg["model"] in FITTED_KINDS:
        return _fitted_run(model, train_b, val_loader, dev, base, out, y_std, log)

    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")], "lr": cfg["lr"]}
    ]
    if cfg["model"] == "clay_transfer" and not cfg["freeze_encoder"]:
        groups.append({"params": list(model.encoder.parameters()), "lr": cfg["encoder_lr"]})
    opt = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"])
    sched = make_scheduler(opt, cfg, steps_per_epoch=len(train_b))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == "float16")

    start, best_val, history = 1, float("inf"), []
    resumed_from = None
    if cur_path.exists():
        why = None
        try:
            ck = torch.load(cur_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            ck, why = None, f"it cannot be read ({e})"
        if ck is not None:
            if ck.get("data_fingerprint") != fingerprint:
                why = "the training/validation chunks changed"
            elif _identity(ck.get("run_config", {})) != _identity(cfg):
                diff = sorted(k for k in _identity(cfg) if ck.get("run_config", {}).get(k) != cfg[k])
                why = f"the run config changed ({', '.join(diff) or 'keys'})"
            elif ck.get("stats") != base["stats"]:
                why = "the normalisation stats changed"
        if why is None and ck is not None:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            if "scaler" in ck:
                scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng_state"])
            start, best_val, history = ck["epoch"] + 1, ck["best_val"], list(ck["history"])
            resumed_from = ck["epoch"]
            _restore_best(best_path)
            write_metrics(out / "metrics.csv", history)
            log(f"resuming {out} from current.pt at epoch {start} (best val MSE {best_val:.5f})")
        else:
            log(f"current.pt in {out} does not belong to this run: {why}; starting from scratch")
    if start > cfg["epochs"]:
        log(f"{out}: all {cfg['epochs']} epochs already done")

    for epoch in range(start, cfg["epochs"] + 1):
        if _stale_epochs(history) >= cfg["patience"] > 0:
            log(f"early stop: val RMSE has not improved for {cfg['patience']} epochs (best at epoch "
                f"{epoch - 1 - _stale_epochs(history)})")
            break
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        train_b.set_epoch(epoch)
        model.train()
        se, n = 0.0, 0
        bar = tqdm(
            loader,
            total=len(train_b),
            desc=f"epoch {epoch}/{cfg['epochs']} train",
            disable=not progress,
            leave=False,
        )
        for batch in bar:
            batch = _to(batch, dev)
            with autocast():
                pred = model(batch).float()
            loss = torch.nn.functional.mse_loss(pred, model.normalizer.norm_y(batch["y"]))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg["grad_clip"] > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            se += float(loss.detach()) * len(pred)
            n += len(pred)
            mse = se / n
            bar.set_postfix(
                loss=f"{mse:.4f}",
                rmse=f"{math.sqrt(mse):.4f}",
                rmse_K=f"{math.sqrt(mse) * y_std:.3f}",
                refresh=False,
            )
        val_mse = evaluate(
            model,
            tqdm(val_loader, total=len(val_b), desc="val", disable=not progress, leave=False),
            dev,
            autocast,
        )
        row = _row(epoch, se / max(n, 1), val_mse, y_std, lr, time.perf_counter() - t0)
        history.append(row)
        score = val_mse if val_b.n_samples else row["train_mse"]
        state = {
            **base,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "history": history,
            "rng_state": torch.get_rng_state(),
        }
        if score < best_val:  # best.pt before current.pt: a kill in between redoes this epoch
            best_val = score
            _save_best({**state, "best_val": best_val}, best_path)
        write_metrics(out / "metrics.csv", history)
        atomic_save({**state, "best_val": best_val}, cur_path)
        log(
            f"epoch {epoch}: train rmse_K {row['train_rmse_k']:.3f}  val rmse_K {row['val_rmse_k']:.3f}  "
            f"({row['seconds']:.1f} s)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return {
        "best_val": best_val,
        "epochs": len(history),
        "resumed_from": resumed_from,
        "out_dir": str(out),
        "device": str(dev),
    }


FITTED_KINDS = ("ridge", "gbt")  # fitted in one call (closed form / boosting), not by gradient steps


def _fitted_run(model, train_b, val_loader, dev, base, out: Path, y_std: float, log) -> dict:
    """One fit (ridge: closed form in one pass; gbt: boosting, early stopping on the val chunks); written
    like a one-epoch run so evaluation treats it the same."""
    t0 = time.perf_counter()
    val = {"val_batches": (_to(b, dev) for b in val_loader)} if base["model_kind"] == "gbt" else {}
    model.fit((_to(b, dev) for b in train_b), **val)
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
    _save_best(state, out / "best.pt")
    write_metrics(out / "metrics.csv", [row])
    atomic_save(state, out / "current.pt")
    log(f"{base['model_kind']}: train rmse_K {row['train_rmse_k']:.3f}  val rmse_K {row['val_rmse_k']:.3f}")
    return {"best_val": best, "epochs": 1, "resumed_from": None, "out_dir": str(out), "device": str(dev)}


@torch.no_grad()
def predict_chunks(
    model, chunk_paths: Sequence[str | Path], batch_size: int = 4096, device: str | torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Predictions in °C for every sample of the chunks, in file order: y, y_pred, stn, time."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    b = ChunkBatches(chunk_paths, batch_size, CHUNK_FIELDS + ("stn", "time"))
    outs: dict[str, list] = {"y": [], "y_pred": [], "stn": [], "time": []}
    for batch in b:
        pred = model.normalizer.denorm_y(model(_to(batch, dev)).float()).cpu()
        outs["y_pred"].append(pred)
        for k in ("y", "stn", "time"):
            outs[k].append(batch[k])
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
