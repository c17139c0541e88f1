"""`ta2d inspect FILE.pt [--idx N]`: what is in a chunk, and whether it meets the contract."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import torch

from .channels import X_CHANNELS
from .data import ChunkError, open_chunk

CONTRACT = {
    "x": ((19, 9, 9), torch.float32),
    "y": ((), torch.float32),
    "time7": ((7,), torch.float32),
    "loc": ((3,), torch.float32),
    "landcover_onehot": ((17,), torch.float32),
    "elev": ((), torch.float32),  # station elevation, m (the pixel DEM where the station table has none)
    "stn": ((), torch.int32),
    "time": ((), torch.int64),
    "pixel": ((2,), torch.int32),
}


def load_chunk(path: str | Path) -> dict:
    """Every tensor of a chunk, memory-mapped; ChunkError (a ValueError) naming the file when unusable.

    Unlike training, inspection reads the file even when its fields disagree in length, so that
    contract_problems can list what is wrong.
    """
    try:
        return open_chunk(path)
    except ChunkError as err:
        if "disagree" not in str(err):
            raise
        return {k: v for k, v in torch.load(path, weights_only=True, mmap=True).items() if isinstance(v, torch.Tensor)}


def contract_problems(data: dict, patch_size: int | None = None) -> list[str]:
    """What is wrong with a chunk's tensors against the contract; `patch_size` None = x's own odd size."""
    problems = []
    if patch_size is None:
        x = data.get("x")
        patch_size = int(x.shape[-1]) if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[-1] % 2 else 9
    n = None
    for key, (shape, dtype) in CONTRACT.items():
        if key == "x":
            shape = (19, patch_size, patch_size)
        t = data.get(key)
        if not isinstance(t, torch.Tensor):
            problems.append(f"key {key}: missing or not a tensor")
            continue
        n = t.shape[0] if n is None else n
        if t.dim() == 0 or tuple(t.shape[1:]) != shape or t.shape[0] != n:
            problems.append(f"key {key}: shape {tuple(t.shape)}, want (N, {', '.join(map(str, shape))})"
                            .replace(", )", ")"))
        if t.dtype != dtype and not (key == "x" and t.dtype == torch.float16):  # patch.x_dtype: float16
            problems.append(f"key {key}: dtype {t.dtype}, want {dtype}")
        elif t.is_floating_point() and not torch.isfinite(t).all():
            problems.append(f"key {key}: {int((~torch.isfinite(t)).sum())} non-finite values")
    if n == 0:
        problems.append("chunk holds no samples")
    return problems


def describe(data: dict, idx: int | None = None) -> str:
    lines = [f"{k:17s} {str(tuple(v.shape)):16s} {v.dtype}" for k, v in data.items() if isinstance(v, torch.Tensor)]
    n = data["y"].shape[0] if isinstance(data.get("y"), torch.Tensor) else 0
    lines.insert(0, f"{n} samples")
    if idx is not None:
        if not -n <= idx < n:
            raise IndexError(f"--idx {idx} is out of range for {n} samples")
        t = int(data["time"][idx])
        lines.append(f"\nsample {idx}: station {int(data['stn'][idx])}, "
                     f"{datetime.fromtimestamp(t, UTC):%Y-%m-%d %H:%M} UTC, TA {float(data['y'][idx]):.2f} °C, "
                     f"pixel (line, column) {tuple(int(v) for v in data['pixel'][idx])}")
        lat, lon, gsd = (float(v) for v in data["loc"][idx])
        lines.append(f"  loc: lat {lat:.4f}, lon {lon:.4f}, gsd {gsd:.0f} m; land cover class "
                     f"{int(data['landcover_onehot'][idx].argmax()) + 1}"
                     + (f"; station elevation {float(data['elev'][idx]):.1f} m" if "elev" in data else ""))
        lines.append("  time7: " + ", ".join(f"{v:.3f}" for v in data["time7"][idx].tolist()))
        x = data["x"][idx]
        c = x.shape[-1] // 2
        for i, name in enumerate(X_CHANNELS):
            plane = x[i]
            lines.append(f"  {name:14s} centre {float(plane[c, c]):9.3f}  min {float(plane.min()):9.3f}"
                         f"  max {float(plane.max()):9.3f}")
    return "\n".join(lines)
