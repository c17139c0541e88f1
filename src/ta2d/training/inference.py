"""What using a model needs, without the training loop: the device, batches on it, stats, predictions.

Imported by evaluation (ta2d.evaluation.samples), maps (ta2d.predict) and the embedding cache (ta2d.training.embed) as
well as by the loop; it never imports the loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ta2d.chunks.loader import CHUNK_FIELDS, ChunkBatches, open_chunk


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): cuda > mps > cpu; anything else as torch.device understands it."""
    if spec not in (None, "auto"):
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(requested: str | None, device: torch.device) -> str | None:
    """The autocast dtype a run uses on ``device``: None off CUDA; bfloat16 only where the GPU has it natively
    (Ampere and later; older GPUs would emulate it slowly), else float16 (with a GradScaler in training)."""
    if requested is None or device.type != "cuda":
        return None
    if requested == "bfloat16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return "float16"
    return requested


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's tensors on ``device`` (non-blocking to CUDA: the loader pins memory there)."""
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


def load_stats(stats: Mapping | str | Path, train_chunks: Sequence[str | Path] = ()) -> dict:
    """stats.json (or its dict); loc_mean/loc_std (lat, lon) are added from the training chunks if absent."""
    if not isinstance(stats, Mapping):
        stats = json.loads(Path(stats).read_text())
    keys = ("x_mean", "x_std", "y_mean", "y_std", "loc_mean", "loc_std", "background_mean", "background_std")
    out = {k: stats[k] for k in keys if k in stats}  # the background's: a model built with it takes it as input
    if "loc_mean" not in out and train_chunks:
        loc = torch.cat([open_chunk(p, ["loc"])["loc"][:, :2].double() for p in train_chunks])
        out["loc_mean"] = loc.mean(0).tolist()
        out["loc_std"] = loc.std(0).nan_to_num(1.0).tolist() if len(loc) > 1 else [1.0, 1.0]
    return out


# Samples per forward pass when a trained model predicts (evaluation, dense maps); memory is one batch's
# activations. The patch-by-patch maps have their own setting, maps.batch_size.
INFERENCE_BATCH_SIZE = 4096


@torch.no_grad()
def predict_chunks(
    model, chunk_paths: Sequence[str | Path], batch_size: int = INFERENCE_BATCH_SIZE,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Predictions in °C for every sample of the chunks, in file order: y, y_pred, stn, time."""
    from ta2d.models import input_fields

    dev = resolve_device(device)
    model = model.to(dev).eval()
    b = ChunkBatches(chunk_paths, batch_size, input_fields(model, CHUNK_FIELDS + ("stn", "time")))
    outs: dict[str, list] = {"y": [], "y_pred": [], "stn": [], "time": []}
    for batch in b:
        pred = model.normalizer.denorm_y(model(to_device(batch, dev)).float()).cpu()
        outs["y_pred"].append(pred)
        for k in ("y", "stn", "time"):
            outs[k].append(batch[k])
    return {k: torch.cat(v) if v else torch.empty(0) for k, v in outs.items()}
