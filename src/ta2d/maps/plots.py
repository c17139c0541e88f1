"""Something to look at: a PNG per slot and a GIF per day of an archive file, one colour scale over the day.

Each frame shows the model's TA and, when the file has it, the station-corrected TA side by side, with the
stations drawn in the same colours with their observations at that slot; water is white, land without a
prediction grey, a missing slot says why. One figure is built once and updated per slot (its meshes'
arrays, the stations, the titles; the layout of the first frame kept), drawn once per slot, and that image is
both the slot's PNG and a GIF frame (Pillow, as ``matplotlib.animation.PillowWriter`` writes GIFs, without its
second draw per frame). ``animation_html`` wraps the GIF for the Snakemake report, which
shows HTML and PNG inline but offers a GIF only as a download.

:func:`plot_uncertainty` draws one slot's TA beside its standard errors (``TA_standard_error`` and, corrected,
``TA_corrected_standard_error``) with the stations of that slot marked: where the correction makes the map more
certain, and where the model alone is uncertain (night, cloud).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ta2d.atomic import atomic_path, ensure_dir

from .predict import MASK_NOT_LAND, MASK_PREDICTED

KST = pd.Timedelta(hours=9)


def day_colour_range(ds: xr.Dataset, obs: pd.DataFrame | None) -> tuple[float, float]:
    """(vmin, vmax) °C shared by every frame of the day: 0.5th..99.5th percentile of all fields and
    observations, to whole degrees."""
    vals = [ds[v].values[np.isfinite(ds[v].values)] for v in ("TA", "TA_corrected") if v in ds]
    if obs is not None and len(obs):
        o = obs["ta_c"].to_numpy(np.float64)
        vals.append(o[np.isfinite(o)])
    both = np.concatenate(vals) if vals else np.empty(0)
    if not len(both):
        return 0.0, 1.0
    vmin, vmax = float(np.floor(np.percentile(both, 0.5))), float(np.ceil(np.percentile(both, 99.5)))
    return (vmin - 1, vmax + 1) if vmax <= vmin else (vmin, vmax)


def plot_day(ds: xr.Dataset, obs: pd.DataFrame | None, png_dir: str | Path, gif_path: str | Path,
             fps: float = 3.0, dpi: int = 80) -> list[Path]:
    """One PNG per slot (``png_dir/ta_{YYYYmmddTHHMM}.png``) and the day's GIF; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fields = [v for v in ("TA", "TA_corrected") if v in ds]
    titles = {"TA": "model", "TA_corrected": "station-corrected (kriging)"}
    lat, lon = ds["lat"].values, ds["lon"].values
    times = pd.DatetimeIndex(ds["time"].values)
    mask = ds["mask"].values
    obs = obs if obs is not None else pd.DataFrame(columns=["time", "lat", "lon", "ta_c"])
    vmin, vmax = day_colour_range(ds, obs)
    cmap = plt.get_cmap("RdYlBu_r")
    aspect = 1.0 / math.cos(math.radians(float(np.nanmean(lat))))
    ratio = float(np.ptp(lat)) * aspect / max(float(np.ptp(lon)), 1e-6)
    width = 5.0 * len(fields) + 1.2
    fig, axes = plt.subplots(1, len(fields), figsize=(width, min(max(4.6 * ratio + 1.2, 3.5), 9.0)), dpi=dpi,
                             layout="compressed", squeeze=False)
    axes = axes[0]
    empty = np.ma.masked_all(lat.shape)
    grey, meshes, dots = [], [], []
    for ax in axes:
        ax.set_facecolor("white")
        grey.append(ax.pcolormesh(lon, lat, empty, cmap=ListedColormap(["#b0b0b0"]), vmin=0, vmax=1,
                                  shading="nearest", rasterized=True))
        meshes.append(ax.pcolormesh(lon, lat, empty, cmap=cmap, vmin=vmin, vmax=vmax, shading="nearest",
                                    rasterized=True))
        dots.append(ax.scatter([], [], c=[], cmap=cmap, vmin=vmin, vmax=vmax, s=36, edgecolors="k",
                               linewidths=0.9, zorder=3))
        ax.set(xlabel="Longitude (°E)", aspect=aspect, xlim=(float(np.nanmin(lon)), float(np.nanmax(lon))),
               ylim=(float(np.nanmin(lat)), float(np.nanmax(lat))))
        ax.grid(alpha=0.25, color="k", lw=0.5)
    axes[0].set_ylabel("Latitude (°N)")
    axes[0].legend(handles=[Patch(facecolor="white", edgecolor="0.5", label="water"),
                            Patch(facecolor="#b0b0b0", label="land, no prediction"),
                            Line2D([], [], ls="", marker="o", mfc="none", mec="k", ms=6,
                                   label="station, observed TA (same colours)")],
                   loc="lower right", fontsize=7, framealpha=0.9)
    cb = fig.colorbar(meshes[0], ax=list(axes), extend="both", fraction=0.04, pad=0.02)
    cb.set_label("Air temperature (°C)")
    missing_text = [ax.text(0.5, 0.5, "", transform=ax.transAxes, ha="center", va="center", fontsize=9, wrap=True,
                            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.5"}) for ax in axes]
    suptitle = fig.suptitle("", fontsize=10)
    status = [str(s) for s in ds["slot_status"].values]
    run = ds.attrs.get("run", "?")
    obs_t = obs["time"].to_numpy(np.int64) if len(obs) else np.empty(0, np.int64)
    png_dir = ensure_dir(png_dir)
    paths, frames = [], []
    try:
        for t, ts in enumerate(times):
            nodata = (mask[t] != MASK_NOT_LAND) & (mask[t] != MASK_PREDICTED)
            here = obs[obs_t == int(ts.timestamp())] if len(obs) else obs
            for i, name in enumerate(fields):
                grey[i].set_array(np.ma.masked_where(~nodata, np.ones(nodata.shape)).ravel())
                meshes[i].set_array(np.ma.masked_invalid(ds[name].values[t]).ravel())
                dots[i].set_offsets(np.c_[here["lon"], here["lat"]] if len(here) else np.empty((0, 2)))
                dots[i].set_array(here["ta_c"].to_numpy(np.float64) if len(here) else np.empty(0))
                sub = titles[name]
                if name == "TA_corrected" and "correction_status" in ds:
                    sub += f" — {ds['correction_status'].values[t]}"
                axes[i].set_title(sub, fontsize=8.5)
                missing_text[i].set_text("" if status[t] == "ok" else f"no map: {status[t][:90]}")
                missing_text[i].set_visible(status[t] != "ok")
            suptitle.set_text(f"{run}: 2 m air temperature, {ts:%Y-%m-%d %H:%M} UTC ({ts + KST:%H:%M} KST), "
                              f"{len(here)} stations")
            frame = _render(fig)
            if t == 0:
                fig.set_layout_engine("none")  # the layout of the first frame holds for all: no re-layout per frame
            out = png_dir / f"ta_{ts:%Y%m%dT%H%M}.png"
            with atomic_path(out) as tmp:
                frame.save(tmp, format="PNG")
            paths.append(out)
            frames.append(frame.convert("RGB").quantize(colors=255))
    finally:
        plt.close(fig)
    if frames:
        with atomic_path(gif_path) as tmp:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:],
                           duration=int(round(1000 / fps)), loop=0)
    return paths


def _render(fig):
    """The figure drawn once, as a Pillow image (what matplotlib.animation.PillowWriter grabs per frame)."""
    from PIL import Image

    fig.canvas.draw()
    return Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba(), "raw", "RGBA", 0, 1)


def uncertainty_slot(ds: xr.Dataset) -> int:
    """The slot the uncertainty map shows: of the usable slots the one with the most stations in its correction
    (the first of them; the day's first slot when none is usable)."""
    ok = [str(s) == "ok" for s in ds["slot_status"].values]
    if not any(ok):
        return 0
    n = ds["n_stations"].values if "n_stations" in ds else np.zeros(len(ok))
    return int(max((i for i in range(len(ok)) if ok[i]), key=lambda i: (int(n[i]), -i)))


def plot_uncertainty(ds: xr.Dataset, obs: pd.DataFrame | None, out_png: str | Path, slot: int | None = None,
                     dpi: int = 80) -> int:
    """One slot (``slot``, else :func:`uncertainty_slot`) as a PNG: TA, TA_standard_error and, when the file has
    it, TA_corrected_standard_error, the slot's stations marked; a file without standard errors says why instead.
    Returns the slot drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = uncertainty_slot(ds) if slot is None else int(slot)
    ts = pd.Timestamp(ds["time"].values[t])
    lat, lon = ds["lat"].values, ds["lon"].values
    fields = ["TA"] + [v for v in ("TA_standard_error", "TA_corrected_standard_error") if v in ds]
    titles = {"TA": "TA, model (°C)", "TA_standard_error": "standard error of TA (K)",
              "TA_corrected_standard_error": "standard error of TA_corrected (K)"}
    obs = obs if obs is not None else pd.DataFrame(columns=["time", "lat", "lon"])
    here = obs[obs["time"].to_numpy(np.int64) == int(ts.tz_localize("UTC").timestamp())] if len(obs) else obs
    se = [ds[v].values[t] for v in fields[1:]]
    se_finite = np.concatenate([v[np.isfinite(v)] for v in se]) if se else np.empty(0)
    # one scale for both standard errors, so the correction's reduction reads off the colours
    se_lo, se_hi = (float(np.percentile(se_finite, 0.5)), float(np.percentile(se_finite, 99.5))) if len(se_finite) \
        else (0.0, 1.0)
    se_hi = max(se_hi, se_lo + 1e-3)
    aspect = 1.0 / math.cos(math.radians(float(np.nanmean(lat))))
    ratio = float(np.ptp(lat)) * aspect / max(float(np.ptp(lon)), 1e-6)
    n_panels = max(len(fields), 2)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels + 1.0, min(max(4.4 * ratio + 1.2, 3.5), 9.0)),
                             dpi=dpi, layout="compressed", squeeze=False)
    axes = axes[0]
    try:
        for i, ax in enumerate(axes):
            ax.set(xlabel="Longitude (°E)", aspect=aspect, xlim=(float(np.nanmin(lon)), float(np.nanmax(lon))),
                   ylim=(float(np.nanmin(lat)), float(np.nanmax(lat))))
            ax.grid(alpha=0.25, color="k", lw=0.5)
            if i >= len(fields):  # no standard error in the file: say why where it would be
                ax.text(0.5, 0.5, f"no standard error: {ds.attrs.get('standard_error', 'not in this file')[:160]}",
                        transform=ax.transAxes, ha="center", va="center", fontsize=8, wrap=True)
                continue
            name = fields[i]
            values = np.ma.masked_invalid(ds[name].values[t])
            if name == "TA":
                mesh = ax.pcolormesh(lon, lat, values, cmap="RdYlBu_r", shading="nearest", rasterized=True)
            else:
                mesh = ax.pcolormesh(lon, lat, values, cmap="viridis", vmin=se_lo, vmax=se_hi, shading="nearest",
                                     rasterized=True)
            fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.02, extend="both" if name != "TA" else "neither")
            if len(here):
                ax.scatter(here["lon"], here["lat"], s=16, marker="o", facecolors="white", edgecolors="k",
                           linewidths=0.9, zorder=3, label="station (this slot)")
            sub = titles[name]
            if name == "TA_corrected_standard_error" and "correction_status" in ds:
                sub += f"\n{str(ds['correction_status'].values[t])[:60]}"
            ax.set_title(sub, fontsize=8.5)
        axes[0].set_ylabel("Latitude (°N)")
        if len(here):
            axes[0].legend(loc="lower right", fontsize=7, framealpha=0.9)
        fig.suptitle(f"{ds.attrs.get('run', '?')}: {ts:%Y-%m-%d %H:%M} UTC ({ts + KST:%H:%M} KST), {len(here)} "
                     "stations", fontsize=10)
        image = _render(fig)
    finally:
        plt.close(fig)
    with atomic_path(out_png) as tmp:
        image.save(tmp, format="PNG")
    return t


def animation_html(gif_path: str | Path, out_html: str | Path, title: str,
                   uncertainty_png: str | Path | None = None) -> None:
    """A small HTML page with the GIF inline (data URI), and below it the uncertainty map, for the Snakemake
    report."""
    data = base64.b64encode(Path(gif_path).read_bytes()).decode("ascii")
    extra = ""
    if uncertainty_png is not None:
        png = base64.b64encode(Path(uncertainty_png).read_bytes()).decode("ascii")
        extra = ("<h4>Standard error of one slot (the model's; after the station correction)</h4>"
                 f"<img alt='standard error' style='max-width:100%' src='data:image/png;base64,{png}'/>")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif'><h3>{html.escape(title)}</h3>"
            f"<img alt='{html.escape(title)}' style='max-width:100%' src='data:image/gif;base64,{data}'/>"
            f"{extra}</body></html>")
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(page)


def plot_day_files(nc_path: str | Path, stations_csv: str | Path | None, png_dir: str | Path, gif_path: str | Path,
                   html_path: str | Path, fps: float = 3.0, dpi: int = 80,
                   uncertainty_png: str | Path | None = None) -> int:
    """Rule map_plots: an archive day file (+ the station table map_day wrote beside it, whose observations
    are drawn: the index is not read again) -> PNGs, GIF, the uncertainty map of one slot (``uncertainty_png``),
    report page."""
    from .observations import read_station_table

    try:
        ds = xr.open_dataset(nc_path, engine="h5netcdf")
    except (OSError, ValueError) as err:
        raise ValueError(f"map {nc_path}: cannot be opened ({err})") from err
    with ds:
        ds = ds.load()
    day = pd.Timestamp(ds["time"].values[0]).strftime("%Y%m%d")
    obs = read_station_table(stations_csv) if stations_csv is not None else None
    paths = plot_day(ds, obs, png_dir, gif_path, fps=fps, dpi=dpi)
    if uncertainty_png is not None:
        plot_uncertainty(ds, obs, uncertainty_png, dpi=dpi)
    run = ds.attrs.get("run", "?")
    animation_html(gif_path, html_path, f"{run}: hourly 2 m air temperature on {pd.Timestamp(day):%Y-%m-%d} (UTC)",
                   uncertainty_png)
    return len(paths)
