"""The demo's reanalysis background: ERA5-Land-like hourly 2 m temperature files, in the CDS layout users download.

What a reanalysis is to the demo's truth (docs/demo.md#the-reanalysis-background), each term known:

* its grid: a regular ``grid_deg`` lat/lon grid (ERA5-Land: 0.1 degree) over the demo window; a cell's value
  is the mean truth TA over the 2 km land pixels in it, at the cell's mean DEM height (its orography), so
  the smoothing and the height difference to a pixel are real. Cells under half land are missing, as
  ERA5-Land is over the sea;
* an hour of lag: the field at hour h is the truth of hour h - ``lag_hours`` (a reanalysis misses the timing of
  fronts and of the morning rise);
* an elevation bias: + ``elevation_bias_k_per_km`` per km of cell orography (reanalyses are too warm on high
  ground, where their smoothed terrain cannot hold cold air);
* a smooth error: a random field of ``error_k`` root mean square and a 5-cell correlation length,
  drawn once per day and linearly interpolated in time, so neighbouring hours and cells share it.

The t2m files are written one per month, named by ``inputs.background.t2m`` with its ``*`` replaced by YYYYMM, in
the current CDS layout (``valid_time`` int64 seconds since 1970, descending latitude, scalar ``number`` and an
``expver`` per hour); the orography file holds the geopotential ``z`` (m2 s-2) with a length-1 time dimension,
as the CDS delivers it. ta2d.ingest.background reads them as it reads the real files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from ta2d.demo.static import StaticFields
from ta2d.demo.truth import TruthModel

GRAVITY = 9.80665  # m s-2: ECMWF's geopotential = height * g
KELVIN = 273.15
CORRELATION_CELLS = 5.0  # e-folding length of the smooth error, in grid cells


@dataclass(frozen=True)
class ReanalysisSettings:
    """demo.reanalysis in the config (the schema describes each key and refuses unknown ones)."""

    grid_deg: float = 0.1
    error_k: float = 1.2
    elevation_bias_k_per_km: float = 1.0
    lag_hours: int = 1


@dataclass(frozen=True)
class Grid:
    """The reanalysis grid over the window: ascending cell-centre latitudes and longitudes, and for every window
    pixel its cell (flat index; -1 where the pixel is water, which ERA5-Land leaves out)."""

    lat: np.ndarray
    lon: np.ndarray
    cell_of_pixel: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.lat) * len(self.lon)

    def cell_mean(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Mean of a window field over the land pixels of each cell, (lat, lon); NaN where ``counts`` is 0."""
        keep = self.cell_of_pixel >= 0
        sums = np.bincount(self.cell_of_pixel[keep], weights=values[keep], minlength=self.n_cells)
        mean = np.full(self.n_cells, np.nan)
        np.divide(sums, counts, out=mean, where=counts > 0)
        return mean.reshape(len(self.lat), len(self.lon))


def reanalysis_grid(static: StaticFields, grid_deg: float) -> tuple[Grid, np.ndarray]:
    """The grid and each cell's land-pixel count (a cell under half land, or outside the window, counts 0)."""
    lat0 = np.floor(static.lat.min() / grid_deg) * grid_deg
    lon0 = np.floor(static.lon.min() / grid_deg) * grid_deg
    n_lat = int(np.floor((static.lat.max() - lat0) / grid_deg)) + 1
    n_lon = int(np.floor((static.lon.max() - lon0) / grid_deg)) + 1
    i = np.clip(((static.lat - lat0) / grid_deg).astype(int), 0, n_lat - 1)
    j = np.clip(((static.lon - lon0) / grid_deg).astype(int), 0, n_lon - 1)
    cell = (i * n_lon + j).ravel()
    n_cells = n_lat * n_lon
    all_pixels = np.bincount(cell, minlength=n_cells)
    land = static.land.ravel()
    land_pixels = np.bincount(cell[land], minlength=n_cells)
    counts = np.where(land_pixels * 2 >= np.maximum(all_pixels, 1), land_pixels, 0).astype(float)
    cell_of_pixel = np.where(land, cell, -1)
    centres = lambda start, n: np.round(start + grid_deg * (np.arange(n) + 0.5), 6)  # noqa: E731
    return Grid(centres(lat0, n_lat), centres(lon0, n_lon), cell_of_pixel), counts


def smooth_error(rng: np.random.Generator, shape: tuple[int, int], sigma_k: float) -> np.ndarray:
    """A random field of root mean square ``sigma_k`` with a CORRELATION_CELLS correlation length (a Gaussian
    filter in Fourier space)."""
    white = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * (np.pi * CORRELATION_CELLS) ** 2 * (kx**2 + ky**2))
    field = np.real(np.fft.ifft2(np.fft.fft2(white) * kernel))
    # scaled by its root mean square, not its spread: on a grid smaller than the correlation length the field is
    # mostly one domain-wide offset, which is an error too
    return sigma_k * field / np.sqrt(np.mean(field**2))


@dataclass(frozen=True)
class Reanalysis:
    """The demo's reanalysis: t2m in K (hour, lat, lon) on ``grid`` at ``hours``, its orography height in m
    (lat, lon), and its departure (K, like t2m) from the reanalysis the visible truth alone would give: the
    lagged cell mean of the hidden boundary-layer anomaly plus the smooth error, what it adds to a model's
    inputs (ta2d.demo.floors)."""

    grid: Grid
    hours: pd.DatetimeIndex
    t2m: np.ndarray
    orography: np.ndarray
    departure: np.ndarray


def reanalysis_fields(model: TruthModel, static: StaticFields, hours: pd.DatetimeIndex, settings: ReanalysisSettings,
                      seed: int) -> Reanalysis:
    """The demo's reanalysis at ``hours`` (module docstring)."""
    grid, counts = reanalysis_grid(static, settings.grid_deg)
    orography = grid.cell_mean(static.dem.ravel().astype(float), counts)
    shape = orography.shape
    days = pd.date_range(hours[0].floor("D"), hours[-1].floor("D") + pd.Timedelta(days=1), freq="D")
    rng = np.random.default_rng([seed, 11])
    daily_error = np.stack([smooth_error(rng, shape, settings.error_k) for _ in days])
    bias = settings.elevation_bias_k_per_km * orography / 1000.0
    out = np.empty((len(hours), *shape), np.float32)
    departure = np.empty((len(hours), *shape), np.float32)
    for k, hour in enumerate(hours):
        truth_time = (hour - pd.Timedelta(hours=settings.lag_hours)).timestamp()
        clouds = model.clouds(truth_time, static)
        visible = model.visible_air_temperature(truth_time, static, clouds)
        hidden = model.boundary_layer_anomaly(truth_time, static, clouds)
        ta = grid.cell_mean((visible + hidden).ravel().astype(float), counts)
        day = (hour.floor("D") - days[0]).days
        w = (hour - hour.floor("D")) / pd.Timedelta(days=1)
        error = (1 - w) * daily_error[day] + w * daily_error[day + 1]
        out[k] = ta + bias + error + KELVIN
        departure[k] = grid.cell_mean(hidden.ravel().astype(float), counts) + error
    return Reanalysis(grid, hours, out, orography, departure)


def write_reanalysis(t2m_pattern: str, orography_path: str | Path, fields: Reanalysis) -> list[Path]:
    """Write the monthly t2m files and the orography file; returns the paths written."""
    if t2m_pattern.count("*") != 1:
        raise ValueError(f"inputs.background.t2m {t2m_pattern!r}: the demo writes one file per month and names it by "
                         "replacing the pattern's one '*' with YYYYMM; give exactly one '*'")
    written = []
    months = fields.hours.strftime("%Y%m")
    for month in dict.fromkeys(months):
        pick = np.asarray(months == month)
        path = Path(t2m_pattern.replace("*", month))
        _write_t2m(path, fields.t2m[pick], fields.hours[pick], fields.grid)
        written.append(path)
    written.append(_write_orography(Path(orography_path), fields.orography, fields.grid))
    return written


def _coords(grid: Grid) -> dict:
    return {
        "latitude": ("latitude", grid.lat[::-1], {"units": "degrees_north", "standard_name": "latitude"}),
        "longitude": ("longitude", grid.lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }


def _write_t2m(path: Path, t2m: np.ndarray, hours: pd.DatetimeIndex, grid: Grid) -> None:
    seconds = np.array([int(hour.timestamp()) for hour in hours], np.int64)
    data = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), t2m[:, ::-1, :],
                 {"units": "K", "long_name": "2 metre temperature", "GRIB_shortName": "2t"})},
        coords={
            "valid_time": ("valid_time", seconds, {"units": "seconds since 1970-01-01",
                                                   "calendar": "proleptic_gregorian", "standard_name": "time"}),
            "number": np.int64(0),
            "expver": ("valid_time", np.array(["0001"] * len(hours))),
            **_coords(grid),
        },
        attrs={"Conventions": "CF-1.7", "institution": "ta2d demo (ERA5-Land-like, generated with known truth)"},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_netcdf(path, engine="h5netcdf", encoding={"t2m": {"zlib": True, "complevel": 1}})


def _write_orography(path: Path, height_m: np.ndarray, grid: Grid) -> Path:
    z = np.where(np.isfinite(height_m), height_m, 0.0) * GRAVITY  # the CDS file is defined everywhere
    data = xr.Dataset(
        {"z": (("valid_time", "latitude", "longitude"), z[None, ::-1, :].astype(np.float32),
               {"units": "m**2 s**-2", "long_name": "Geopotential"})},
        coords={"valid_time": ("valid_time", np.array([0], np.int64), {"units": "seconds since 1970-01-01"}),
                **_coords(grid)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_netcdf(path, engine="h5netcdf")
    return path
