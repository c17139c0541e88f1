"""Static fields on the 2 km grid: DEM, land-sea mask, IGBP land cover.

File contract: a NetCDF with dims (line, column) whose coordinates are the 1-based GK-2A 2 km
full-disk indices, covering at least the configured domain. Real DEM / MCD12Q1 land cover are
aggregated to this grid once, outside the workflow (mean for the DEM, majority for land cover).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ta2d.grid import Domain

# IGBP collection 6: 1..17, 17 = water. Anything else (255 fill, 0 water in some products) is not a class:
# a station on such a pixel is rejected (invalid_landcover), an unlabelled tile there is skipped.
LANDCOVER_CODES = range(1, 18)


def valid_landcover(codes):
    return (codes >= LANDCOVER_CODES.start) & (codes < LANDCOVER_CODES.stop)


class StaticError(ValueError):
    pass


@dataclass
class StaticFields:
    dem: np.ndarray  # (H, W) float32, m
    land_sea_mask: np.ndarray  # (H, W) float32, 1 = land
    landcover: np.ndarray  # (H, W) int16, IGBP code
    domain: Domain


def read_static(path: str | Path, domain: Domain, dem_var="dem", land_sea_mask_var="land_sea_mask",
                landcover_var="landcover") -> StaticFields:
    path = Path(path)
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as err:
        raise StaticError(f"static file {path}: cannot be opened as NetCDF ({err})") from err
    with ds:
        for name in (dem_var, land_sea_mask_var, landcover_var, "line", "column"):
            if name not in ds.variables:
                raise StaticError(f"static file {path}: no variable {name!r} (has {sorted(ds.variables)})")
        lines, cols = ds["line"].values, ds["column"].values
        missing = [
            f"{axis} {lo}..{hi}" for axis, have, lo, hi in
            (("line", lines, domain.first_line, domain.last_line),
             ("column", cols, domain.first_column, domain.last_column))
            if not np.isin(np.arange(lo, hi + 1), have).all()
        ]
        if missing:
            raise StaticError(f"static file {path}: does not cover the domain ({', '.join(missing)})")
        sel = {"line": slice(domain.first_line, domain.last_line),
               "column": slice(domain.first_column, domain.last_column)}
        sub = ds.sel(sel)

        def grid(name):
            da = sub[name]
            if da.dims != ("line", "column"):
                raise StaticError(f"static file {path}: {name} has dims {da.dims}, want ('line', 'column')")
            return da.values

        return StaticFields(
            dem=grid(dem_var).astype(np.float32),
            land_sea_mask=grid(land_sea_mask_var).astype(np.float32),
            landcover=grid(landcover_var).astype(np.int16),
            domain=domain,
        )
