"""The GK-2A fixed grid (GEOS, CGMS normalized geostationary projection).

Lines grow southward and columns eastward; both are 1-based pixel centres, as GK-2A numbers
them, so array index = line - 1. Formulas: CGMS LRIT/HRIT spec as in EUMETSAT MSG_navigation.c
(docs/gk2a-format.md#geos-navigation), with LFAC taken positive (files store it negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUB_LON_DEG = 128.2
SAT_RADIUS_KM = 42164.0  # from the Earth's centre (file: nominal_satellite_height, in m)
EQ_RADIUS_KM = 6378.137
POLAR_RADIUS_KM = 6356.7523

# FD grid constants per resolution (km): (COFF = LOFF, CFAC = |LFAC|, size)
FD_GRIDS: dict[float, tuple[float, float, int]] = {
    2.0: (2750.5, 20425338.903339352, 5500),
    1.0: (5500.5, 40850677.806678705, 11000),
    0.5: (11000.5, 81701355.61335742, 22000),
}
GSD_M = 2000.0


@dataclass(frozen=True)
class Domain:
    """A rectangle of the 2 km FD grid, 1-based inclusive line/column bounds."""

    first_line: int
    last_line: int
    first_column: int
    last_column: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.last_line - self.first_line + 1, self.last_column - self.first_column + 1)

    @property
    def lines(self) -> np.ndarray:
        return np.arange(self.first_line, self.last_line + 1, dtype=np.int32)

    @property
    def columns(self) -> np.ndarray:
        return np.arange(self.first_column, self.last_column + 1, dtype=np.int32)

    def contains(self, line, column, margin: int = 0):
        """True where the (line, column) pixel and `margin` pixels around it lie inside."""
        line = np.asarray(line)
        column = np.asarray(column)
        return (
            (line - margin >= self.first_line)
            & (line + margin <= self.last_line)
            & (column - margin >= self.first_column)
            & (column + margin <= self.last_column)
        )

    @classmethod
    def from_config(cls, d: dict) -> Domain:
        return cls(int(d["first_line"]), int(d["last_line"]), int(d["first_column"]), int(d["last_column"]))


def lonlat_to_linecol(lon_deg, lat_deg, resolution_km: float = 2.0, coff=None, loff=None, cfac=None):
    """Geodetic lon/lat (deg) -> fractional (line, column), 1-based. NaN where not visible from GK-2A.

    `coff/loff/cfac` default to the FD grid of `resolution_km`; pass a file's own values for a sector.
    """
    fd_off, fd_fac, _ = FD_GRIDS[resolution_km]
    coff = fd_off if coff is None else coff
    loff = fd_off if loff is None else loff
    cfac = fd_fac if cfac is None else cfac
    lfac = cfac
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    ab2 = (POLAR_RADIUS_KM / EQ_RADIUS_KM) ** 2
    c_lat = np.arctan(ab2 * np.tan(lat))  # geocentric latitude
    e2 = 1.0 - ab2
    rl = POLAR_RADIUS_KM / np.sqrt(1.0 - e2 * np.cos(c_lat) ** 2)
    dlon = lon - np.radians(SUB_LON_DEG)
    r1 = SAT_RADIUS_KM - rl * np.cos(c_lat) * np.cos(dlon)
    r2 = -rl * np.cos(c_lat) * np.sin(dlon)
    r3 = rl * np.sin(c_lat)
    rn = np.sqrt(r1**2 + r2**2 + r3**2)
    visible = r1 * (rl * np.cos(c_lat) * np.cos(dlon)) - r2**2 - r3**2 / ab2 > 0
    x = np.degrees(np.arctan(-r2 / r1))
    y = np.degrees(np.arcsin(-r3 / rn))
    column = coff + x * cfac / 2**16
    line = loff + y * lfac / 2**16
    return np.where(visible, line, np.nan), np.where(visible, column, np.nan)


def linecol_to_lonlat(line, column, resolution_km: float = 2.0, coff=None, loff=None, cfac=None):
    """(line, column), 1-based pixel centres -> geodetic (lon, lat) in degrees; NaN for space pixels."""
    fd_off, fd_fac, _ = FD_GRIDS[resolution_km]
    coff = fd_off if coff is None else coff
    loff = fd_off if loff is None else loff
    cfac = fd_fac if cfac is None else cfac
    lfac = cfac
    x = np.radians((np.asarray(column, dtype=np.float64) - coff) * 2**16 / cfac)
    y = np.radians((np.asarray(line, dtype=np.float64) - loff) * 2**16 / lfac)
    a2b2 = (EQ_RADIUS_KM / POLAR_RADIUS_KM) ** 2
    h = SAT_RADIUS_KM
    q = np.cos(y) ** 2 + a2b2 * np.sin(y) ** 2
    d = (h * np.cos(x) * np.cos(y)) ** 2 - q * (h**2 - EQ_RADIUS_KM**2)
    with np.errstate(invalid="ignore"):
        sn = (h * np.cos(x) * np.cos(y) - np.sqrt(d)) / q
    s1 = h - sn * np.cos(x) * np.cos(y)
    s2 = sn * np.sin(x) * np.cos(y)
    s3 = -sn * np.sin(y)
    sxy = np.sqrt(s1**2 + s2**2)
    lon = SUB_LON_DEG + np.degrees(np.arctan(s2 / s1))
    lat = np.degrees(np.arctan(a2b2 * s3 / sxy))
    space = ~(d >= 0)
    return np.where(space, np.nan, lon), np.where(space, np.nan, lat)


def domain_lonlat(domain: Domain) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat (deg) of every pixel centre of the domain, shape domain.shape."""
    lines, cols = np.meshgrid(domain.lines, domain.columns, indexing="ij")
    return linecol_to_lonlat(lines, cols)
