"""The hourly TA archive: one CF-1.10 NetCDF per run and UTC day, ``results/maps/{run}/{YYYYMMDD}.nc``.

Layout (``time`` = every slot of the day, UTC; ``y``/``x`` = the domain's lines/columns of the GK-2A 2 km grid):

=====================  ==============  =========================================================================
variable               dims            meaning
=====================  ==============  =========================================================================
TA                     time, y, x      the model's 2 m air temperature, °C (int16 packed, 0.01 K steps)
TA_corrected           time, y, x      TA + the stations' residuals kriged onto the grid (ta2d.maps.kriging)
TA_standard_error      time, y, x      TA's standard error sigma, K (the model file's error model at the pixel and
                                       slot, ta2d.maps.uncertainty); only with an error model (``standard_error``)
TA_corrected_std...    time, y, x      TA_corrected_standard_error: sigma * sqrt(min(1, kriging variance / sill))
                                       (ta2d.maps.kriging.corrected_standard_error); sigma where not corrected
mask                   time, y, x      why a pixel is or is not predicted (flag_values / flag_meanings)
slot_status            time            "ok", or why the slot is missing (its TA is NaN, never skipped)
correction_status      time            "ok: N station residuals kriged", or why TA_corrected = TA there
n_predicted, n_stations time           predicted pixels; stations in the correction
gk2a_geos              (scalar)        grid mapping: CF ``geostationary``, GK-2A at 128.2°E, sweep y
x, y                   x / y           scanning angles (radian): projection_x/y_angular_coordinate
line, column           y / x           1-based GK-2A full-disk 2 km line / column
lat, lon               y, x            pixel centres (auxiliary coordinates)
height                 (scalar)        2 m
=====================  ==============  =========================================================================

Chunked per day and spatial tile (:func:`chunk_shape`) and deflated, so a year opens lazily:
``xr.open_mfdataset("results/maps/best/*.nc", engine="h5netcdf", data_vars="minimal", coords="minimal",
compat="override")`` (:func:`open_archive`).
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import ta2d
from ta2d import grid
from ta2d.atomic import atomic_path
from ta2d.checksums import netcdf_bytes_with_checksums
from ta2d.grid import Domain

log = logging.getLogger(__name__)

GRID_MAPPING = "gk2a_geos"
CONVENTIONS = "CF-1.10"
TA_SCALE = np.float32(0.01)  # K per packed step
TA_FILL = np.int16(-32768)
TILE = 96  # pixels: the spatial side of a chunk
SLOT_OK = "ok"
FIELDS = ("TA", "TA_corrected", "TA_standard_error", "TA_corrected_standard_error")  # int16-packed, 0.01 K
KST = pd.Timedelta(hours=9)
# global attributes day_dataset writes itself (from the data): not copied from slot maps into a day
CF_OWN_ATTRS = ("Conventions", "title", "institution", "source", "time_zone", "missing_slots", "n_missing_slots",
                "first_line", "last_line", "first_column", "last_column", "ta2d_version")


# --- the grid -------------------------------------------------------------------------------------------

def grid_mapping_attrs() -> dict:
    """CF ``geostationary`` grid mapping of the GK-2A fixed grid (the navigation of ta2d.grid: CGMS, sweep y)."""
    h = (grid.SAT_RADIUS_KM - grid.EQ_RADIUS_KM) * 1000.0
    return {
        "grid_mapping_name": "geostationary",
        "perspective_point_height": h,
        "semi_major_axis": grid.EQ_RADIUS_KM * 1000.0,
        "semi_minor_axis": grid.POLAR_RADIUS_KM * 1000.0,
        "longitude_of_projection_origin": grid.SUB_LON_DEG,
        "latitude_of_projection_origin": 0.0,
        "sweep_angle_axis": "y",
        "false_easting": 0.0,
        "false_northing": 0.0,
        "proj4": (f"+proj=geos +lon_0={grid.SUB_LON_DEG} +h={h:.0f} +a={grid.EQ_RADIUS_KM * 1000:.0f} "
                  f"+b={grid.POLAR_RADIUS_KM * 1000:.1f} +sweep=y +units=m +no_defs"),
        "long_name": "GK-2A AMI fixed grid (GEOS projection)",
    }


def scan_angles(domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) scanning angles in radian of the domain's columns and lines, as CF and PROJ's geos define them
    (x grows east, y grows north; times perspective_point_height = PROJ's geos metres)."""
    coff, cfac, _ = grid.FD_GRIDS[2.0]
    x = np.radians((domain.columns.astype(np.float64) - coff) * 2.0**16 / cfac)
    y = -np.radians((domain.lines.astype(np.float64) - coff) * 2.0**16 / cfac)
    return x, y


def day_slot_times(day: str, slot_minutes: Sequence[int]) -> pd.DatetimeIndex:
    """Every nominal slot (UTC) of a day (YYYYMMDD)."""
    from ta2d.periods import period_slots

    return period_slots(day, "D", slot_minutes)


# --- the dataset ----------------------------------------------------------------------------------------

def day_dataset(times: pd.DatetimeIndex, domain: Domain, lat: np.ndarray, lon: np.ndarray, ta: np.ndarray,
                mask: np.ndarray, slot_status: Sequence[str], corrected: np.ndarray | None = None,
                correction_status: Sequence[str] | None = None, n_stations: np.ndarray | None = None,
                attrs: Mapping | None = None, standard_error: np.ndarray | None = None,
                corrected_standard_error: np.ndarray | None = None) -> xr.Dataset:
    """The archive's Dataset of one day (see the module docstring); ``corrected`` None = no TA_corrected,
    ``standard_error`` / ``corrected_standard_error`` None = no TA_standard_error / TA_corrected_standard_error
    (NaN wherever the field they belong to is NaN)."""
    from .predict import MASK_MEANINGS, MASK_PREDICTED

    x, y = scan_angles(domain)
    n_t = len(times)
    t = times.tz_convert(None).to_numpy().astype("datetime64[ns]") if times.tz is not None else times.to_numpy()
    ta_attrs = {
        "standard_name": "air_temperature",
        "long_name": "2 m air temperature predicted by ta2d from GK-2A AMI",
        "units": "degC",
        "grid_mapping": GRID_MAPPING,
        "cell_methods": "time: point",
        "ancillary_variables": "mask slot_status" + (" TA_standard_error" if standard_error is not None else ""),
    }
    data = {
        "TA": (("time", "y", "x"), ta.astype(np.float32), ta_attrs),
        "mask": (("time", "y", "x"), mask.astype(np.uint8), {
            "long_name": "why TA is or is not predicted at the pixel",
            "flag_values": np.arange(len(MASK_MEANINGS.split()), dtype=np.uint8),
            "flag_meanings": MASK_MEANINGS, "grid_mapping": GRID_MAPPING}),
        "slot_status": (("time",), np.array(list(slot_status), dtype=object), {
            "long_name": "ok, or why the slot has no map (then TA is missing at every pixel)"}),
        "n_predicted": (("time",), (mask == MASK_PREDICTED).reshape(n_t, -1).sum(axis=1).astype(np.int32),
                        {"long_name": "pixels with a prediction", "units": "1"}),
        GRID_MAPPING: ((), np.int32(0), grid_mapping_attrs()),
    }
    if standard_error is not None:
        data["TA_standard_error"] = (("time", "y", "x"), _where_finite(standard_error, ta), {
            "standard_name": "air_temperature standard_error",
            "long_name": "standard error of the 2 m air temperature predicted by ta2d (its error model)",
            "units": "K", "grid_mapping": GRID_MAPPING, "cell_methods": "time: point",
            "comment": "sigma of a Gaussian error, log-linear in the KST hour and the pixel's IR10.5 BT and VIS0.6 "
                       "reflectance, fit on the run's validation residuals against stations (station noise included)"})
    if corrected is not None:
        data["TA_corrected"] = (("time", "y", "x"), corrected.astype(np.float32), {
            **ta_attrs,
            "long_name": "2 m air temperature predicted by ta2d, corrected by kriging of station residuals",
            "ancillary_variables": "mask correction_status n_stations" + (
                " TA_corrected_standard_error" if corrected_standard_error is not None else ""),
            "comment": "TA + ordinary kriging of (observed - TA) at the stations of the slot; equals TA where "
                       "correction_status is not ok"})
        data["correction_status"] = (("time",), np.array(list(correction_status), dtype=object), {
            "long_name": "ok, or why TA_corrected equals TA at this slot"})
        data["n_stations"] = (("time",), np.asarray(n_stations, np.int32), {
            "long_name": "station residuals kriged into TA_corrected", "units": "1"})
        if corrected_standard_error is not None:
            data["TA_corrected_standard_error"] = (
                ("time", "y", "x"), _where_finite(corrected_standard_error, corrected), {
                    "standard_name": "air_temperature standard_error",
                    "long_name": "standard error of the station-corrected 2 m air temperature",
                    "units": "K", "grid_mapping": GRID_MAPPING, "cell_methods": "time: point",
                    "comment": "TA_standard_error * sqrt(min(1, kriging variance / total sill of the slot's "
                               "variogram)): smaller near stations, TA_standard_error far from them and where "
                               "correction_status is not ok"})
    ds = xr.Dataset(
        data,
        coords={
            "time": ("time", t, {"standard_name": "time", "long_name": "slot time (UTC)", "axis": "T"}),
            "y": ("y", y, {"standard_name": "projection_y_angular_coordinate", "units": "radian", "axis": "Y",
                           "long_name": "GEOS scanning angle, north positive"}),
            "x": ("x", x, {"standard_name": "projection_x_angular_coordinate", "units": "radian", "axis": "X",
                           "long_name": "GEOS scanning angle, east positive"}),
            "line": ("y", domain.lines, {"long_name": "GK-2A full-disk 2 km grid line, 1-based, grows southward"}),
            "column": ("x", domain.columns,
                       {"long_name": "GK-2A full-disk 2 km grid column, 1-based, grows eastward"}),
            "lat": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north",
                                                         "long_name": "latitude of the pixel centre"}),
            "lon": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east",
                                                         "long_name": "longitude of the pixel centre"}),
            "height": ((), np.float64(2.0), {"standard_name": "height", "units": "m", "positive": "up",
                                             "long_name": "height above the surface"}),
        },
    )
    missing = [f"{pd.Timestamp(tt):%Y-%m-%dT%H:%M}Z {s}" for tt, s in zip(t, slot_status, strict=True) if s != SLOT_OK]
    ds.attrs = {
        "Conventions": CONVENTIONS,
        "title": "ta2d hourly 2 m air temperature on the GK-2A 2 km grid",
        "institution": "ta2d",
        "source": "GK-2A AMI L1B + static fields -> ta2d TA model",
        "time_zone": "time is UTC; Korea Standard Time (KST) = UTC + 9 h",
        "missing_slots": "; ".join(missing),
        "n_missing_slots": len(missing),
        "first_line": domain.first_line, "last_line": domain.last_line,
        "first_column": domain.first_column, "last_column": domain.last_column,
        "ta2d_version": ta2d.__version__,
        **dict(attrs or {}),
    }
    return ds


def _where_finite(values: np.ndarray, field: np.ndarray) -> np.ndarray:
    """float32 values, NaN wherever ``field`` is NaN: a standard error exists only beside a value."""
    return np.where(np.isfinite(field), values, np.nan).astype(np.float32)


def chunk_shape(ds: xr.Dataset) -> tuple[int, int, int]:
    """HDF5 chunks of the (time, y, x) fields: the whole day × tiles of at most TILE × TILE pixels. A slot's map
    reads every tile of one day (~1 MB compressed on the demo), a pixel's year one tile per day: over a year of
    demo maps 0.1 s and 2.6 s, against 0.6 s and 24 s with one chunk per slot (docs/maps.md#a-year-on-disk)."""
    return ds.sizes["time"], min(ds.sizes["y"], TILE), min(ds.sizes["x"], TILE)


def write_day(ds: xr.Dataset, path: str | Path, complevel: int = 4) -> None:
    """Write atomically: TA fields int16-packed (0.01 K, fill -32768) and deflated in :func:`chunk_shape` chunks,
    every variable with ``ta2d_crc32``, the CRC-32 of its stored (packed) bytes, which ``ta2d verify`` checks."""
    chunks = chunk_shape(ds)
    field = {"dtype": "int16", "scale_factor": TA_SCALE, "add_offset": np.float32(0.0), "_FillValue": TA_FILL,
             "zlib": True, "complevel": complevel, "shuffle": True, "chunksizes": chunks}
    enc = {name: dict(field) for name in FIELDS if name in ds}
    enc["mask"] = {"zlib": True, "complevel": complevel, "shuffle": True, "chunksizes": chunks, "_FillValue": None}
    enc.update({v: {"_FillValue": None} for v in ("lat", "lon", "x", "y", "height", GRID_MAPPING)})
    enc["time"] = {"units": "seconds since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}
    ds = ds.copy()
    for name in ("slot_status", "correction_status", "n_predicted", "n_stations", GRID_MAPPING):
        if name in ds:  # per-slot tables and the grid mapping: no `coordinates` attribute (not fields on the grid)
            ds[name].encoding["coordinates"] = None
    # built in memory, checksums recorded there (ta2d.checksums), then written as plain bytes: HDF5 writing onto
    # a full disk can crash the process before it raises, a plain write fails with ENOSPC (a DiskFullError)
    data = netcdf_bytes_with_checksums(ds.to_netcdf(engine="h5netcdf", encoding=enc))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def open_archive(paths, **kwargs) -> xr.Dataset:
    """Many day files as one lazy Dataset along time (dask), without comparing the grid of every file."""
    opts = {"engine": "h5netcdf", "combine": "by_coords", "data_vars": "minimal", "coords": "minimal",
            "compat": "override", "join": "override", "parallel": False}
    return xr.open_mfdataset(paths, **{**opts, **kwargs})


# --- one day --------------------------------------------------------------------------------------------

def scene_slots_of_day(scene: xr.Dataset, times: pd.DatetimeIndex, scene_path) -> tuple[np.ndarray, list[str]]:
    """(index of each day slot in the scene or -1, status of each slot): the scene's own status, or why the
    slot is missing from it."""
    unix = scene["time"].values.astype("datetime64[s]").astype(np.int64)
    pos = {int(u): i for i, u in enumerate(unix)}
    status_var = scene["status"].values if "status" in scene else None
    idx, status = [], []
    for ts in times:
        i = pos.get(int(ts.timestamp()), -1)
        idx.append(i)
        if i < 0:
            status.append(f"no_slot: {ts:%Y-%m-%d %H:%M} UTC is not a slot of the scene {scene_path}")
        else:
            s = str(status_var[i]) if status_var is not None else SLOT_OK
            status.append(SLOT_OK if s == SLOT_OK else f"bad_scene: {s}")
    return np.array(idx, np.int64), status


MAP_METHODS = ("dense", "per_pixel")


def map_day(model, scene: xr.Dataset, static, times: pd.DatetimeIndex, scene_path="scene", patch_size: int = 9,
            batch_size: int | None = None, device=None, method: str = "dense", error_model=None,
            background=None) -> dict:
    """The raw TA of every slot of `times`: ta, mask, slot_status, lat, lon, domain, n_pixels, seconds, and with
    an ``error_model`` (ta2d.evaluation.uncertainty.ErrorModel) standard_error (T, H, W; K, NaN where TA is; else
    None). A slot that is missing, bad, or without any predicted pixel is NaN and its slot_status says why.
    ``method``: "dense" (:func:`ta2d.maps.dense.predict_slots_dense`, the model's own speed) or "per_pixel" (one
    patch gathered per pixel, :func:`ta2d.maps.predict.predict_slots`: the reference the dense pass is tested
    against). The slots are read one at a time. ``background`` (ta2d.ingest.background.Background): what a model
    built with the reanalysis background needs (pixels without a value are masked no_background)."""
    from .dense import predict_slots_dense
    from .predict import (
        MASK_NO_BACKGROUND,
        MASK_NO_SCENE,
        MASK_PREDICTED,
        PATCH_BATCH_SIZE,
        land_pixels,
        predict_slots,
        scene_domain,
    )

    batch_size = PATCH_BATCH_SIZE if batch_size is None else batch_size
    if method not in MAP_METHODS:
        raise ValueError(f"map method {method!r}; choose one of {MAP_METHODS}")

    domain = scene_domain(scene)
    idx, status = scene_slots_of_day(scene, times, scene_path)
    present = np.flatnonzero(idx >= 0)
    nl, nc = domain.shape
    ta = np.full((len(times), nl, nc), np.nan, np.float32)
    mask = np.repeat(np.where(land_pixels(static), MASK_NO_SCENE, 0).astype(np.uint8)[None], len(times), axis=0)
    lat = scene["lat"].values.astype(np.float32)
    lon = scene["lon"].values.astype(np.float32)
    n_pixels, seconds = 0, 0.0
    sigma = None if error_model is None else np.full(ta.shape, np.nan, np.float32)
    if len(present):
        slots = scene[["bt", "rf", "sza", "lat", "lon"]].isel(time=idx[present])
        usable = np.array([status[i] == SLOT_OK for i in present])
        if method == "per_pixel":  # its batches span slots: each would read its slot again from a lazy scene
            slots = slots.load()
        predict = predict_slots_dense if method == "dense" else predict_slots
        out = predict(model, slots, static, usable, patch_size, batch_size, device, background=background)
        ta[present], mask[present] = out["ta"], out["mask"]
        n_pixels, seconds = out["n_pixels"], out["seconds"]
        if error_model is not None:
            from .uncertainty import slot_standard_errors

            sigma[present] = slot_standard_errors(error_model, slots, ta[present])
    for t in range(len(times)):
        if status[t] == SLOT_OK and not (mask[t] == MASK_PREDICTED).any():
            status[t] = ("no_prediction: the reanalysis background (inputs.background) has no value at this slot"
                         if (mask[t] == MASK_NO_BACKGROUND).any() else
                         "no_prediction: every land pixel's patch has non-finite values")
    return {"ta": ta, "mask": mask, "slot_status": status, "lat": lat, "lon": lon, "domain": domain,
            "n_pixels": n_pixels, "seconds": seconds, "standard_error": sigma}


def correct_slots(ta: np.ndarray, unix: np.ndarray, gx: np.ndarray, gy: np.ndarray, table: pd.DataFrame,
                  cfg) -> dict:
    """The station correction of each slot on its own (ta2d.maps.kriging: the slot's variogram, the slot's station
    folds), so a day's file is the same whether it is mapped in one job or assembled from slot maps. Returns
    corrected (T, H, W), status (T,), n_stations (T,), the leave-stations-out rows, the variograms, and the
    kriging_variance (T, H, W) and sill (T,) of each slot's correction (NaN where none)."""
    from .kriging import correct_fields, leave_stations_out

    corrected = ta.copy()
    kvar, sill = np.full(ta.shape, np.nan, np.float32), np.full(len(unix), np.nan)
    status, n_stations, lso, varios = [], np.zeros(len(unix), np.int32), [], []
    for t, u in enumerate(unix):
        rows = table[table["time"] == u]
        one = correct_fields(ta[t:t + 1], unix[t:t + 1], gx, gy, rows, cfg)
        corrected[t] = one["corrected"][0]
        kvar[t], sill[t] = one["kriging_variance"][0], one["sill"][0]
        status.append(one["status"][0])
        n_stations[t] = one["n_stations"][0]
        varios.append(one["variogram"])
        lso.append(leave_stations_out(rows, cfg)[0])
    lso_table = pd.concat(lso, ignore_index=True) if lso else leave_stations_out(table, cfg)[0]
    return {"corrected": corrected, "status": status, "n_stations": n_stations, "lso": lso_table, "variograms": varios,
            "kriging_variance": kvar, "sill": sill}


BACKGROUND_RUN = "background"  # the model_run of the station rows that score the reanalysis alone


def background_station_rows(reanalysis, static, table: pd.DataFrame, cfg) -> pd.DataFrame:
    """The reanalysis alone at each station's pixel and slot, scored leave-stations-out slot by slot as the map is
    (ta2d.maps.kriging): the map correction table's ``background`` row, so the map's gain over the reanalysis,
    and what station correction makes of the reanalysis itself, read off beside the model's. ``table``: the map's
    residual table (station rows of the mapped slots with x_km, y_km)."""
    from .kriging import leave_stations_out, residual_table

    value, _ = reanalysis.at_pixels(static, table["line"], table["column"], table["time"])
    obs = table.drop(columns=["ta_raw", "resid", "x_km", "y_km", "sigma"], errors="ignore")
    rows = residual_table(obs, value, table["x_km"].to_numpy(), table["y_km"].to_numpy())
    parts = [leave_stations_out(slot, cfg)[0] for _, slot in rows.groupby("time", sort=True)]
    if not parts:
        return rows.iloc[:0].assign(model_run=BACKGROUND_RUN)
    return pd.concat(parts, ignore_index=True).assign(model_run=BACKGROUND_RUN)


def correction_summary(status: Sequence[str], n_obs: int) -> str:
    """The file's ``station_correction`` attribute: where TA_corrected differs from TA, and why not elsewhere."""
    n_ok = sum(s.startswith("ok") for s in status)
    if n_obs == 0:
        return "none: no station observations for these slots; TA_corrected = TA"
    return f"applied at {n_ok} of {len(status)} slots ({n_obs} station observations); elsewhere TA_corrected = TA"


def map_files(name: str, model_path: str | Path, scene_path: str | Path, static_path: str | Path,
              times: pd.DatetimeIndex, out_nc: str | Path, out_stations: str | Path | None,
              labels: pd.DataFrame | None = None, stations=None, correction: Mapping | None = None,
              patch_size: int = 9, batch_size: int | None = None, device: str | None = None,
              static_vars: Mapping[str, str] | None = None, threads: int | None = None, label: str = "",
              background: Mapping | None = None) -> dict:
    """Rules map_day and map_slot: the TA of a model file at every slot of ``times`` (a day's or one slot) -> the
    CF file, plus its station table (observed, raw, leave-stations-out corrected; ta2d.maps.kriging).

    ``labels``: the label rows of these slots (a routed part; None or empty: no observations, the file is written
    uncorrected and says so), matched to ``stations`` as chunk samples are. The model file is checked against the
    scene (its channels), ``patch_size`` and ``background`` (the config's inputs.background, which a model built
    with the background needs; its t2m files of the mapped days are read) before any map is written. Returns a
    summary."""
    from ta2d.models.model_file import check_background, check_inputs, load_model_file, needs_background
    from ta2d.static import read_static

    from .kriging import KrigingConfig, corrected_standard_error, local_xy_km, residual_table
    from .observations import no_observations, unit_observations, values_at
    from .predict import scene_domain
    from .uncertainty import map_error_model

    t0 = _time.perf_counter()
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    cfg = KrigingConfig.from_config(correction)
    model, info = load_model_file(model_path)
    check_background(info, model_path, background)
    reanalysis = None
    if needs_background(info):
        from ta2d.ingest.background import open_background_config

        reanalysis = open_background_config(background, f"{times[0]:%Y-%m-%d}", f"{times[-1]:%Y-%m-%d}")
    error_model, standard_error_note = map_error_model(info, model_path)
    sv = dict(static_vars or {})
    try:
        scene = xr.open_dataset(scene_path, engine="h5netcdf", cache=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"scene {scene_path}: cannot be opened ({err})") from err
    with scene:
        for var in ("bt", "rf", "sza", "lat", "lon", "time", "line", "column", "bt_channel", "rf_channel"):
            if var not in scene.variables:
                raise ValueError(f"scene {scene_path}: no variable {var!r}: not a ta2d scene")
        check_inputs(info, model_path, scene_path, [str(c) for c in scene["bt_channel"].values],
                     [str(c) for c in scene["rf_channel"].values], patch_size)
        static = read_static(static_path, scene_domain(scene), sv.get("dem_var", "dem"),
                             sv.get("land_sea_mask_var", "land_sea_mask"), sv.get("landcover_var", "landcover"))
        day_map = map_day(model, scene, static, times, scene_path, patch_size, batch_size, device,
                          error_model=error_model, background=reanalysis)
        status = pd.DataFrame({"time": scene["time"].values.astype("datetime64[s]").astype("int64"),
                               "status": scene["status"].values.astype(str)})
    domain, ta, sigma = day_map["domain"], day_map["ta"], day_map["standard_error"]

    unix = np.array([int(ts.timestamp()) for ts in times], np.int64)
    obs = no_observations()
    if labels is not None and len(labels) and stations is not None:
        obs, _ = unit_observations(labels, stations, static, status, patch_size)
        obs = obs[obs["time"].isin(unix)]
    lat0, lon0 = float(np.nanmean(day_map["lat"])), float(np.nanmean(day_map["lon"]))
    gx, gy = local_xy_km(day_map["lat"], day_map["lon"], lat0, lon0)
    slot_of = {int(u): i for i, u in enumerate(unix)}
    t_of_obs = np.array([slot_of[int(u)] for u in obs["time"]], np.int64)
    at_pixel = values_at(ta, domain, obs["line"], obs["column"])  # (T, N)
    raw = at_pixel[t_of_obs, np.arange(len(obs))] if len(obs) else np.empty(0)
    if sigma is not None:  # each station's sigma at its pixel, for the leave-stations-out coverage
        obs = obs.assign(sigma=values_at(sigma, domain, obs["line"], obs["column"])[t_of_obs, np.arange(len(obs))]
                         if len(obs) else np.empty(0))
    table = residual_table(obs, raw, values_at(gx, domain, obs["line"], obs["column"]),
                           values_at(gy, domain, obs["line"], obs["column"]))
    corr = correct_slots(ta, unix, gx, gy, table, cfg)
    sigma_corrected = None if sigma is None else \
        corrected_standard_error(sigma, corr["kriging_variance"], corr["sill"][:, None, None])
    lso = corr["lso"].assign(model_run=info["run"])
    if reanalysis is not None and len(table):
        lso = pd.concat([lso, background_station_rows(reanalysis, static, table, cfg)], ignore_index=True)
    lso.insert(0, "day", f"{times[0]:%Y%m%d}")
    lso.insert(0, "model_run", lso.pop("model_run"))
    lso.insert(0, "run", name)

    fitted = [v for v in corr["variograms"] if v is not None]
    attrs = {
        "run": info["run"], "map_run": name, "model_kind": info["model_kind"], "model_file": str(model_path),
        "model_trained_on": f"{info['training']['period']['start']}..{info['training']['period']['end']}",
        "run_selection": info.get("selected", f"named in maps.model ({name})"),
        "day": f"{times[0]:%Y-%m-%d}", "source_scene": str(scene_path), "source_static": str(static_path),
        "patch_size": int(patch_size),
        "station_correction": correction_summary(corr["status"], len(obs)),
        "correction_method": (f"ordinary kriging of station residuals (PyKrige), a variogram per slot "
                              f"({cfg.variogram}; e.g. {fitted[0].describe()})" if fitted and cfg.method != "none"
                              else f"none ({corr['status'][0]})"),
        "standard_error": standard_error_note,
        "history": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ} ta2d {label or 'map'} (ta2d {ta2d.__version__})",
    }
    ds = day_dataset(times, domain, day_map["lat"], day_map["lon"], ta, day_map["mask"], day_map["slot_status"],
                     corr["corrected"], corr["status"], corr["n_stations"], attrs, standard_error=sigma,
                     corrected_standard_error=sigma_corrected)
    write_day(ds, out_nc)
    if out_stations is not None:
        with atomic_path(out_stations) as tmp:
            lso.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    n_ok = sum(st == SLOT_OK for st in day_map["slot_status"])
    summary = {"map": name, "model_run": info["run"], "first_slot": f"{times[0]:%Y-%m-%dT%H:%M}", "slots": len(times),
               "slots_ok": n_ok, "pixels": day_map["n_pixels"], "seconds_model": round(day_map["seconds"], 2),
               "pixels_per_s": round(day_map["n_pixels"] / max(day_map["seconds"], 1e-9)),
               "stations": int(table["stn"].nunique()) if len(table) else 0,
               "seconds_total": round(_time.perf_counter() - t0, 2)}
    log.info("map %s", summary)
    return summary


def assemble_day(slot_files: Mapping[str, str | Path], slot_tables: Sequence[str | Path], day: str,
                 slot_minutes: Sequence[int], out_nc: str | Path, out_stations: str | Path | None) -> dict:
    """Rule assemble_day (maps.unit: slot): the day's CF file and station table from its slot maps
    (``{slot key: file}``). A slot of the day without a slot map (no file of it in the archive) is missing with
    that reason; the attributes are the slot maps' (the first one's), the station correction's summarised."""
    from ta2d.periods import slot_key

    from .predict import MASK_NO_SCENE

    times = day_slot_times(day, slot_minutes)
    parts = {}
    for key, path in slot_files.items():
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            parts[key] = ds.load()
    if not parts:
        raise ValueError(f"assemble_day {day}: no slot map")
    first = next(iter(parts.values()))
    shape = (len(times), first.sizes["y"], first.sizes["x"])
    land = (first["mask"].values[0] != 0)
    ta = np.full(shape, np.nan, np.float32)
    cor = np.full(shape, np.nan, np.float32)
    # standard errors only when every slot map has them (a model file with an error model)
    se_names = [v for v in ("TA_standard_error", "TA_corrected_standard_error")
                if all(v in part for part in parts.values())]
    se = {v: np.full(shape, np.nan, np.float32) for v in se_names}
    mask = np.repeat(np.where(land, MASK_NO_SCENE, 0).astype(np.uint8)[None], len(times), axis=0)
    status, cstatus = [], []
    n_stations = np.zeros(len(times), np.int32)
    for t, ts in enumerate(times):
        ds = parts.get(slot_key(ts))
        if ds is None:
            status.append(f"no_files: no L1B file of {ts:%Y-%m-%d %H:%M} UTC in the archive")
            cstatus.append("none: no map values at this slot")
            continue
        ta[t], cor[t], mask[t] = ds["TA"].values[0], ds["TA_corrected"].values[0], ds["mask"].values[0]
        for v in se_names:
            se[v][t] = ds[v].values[0]
        status.append(str(ds["slot_status"].values[0]))
        cstatus.append(str(ds["correction_status"].values[0]))
        n_stations[t] = int(ds["n_stations"].values[0])
    domain = Domain(int(first["line"].values[0]), int(first["line"].values[-1]), int(first["column"].values[0]),
                    int(first["column"].values[-1]))
    tables = [pd.read_csv(p) for p in slot_tables]
    tables = [t for t in tables if len(t)]
    n_obs = sum(len(t) for t in tables)
    attrs = {k: v for k, v in first.attrs.items() if k not in CF_OWN_ATTRS}
    attrs.update({"station_correction": correction_summary(cstatus, n_obs), "assembled_from": f"{len(parts)} slot maps",
                  "history": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ} ta2d assemble_day "
                             f"(ta2d {ta2d.__version__})"})
    ds = day_dataset(times, domain, first["lat"].values, first["lon"].values, ta, mask, status, cor, cstatus,
                     n_stations, attrs, standard_error=se.get("TA_standard_error"),
                     corrected_standard_error=se.get("TA_corrected_standard_error"))
    write_day(ds, out_nc)
    if out_stations is not None:
        table = pd.concat(tables, ignore_index=True) if tables else pd.read_csv(slot_tables[0]) if slot_tables \
            else pd.DataFrame()
        with atomic_path(out_stations) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    return {"day": day, "slots": len(times), "slot_maps": len(parts)}
