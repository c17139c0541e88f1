"""build_patch_chunk: one chunk file from one manifest and one scene, vectorised per scene.

All patches of a chunk come from one fancy-indexing gather over the scene's slots (no per-row
loop), in physical units (DESIGN.md chunk contract); normalisation happens inside the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ta2d.atomic import atomic_path
from ta2d.chunks.contract import REJECT_COLUMNS, save_tensors, valid_landcover
from ta2d.features import time7_features
from ta2d.grid import GSD_M, Domain
from ta2d.static import StaticFields

log = logging.getLogger(__name__)

def read_manifest(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"row": "int64", "stn": "int32", "time": "int64", "ta_c": "float32",
                                    "lat": "float64", "lon": "float64", "elev_m": "float64", "line": "int32",
                                    "column": "int32"})


def extract_patches(scene: xr.Dataset, static: StaticFields, times: np.ndarray, lines: np.ndarray,
                    columns: np.ndarray, size: int) -> np.ndarray:
    """Patches (N, 19, size, size) float32: BT 10, RF 6, SZA, DEM, land-sea mask, centred on each pixel.

    One gather per scene slot: a slot's planes are read once (the scene is chunked per slot), so
    memory stays at one slot whatever the chunk period, and no Python loop runs per sample.
    """
    half = size // 2
    offsets = np.arange(-half, half + 1)
    scene_times = scene["time"].values.astype("datetime64[s]").astype(np.int64)
    slot = np.searchsorted(scene_times, times)
    if (slot >= len(scene_times)).any() or (scene_times[np.minimum(slot, len(scene_times) - 1)] != times).any():
        raise ValueError("manifest times that are not slots of the scene (rebuild the index)")
    rows = (lines - int(scene["line"].values[0]))[:, None] + offsets  # (N, size)
    cols = (columns - int(scene["column"].values[0]))[:, None] + offsets
    out = np.empty((len(times), 19, size, size), dtype=np.float32)
    for t in np.unique(slot):
        members = np.flatnonzero(slot == t)
        stack = np.concatenate([scene["bt"][t].values, scene["rf"][t].values, scene["sza"][t].values[None]])
        r, c = rows[members][:, :, None], cols[members][:, None, :]
        out[members, :17] = stack[:, r, c].transpose(1, 0, 2, 3)
    srow = ((lines - static.domain.first_line)[:, None] + offsets)[:, :, None]
    scol = ((columns - static.domain.first_column)[:, None] + offsets)[:, None, :]
    out[:, 17] = static.dem[srow, scol]
    out[:, 18] = static.land_sea_mask[srow, scol]
    return out


def model_inputs(x: np.ndarray, times: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 landcover: np.ndarray, elev: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The model's input tensors of N samples (chunk contract): shared by chunks and maps, so a map
    pixel is built exactly as a training sample. `landcover` holds IGBP codes 1..17; `elev` is the
    station elevation (m), where unknown (NaN, or None for a map pixel) the centre pixel's DEM."""
    half = x.shape[-1] // 2
    dem_centre = x[:, 17, half, half]
    elev = dem_centre if elev is None else np.where(np.isfinite(elev), elev, dem_centre)
    return {
        "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        "time7": torch.from_numpy(time7_features(times, x[:, 16, half, half])),
        "loc": torch.from_numpy(np.stack([lat, lon, np.full(len(x), GSD_M)], axis=1).astype(np.float32)),
        "landcover_onehot": torch.from_numpy(np.eye(17, dtype=np.float32)[np.asarray(landcover) - 1]),
        "elev": torch.from_numpy(np.asarray(elev, dtype=np.float32)),
    }


def build_patch_chunk(manifest_path: str | Path, scene_path: str | Path, static: StaticFields,
                      patch_size: int, out_path: str | Path, rejects_path: str | Path,
                      x_dtype: str = "float32") -> dict:
    """Write the chunk .pt (ta2d.chunks.contract: tensors + their CRCs) and its .rejects.csv; returns counts.
    `x_dtype` float16 stores x at half the bytes (the models compute in float32)."""
    manifest = read_manifest(manifest_path)
    with xr.open_dataset(scene_path, engine="h5netcdf") as scene:
        _check_scene_covers(scene, static.domain, scene_path)
        x = extract_patches(scene, static, manifest["time"].to_numpy(), manifest["line"].to_numpy(),
                            manifest["column"].to_numpy(), patch_size)
    finite = np.isfinite(x).reshape(len(x), x.shape[1], -1).all(axis=2)  # (N, 19)
    lc = static.landcover[manifest["line"].to_numpy() - static.domain.first_line,
                          manifest["column"].to_numpy() - static.domain.first_column]
    valid_lc = valid_landcover(lc)
    nan = ~finite.all(axis=1)
    ok = ~nan & valid_lc
    rejects = pd.concat([
        manifest.loc[nan, ["row", "stn", "time"]].assign(
            reason="nan_in_patch", detail=[_nan_detail(f) for f in finite[nan]]),
        manifest.loc[~nan & ~valid_lc, ["row", "stn", "time"]].assign(
            reason="invalid_landcover", detail=[f"land cover code {c}" for c in lc[~nan & ~valid_lc]]),
    ]).sort_values("row")
    keep = manifest[ok]
    xk = x if ok.all() else x[ok]  # no copy in the usual case: peak memory stays at one chunk
    del x
    tensors = {
        **model_inputs(xk, keep["time"].to_numpy(), keep["lat"].to_numpy(), keep["lon"].to_numpy(), lc[ok],
                       keep["elev_m"].to_numpy() if "elev_m" in keep else None),
        "y": torch.tensor(keep["ta_c"].to_numpy(np.float32)),
        "stn": torch.tensor(keep["stn"].to_numpy(np.int32)),
        "time": torch.tensor(keep["time"].to_numpy(np.int64)),
        "pixel": torch.from_numpy(np.stack([keep["line"].to_numpy(), keep["column"].to_numpy()],
                                           axis=1).astype(np.int32)),
    }
    tensors["x"] = tensors["x"].to(getattr(torch, x_dtype))
    save_tensors(tensors, out_path)
    with atomic_path(rejects_path) as tmp:
        rejects.reindex(columns=REJECT_COLUMNS).to_csv(tmp, index=False, lineterminator="\n")
    log.info("%s: %d samples, %d rejected", Path(out_path).name, int(ok.sum()), int((~ok).sum()))
    return {"n_rows": len(manifest), "n_samples": int(ok.sum()), "n_rejected": int((~ok).sum())}


def _nan_detail(finite_row: np.ndarray) -> str:
    from ta2d.channels import X_CHANNELS

    return "non-finite values in " + ",".join(c for c, f in zip(X_CHANNELS, finite_row, strict=True) if not f)


def _check_scene_covers(scene: xr.Dataset, domain: Domain, path) -> None:
    lines, cols = scene["line"].values, scene["column"].values
    if lines[0] > domain.first_line or lines[-1] < domain.last_line or cols[0] > domain.first_column \
            or cols[-1] < domain.last_column:
        raise ValueError(f"scene {path}: covers lines {lines[0]}..{lines[-1]}, columns {cols[0]}..{cols[-1]};"
                         f" the configured domain is {domain} (rebuild scenes after changing the domain)")
