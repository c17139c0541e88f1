"""Read a reanalysis 2 m temperature background (ERA5-Land or ERA5) and sample it at points and times.

The background is a first guess of TA at every pixel: hourly 2 m temperature downloaded by the user from
the Copernicus Climate Data Store (CDS), either ERA5-Land (0.1 degree grid) or ERA5 single levels
(0.25 degree), variable ``t2m`` in K, plus a separate orography file with the geopotential ``z``
(m2 s-2) on the same grid.

Formats accepted (all read with xarray, engine h5netcdf, i.e. NetCDF4/HDF5 files):

* current CDS files: coordinates ``valid_time`` (int64 seconds since 1970 with CF units), ``latitude``,
  ``longitude``, often extra scalar coordinates (``number``, ``expver``) that are dropped;
* older CDS files: ``time`` instead of ``valid_time``; an ``expver`` dimension (ERA5 and ERA5T mixed in
  one file) is collapsed by taking the first non-missing value;
* ``lat``/``lon`` are accepted as well; latitude may be descending (CDS default), longitude 0..360 or
  -180..180. Everything is normalised to ascending lat, ascending lon in -180..180 and ascending time.
* one file or many (a glob or a list, e.g. one file per month), concatenated along time. Duplicate hours
  (overlapping downloads) keep the first occurrence in file order (files from a glob are sorted by name)
  and emit a :class:`BackgroundOverlapWarning` naming the files: overlaps are normal for repeated
  downloads and are not an error, but the user should know which copy is used.
* orography: ``z`` / 9.80665 = height in m; a length-1 time dimension (``valid_time`` or ``time``) is
  dropped. Its grid may be larger than the t2m grid (the ERA5-Land geopotential file is global); the
  t2m grid points are then picked from it, and any t2m grid point missing from it is an error.

Sampling (:meth:`Background.at`): bilinear in space from the 4 surrounding grid points of the regular
lat/lon grid, linear in time between the two bracketing whole hours, and a height correction from the
(equally interpolated) reanalysis orography to the target height (the DEM height of the pixel) with a
constant lapse rate, by default the standard atmosphere's 6.5 K/km:

    T_target = T_interp - lapse_rate * (target_height - orography_height)

The correction is applied per hour before the time interpolation, so a sample is exactly the linear
interpolation of the corrected field. ERA5-Land is undefined over the sea (NaN): at the coast the
bilinear weights are renormalised over the corners that have data (the orography uses the same weights,
so the correction stays consistent); a sample with no valid corner is NaN.

At GK-2A pixels (:meth:`Background.at_pixels`): the pixel centre's lat/lon (ta2d.grid), its DEM height from the
static fields, °C: the one computation behind a chunk's ``background`` field, the evaluation's baseline and a
map pixel's input, with the lapse rate of the config (``open_background_config``, which also reads only the t2m
files whose names cover the job's days: ta2d.plan.background_t2m_files).

A sample that cannot be computed is NaN with a reason string ("background: ..."), never an exception,
so callers can reject and count such samples. A gap in the hourly series is never bridged: a sample
needs both bracketing hours (only one when it falls on a whole hour).

Every problem with the files raises :class:`BackgroundError` naming the file(s) and what is wrong.
The t2m field is loaded into memory (float32): crop the CDS request to the domain.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from ta2d.grid import linecol_to_lonlat
from ta2d.plan import background_t2m_files
from ta2d.static import StaticFields

GRAVITY = 9.80665  # m s-2, WMO standard gravity: ECMWF's geopotential -> height conversion
STANDARD_LAPSE_RATE = 0.0065  # K/m, ICAO standard atmosphere (6.5 K/km)
KELVIN = 273.15
HOUR_NS = 3_600_000_000_000  # the reanalysis step: ERA5 and ERA5-Land are hourly
_KELVIN_UNITS = {"k", "kelvin", "kelvins"}
_CELSIUS_UNITS = {"c", "degc", "°c", "deg_c", "degrees_c", "degree_c", "celsius", "degrees celsius", "deg c"}
_MIN_PLAUSIBLE_MEDIAN_K = 100.0  # a 2 m temperature field in K has a median of 200..320; in degC, < 50
_GRID_ATOL_DEG = 1e-6  # coordinates written as float32 by some tools still match
_TIME_NAMES = ("valid_time", "time")
_LAT_NAMES = ("latitude", "lat")
_LON_NAMES = ("longitude", "lon")


class BackgroundError(ValueError):
    """A background file (or set of files) that cannot be used; the message names the file(s)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class BackgroundOverlapWarning(UserWarning):
    """Files that hold the same hour: the first file's values are kept."""


@dataclass
class Background:
    """Hourly t2m (K) on a regular lat/lon grid and the reanalysis orography (m) on the same grid.

    ``t2m`` has dims (time, lat, lon), all ascending, lon in -180..180; ``orography_m`` has dims (lat, lon).
    """

    t2m: xr.DataArray
    orography_m: xr.DataArray
    files: tuple[str, ...]
    orography_path: str
    lapse_rate_k_per_m: float = STANDARD_LAPSE_RATE  # what `at` corrects with unless told otherwise
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def source(self) -> str:
        """The files for messages: the path, or the count and first/last path of a series."""
        return describe_files(self.files)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(lat_min, lat_max, lon_min, lon_max) of the grid points."""
        lat, lon = self.t2m["lat"].values, self.t2m["lon"].values
        return float(lat[0]), float(lat[-1]), float(lon[0]), float(lon[-1])

    def check_covers(self, lat_min: float, lat_max: float, lon_min: float, lon_max: float) -> None:
        """Raise :class:`BackgroundError` unless the grid covers the domain bounding box (degrees)."""
        g_lat_min, g_lat_max, g_lon_min, g_lon_max = self.extent
        d_lon_min, d_lon_max = (float(v) for v in normalise_longitude(np.array([lon_min, lon_max])))
        if not (g_lat_min <= lat_min and lat_max <= g_lat_max and g_lon_min <= d_lon_min and d_lon_max <= g_lon_max):
            raise BackgroundError(
                self.source,
                f"grid lat {g_lat_min:g}..{g_lat_max:g}, lon {g_lon_min:g}..{g_lon_max:g} does not cover the domain "
                f"lat {lat_min:g}..{lat_max:g}, lon {d_lon_min:g}..{d_lon_max:g}",
            )

    def at(self, lat, lon, times, target_height_m, lapse_rate_k_per_m: float | None = None):
        """t2m (K) at sample points, corrected to `target_height_m` (with the background's own lapse rate unless
        `lapse_rate_k_per_m` is given).

        `lat`, `lon` (degrees, lon either convention), `times` (numpy datetime64, naive = UTC, or pandas
        timestamps, tz-aware ones are converted to UTC) and `target_height_m` broadcast against each other.
        Returns (values_K float64, reasons object array of str): reasons is "" where the value is finite,
        otherwise why it is NaN.
        """
        if lapse_rate_k_per_m is None:
            lapse_rate_k_per_m = self.lapse_rate_k_per_m
        lat, lon, time_ns, height = np.broadcast_arrays(
            np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64),
            _as_utc_ns(times), np.asarray(target_height_m, dtype=np.float64),
        )
        shape = lat.shape
        lat, lon, time_ns, height = (a.ravel() for a in (lat, lon, time_ns, height))
        lon = normalise_longitude(lon)
        values = np.full(lat.size, np.nan)
        reasons = np.full(lat.size, "", dtype=object)

        bad_input = ~(np.isfinite(lat) & np.isfinite(lon) & np.isfinite(height)) | (time_ns == np.iinfo(np.int64).min)
        reasons[bad_input] = "background: sample has a NaN lat, lon or target height, or NaT time"

        grid_lat, grid_lon = self.t2m["lat"].values, self.t2m["lon"].values
        outside = ~bad_input & ((lat < grid_lat[0]) | (lat > grid_lat[-1]) | (lon < grid_lon[0]) | (lon > grid_lon[-1]))
        reasons[outside] = (
            f"background: outside the grid (lat {grid_lat[0]:g}..{grid_lat[-1]:g}, "
            f"lon {grid_lon[0]:g}..{grid_lon[-1]:g}) of {self.source}"
        )

        # bracketing hours: h0 = the whole hour at or before the sample, h1 = h0 + 1 h; h1 is needed only
        # when the sample is not on a whole hour (weight > 0), so a gap is never bridged
        hour0 = np.where(bad_input, 0, time_ns) // HOUR_NS * HOUR_NS
        time_weight1 = (np.where(bad_input, 0, time_ns) - hour0) / HOUR_NS
        grid_times = self._time_ns()
        index0, found0 = _lookup(grid_times, hour0)
        index1, found1 = _lookup(grid_times, hour0 + HOUR_NS)
        needs1 = time_weight1 > 0
        ok = ~bad_input & ~outside
        for missing, hours in ((ok & ~found0, hour0), (ok & found0 & needs1 & ~found1, hour0 + HOUR_NS)):
            for hour in np.unique(hours[missing]):  # a loop over missing hours, not over samples
                label = np.datetime64(int(hour), "ns").astype("datetime64[m]")
                reasons[missing & (hours == hour)] = f"background: no hour {label} in {self.source}"
        ok &= found0 & (found1 | ~needs1)

        rows, cols, corner_weights = _bilinear_corners(grid_lat, grid_lon, lat[ok], lon[ok])
        field_k = self._t2m_values()
        orography = self.orography_m.values
        orography_corners = orography[rows, cols]  # (4, n)
        height_ok = height[ok]
        weight1 = time_weight1[ok]
        result = np.zeros(rows.shape[1])
        no_data = np.zeros(rows.shape[1], dtype=bool)
        for hour_index, hour_weight in ((index0[ok], 1.0 - weight1), (index1[ok], weight1)):
            needed = hour_weight > 0
            # clip: h1 of on-the-hour samples may not exist; their weight is 0 and the value unused
            t_corners = field_k[np.clip(hour_index, 0, len(grid_times) - 1), rows, cols].astype(np.float64)
            valid = np.isfinite(t_corners)
            weights = np.where(valid, corner_weights, 0.0)
            weight_sum = weights.sum(axis=0)
            has_data = weight_sum > 0
            safe_sum = np.where(has_data, weight_sum, 1.0)
            t_interp = (np.where(valid, t_corners, 0.0) * weights).sum(axis=0) / safe_sum
            orog_interp = (orography_corners * weights).sum(axis=0) / safe_sum
            corrected = t_interp - lapse_rate_k_per_m * (height_ok - orog_interp)
            result += np.where(needed, hour_weight * corrected, 0.0)
            no_data |= needed & ~has_data
        result[no_data] = np.nan
        values[ok] = result
        ok_positions = np.flatnonzero(ok)
        reasons[ok_positions[no_data]] = (
            f"background: no data at the 4 surrounding grid points (sea in ERA5-Land?) in {self.source}"
        )
        return values.reshape(shape), reasons.reshape(shape)

    def at_pixels(self, static: StaticFields, line, column, unix_s, lapse_rate_k_per_m: float | None = None):
        """The background in °C at GK-2A pixels (1-based full-disk ``line``, ``column``: the pixel centre's lat/lon,
        ta2d.grid) and times (``unix_s``, Unix seconds UTC), height-corrected to each pixel's DEM in ``static``:
        what a chunk sample carries (ta2d.chunks.patches), the evaluation's baseline scores and a map pixel gets,
        so the three agree. Returns (°C float64, reasons as in :meth:`at`); a pixel outside the static domain has
        no DEM and so no value. A grid that misses the pixels raises :class:`BackgroundError`, naming the files."""
        line = np.asarray(line, dtype=np.int64)
        column = np.asarray(column, dtype=np.int64)
        lon, lat = linecol_to_lonlat(line, column)
        dom = static.domain
        inside = (line >= dom.first_line) & (line <= dom.last_line) & (column >= dom.first_column) & (
            column <= dom.last_column)
        height = np.full(line.shape, np.nan)
        height[inside] = static.dem[line[inside] - dom.first_line, column[inside] - dom.first_column]
        if inside.any():  # a grid that misses the domain is an error naming the file, not a column of NaN
            self.check_covers(lat[inside].min(), lat[inside].max(), lon[inside].min(), lon[inside].max())
        times = np.asarray(unix_s, dtype=np.int64).astype("datetime64[s]")
        kelvin, reasons = self.at(lat, lon, times, height, lapse_rate_k_per_m)
        return np.asarray(kelvin, np.float64) - KELVIN, reasons

    def _time_ns(self) -> np.ndarray:
        if "time_ns" not in self._cache:
            self._cache["time_ns"] = self.t2m["time"].values.astype("datetime64[ns]").astype(np.int64)
        return self._cache["time_ns"]

    def _t2m_values(self) -> np.ndarray:
        if "values" not in self._cache:
            self._cache["values"] = np.asarray(self.t2m.values)
        return self._cache["values"]


def open_background(paths, orography_path, lapse_rate_k_per_km: float = STANDARD_LAPSE_RATE * 1000) -> Background:
    """Open t2m file(s) (a path, a glob pattern, or a list of paths/patterns) and the orography file."""
    files = expand_paths(paths)
    fields = [_read_t2m(path) for path in files]
    first = fields[0]
    for path, other in zip(files[1:], fields[1:], strict=True):
        if not _same_grid(first, other):
            raise BackgroundError(
                path, f"grid {_grid_text(other)} differs from the grid {_grid_text(first)} of {files[0]}"
            )
    t2m = _concat_keep_first(fields, files)
    if t2m.sizes["lat"] < 2 or t2m.sizes["lon"] < 2:
        raise BackgroundError(describe_files(files), f"grid {_grid_text(t2m)} needs at least 2 points in lat and lon")
    orography = _read_orography(str(orography_path), t2m)
    return Background(t2m=t2m, orography_m=orography, files=tuple(files), orography_path=str(orography_path),
                      lapse_rate_k_per_m=float(lapse_rate_k_per_km) / 1000.0)


def open_background_config(background: Mapping, first_day: str | None = None,
                           last_day: str | None = None) -> Background:
    """The background of the config's ``inputs.background`` (t2m, orography, lapse_rate_k_per_km): only the t2m
    files that may hold the hours of the UTC days ``first_day``..``last_day`` when their names tell
    (:func:`ta2d.plan.background_t2m_files`; a chunk or map job then reads its month, not years of hours)."""
    every = expand_paths(background["t2m"])
    # days the downloads do not reach: one file gives the grid, and every sample "no hour" in it
    files = background_t2m_files(every, first_day, last_day) or every[:1]
    return open_background(files, background["orography"],
                           background.get("lapse_rate_k_per_km", STANDARD_LAPSE_RATE * 1000))


def expand_paths(paths) -> list[str]:
    """Paths or glob patterns -> list of existing files (each pattern's matches sorted by name)."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise BackgroundError("<no files>", "no background t2m files given")
    files: list[str] = []
    for item in items:
        item = os.fspath(item)
        if glob.has_magic(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise BackgroundError(item, "the pattern matches no file")
            files.extend(matches)
        elif not os.path.isfile(item):
            raise BackgroundError(item, "no such file")
        else:
            files.append(item)
    return files


def describe_files(files) -> str:
    files = list(files)
    if len(files) == 1:
        return files[0]
    return f"{len(files)} files {files[0]} .. {files[-1]}"


def normalise_longitude(lon: np.ndarray) -> np.ndarray:
    """Degrees east -> -180..180 (180 stays 180 so a domain edge at the antimeridian is not flipped)."""
    lon = np.asarray(lon, dtype=np.float64)
    return np.where(lon > 180, lon - 360, np.where(lon < -180, lon + 360, lon))


# --- reading -------------------------------------------------------------------------------------------

def _open_dataset(path: str) -> xr.Dataset:
    try:
        return xr.open_dataset(path, engine="h5netcdf")
    except Exception as error:  # any reader failure becomes a message naming the file
        with open(path, "rb") as handle:
            magic = handle.read(4)
        hint = " (a NetCDF3 file: convert it with `nccopy -k nc4` or download NetCDF4 from the CDS)" if (
            magic[:3] == b"CDF") else ""
        raise BackgroundError(path, f"cannot open as NetCDF4/HDF5{hint}: {error}") from error


def _find_name(candidates, names, path: str, what: str, available) -> str:
    for name in candidates:
        if name in names:
            return name
    raise BackgroundError(path, f"no {what} coordinate ({' or '.join(candidates)}); it has {sorted(available)}")


def _read_t2m(path: str) -> xr.DataArray:
    with _open_dataset(path) as dataset:
        if "t2m" not in dataset.data_vars:
            raise BackgroundError(path, f"no variable 't2m'; the file has {sorted(map(str, dataset.data_vars))}")
        t2m = dataset["t2m"]
        names = set(map(str, t2m.dims)) | set(map(str, t2m.coords))
        time_name = _find_name(_TIME_NAMES, names, path, "time", names)
        lat_name = _find_name(_LAT_NAMES, names, path, "latitude", names)
        lon_name = _find_name(_LON_NAMES, names, path, "longitude", names)
        if time_name not in t2m.dims:  # a single hour stored as a scalar coordinate
            t2m = t2m.expand_dims(time_name)
        if not np.issubdtype(t2m[time_name].dtype, np.datetime64):
            raise BackgroundError(
                path, f"time coordinate '{time_name}' is not a CF time (units {t2m[time_name].attrs.get('units')!r})"
            )
        t2m = _collapse_extra_dims(t2m, (time_name, lat_name, lon_name), path)
        units = str(t2m.attrs.get("units", "")).strip()
        if units.lower() in _CELSIUS_UNITS:
            raise BackgroundError(path, f"°C instead of K: t2m has units {units!r}; download t2m in K from the CDS")
        if units and units.lower() not in _KELVIN_UNITS:
            raise BackgroundError(path, f"t2m has units {units!r}, expected 'K'")
        t2m = t2m.reset_coords(drop=True).rename({time_name: "time", lat_name: "lat", lon_name: "lon"})
        t2m = t2m.transpose("time", "lat", "lon").astype(np.float32).load()
    finite = t2m.values[np.isfinite(t2m.values)]
    if finite.size == 0:
        raise BackgroundError(path, "t2m has no finite value")
    median = float(np.median(finite))
    if median < _MIN_PLAUSIBLE_MEDIAN_K:
        raise BackgroundError(
            path,
            f"°C instead of K: t2m values look like °C (median {median:.1f}) although units are {units or 'unset'!r}",
        )
    time_ns = t2m["time"].values.astype("datetime64[ns]").astype(np.int64)
    if np.any(time_ns % HOUR_NS):
        raise BackgroundError(path, "times are not on whole hours (expected hourly ERA5/ERA5-Land)")
    return _normalise_grid(t2m, path)


def _collapse_extra_dims(t2m: xr.DataArray, keep, path: str) -> xr.DataArray:
    for dim in [d for d in t2m.dims if d not in keep]:
        if t2m.sizes[dim] == 1:
            t2m = t2m.isel({dim: 0})
        elif dim == "expver":  # ERA5 (expver 1) and ERA5T (5) in one file: each hour has data in only one
            combined = t2m.isel(expver=0)
            for k in range(1, t2m.sizes["expver"]):
                combined = combined.combine_first(t2m.isel(expver=k))
            t2m = combined
        else:
            raise BackgroundError(path, f"t2m has an unexpected dimension {dim!r} of size {t2m.sizes[dim]}")
    return t2m


def _normalise_grid(data: xr.DataArray, path: str) -> xr.DataArray:
    """Ascending lat and lon, lon in -180..180; the grid must be regular for the bilinear lookup."""
    data = data.assign_coords(lon=normalise_longitude(data["lon"].values), lat=data["lat"].values.astype(np.float64))
    data = data.sortby("lat").sortby("lon")
    if "time" in data.dims:
        data = data.sortby("time")
    for name in ("lat", "lon"):
        coordinate = data[name].values
        steps = np.diff(coordinate)
        if steps.size and (np.any(steps <= 0) or not np.allclose(steps, steps[0], rtol=0, atol=1e-4)):
            raise BackgroundError(
                path, f"{name} is not a regular grid (steps {np.unique(np.round(steps, 4))[:5]}; "
                      "a grid across the antimeridian is not supported)"
            )
    return data


def _same_grid(a: xr.DataArray, b: xr.DataArray) -> bool:
    return all(
        a.sizes[n] == b.sizes[n] and np.allclose(a[n].values, b[n].values, rtol=0, atol=_GRID_ATOL_DEG)
        for n in ("lat", "lon")
    )


def _grid_text(data: xr.DataArray) -> str:
    lat, lon = data["lat"].values, data["lon"].values
    return f"lat {lat[0]:g}..{lat[-1]:g} ({lat.size}), lon {lon[0]:g}..{lon[-1]:g} ({lon.size})"


def _concat_keep_first(fields: list[xr.DataArray], files: list[str]) -> xr.DataArray:
    if len(fields) == 1 and fields[0]["time"].to_index().is_unique:
        return fields[0]
    grid = fields[0]
    times = np.concatenate([f["time"].values.astype("datetime64[ns]") for f in fields])
    file_of = np.concatenate([np.full(f.sizes["time"], k) for k, f in enumerate(fields)])
    _, first_positions = np.unique(times, return_index=True)  # first occurrence in file order, sorted by time
    if first_positions.size < times.size:
        dropped = np.setdiff1d(np.arange(times.size), first_positions)
        kept_file_of_time = dict(zip(times[first_positions], file_of[first_positions], strict=True))
        pairs = sorted({(int(kept_file_of_time[times[p]]), int(file_of[p])) for p in dropped})
        details = "; ".join(f"{files[b]} repeats hours of {files[a]}" for a, b in pairs[:5])
        warnings.warn(
            f"background: {dropped.size} duplicate hour(s), the first file's values are kept: {details}",
            BackgroundOverlapWarning, stacklevel=3,
        )
    values = np.concatenate([f.values for f in fields])[first_positions]
    return xr.DataArray(
        values, dims=("time", "lat", "lon"),
        coords={"time": times[first_positions], "lat": grid["lat"].values, "lon": grid["lon"].values},
        name="t2m", attrs=grid.attrs,
    )


def _read_orography(path: str, t2m: xr.DataArray) -> xr.DataArray:
    if not os.path.isfile(path):
        raise BackgroundError(path, "no such orography file")
    with _open_dataset(path) as dataset:
        if "z" not in dataset.data_vars:
            raise BackgroundError(
                path, f"no geopotential variable 'z'; the orography file has {sorted(map(str, dataset.data_vars))}"
            )
        z = dataset["z"]
        names = set(map(str, z.dims)) | set(map(str, z.coords))
        lat_name = _find_name(_LAT_NAMES, names, path, "latitude", names)
        lon_name = _find_name(_LON_NAMES, names, path, "longitude", names)
        for dim in [d for d in z.dims if d not in (lat_name, lon_name)]:
            if z.sizes[dim] != 1:
                raise BackgroundError(path, f"orography has a dimension {dim!r} of size {z.sizes[dim]}, expected 1")
            z = z.isel({dim: 0})
        z = z.reset_coords(drop=True).rename({lat_name: "lat", lon_name: "lon"}).astype(np.float64).load()
    height = _normalise_grid(z / GRAVITY, path)
    # pick the t2m grid points (the orography may cover more, e.g. the global ERA5-Land geopotential)
    picked = height.reindex(
        lat=t2m["lat"].values, lon=t2m["lon"].values, method="nearest", tolerance=_GRID_ATOL_DEG
    )
    if not np.isfinite(picked.values).all():  # a t2m grid point absent from the orography grid (or NaN z)
        raise BackgroundError(
            path, f"orography grid {_grid_text(height)} differs from (does not hold) the t2m grid {_grid_text(t2m)}"
        )
    return picked.rename("orography_m")


# --- sampling helpers ----------------------------------------------------------------------------------

def _as_utc_ns(times) -> np.ndarray:
    """datetime64 / pandas timestamps (naive = UTC) -> int64 ns since 1970; NaT -> int64 min."""
    array = np.asarray(times)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[ns]").astype(np.int64)
    flat = pd.DatetimeIndex(pd.to_datetime(list(array.ravel()), utc=True)).tz_convert(None).as_unit("ns")
    return np.asarray(flat.asi8).reshape(array.shape)  # NaT is int64 min


def _lookup(grid_times: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = np.searchsorted(grid_times, wanted)
    clipped = np.minimum(index, grid_times.size - 1)
    return clipped, (index < grid_times.size) & (grid_times[clipped] == wanted)


def _bilinear_corners(grid_lat, grid_lon, lat, lon):
    """Row/col indices (4, n) of the surrounding grid points and their bilinear weights (4, n)."""
    i = np.clip(np.searchsorted(grid_lat, lat, side="right") - 1, 0, grid_lat.size - 2)
    j = np.clip(np.searchsorted(grid_lon, lon, side="right") - 1, 0, grid_lon.size - 2)
    fy = (lat - grid_lat[i]) / (grid_lat[i + 1] - grid_lat[i])
    fx = (lon - grid_lon[j]) / (grid_lon[j + 1] - grid_lon[j])
    rows = np.stack([i, i, i + 1, i + 1])
    cols = np.stack([j, j + 1, j, j + 1])
    weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    return rows, cols, weights
