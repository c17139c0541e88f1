"""A run's settings: defaults (from the config schema), allowed values, and which keys make "the same run".

The defaults and allowed values live in one place, the config schema (``train.runs.<run>`` in
src/ta2d/schemas/config.schema.yaml), and one function resolves a run against it, ta2d.config.resolve_run:
the config's validation checks every run with it before any job runs, the workflow hands a job only the
settings that differ from the defaults (ta2d.config.job_params), and the job resolves them again here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ta2d.config import resolve_run, run_defaults
from ta2d.models import default_waves

RUN_DEFAULTS: dict = run_defaults("train")
SCHEDULERS = ("warmup_cosine", "onecycle", "cosine", "none")
# Keys that may differ between a killed run and its restart without breaking "the same run": how and where
# it computes, not what. gpus: a data-parallel run has the loss trajectory of one process on the same global
# batch (to floating-point tolerance, as a change of device), tests/training/test_distributed.py checks it.
_NOT_IDENTITY = ("num_workers", "device", "gpus", "compile")
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
    """:func:`ta2d.config.resolve_run` (schema defaults, allowed values, the checks the schema cannot make), then
    the values in the form the code uses: ``waves_um`` explicit (the preset's bands when null), integers,
    sorted feature groups.

    The legacy key freeze_encoder is accepted here (not in a config file) as an alias of finetune."""
    out = resolve_run(_apply_legacy_freeze(cfg), "train")
    out["waves_um"] = [float(w) for w in (out["waves_um"] or default_waves())]
    out["cnn_channels"] = [int(c) for c in out["cnn_channels"]]
    out["drop_features"] = sorted(set(out["drop_features"]))
    return out


def run_identity(cfg: Mapping) -> dict:
    """The keys of a resolved run config that must match for a restart to continue a killed run."""
    return {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}
