"""TA models: Clay v1.5 encoder (clay.py), clay_transfer and CNN (ta_model.py), ridge baseline (ridge.py),
gradient-boosted trees on hand features (gbt.py, hand_features.py).

``build_model(cfg, stats)`` makes the model a resolved run config asks for (see ta2d.training.RUN_DEFAULTS);
``load_model(path)`` rebuilds it from a best.pt alone (or a current.pt, except that of a run with frozen
encoder weights, finetune: frozen or last_k, which leaves them out).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ta2d.config import encoder_from_path

from .clay import PRESETS, ClayCheckpointError, ClayEncoder, clay_encoder, load_clay_checkpoint
from .gbt import GBTModel
from .hand_features import hand_features
from .ridge import RidgeModel
from .ta_model import (
    CNN_PADDINGS,
    FEATURE_GROUPS,
    FINETUNE_MODES,
    PATCH_MODES,
    POOLS,
    ClayTransfer,
    Normalizer,
    PatchCNN,
    default_waves,
    input_fields,
    uses_background,
)

MODEL_KINDS = ("clay_transfer", "cnn", "gbt", "ridge")

__all__ = [
    "CNN_PADDINGS",
    "FEATURE_GROUPS",
    "FINETUNE_MODES",
    "MODEL_KINDS",
    "PATCH_MODES",
    "POOLS",
    "PRESETS",
    "ClayCheckpointError",
    "ClayEncoder",
    "ClayTransfer",
    "GBTModel",
    "Normalizer",
    "PatchCNN",
    "RidgeModel",
    "build_model",
    "clay_encoder",
    "default_waves",
    "hand_features",
    "input_fields",
    "load_clay_checkpoint",
    "load_model",
    "uses_background",
]


def build_model(cfg: Mapping, stats: Mapping, load_weights: bool = True) -> nn.Module:
    """The model of a resolved run config, on the CPU, initialised from ``torch.manual_seed(cfg['seed'])``.

    For clay_transfer with ``clay_ckpt_path`` (or ``encoder_from``: a pretrain run's
    results/pretrain/{name}/encoder.ckpt, see ta2d.config.encoder_from_path) the encoder is built on the
    meta device and the checkpoint's ``model.encoder.`` slice is loaded strictly into it (no 1.2 GB random init first);
    ``load_weights=False`` leaves that to the caller (e.g. load_model, which restores all weights).
    The model leaves out the input groups of ``cfg["drop_features"]`` (FEATURE_GROUPS).
    """
    model = _build(cfg, stats, load_weights)
    model.drop_features = tuple(cfg.get("drop_features") or ())
    return model


def _build(cfg: Mapping, stats: Mapping, load_weights: bool) -> nn.Module:
    kind = cfg["model"]
    torch.manual_seed(int(cfg["seed"]))
    norm = Normalizer.from_stats(stats)
    if kind == "ridge":
        return RidgeModel(norm, alpha=cfg["ridge_alpha"])
    if kind == "gbt":
        return GBTModel(norm, seed=cfg["seed"], **{k[4:]: v for k, v in cfg.items() if k.startswith("gbt_")})
    if kind == "cnn":
        # absent from checkpoints written before the key: those CNNs were zero-padded
        return PatchCNN(norm, channels=cfg["cnn_channels"], head_hidden=cfg["head_hidden"],
                        padding=cfg.get("cnn_padding", "same"))
    if kind != "clay_transfer":
        raise ValueError(f"unknown model {kind!r}; choose one of {MODEL_KINDS}")
    # resolved run configs never set both (ta2d.config.run_problems)
    ckpt = encoder_from_path(cfg["encoder_from"]) if cfg.get("encoder_from") else cfg.get("clay_ckpt_path")
    encoder = clay_encoder(cfg["preset"], ckpt or None, load_weights=load_weights)
    return ClayTransfer(
        norm,
        preset=cfg["preset"],
        waves=cfg["waves_um"],
        patch_mode=cfg["patch_mode"],
        pool=cfg["pool"],
        head_hidden=cfg["head_hidden"],
        finetune=finetune_mode(cfg),
        finetune_blocks=int(cfg.get("finetune_blocks", 1)),
        encoder=encoder,
        head_pixel=bool(cfg.get("head_pixel", False)),  # absent from checkpoints written before the key
        head_embed_dim=int(cfg.get("head_embed_dim", 0)),  # likewise
        head_decorrelate=bool(cfg.get("head_decorrelate", False)),  # likewise
    )


def finetune_mode(cfg: Mapping) -> str:
    """A run config's finetune; the run config of a checkpoint written before the key existed has
    freeze_encoder instead (true = frozen, false = full)."""
    if "finetune" in cfg:
        return cfg["finetune"]
    return "frozen" if cfg.get("freeze_encoder", True) else "full"


def load_model(path: str | Path, map_location="cpu") -> nn.Module:
    """Rebuild a trained model (eval mode) from a ta2d checkpoint: its run config, stats and weights."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    model = build_model(ckpt["run_config"], ckpt["stats"], load_weights=False)
    missing = [k for k in model.state_dict() if k not in ckpt["model"]]
    if ckpt.get("model_kind") == "clay_transfer" and missing and all(k.startswith("encoder.") for k in missing):
        what = "no encoder weights" if len(missing) == sum(k.startswith("encoder.") for k in model.state_dict()) \
            else f"only the trainable encoder weights ({len(missing)} frozen tensors left out)"
        raise ValueError(
            f"{path} holds {what}: the current.pt of a run with a frozen encoder (finetune: frozen) or frozen "
            "encoder blocks (last_k) keeps only the trainable part, for resuming; load the run's best.pt"
        )
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()
