"""One batched model pass over every land pixel of every slot of a day (best.pt alone predicts).

The model inputs of a pixel are built by the same functions as a chunk sample: the patch from
:func:`ta2d.chunks.patches.extract_patches`, the rest from :func:`ta2d.chunks.patches.model_inputs` with
``loc`` = the pixel centre's lat/lon and ``elev`` = its DEM; normalisation is inside the model (its stats
come from the checkpoint).
The (slot, pixel) pairs of all usable slots form one flat list, cut into batches that may span slots, so the
model sees full batches and no Python loop runs per pixel or per slot.

A pixel gets a prediction when it is land (``land_sea_mask > 0.5`` and land cover 1..17), its patch lies inside
the domain and every value of its patch is finite (clouds are not NaN; flagged or off-disk pixels are). Slots
whose scene status is not "ok" are not predicted at all. Everything else is NaN, and ``mask`` says why.
"""

from __future__ import annotations

import logging
import time as _time

import numpy as np
import torch
import xarray as xr

from ta2d.chunks.patches import extract_patches, model_inputs, pixel_background
from ta2d.config import schema_default
from ta2d.grid import Domain
from ta2d.static import StaticFields
from ta2d.training.inference import resolve_device

log = logging.getLogger(__name__)

# mask values (flag_values / flag_meanings of the archive's mask variable)
MASK_NOT_LAND, MASK_PREDICTED, MASK_EDGE, MASK_NAN_PATCH, MASK_NO_SCENE = 0, 1, 2, 3, 4
MASK_NO_BACKGROUND = 5  # a model built with inputs.background, and no reanalysis value at the pixel and slot
MASK_MEANINGS = "not_land predicted patch_outside_domain non_finite_patch no_usable_scene no_background"

PATCH_BATCH_SIZE = schema_default("maps", "batch_size")  # pixels per batch when mapping patch by patch


def scene_domain(scene: xr.Dataset) -> Domain:
    lines, cols = scene["line"].values, scene["column"].values
    return Domain(int(lines[0]), int(lines[-1]), int(cols[0]), int(cols[-1]))


def land_pixels(static: StaticFields) -> np.ndarray:
    """(H, W) bool: land_sea_mask > 0.5 and a valid land-cover code (1..17)."""
    lc = static.landcover
    return (static.land_sea_mask > 0.5) & (lc >= 1) & (lc <= 17)


def mappable_pixels(static: StaticFields, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(land, inner): land pixels, and pixels whose whole patch lies inside the domain."""
    land = land_pixels(static)
    half = patch_size // 2
    nl, nc = land.shape
    inner = np.zeros_like(land)
    inner[half:nl - half, half:nc - half] = True
    return land, inner


def map_background(model, background):
    """The background a map pass gives ``model``: None for a model without it (whatever was passed), ``background``
    for one built with it; ValueError when such a model gets none."""
    from ta2d.models import uses_background

    if not uses_background(model):
        return None
    if background is None:
        raise ValueError("the model takes the reanalysis background (it was trained with inputs.background): "
                         "pass the background to map with it")
    return background


def blank_fields(slots: xr.Dataset, static: StaticFields, patch_size: int):
    """(domain, land, inner, ta, mask) of a map pass over ``slots``: TA all NaN, every land pixel NO_SCENE. Raises
    ValueError when the static fields are not the scene's domain."""
    domain = scene_domain(slots)
    if static.domain != domain:
        raise ValueError(f"static fields cover {static.domain}, the scene {domain}: read them for the scene's domain")
    n_t = slots.sizes["time"]
    land, inner = mappable_pixels(static, patch_size)
    ta = np.full((n_t, *domain.shape), np.nan, np.float32)
    mask = np.repeat(np.where(land, MASK_NO_SCENE, MASK_NOT_LAND).astype(np.uint8)[None], n_t, axis=0)
    return domain, land, inner, ta, mask


@torch.no_grad()
def predict_slots(model, slots: xr.Dataset, static: StaticFields, usable: np.ndarray, patch_size: int = 9,
                  batch_size: int = PATCH_BATCH_SIZE, device: str | torch.device | None = None,
                  background=None) -> dict:
    """TA (°C) of every land pixel of every usable slot of ``slots`` (bt, rf, sza, time, lat, lon; in memory).

    ``usable`` (T,) bool says which slots to predict (the others are all NO_SCENE). Returns ``ta`` (T, H, W)
    float32, ``mask`` (T, H, W) uint8, ``n_pixels`` (pixels passed through the model) and ``seconds`` (the
    model pass, patch gathering included). ``background`` (ta2d.ingest.background.Background) is what a model
    built with the reanalysis background needs: each pixel gets it as a chunk sample does, and a pixel it has no
    value for is masked no_background.
    """
    background = map_background(model, background)
    domain, land, inner, ta, mask = blank_fields(slots, static, patch_size)
    usable = np.asarray(usable, bool)
    mask[usable] = np.where(land, MASK_EDGE, MASK_NOT_LAND)  # land & inner becomes predicted or non_finite_patch
    rows, cols = np.nonzero(land & inner)
    t_idx = np.flatnonzero(usable)
    # the flat (slot, pixel) list, slot-major: batches are contiguous pieces of it
    tt = np.repeat(t_idx, len(rows))
    rr = np.tile(rows, len(t_idx))
    cc = np.tile(cols, len(t_idx))
    unix_slots = slots["time"].values.astype("datetime64[s]").astype(np.int64)
    lat = slots["lat"].values.astype(np.float32)
    lon = slots["lon"].values.astype(np.float32)

    dev = resolve_device(device)
    model = model.to(dev).eval()
    norm = model.normalizer
    t0 = _time.perf_counter()
    for start in range(0, len(tt), batch_size):
        t, r, c = tt[start:start + batch_size], rr[start:start + batch_size], cc[start:start + batch_size]
        unix = unix_slots[t]
        x = extract_patches(slots, static, unix, r + domain.first_line, c + domain.first_column, patch_size)
        ok = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        mask[t[~ok], r[~ok], c[~ok]] = MASK_NAN_PATCH
        if not ok.any():
            continue
        if not ok.all():
            t, r, c, x, unix = t[ok], r[ok], c[ok], x[ok], unix[ok]
        bg = None
        if background is not None:
            bg, _ = pixel_background(background, static, r + domain.first_line, c + domain.first_column, unix)
            has = np.isfinite(bg)
            mask[t[~has], r[~has], c[~has]] = MASK_NO_BACKGROUND
            if not has.any():
                continue
            if not has.all():
                t, r, c, x, unix, bg = t[has], r[has], c[has], x[has], unix[has], bg[has]
        batch = model_inputs(x, unix, lat[r, c], lon[r, c], static.landcover[r, c], background=bg)
        batch = {k: v.to(dev) for k, v in batch.items()}
        ta[t, r, c] = norm.denorm_y(model(batch).float()).cpu().numpy()
        mask[t, r, c] = MASK_PREDICTED
    seconds = _time.perf_counter() - t0
    log.info("%d slots (%d usable): %d pixels through the model in %.1f s (%.0f px/s), %d predicted",
             len(usable), len(t_idx), len(tt), seconds, len(tt) / max(seconds, 1e-9),
             int((mask == MASK_PREDICTED).sum()))
    return {"ta": ta, "mask": mask, "n_pixels": len(tt), "seconds": seconds}
