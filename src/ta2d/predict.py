"""TA maps: a trained run (best.pt alone) applied to every land pixel of one scene slot.

The model inputs of every pixel are built by the same functions as a chunk sample: the 9x9 patch from
:func:`ta2d.patches.extract_patches`, the rest from :func:`ta2d.patches.model_inputs` with ``loc`` = the
pixel centre's lat/lon; normalisation is inside the model (its stats come from the checkpoint). Pixels are processed in
batches, with one gather per batch and no per-pixel Python loop.

A pixel gets a prediction when it is land (``land_sea_mask > 0.5`` and land cover 1..17), its patch lies
inside the domain and every value of its patch is finite (clouds are not NaN; flagged or off-disk pixels
and a slot without data are). Everything else is NaN, and the ``mask`` variable says why.

NetCDF output: ``TA`` (line, column) float32 °C, CF attributes (standard_name air_temperature, units degC),
2-D ``lat``/``lon`` coordinates, 1-based FD ``line``/``column``, a scalar ``time`` coordinate (UTC), and
global attributes naming the run, checkpoint, scene and the times in UTC and KST.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import xarray as xr

import ta2d

from .atomic import atomic_path
from .grid import Domain
from .periods import period_key
from .static import StaticFields, read_static

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KST = pd.Timedelta(hours=9)
# mask values (flag_values/flag_meanings of the mask variable)
MASK_NOT_LAND, MASK_PREDICTED, MASK_EDGE, MASK_NAN_PATCH = 0, 1, 2, 3
MASK_MEANINGS = "not_land predicted patch_outside_domain non_finite_patch"


# --- map times ------------------------------------------------------------------------------------------

def parse_time(text) -> pd.Timestamp:
    """A UTC timestamp from "2024-04-10T03:00" (naive = UTC), a pandas Timestamp or Unix seconds."""
    if isinstance(text, (int, np.integer)):
        return pd.Timestamp(int(text), unit="s", tz="UTC")
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def time_stamp(ts) -> str:
    """File-name form of a map time: 20240410T0300."""
    return parse_time(ts).strftime("%Y%m%dT%H%M")


def map_jobs(times: Sequence[str], freq: str, period: Mapping, slot_minutes: Sequence[int]) -> dict[str, dict]:
    """{stamp: {"time": ISO UTC, "key": period key of its scene}} for the configured map times.

    Raises ValueError naming ``maps.times`` when a time is outside the period or not a slot.
    """
    start = pd.Timestamp(period["start"], tz="UTC")
    end = pd.Timestamp(period["end"], tz="UTC") + pd.Timedelta(days=1)
    out = {}
    for text in times:
        try:
            ts = parse_time(text)
        except ValueError as err:
            raise ValueError(f"key maps.times: {text!r} is not a time ({err})") from err
        if not start <= ts < end:
            raise ValueError(f"key maps.times: {text} is outside the period {period['start']}..{period['end']}")
        if ts.second or ts.microsecond or ts.minute not in set(slot_minutes):
            raise ValueError(f"key maps.times: {text} is not a scene slot (minutes {sorted(slot_minutes)} "
                             "of each hour, inputs.l1b/calibrated.slot_minutes)")
        out[time_stamp(ts)] = {"time": ts.strftime("%Y-%m-%dT%H:%M"), "key": str(period_key([ts], freq)[0])}
    return out


def map_runs(runs: Sequence[str] | None, all_runs: Sequence[str]) -> list[str]:
    """The runs to map: all when None, else the named ones (which must be configured)."""
    if runs is None:
        return list(all_runs)
    unknown = sorted(set(runs) - set(all_runs))
    if unknown:
        raise ValueError(f"key maps.runs: {unknown} are not runs of train.runs ({sorted(all_runs)})")
    return list(runs)


# --- prediction -----------------------------------------------------------------------------------------

def scene_domain(scene: xr.Dataset) -> Domain:
    lines, cols = scene["line"].values, scene["column"].values
    return Domain(int(lines[0]), int(lines[-1]), int(cols[0]), int(cols[-1]))


def _slot_index(scene: xr.Dataset, ts: pd.Timestamp) -> int:
    unix = scene["time"].values.astype("datetime64[s]").astype(np.int64)
    t = int(ts.timestamp())
    hit = np.flatnonzero(unix == t)
    if not len(hit):
        first = pd.Timestamp(int(unix[0]), unit="s") if len(unix) else None
        last = pd.Timestamp(int(unix[-1]), unit="s") if len(unix) else None
        raise ValueError(f"{ts:%Y-%m-%d %H:%M} UTC is not a slot of the scene ({first} .. {last})")
    return int(hit[0])


def land_pixels(static: StaticFields) -> np.ndarray:
    """(H, W) bool: land_sea_mask > 0.5 and a valid land-cover code (1..17)."""
    lc = static.landcover
    return (static.land_sea_mask > 0.5) & (lc >= 1) & (lc <= 17)


def predict_map(model, scene: xr.Dataset, static: StaticFields, time, patch_size: int = 9,
                batch_size: int = 8192, device: str | torch.device | None = None) -> xr.Dataset:
    """TA (°C) on every land pixel of the scene's domain at `time` (UTC); see the module docstring.

    `static` must be read for the scene's domain (``scene_domain(scene)``).
    """
    import torch  # here, not at the top: the workflow imports this module's config helpers at parse time

    from .patches import extract_patches, model_inputs
    from .training.inference import resolve_device

    ts = parse_time(time)
    domain = scene_domain(scene)
    if static.domain != domain:
        raise ValueError(f"static fields cover {static.domain}, the scene {domain}: read them for the scene's domain")
    t = _slot_index(scene, ts)
    status = str(scene["status"].values[t]) if "status" in scene else "ok"
    slot = scene[["bt", "rf", "sza"]].isel(time=[t]).load()  # one slot in memory, gathered from per batch
    lat = scene["lat"].values.astype(np.float32)
    lon = scene["lon"].values.astype(np.float32)
    nl, nc = domain.shape
    half = patch_size // 2

    land = land_pixels(static)
    inner = np.zeros_like(land)
    inner[half:nl - half, half:nc - half] = True
    mask = np.full((nl, nc), MASK_NOT_LAND, np.uint8)
    mask[land] = MASK_EDGE
    rows, cols = np.nonzero(land & inner)
    ta = np.full((nl, nc), np.nan, np.float32)

    dev = resolve_device(device)
    model = model.to(dev).eval()
    norm = model.normalizer
    unix = np.full(min(batch_size, len(rows)), int(ts.timestamp()), np.int64)
    for start in range(0, len(rows), batch_size):
        r, c = rows[start:start + batch_size], cols[start:start + batch_size]
        x = extract_patches(slot, static, unix[:len(r)], r + domain.first_line, c + domain.first_column, patch_size)
        ok = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        mask[r[~ok], c[~ok]] = MASK_NAN_PATCH
        if not ok.any():
            continue
        r, c, x = r[ok], c[ok], x[ok]
        batch = model_inputs(x, unix[:len(r)], lat[r, c], lon[r, c], static.landcover[r, c])
        batch = {k: v.to(dev) for k, v in batch.items()}
        with torch.no_grad():
            ta[r, c] = norm.denorm_y(model(batch).float()).cpu().numpy()
        mask[r, c] = MASK_PREDICTED
    n_pred = int((mask == MASK_PREDICTED).sum())
    log.info("%s: %d of %d land pixels predicted (%d patch outside the domain, %d non-finite patch); slot %s",
             f"{ts:%Y-%m-%d %H:%M} UTC", n_pred, int(land.sum()), int((mask == MASK_EDGE).sum()),
             int((mask == MASK_NAN_PATCH).sum()), status)

    kst = ts.tz_convert(None) + KST
    ds = xr.Dataset(
        {
            "TA": (("line", "column"), ta, {
                "standard_name": "air_temperature",
                "long_name": "near-surface air temperature predicted by ta2d",
                "units": "degC",
            }),
            "mask": (("line", "column"), mask, {
                "long_name": "why TA is or is not predicted",
                "flag_values": np.array([0, 1, 2, 3], np.uint8),
                "flag_meanings": MASK_MEANINGS,
            }),
        },
        coords={
            "line": ("line", domain.lines, {"long_name": "GK-2A full-disk 2 km grid line, 1-based, grows southward"}),
            "column": ("column", domain.columns,
                       {"long_name": "GK-2A full-disk 2 km grid column, 1-based, grows eastward"}),
            "lat": (("line", "column"), lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": (("line", "column"), lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "time": ((), np.datetime64(ts.tz_convert(None).to_datetime64(), "s"), {"standard_name": "time",
                                                                               "long_name": "slot time, UTC"}),
        },
        attrs={
            "title": "ta2d air temperature map",
            "Conventions": "CF-1.8",
            "time_utc": f"{ts:%Y-%m-%dT%H:%M}Z",
            "time_kst": f"{kst:%Y-%m-%dT%H:%M}+09:00",
            "slot_status": status,
            "n_land_pixels": int(land.sum()),
            "n_predicted": n_pred,
            "patch_size": int(patch_size),
            "first_line": domain.first_line, "last_line": domain.last_line,
            "first_column": domain.first_column, "last_column": domain.last_column,
            "ta2d_version": ta2d.__version__,
        },
    )
    return ds


# --- station observations -------------------------------------------------------------------------------

def observed_at(index_csv: str | Path, time) -> pd.DataFrame:
    """Station observations at `time` from results/index/index.csv: stn, lat, lon, line, column, ta_c, split."""
    t = int(parse_time(time).timestamp())
    df = pd.read_csv(index_csv)
    df = df[df["time"] == t]
    cols = [c for c in ("stn", "lat", "lon", "line", "column", "ta_c", "split") if c in df]
    return df[cols].reset_index(drop=True)


def station_comparison(ds: xr.Dataset, stations: pd.DataFrame) -> pd.DataFrame:
    """stations plus ta_map: the map value at each station's pixel (NaN outside the domain or unmapped)."""
    lines, cols = ds["line"].values, ds["column"].values
    li = stations["line"].to_numpy(np.int64) - int(lines[0])
    ci = stations["column"].to_numpy(np.int64) - int(cols[0])
    inside = (li >= 0) & (li < len(lines)) & (ci >= 0) & (ci < len(cols))
    val = np.full(len(stations), np.nan)
    val[inside] = ds["TA"].values[li[inside], ci[inside]]
    return stations.assign(ta_map=val)


# --- files ----------------------------------------------------------------------------------------------

def write_map_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    enc = {"TA": {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)},
           "mask": {"zlib": True, "complevel": 4, "_FillValue": None},
           "lat": {"_FillValue": None}, "lon": {"_FillValue": None},
           "time": {"units": "seconds since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=enc)


def plot_map(ds: xr.Dataset, path: str | Path, stations: pd.DataFrame | None = None) -> None:
    """pcolormesh of TA over lon/lat, stations drawn on the same colour scale, colour bar in °C."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ta, lat, lon = ds["TA"].values, ds["lat"].values, ds["lon"].values
    mask = ds["mask"].values if "mask" in ds else np.where(np.isfinite(ta), MASK_PREDICTED, MASK_NOT_LAND)
    obs = stations["ta_c"].to_numpy(np.float64) if stations is not None and len(stations) else np.empty(0)
    both = np.concatenate([ta[np.isfinite(ta)], obs[np.isfinite(obs)]])
    vmin, vmax = (np.floor(np.percentile(both, 0.5)), np.ceil(np.percentile(both, 99.5))) if len(both) else (0, 1)
    if vmax <= vmin:
        vmin, vmax = vmin - 1, vmax + 1
    aspect = 1.0 / math.cos(math.radians(float(np.nanmean(lat))))
    ratio = float(np.ptp(lat)) * aspect / max(float(np.ptp(lon)), 1e-6)  # height / width of the map
    # "compressed" layout: the colour bar is as tall as the fixed-aspect map, without a gap
    fig, ax = plt.subplots(figsize=(8.0, min(max(6.4 * ratio + 1.0, 3.5), 12.0)), layout="compressed")
    ax.set_facecolor("white")  # water
    nodata = np.ma.masked_where((mask == MASK_NOT_LAND) | (mask == MASK_PREDICTED), np.ones_like(ta))
    ax.pcolormesh(lon, lat, nodata, cmap=ListedColormap(["#b0b0b0"]), shading="nearest", rasterized=True)
    cmap = plt.get_cmap("RdYlBu_r")
    mesh = ax.pcolormesh(lon, lat, np.ma.masked_invalid(ta), cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest",
                         rasterized=True)
    handles = [Patch(facecolor="white", edgecolor="0.5", label="water"),
               Patch(facecolor="#b0b0b0", label="land, no prediction")]
    sub = f"{ds.attrs.get('n_predicted', int((mask == MASK_PREDICTED).sum()))} land pixels predicted"
    if len(obs):
        cmp = station_comparison(ds, stations)
        d = (cmp["ta_map"] - cmp["ta_c"]).to_numpy()
        d = d[np.isfinite(d)]
        ax.scatter(stations["lon"], stations["lat"], c=obs, cmap=cmap, vmin=vmin, vmax=vmax, s=48,
                   edgecolors="k", linewidths=1.0, zorder=3)
        handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="k", ms=7,
                              label="station, observed TA (same colours)"))
        if len(d):
            sub += (f"; at {len(d)} stations map − observed: RMSE {np.sqrt(np.mean(d**2)):.2f} K, "
                    f"bias {np.mean(d):+.2f} K")
    if ds.attrs.get("slot_status", "ok") != "ok":
        sub += f"; slot: {ds.attrs['slot_status']}"
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    ts = pd.Timestamp(ds.attrs["time_utc"].rstrip("Z"))
    kst = ts + KST
    run = ds.attrs.get("run", "?")
    ax.set_title(f"{run}: predicted TA at {ts:%Y-%m-%d %H:%M} UTC ({kst:%Y-%m-%d %H:%M} KST)\n{sub}",
                 fontsize=9.5)
    ax.set(xlabel="Longitude (°E)", ylabel="Latitude (°N)", aspect=aspect,
           xlim=(float(np.nanmin(lon)), float(np.nanmax(lon))), ylim=(float(np.nanmin(lat)), float(np.nanmax(lat))))
    ax.grid(alpha=0.25, color="k", lw=0.5)
    cb = fig.colorbar(mesh, ax=ax, extend="both", fraction=0.05, pad=0.02)
    cb.set_label("Air temperature (°C)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def predict_map_files(checkpoint: str | Path, scene_path: str | Path, static_path: str | Path, time,
                      out_nc: str | Path, out_png: str | Path | None = None, index_csv: str | Path | None = None,
                      run: str | None = None, patch_size: int = 9, batch_size: int = 8192,
                      device: str | None = None, static_vars: Mapping[str, str] | None = None) -> dict:
    """checkpoint + scene + static -> TA NetCDF (and PNG map with the stations of index_csv). Returns a summary."""
    import time as _time

    import torch

    from .models import load_model

    t0 = _time.perf_counter()
    model = load_model(checkpoint)
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    kind = str(ck.get("model_kind") or ck["run_config"]["model"])
    run = run or Path(checkpoint).parent.name
    sv = dict(static_vars or {})
    with xr.open_dataset(scene_path, engine="h5netcdf", cache=False) as scene:
        static = read_static(static_path, scene_domain(scene), sv.get("dem_var", "dem"),
                             sv.get("land_sea_mask_var", "land_sea_mask"), sv.get("landcover_var", "landcover"))
        t1 = _time.perf_counter()
        ds = predict_map(model, scene, static, time, patch_size=patch_size, batch_size=batch_size, device=device)
        t2 = _time.perf_counter()
    ds.attrs.update({"run": run, "model_kind": kind, "checkpoint": str(checkpoint),
                     "source_scene": str(scene_path), "source_static": str(static_path),
                     "history": f"ta2d predict (ta2d {ta2d.__version__})"})
    write_map_netcdf(ds, out_nc)
    stations = observed_at(index_csv, time) if index_csv is not None else None
    if out_png is not None:
        plot_map(ds, out_png, stations)
    summary = {"run": run, "time_utc": ds.attrs["time_utc"], "n_land_pixels": ds.attrs["n_land_pixels"],
               "n_predicted": ds.attrs["n_predicted"], "slot_status": ds.attrs["slot_status"],
               "seconds_predict": round(t2 - t1, 3), "seconds_total": round(_time.perf_counter() - t0, 3)}
    if stations is not None and len(stations):
        d = (station_comparison(ds, stations)["ta_map"] - stations["ta_c"]).dropna()
        summary.update(n_stations=len(stations), station_rmse_k=float(np.sqrt(np.mean(d**2))) if len(d) else None)
    log.info("map %s", summary)
    return summary
