"""Training and using TA models, one module per job, in the order the data flows:

  run_config   a run's settings: RUN_DEFAULTS (from the config schema), resolve_run_config, identity keys
  inference    resolve_device, batches on the device, load_stats, predict_chunks (never imports the loop)
  checkpoints  metrics.csv, best.pt / current.pt (atomic, hard-linked keep), data_fingerprint, resume check
  loop         train_run: gradient models (clay_transfer, cnn) and fitted ones (ridge, gbt), schedules,
               early stopping, seeding
  head_basis   head_decorrelate: the principal axes of a Clay embedding on the train split, set before the
               first epoch
  pretrain     pretrain_run: self-supervised pretraining of the Clay encoder (ta2d.models.mae) on unlabelled
               tiles -> a Lightning-shaped encoder.ckpt that train runs load with encoder_from
  distributed  the rank side of data parallelism: a rank's share of every batch (RankBatches), sums across
               ranks; the one-process identities outside torchrun (the loop imports it)
  launch       launch: a run in this process (gpus: 1) or data-parallel under torchrun (gpus: N), whose
               ranks each call train_run (it imports the loop)

Names are loaded from their module on first use, so importing ``ta2d.training.inference`` (evaluation,
maps, the embedding cache) or ``ta2d.training.run_config`` never imports the loop: ta2d.training.embed imports
those two, and the loop imports ta2d.training.embed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "RUN_DEFAULTS": "run_config",
    "SCHEDULERS": "run_config",
    "resolve_run_config": "run_config",
    "load_stats": "inference",
    "predict_chunks": "inference",
    "resolve_device": "inference",
    "METRIC_COLUMNS": "checkpoints",
    "data_fingerprint": "checkpoints",
    "make_scheduler": "loop",
    "param_groups": "loop",
    "train_run": "loop",
    "launch": "launch",
    "PRETRAIN_DEFAULTS": "pretrain",
    "pretrain_run": "pretrain",
}
__all__ = [
    "METRIC_COLUMNS",
    "PRETRAIN_DEFAULTS",
    "RUN_DEFAULTS",
    "SCHEDULERS",
    "data_fingerprint",
    "launch",
    "load_stats",
    "make_scheduler",
    "param_groups",
    "predict_chunks",
    "pretrain_run",
    "resolve_device",
    "resolve_run_config",
    "train_run",
]

if TYPE_CHECKING:
    from .checkpoints import METRIC_COLUMNS, data_fingerprint
    from .inference import load_stats, predict_chunks, resolve_device
    from .launch import launch
    from .loop import make_scheduler, param_groups, train_run
    from .pretrain import PRETRAIN_DEFAULTS, pretrain_run
    from .run_config import RUN_DEFAULTS, SCHEDULERS, resolve_run_config


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
