"""Self-supervised pretraining of the Clay encoder on unlabelled tiles (one job of rule pretrain).

``pretrain_run`` trains ta2d.models.mae.ClayMAE (masked autoencoder + representation loss) on
results/unlabeled/{key}.pt files and writes into out_dir:

  encoder.ckpt  Lightning-shaped: {"state_dict": {"model.encoder.*", "model.decoder.*" (+ "model.proj.*" with
                the clay teacher)}, "hyper_parameters": {...}}; ta2d.models.load_clay_checkpoint reads it
                exactly like clay-v1.5.ckpt, and a train run names it with ``encoder_from``.
  metrics.csv   one row per epoch: epoch, loss, rec, rep, lr, seconds (training means).
  current.pt    after every epoch (atomic; not a declared output): the student, decoder, heads and EMA
                teacher (not a frozen clay teacher: rebuilt from clay_ckpt_path), optimizer, scheduler, scaler,
                history, RNG state. A rerun continues from it when the run config (all keys but device),
                the x statistics and a hash of the tiles match, else starts over.

Tiles are normalised with the stats of the labelled training split (results/stats.json), the same
x_mean/x_std the transfer model applies, so the pretrained encoder sees the inputs it will see there.
The tile order and the masks of an epoch depend only on (seed, epoch): a resumed CPU run ends with the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ta2d.atomic import atomic_torch_save, ensure_dir
from ta2d.channels import ALL_CHANNELS
from ta2d.chunks.loader import open_chunk
from ta2d.config import resolve_run, run_defaults
from ta2d.models import Normalizer, clay_encoder, default_waves
from ta2d.models.clay import clay_time_latlon
from ta2d.models.mae import ClayDecoder, ClayMAE, load_clay_teacher, load_state_slice
from ta2d.models.ta_model import N_SPECTRAL, clay_grid_gsd, clay_grid_side, to_clay_grid
from ta2d.training.checkpoints import data_fingerprint, epoch_state, read_checkpoint, write_metrics
from ta2d.training.inference import load_stats, resolve_device

TILE_FIELDS = ("x", "time7", "loc")
METRIC_COLUMNS = ("epoch", "loss", "rec", "rep", "lr", "seconds")
RGB_CHANNELS = ("vi006", "vi005", "vi004")  # the AMI bands closest to red, green, blue: the clay teacher's input
_NOT_IDENTITY = ("device",)


PRETRAIN_DEFAULTS: dict = run_defaults("pretrain")


def resolve_pretrain_config(cfg: Mapping) -> dict:
    """:func:`ta2d.config.resolve_run` on the schema's pretrain run entry (defaults, allowed values, the teacher
    check), then ``waves_um`` made explicit (the preset's bands when null)."""
    out = resolve_run(cfg, "pretrain")
    out["waves_um"] = [float(w) for w in (out["waves_um"] or default_waves())]
    return out


class TileBatches:
    """Batches of (x, time7, loc) over memory-mapped tile files: a global shuffle seeded by (seed, epoch)."""

    def __init__(self, paths: Sequence[str | Path], batch_size: int, seed: int = 0):
        self.files = [open_chunk(p, TILE_FIELDS) for p in paths]
        sizes = torch.tensor([len(f["x"]) for f in self.files], dtype=torch.int64)
        self.ends = torch.cumsum(sizes, 0)
        self.n, self.batch_size, self.seed = int(sizes.sum()), int(batch_size), int(seed)
        self.patch_size = next((int(f["x"].shape[-1]) for f in self.files if len(f["x"])), None)
        if len({int(f["x"].shape[-1]) for f in self.files}) > 1:
            raise ValueError("tile files of different tile sizes (rebuild them with one pretrain.patch_size)")

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def epoch(self, epoch: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.n, generator=g)
        for lo in range(0, self.n, self.batch_size):
            ids = order[lo : lo + self.batch_size].sort().values
            fid = torch.searchsorted(self.ends, ids, right=True)
            parts = []
            for f in fid.unique().tolist():
                local = ids[fid == f] - (self.ends[f - 1] if f else 0)
                parts.append({k: self.files[f][k].index_select(0, local) for k in TILE_FIELDS})
            yield {k: torch.cat([p[k] for p in parts]) for k in TILE_FIELDS}


def tile_inputs(batch: Mapping[str, torch.Tensor], norm: Normalizer, patch_mode: str):
    """Encoder inputs of a batch of tiles, built as ClayTransfer.embed builds them: pixels, time, latlon, gsd."""
    pixels = to_clay_grid(norm.norm_x(batch["x"])[:, :N_SPECTRAL], patch_mode)
    time_, latlon = clay_time_latlon(batch["time7"], batch["loc"])
    gsd = clay_grid_gsd(batch["loc"][:, 2].mean(), batch["x"].shape[-1], patch_mode)
    return pixels, time_, latlon, gsd


def build_mae(cfg: Mapping, load_weights: bool = True) -> ClayMAE:
    """The ClayMAE of a resolved pretrain config, on the CPU, initialised from ``torch.manual_seed(cfg['seed'])``.

    With clay_ckpt_path the encoder loads through load_clay_checkpoint, the decoder and proj from the same
    file when it has them (strictly), and teacher clay takes its ``model.teacher.*``.
    """
    torch.manual_seed(int(cfg["seed"]))
    ckpt_path = cfg["clay_ckpt_path"]
    encoder = clay_encoder(cfg["preset"], ckpt_path or None, load_weights=load_weights)
    decoder = ClayDecoder.from_preset(cfg["preset"], encoder.dim)
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True) if ckpt_path else {}
    if ckpt and load_weights:
        load_state_slice(decoder, ckpt, "model.decoder.", ckpt_path, "the Clay decoder")
        decoder.float()
    teacher = load_clay_teacher(ckpt_path) if cfg["teacher"] == "clay" else None
    mae = ClayMAE(
        encoder,
        decoder,
        mask_ratio=cfg["mask_ratio"],
        teacher=cfg["teacher"],
        rep_weight=cfg["rep_weight"],
        rep_pool=cfg["rep_pool"],
        head_dim=cfg["head_dim"],
        clay_teacher=teacher,
        rgb_indices=[ALL_CHANNELS.index(c) for c in RGB_CHANNELS],
        teacher_size=cfg["teacher_size"],
    )
    if cfg["teacher"] == "clay" and load_weights:
        load_state_slice(mae.proj, ckpt, "model.proj.", ckpt_path, "Clay's projection to the teacher")
        mae.proj.float()
    return mae


def warmup_cosine(opt, epochs: int, warmup_epochs: float, steps_per_epoch: int):
    """Per-batch schedule: linear warm-up over ``warmup_epochs``, then cosine to 0 at the end of ``epochs``."""
    total = max(epochs * max(steps_per_epoch, 1), 1)
    warm = int(round(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, total - warm) / max(total - warm, 1)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def identity(cfg: Mapping) -> dict:
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}


def resume_mismatch(ck: Mapping, base: Mapping) -> str | None:
    """Why current.pt ``ck`` does not belong to the run described by ``base`` (None: it does)."""
    if ck.get("data_fingerprint") != base["data_fingerprint"]:
        return "the tile files changed"
    old, new = identity(ck.get("run_config", {})), identity(base["run_config"])
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        return f"the pretrain config changed ({', '.join(diff) or 'keys'})"
    if ck.get("x_stats") != base["x_stats"]:
        return "the normalisation stats changed"
    return None


def pretrain_run(
    run_cfg: Mapping,
    tile_files: Sequence[str | Path],
    stats: Mapping | str | Path,
    out_dir: str | Path,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Pretrain (or resume) one run; returns {"epochs", "resumed_from", "loss", "out_dir", "device"}.

    ``stats``: stats.json (path or dict) with x_mean/x_std; ``on_epoch_end(epoch, row)`` runs after the
    epoch's current.pt is written (tests use it to simulate a kill).
    """
    cfg = resolve_pretrain_config(run_cfg)
    out = ensure_dir(out_dir)
    dev = resolve_device(device if device is not None else cfg["device"])
    tile_files = [str(p) for p in tile_files]
    stats = load_stats(stats)
    norm = Normalizer.from_stats(stats)
    data = TileBatches(tile_files, cfg["batch_size"], cfg["seed"])
    if data.n == 0:
        raise ValueError("pretrain_run: the tile files hold no tiles (check the scenes' slot status and "
                         "pretrain.exclude_test_days)")
    n_tokens = (clay_grid_side(data.patch_size, cfg["patch_mode"]) // 8) ** 2
    n_mask = int(cfg["mask_ratio"] * n_tokens)
    if not 1 <= n_mask < n_tokens:
        raise ValueError(
            f"{data.patch_size}x{data.patch_size} tiles with patch_mode {cfg['patch_mode']} give {n_tokens} patch "
            f"token(s), of which mask_ratio {cfg['mask_ratio']} hides {n_mask}: masking needs at least one hidden "
            "and one visible token (pretrain.patch_size 17 or 33 with patch_mode area, or bilinear16)"
        )
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg["tf32"])
    amp_dtype = cfg["amp_dtype"] if cfg["amp"] and dev.type == "cuda" else None
    autocast = (lambda: torch.autocast("cuda", dtype=getattr(torch, amp_dtype))) if amp_dtype else nullcontext

    mae = build_mae(cfg)
    norm, waves = norm.to(dev), torch.tensor(cfg["waves_um"], dtype=torch.float32, device=dev)
    mae = mae.to(dev)
    params = [p for p in mae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.95))
    sched = warmup_cosine(opt, cfg["epochs"], cfg["warmup_epochs"], len(data))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == "float16")
    base = {
        "run_config": cfg,
        "x_stats": {"x_mean": norm.x_mean.tolist(), "x_std": norm.x_std.tolist()},
        "data_fingerprint": data_fingerprint(tile_files),
        "format_version": 1,
    }
    cur_path = out / "current.pt"
    start, history, resumed_from = 1, [], None
    if cur_path.exists():
        ck, why = read_checkpoint(cur_path)
        if ck is not None:
            why = resume_mismatch(ck, base)
        if why is None:
            missing, unexpected = mae.load_state_dict(ck["model"], strict=False)
            bad = [k for k in missing if not (cfg["teacher"] == "clay" and k.startswith("teacher."))]
            if bad or unexpected:
                raise RuntimeError(f"{cur_path} does not fit the model: missing {bad}, unexpected {unexpected}")
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
            torch.set_rng_state(ck["rng_state"])
            start, history, resumed_from = ck["epoch"] + 1, list(ck["history"]), ck["epoch"]
            write_metrics(out / "metrics.csv", history, METRIC_COLUMNS)
            log(f"resuming {out} from current.pt at epoch {start}")
        else:
            log(f"current.pt in {out} does not belong to this run: {why}; starting from scratch")

    log(f"pretraining {cfg['preset']} Clay on {data.n} tiles of {data.patch_size}x{data.patch_size} "
        f"({n_tokens} tokens, {n_mask} hidden), teacher {cfg['teacher']}, on {dev}")
    for epoch in range(start, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        mask_gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + epoch + 7)
        mae.train()
        sums, n = {"loss": 0.0, "rec": 0.0, "rep": 0.0}, 0
        bar = tqdm(data.epoch(epoch), total=len(data), desc=f"pretrain epoch {epoch}/{cfg['epochs']}",
                   disable=not progress, leave=False)
        for batch in bar:
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            pixels, time_, latlon, gsd = tile_inputs(batch, norm, cfg["patch_mode"])
            with autocast():
                losses = mae(pixels, time_, latlon, gsd, waves, generator=mask_gen)
            opt.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if cfg["grad_clip"] > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            mae.update_teacher(cfg["ema_momentum"])
            b = len(pixels)
            for k in sums:
                sums[k] += float(losses[k].detach()) * b
            n += b
            bar.set_postfix(loss=f"{sums['loss'] / n:.4f}", rec=f"{sums['rec'] / n:.4f}", refresh=False)
        row = {"epoch": epoch, **{k: v / max(n, 1) for k, v in sums.items()}, "lr": lr,
               "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        write_metrics(out / "metrics.csv", history, METRIC_COLUMNS)
        atomic_torch_save(epoch_state(base, mae.student_state(), opt, sched, scaler, epoch, history), cur_path)
        log(f"pretrain epoch {epoch}: loss {row['loss']:.4f}  rec {row['rec']:.4f}  rep {row['rep']:.4f}  "
            f"({row['seconds']:.1f} s)")
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    write_encoder_checkpoint(mae, cfg, base, history, out / "encoder.ckpt")
    return {"epochs": len(history), "resumed_from": resumed_from, "loss": history[-1]["loss"] if history else None,
            "out_dir": str(out), "device": str(dev)}


def write_encoder_checkpoint(mae: ClayMAE, cfg: Mapping, base: Mapping, history: Sequence[Mapping],
                             path: str | Path) -> None:
    """encoder.ckpt: the Lightning layout of clay-v1.5.ckpt (tensors under "state_dict", plain
    hyper_parameters), so load_clay_checkpoint / torch.load(weights_only=True) read it."""
    hp = {
        "model_size": cfg["preset"],
        "mask_ratio": cfg["mask_ratio"],
        "patch_size": mae.encoder.patch_size,
        "teacher": cfg["teacher"],
        "ta2d_pretrain": dict(cfg),
        "x_stats": base["x_stats"],
        "epochs_done": len(history),
        "final_loss": history[-1]["loss"] if history else None,
    }
    atomic_torch_save({"state_dict": mae.lightning_state_dict(), "hyper_parameters": hp}, path)
