"""build_patch_chunk: one chunk file from its label part and its period's scene, vectorised per scene.

All patches of a chunk come from one fancy-indexing gather over the scene's slots (no per-row
loop), in physical units (docs/architecture.md#file-contracts); normalisation happens inside the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ta2d.atomic import atomic_path
from ta2d.chunks.contract import save_tensors
from ta2d.features import time7_features
from ta2d.grid import GSD_M, Domain
from ta2d.index.match import as_rejects, index_text, match_part, reject
from ta2d.index.route import read_part
from ta2d.plan import parse_chunk_name
from ta2d.static import StaticFields

if TYPE_CHECKING:  # the chunk job opens it; this module only samples it
    from ta2d.ingest.background import Background

log = logging.getLogger(__name__)

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
        raise ValueError("sample times that are not slots of the scene (the matching lets only slots through)")
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
                 landcover: np.ndarray, elev: np.ndarray | None = None,
                 background: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """The model's input tensors of N samples (chunk contract): shared by chunks and maps, so a map
    pixel is built exactly as a training sample. `landcover` holds IGBP codes 1..17; `elev` is the
    station elevation (m), where unknown (NaN, or None for a map pixel) the centre pixel's DEM;
    `background` the reanalysis at the pixel (°C, :func:`pixel_background`; None: no such field)."""
    half = x.shape[-1] // 2
    return {"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            **pixel_inputs(x[:, :, half, half], times, lat, lon, landcover, elev, background)}


def pixel_inputs(centre: np.ndarray, times: np.ndarray, lat: np.ndarray, lon: np.ndarray, landcover: np.ndarray,
                 elev: np.ndarray | None = None, background: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Every model input of N samples but the patch, from their centre pixels' 19 planes (N, 19): time7, loc,
    landcover_onehot, elev and, when given, background (see :func:`model_inputs`, which adds the patch; the dense
    maps use this alone)."""
    dem_centre = centre[:, 17]
    elev = dem_centre if elev is None else np.where(np.isfinite(elev), elev, dem_centre)
    out = {
        "time7": torch.from_numpy(time7_features(times, centre[:, 16])),
        "loc": torch.from_numpy(np.stack([lat, lon, np.full(len(centre), GSD_M)], axis=1).astype(np.float32)),
        "landcover_onehot": torch.from_numpy(np.eye(17, dtype=np.float32)[np.asarray(landcover) - 1]),
        "elev": torch.from_numpy(np.asarray(elev, dtype=np.float32)),
    }
    if background is not None:
        out["background"] = torch.from_numpy(np.asarray(background, dtype=np.float32))
    return out


def pixel_background(background: Background, static: StaticFields, lines: np.ndarray, columns: np.ndarray,
                     times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reanalysis at N pixels (1-based full-disk lines, columns) and times (Unix s UTC), in °C, as a sample's
    ``background`` field holds it: (values float32, reasons; NaN with a reason where it has none). At the pixel, not
    the station: the station's height above its pixel is a feature of its own (elev), as for every other input."""
    celsius, reasons = background.at_pixels(static, lines, columns, times)
    return celsius.astype(np.float32), reasons


def build_patch_chunk(part_path: str | Path, stations: pd.DataFrame | str | Path, scene_path: str | Path,
                      static: StaticFields, patch_size: int, out_path: str | Path, rejects_path: str | Path,
                      index_path: str | Path, x_dtype: str = "float32", background: Background | None = None) -> dict:
    """One chunk from its label part (ta2d.index.route) and its period's scene: match the rows to stations,
    pixels and slots (ta2d.index.match), cut the patches, and write the chunk .pt (ta2d.chunks.contract:
    tensors + their CRCs), its .rejects.csv and its index rows (what build_index collects per month).
    `x_dtype` float16 stores x at half the bytes (the models compute in float32). A part whose rows are all
    rejected gives a chunk with zero rows. With a reanalysis `background` (inputs.background) every sample
    carries it at its pixel and slot (:func:`pixel_background`), and a sample it has no value for is rejected
    (no_background, the reader's reason as detail); without one the chunk has no such field."""
    split, key = parse_chunk_name(out_path) or ("", "")  # the index rows name the chunk; any name works
    if not isinstance(stations, pd.DataFrame):
        from ta2d.index.stations import read_stations

        stations = read_stations(stations)
    with xr.open_dataset(scene_path, engine="h5netcdf") as scene:
        _check_scene_covers(scene, static.domain, scene_path)
        status = pd.DataFrame({"time": scene["time"].values.astype("datetime64[s]").astype("int64"),
                               "status": scene["status"].values.astype(str)})
        matched, match_rejects = match_part(read_part(part_path), stations, static, status, patch_size)
        x = extract_patches(scene, static, matched["time"].to_numpy(), matched["line"].to_numpy(),
                            matched["column"].to_numpy(), patch_size)
    finite = np.isfinite(x).reshape(len(x), x.shape[1], patch_size * patch_size).all(axis=2)  # (N, 19)
    nan = ~finite.all(axis=1)
    parts = [match_rejects, as_rejects(reject(matched, nan, "nan_in_patch",
                                              lambda _: [_nan_detail(f) for f in finite[nan]]))]
    dropped = nan
    if background is not None:
        bg, why = pixel_background(background, static, matched["line"].to_numpy(), matched["column"].to_numpy(),
                                   matched["time"].to_numpy())
        no_bg = ~nan & ~np.isfinite(bg)  # one reason per row: a NaN patch is rejected as such
        parts.append(as_rejects(reject(matched, no_bg, "no_background", why)))
        dropped = nan | no_bg
        bg = bg[~dropped]
    keep = matched[~dropped]
    rejects = pd.concat(parts)
    xk = x if not dropped.any() else x[~dropped]  # no copy in the usual case: peak memory stays at one chunk
    del x
    lc = static.landcover[keep["line"].to_numpy() - static.domain.first_line,
                          keep["column"].to_numpy() - static.domain.first_column]
    tensors = {
        **model_inputs(xk, keep["time"].to_numpy(), keep["lat"].to_numpy(), keep["lon"].to_numpy(), lc,
                       keep["elev_m"].to_numpy(), bg if background is not None else None),
        "y": torch.tensor(keep["ta_c"].to_numpy(np.float32)),
        "stn": torch.tensor(keep["stn"].to_numpy(np.int32)),
        "time": torch.tensor(keep["time"].to_numpy(np.int64)),
        "pixel": torch.from_numpy(np.stack([keep["line"].to_numpy(), keep["column"].to_numpy()],
                                           axis=1).astype(np.int32).reshape(-1, 2)),
    }
    tensors["x"] = tensors["x"].to(getattr(torch, x_dtype))
    save_tensors(tensors, out_path)
    with atomic_path(rejects_path) as tmp:
        rejects.sort_values(["source", "row"]).to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(index_path) as tmp:
        tmp.write_text(index_text(keep.assign(split=split, chunk=key)))
    if len(keep) == 0:
        log.warning("%s: no samples (%d label rows, all rejected: %s)", Path(out_path).name, len(rejects),
                    dict(rejects["reason"].value_counts()))
    log.info("%s: %d samples, %d rejected", Path(out_path).name, len(keep), len(rejects))
    return {"n_rows": len(matched) + len(match_rejects), "n_samples": len(keep), "n_rejected": len(rejects)}


def _nan_detail(finite_row: np.ndarray) -> str:
    from ta2d.channels import X_CHANNELS

    return "non-finite values in " + ",".join(c for c, f in zip(X_CHANNELS, finite_row, strict=True) if not f)


def _check_scene_covers(scene: xr.Dataset, domain: Domain, path) -> None:
    lines, cols = scene["line"].values, scene["column"].values
    if lines[0] > domain.first_line or lines[-1] < domain.last_line or cols[0] > domain.first_column \
            or cols[-1] < domain.last_column:
        raise ValueError(f"scene {path}: covers lines {lines[0]}..{lines[-1]}, columns {cols[0]}..{cols[-1]};"
                         f" the configured domain is {domain} (rebuild scenes after changing the domain)")
