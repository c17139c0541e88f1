"""A run's settings: defaults (from the config schema), allowed values, and which keys make "the same run".

The defaults live in one place, the config schema (``train.runs.<run>`` in
src/ta2d/schemas/config.schema.yaml): Snakemake's config validation fills them in, and
``resolve_run_config`` fills in the same values for callers that pass a run config directly (tests,
benchmarks, notebooks). ``resolve_run_config`` also makes the checks the schema does not (the allowed
values as the code knows them, feature groups) and makes ``waves_um`` explicit.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from ta2d.config import finetune_problems, run_defaults
from ta2d.models import CNN_PADDINGS, FEATURE_GROUPS, MODEL_KINDS, PATCH_MODES, POOLS, PRESETS, default_waves

RUN_DEFAULTS: dict = run_defaults("train")
SCHEDULERS = ("warmup_cosine", "onecycle", "cosine", "none")
# Keys that may differ between a killed run and its restart without breaking "the same run": how and where
# it computes, not what. gpus: a data-parallel run has the loss trajectory of one process on the same global
# batch (to floating-point tolerance, as a change of device), tests/training/test_distributed.py checks it.
_NOT_IDENTITY = ("num_workers", "device", "gpus", "compile")
FITTED_KINDS = ("ridge", "gbt")  # fitted in one call (closed form / boosting), not by gradient steps
# The run key finetune replaced freeze_encoder. The config schema no longer has it (a config file that sets it
# fails validation, saying what replaced it); resolve_run_config still takes it from Python callers
# (benchmarks, notebooks) as an alias: true = frozen, false = full.
LEGACY_FREEZE_KEY = "freeze_encoder"


def _apply_legacy_freeze(cfg: Mapping) -> dict:
    """``cfg`` with freeze_encoder turned into finetune (a conflict with an explicit finetune is refused)."""
    cfg = dict(cfg)
    if LEGACY_FREEZE_KEY not in cfg:
        return cfg
    frozen = cfg.pop(LEGACY_FREEZE_KEY)
    if not isinstance(frozen, bool):
        raise ValueError(f"run config freeze_encoder={frozen!r}: a boolean (better: finetune: frozen|last_k|full)")
    implied = "frozen" if frozen else "full"
    if "finetune" in cfg and cfg["finetune"] != implied:
        raise ValueError(
            f"run config freeze_encoder={frozen} conflicts with finetune={cfg['finetune']!r}; freeze_encoder is "
            "the old name (true = finetune: frozen, false = finetune: full): set finetune only"
        )
    cfg["finetune"] = implied
    return cfg


def resolve_run_config(cfg: Mapping) -> dict:
    """Defaults filled in, unknown keys and bad values refused; waves_um made explicit.

    The legacy key freeze_encoder is accepted here (not in a config file) as an alias of finetune."""
    cfg = _apply_legacy_freeze(cfg)
    unknown = sorted(set(cfg) - set(RUN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown run config keys {unknown}; known: {sorted(RUN_DEFAULTS)}")
    out = {**copy.deepcopy(RUN_DEFAULTS), **cfg}
    for key, allowed in (
        ("model", MODEL_KINDS),
        ("preset", tuple(PRESETS)),
        ("patch_mode", tuple(PATCH_MODES)),
        ("pool", tuple(POOLS)),
        ("scheduler", SCHEDULERS),
        ("amp_dtype", ("bfloat16", "float16")),
        ("cnn_padding", CNN_PADDINGS),
    ):
        if out[key] not in allowed:
            raise ValueError(f"run config {key}={out[key]!r}; choose one of {list(allowed)}")
    problems = finetune_problems(out)
    if problems:
        raise ValueError("; ".join(f"run config {key}: {msg}" for key, msg in problems))
    if out["num_workers"] != "auto" and (isinstance(out["num_workers"], bool) or not isinstance(out["num_workers"], int)
                                          or out["num_workers"] < 0):
        raise ValueError(f"run config num_workers={out['num_workers']!r}; an integer >= 0 or 'auto'")
    if isinstance(out["gpus"], bool) or not isinstance(out["gpus"], int) or out["gpus"] < 1:
        raise ValueError(f"run config gpus={out['gpus']!r}; an integer >= 1")
    if out["gpus"] > 1 and out["model"] in FITTED_KINDS:
        raise ValueError(
            f"run config gpus={out['gpus']} with model {out['model']}: ridge and gbt are fitted in one process "
            "(no data parallelism); set gpus: 1"
        )
    out["waves_um"] = [float(w) for w in (out["waves_um"] or default_waves())]
    out["cnn_channels"] = [int(c) for c in out["cnn_channels"]]
    unknown_groups = sorted(set(out["drop_features"]) - set(FEATURE_GROUPS))
    if unknown_groups:
        raise ValueError(f"run config drop_features: unknown groups {unknown_groups}; known: {list(FEATURE_GROUPS)}")
    if "embedding" in out["drop_features"] and out["model"] != "clay_transfer":
        raise ValueError(f"run config drop_features: embedding is a clay_transfer input; model {out['model']} has none")
    out["drop_features"] = sorted(set(out["drop_features"]))
    if out["clay_ckpt_path"] is not None:
        out["clay_ckpt_path"] = str(out["clay_ckpt_path"])
    if out["encoder_from"] is not None:
        out["encoder_from"] = str(out["encoder_from"])
        if out["clay_ckpt_path"] is not None:
            raise ValueError("run config: set encoder_from or clay_ckpt_path, not both")
    return out


def run_identity(cfg: Mapping) -> dict:
    """The keys of a resolved run config that must match for a restart to continue a killed run."""
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}
