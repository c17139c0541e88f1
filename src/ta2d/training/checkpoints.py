"""What a run leaves on disk, and whether a rerun may continue from it.

  metrics.csv  one row per epoch (METRIC_COLUMNS), rewritten atomically after every epoch.
  best.pt      self-contained (ta2d.models.load_model(best.pt) alone predicts); written when the score
               improves, with a hidden hard link .best.pt.keep so a resumed run can restore it.
  current.pt   after every epoch, for resuming. For a clay_transfer run with frozen encoder weights
               (finetune: frozen, or the blocks below the last k of finetune: last_k) it holds only the
               trainable part (the frozen ``encoder.*`` weights are rebuilt from the run config, a seeded
               random init, clay_ckpt_path or encoder_from) plus ``encoder_fingerprint`` of the frozen part,
               so a rerun can check that the rebuilt weights are the ones the run trained with. A full
               fine-tune's current.pt holds the whole model.

A rerun continues from current.pt only when the data fingerprint, the run config (all keys but
_NOT_IDENTITY), the normalisation stats and the encoder fingerprint match (``resume_mismatch``), and only
from a current.pt whose tensors match their CRCs: both files carry ``crc32``, the CRC-32 of every tensor by
dotted path (ta2d.checksums), as every product does.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ta2d.atomic import atomic_path
from ta2d.checksums import pt_checksum_problems, tensor_checksum_problems
from ta2d.checksums import save_with_checksums as atomic_save  # atomic, with the CRC of every tensor
from ta2d.training.embed import file_digest, tensor_digest
from ta2d.training.run_config import run_identity

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
ENCODER_PREFIX = "encoder."

def data_fingerprint(train_chunks: Sequence[str | Path], val_chunks: Sequence[str | Path] = ()) -> str:
    """Hash of the names and contents of the training (and validation) chunks."""
    h = hashlib.blake2b(digest_size=20)
    for split, paths in (("train", train_chunks), ("val", val_chunks)):
        for p in sorted(paths, key=lambda q: Path(q).name):
            h.update(f"{split}/{Path(p).name}/{file_digest(p)}\n".encode())
    return h.hexdigest()


def encoder_fingerprint(encoder: nn.Module, keys: Collection[str] | None = None) -> str:
    """Hash of an encoder's weights (names, shapes, dtypes, bytes), of all or of the state-dict ``keys`` (names
    inside the encoder); the device does not enter it."""
    h = hashlib.blake2b(digest_size=20)
    for k, v in sorted(encoder.state_dict().items()):
        if keys is not None and k not in keys:
            continue
        h.update(k.encode())
        tensor_digest(h, v)
    return h.hexdigest()


def frozen_encoder_keys(model: nn.Module) -> list[str]:
    """Model state-dict keys of the encoder's frozen weights (``encoder.`` prefix; all of a frozen encoder, the
    blocks below the last k of finetune: last_k, none of a fully fine-tuned one or a model without encoder)."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        return []
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    return [ENCODER_PREFIX + k for k in encoder.state_dict() if k not in trainable]


def frozen_fingerprint(model: nn.Module, frozen_keys: Collection[str]) -> str | None:
    """encoder_fingerprint of the frozen part (None when nothing is frozen): what current.pt keeps instead of it."""
    if not frozen_keys:
        return None
    return encoder_fingerprint(model.encoder, {k[len(ENCODER_PREFIX):] for k in frozen_keys})


def trainable_state(state: Mapping[str, torch.Tensor], frozen_keys: Collection[str] | None = None
                    ) -> dict[str, torch.Tensor]:
    """A model state dict without the frozen encoder weights (``frozen_keys``; None: every ``encoder.`` key):
    what current.pt keeps of a run with a frozen encoder or frozen encoder blocks."""
    if frozen_keys is None:
        return {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    frozen = set(frozen_keys)
    return {k: v for k, v in state.items() if k not in frozen}


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], partial: bool,
                     frozen_keys: Collection[str] | None = None) -> None:
    """Load a checkpoint's weights; ``partial``: all but the frozen encoder weights (``frozen_keys``; None: any
    ``encoder.`` key), which the model already has."""
    if not partial:
        model.load_state_dict(state)
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed = set(frozen_keys) if frozen_keys is not None else None
    bad = [k for k in missing if (k not in allowed if allowed is not None else not k.startswith(ENCODER_PREFIX))]
    if bad or unexpected:
        raise RuntimeError(f"checkpoint does not fit the model: missing {bad}, unexpected {list(unexpected)}")


def epoch_state(base: Mapping, model_state: Mapping, opt, sched, scaler, epoch: int, history: Sequence) -> dict:
    """What a checkpoint holds after an epoch (train and pretrain alike): the run's identity (``base``), the
    weights, the optimizer, scheduler and grad-scaler states, the epoch, the history and the RNG state."""
    return {
        **base,
        "model": model_state,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "history": history,
        "rng_state": torch.get_rng_state(),
    }


def write_metrics(path: Path, rows: Sequence[Mapping], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    """metrics.csv of a run (or of a pretrain run, with its own columns), written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in columns})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _keep_path(best_path: Path) -> Path:
    return best_path.with_name(f".{best_path.name}.keep")


def save_best(state: dict, best_path: Path) -> None:
    """Write best.pt and a hidden hard link to it (.best.pt.keep, no extra disk).

    Snakemake deletes a job's declared outputs before rerunning it; the link lets a resumed run
    restore best.pt even when no later epoch beats it.
    """
    atomic_save(state, best_path)
    with atomic_path(_keep_path(best_path)) as tmp:
        tmp.unlink()
        os.link(best_path, tmp)


def restore_best(best_path: Path) -> None:
    """Link best.pt back from .best.pt.keep when it is missing (see save_best), after checking the CRCs of the
    kept copy: the two are one file, so a damaged best.pt is a damaged keep, and relinking it would rebuild
    nothing."""
    keep = _keep_path(best_path)
    if not best_path.exists() and keep.exists():
        damaged = pt_checksum_problems(keep).problems
        if damaged:
            current = best_path.with_name("current.pt")
            raise ValueError(f"{keep} (the kept best.pt of {best_path.parent}): {'; '.join(damaged)}; delete it "
                             f"and {current} to train the run again from the start")
        with atomic_path(best_path) as tmp:
            tmp.unlink()
            os.link(keep, tmp)


def read_checkpoint(path: Path) -> tuple[dict | None, str | None]:
    """(checkpoint, None), or (None, why it cannot be read or its tensors do not match their CRCs)."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        return None, f"it cannot be read ({e})"
    damaged = tensor_checksum_problems(ck).problems
    if damaged:
        return None, f"its bytes changed on disk ({'; '.join(damaged)})"
    return ck, None


def resume_mismatch(ck: Mapping, base: Mapping, encoder_fp: str | None = None) -> str | None:
    """Why checkpoint ``ck`` does not belong to the run described by ``base`` (None: it does).

    ``base`` holds the run's data_fingerprint, (resolved) run_config and stats; ``encoder_fp`` the
    fingerprint of the rebuilt frozen encoder, checked when the checkpoint left the encoder out.
    """
    cfg = base["run_config"]
    if ck.get("data_fingerprint") != base["data_fingerprint"]:
        return "the training/validation chunks changed"
    if run_identity(ck.get("run_config", {})) != run_identity(cfg):
        diff = sorted(k for k in run_identity(cfg) if ck.get("run_config", {}).get(k) != cfg[k])
        return f"the run config changed ({', '.join(diff) or 'keys'})"
    if ck.get("stats") != base["stats"]:
        return "the normalisation stats changed"
    if "encoder_fingerprint" in ck and ck["encoder_fingerprint"] != encoder_fp:
        return (
            "the frozen encoder rebuilt from the run config (seeded init, clay_ckpt_path or encoder_from) differs "
            f"from the one it trained with (fingerprint {encoder_fp} vs {ck['encoder_fingerprint']})"
        )
    return None
