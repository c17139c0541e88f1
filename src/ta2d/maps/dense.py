"""Maps at the model's speed: every land pixel of a slot from one pass over the slot's scene, tile by tile.

:func:`predict_slots_dense` gives what :func:`ta2d.maps.predict.predict_slots` (one 9x9 patch gathered per pixel,
the reference) gives, to float32 rounding, for every model kind, but asks each model only for what it needs:

* a cnn with valid padding (``PatchCNN.dense``): one dense convolution over the tile (the patch mean of its
  features is a box mean of the dense map), then the head on every pixel: ~100x fewer FLOPs than a patch per
  pixel, since neighbouring patches share their convolutions;
* a model that reads only the station pixel (ridge: ``needs_patch = False``): the pixels' own values;
* any other (gbt, clay_transfer, a zero-padded cnn): the P x P patches, cut from the tile in memory (a strided
  view, no gather over the scene) and passed through the model in batches.

The side inputs of a pixel (time7, lat/lon, land cover, elevation = its DEM and, for a model built with the
reanalysis background, the background at the pixel and slot: :func:`ta2d.chunks.patches.pixel_background`, once per
slot for all its pixels) come from :func:`ta2d.chunks.patches.pixel_inputs`, the function the chunk builder uses, so
a map pixel is a chunk sample. A pixel the background has no value for (an hour missing from the files, sea all
around in ERA5-Land) is masked no_background, as a chunk sample would be rejected.
The slot's planes are read one slot at a time and predicted in tiles of at most ``tile`` x ``tile`` pixels, so
memory is one slot's planes plus one tile's activations, whatever the domain or the day's length.
Non-finite inputs are set to 0 before the pass (a dense convolution would spread them, and some convolution
algorithms mix neighbouring outputs); every pixel whose patch holds one is masked, as in the reference.
"""

from __future__ import annotations

import logging
import time as _time

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ta2d.chunks.patches import pixel_background, pixel_inputs
from ta2d.static import StaticFields
from ta2d.training.inference import INFERENCE_BATCH_SIZE, resolve_device

from .predict import (
    MASK_EDGE,
    MASK_NAN_PATCH,
    MASK_NO_BACKGROUND,
    MASK_NOT_LAND,
    MASK_PREDICTED,
    blank_fields,
    map_background,
)

log = logging.getLogger(__name__)

TILE = 128  # output pixels per tile side: a 64-channel float32 feature map of a tile is ~4 MB


def slot_planes(slots: xr.Dataset, t: int, static: StaticFields) -> np.ndarray:
    """(19, H, W) float32: the x planes of slot ``t`` over the domain (BT 10, RF 6, SZA, DEM, land-sea mask), in
    the order of :func:`ta2d.chunks.patches.extract_patches`."""
    return np.concatenate([slots["bt"][t].values, slots["rf"][t].values, slots["sza"][t].values[None],
                           static.dem[None], static.land_sea_mask[None]]).astype(np.float32, copy=False)


@torch.no_grad()
def predict_tile(model, planes: torch.Tensor, batch: dict, rows: torch.Tensor, cols: torch.Tensor,
                 patch_size: int, batch_size: int) -> torch.Tensor:
    """Normalised predictions (N,) of the pixels at (rows, cols) of a tile: ``planes`` (19, h + P - 1, w + P - 1)
    holds the tile with a halo of P // 2, pixel (r, c) of the tile is centred at planes[:, r + P // 2, c + P // 2];
    ``batch`` the pixels' side inputs (pixel_inputs + x_center)."""
    if getattr(model, "dense", False):
        feats = model.dense_features(planes[None], patch_size)[0]  # (2C, h, w)
        return model.predict_features(feats[:, rows, cols].T, batch)
    if not getattr(model, "needs_patch", True):
        return model(batch)
    windows = planes.unfold(1, patch_size, 1).unfold(2, patch_size, 1)  # (19, h, w, P, P), a view
    out = []
    for start in range(0, len(rows), batch_size):
        r, c = rows[start:start + batch_size], cols[start:start + batch_size]
        part = {k: v[start:start + batch_size] for k, v in batch.items()}
        part["x"] = windows[:, r, c].permute(1, 0, 2, 3).contiguous()
        out.append(model(part))
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def predict_slots_dense(model, slots: xr.Dataset, static: StaticFields, usable: np.ndarray, patch_size: int = 9,
                        batch_size: int = INFERENCE_BATCH_SIZE, device: str | torch.device | None = None,
                        tile: int | None = None, background=None) -> dict:
    """TA (°C) of every land pixel of every usable slot of ``slots`` (bt, rf, sza, time, lat, lon), tile by tile;
    the same result dict as :func:`ta2d.maps.predict.predict_slots` (``n_pixels``: pixels predicted or found
    with a non-finite patch; ``seconds``: the model passes, tiles and side inputs included). ``background``
    (ta2d.ingest.background.Background): needed by, and only given to, a model built with it."""
    background = map_background(model, background)
    domain, land, inner, ta, mask = blank_fields(slots, static, patch_size)
    usable = np.asarray(usable, bool)
    n_t = slots.sizes["time"]
    nl, nc = domain.shape
    half = patch_size // 2
    tile = tile or TILE
    lat = slots["lat"].values.astype(np.float32)
    lon = slots["lon"].values.astype(np.float32)
    unix_slots = slots["time"].values.astype("datetime64[s]").astype(np.int64)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    candidates = land & inner
    n_pixels, seconds = 0, 0.0
    for t in np.flatnonzero(usable):
        planes = slot_planes(slots, t, static)
        t0 = _time.perf_counter()
        finite = np.isfinite(planes)
        bad = torch.from_numpy(~finite.all(axis=0))[None, None].float()
        # a pixel is predicted when its whole patch is finite: a P x P max over the non-finite pixels
        bad_patch = np.zeros((nl, nc), bool)
        if nl >= patch_size and nc >= patch_size:
            bad_patch[half:nl - half, half:nc - half] = F.max_pool2d(bad, patch_size, stride=1)[0, 0].numpy() > 0
        predicted = candidates & ~bad_patch
        mask[t] = np.where(land, MASK_EDGE, MASK_NOT_LAND)
        mask[t][candidates & bad_patch] = MASK_NAN_PATCH
        bg = None
        if background is not None:  # the whole slot at once: one interpolation, then tiles index into it
            bg = np.full((nl, nc), np.nan, np.float32)
            pr, pc = np.nonzero(predicted)
            bg[pr, pc] = pixel_background(background, static, pr + domain.first_line, pc + domain.first_column,
                                          np.full(len(pr), unix_slots[t]))[0]
            mask[t][predicted & ~np.isfinite(bg)] = MASK_NO_BACKGROUND
            predicted &= np.isfinite(bg)
        mask[t][predicted] = MASK_PREDICTED
        n_pixels += int(candidates.sum())
        filled = torch.from_numpy(np.where(finite, planes, np.float32(0.0))).to(dev)
        for r0 in range(half, nl - half, tile):
            r1 = min(r0 + tile, nl - half)
            for c0 in range(half, nc - half, tile):
                c1 = min(c0 + tile, nc - half)
                rr, cc = np.nonzero(predicted[r0:r1, c0:c1])
                if not len(rr):
                    continue
                pr, pc = rr + r0, cc + c0  # domain indices of the pixels
                centre = planes[:, pr, pc].T
                side = pixel_inputs(centre, np.full(len(pr), unix_slots[t]), lat[pr, pc], lon[pr, pc],
                                    static.landcover[pr, pc], background=None if bg is None else bg[pr, pc])
                batch = {k: v.to(dev) for k, v in {**side, "x_center": torch.from_numpy(centre)}.items()}
                block = filled[:, r0 - half:r1 + half, c0 - half:c1 + half]
                z = predict_tile(model, block, batch, torch.from_numpy(rr).to(dev), torch.from_numpy(cc).to(dev),
                                 patch_size, batch_size)
                ta[t, pr, pc] = model.normalizer.denorm_y(z.float()).cpu().numpy()
        seconds += _time.perf_counter() - t0
    log.info("%d slots (%d usable): %d pixels in %.1f s (%.0f px/s, dense pass), %d predicted", n_t,
             int(usable.sum()), n_pixels, seconds, n_pixels / max(seconds, 1e-9),
             int((mask == MASK_PREDICTED).sum()))
    return {"ta": ta, "mask": mask, "n_pixels": n_pixels, "seconds": seconds}
