"""The demo window and its static fields: land/sea, DEM and IGBP land cover on the 2 km FD grid.

Every field is a function of ABSOLUTE FD coordinates (line, column, lon, lat) and the seed only,
never of the window, so a tiny test domain is an exact crop of the default demo and the static
attributes of a point outside the window (the out-of-domain station) come from the same model.
The land mass is a rough Korean peninsula (polygon in lon/lat, coast roughened with noise).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ta2d.grid import FD_GRIDS, SUB_LON_DEG, Domain, linecol_to_lonlat

# (lon, lat) of a rough Korean-peninsula outline, clockwise; closed at 41.5N (beyond any domain).
KOREA_OUTLINE = [
    (124.30, 40.10),
    (124.90, 39.60),
    (125.40, 39.00),
    (125.00, 38.80),
    (124.75, 38.15),
    (125.20, 37.85),
    (125.70, 37.90),
    (126.10, 37.75),
    (126.55, 37.70),
    (126.60, 37.45),
    (126.75, 37.20),
    (126.90, 36.95),
    (126.15, 36.90),
    (126.30, 36.60),
    (126.50, 36.30),
    (126.60, 35.95),
    (126.45, 35.60),
    (126.30, 35.20),
    (126.30, 34.75),
    (126.45, 34.30),
    (126.90, 34.45),
    (127.35, 34.50),
    (127.75, 34.65),
    (128.00, 34.85),
    (128.45, 34.80),
    (128.70, 34.75),
    (129.10, 35.05),
    (129.45, 35.45),
    (129.55, 36.05),
    (129.40, 36.50),
    (129.45, 37.00),
    (129.20, 37.45),
    (128.95, 37.80),
    (128.60, 38.20),
    (128.35, 38.60),
    (127.90, 38.95),
    (127.45, 39.20),
    (127.60, 39.60),
    (127.80, 39.85),
    (128.60, 40.20),
    (128.60, 41.50),
    (124.30, 41.50),
]
# Islands as ellipses: lon, lat, semi-axis lon (deg), semi-axis lat (deg).
ISLANDS = [
    (126.55, 33.38, 0.36, 0.16),  # Jeju
    (130.87, 37.50, 0.06, 0.05),  # Ulleung
    (124.70, 37.96, 0.06, 0.04),  # Baengnyeong
    (125.43, 34.68, 0.05, 0.04),  # Heuksan
    (126.25, 34.45, 0.12, 0.08),  # Jindo
    (126.75, 34.32, 0.06, 0.05),  # Wando
]
# Mountain ranges: polyline (lon, lat), crest height (m), half-width (deg).
RANGES = [
    ([(128.30, 38.60), (128.70, 37.70), (129.05, 37.00), (129.00, 36.30), (128.90, 35.60)], 1000.0, 0.30),
    ([(128.50, 36.90), (128.00, 36.30), (127.70, 35.70), (127.55, 35.30)], 800.0, 0.25),
    ([(127.00, 38.90), (126.80, 39.80)], 700.0, 0.30),
]
PEAKS = [(127.73, 35.33, 600.0, 0.12), (126.53, 33.36, 1400.0, 0.10)]  # Jirisan, Hallasan: lon, lat, m, deg
# Cities (lon, lat, radius deg) -> IGBP 13 urban.
CITIES = [
    (126.98, 37.55, 0.12),
    (126.68, 37.46, 0.06),
    (127.02, 37.27, 0.05),
    (127.39, 36.35, 0.06),
    (128.60, 35.87, 0.08),
    (126.85, 35.16, 0.06),
    (129.05, 35.15, 0.08),
    (129.30, 35.54, 0.05),
    (125.75, 39.03, 0.08),
    (127.15, 35.82, 0.04),
    (127.49, 36.64, 0.04),
    (129.36, 36.02, 0.03),
    (128.90, 37.75, 0.03),
    (126.53, 33.50, 0.03),
]
WATER, URBAN, FILL = 17, 13, 255
NOISE_TILE = 512  # periodic noise tiles, sampled at absolute FD pixel positions modulo this size
SMOOTH_SIGMA_PX = 4.0  # scale of the coastal land fraction (tapers the DEM to 0 m at the coast)
DIURNAL_SIGMA_PX = 1.5  # scale of the land fraction that damps the diurnal cycle near the sea


@dataclass(frozen=True)
class Window:
    """A rectangle of the 2 km FD grid (1-based first line/column) that every demo file covers."""

    first_line: int
    first_column: int
    n_lines: int
    n_columns: int

    @classmethod
    def around(cls, domain: Domain, margin_px: int) -> Window:
        h, w = domain.shape
        return cls(
            domain.first_line - margin_px,
            domain.first_column - margin_px,
            h + 2 * margin_px,
            w + 2 * margin_px,
        )

    @property
    def lines(self) -> np.ndarray:
        return np.arange(self.first_line, self.first_line + self.n_lines, dtype=np.int32)

    @property
    def columns(self) -> np.ndarray:
        return np.arange(self.first_column, self.first_column + self.n_columns, dtype=np.int32)

    def at(self, factor: int) -> tuple[int, int, int, int]:
        """(first_line, first_column, n_lines, n_columns) on the grid `factor` times finer (1, 2 or 4).

        The grids nest exactly: 2 km pixel i (0-based) = fine pixels factor*i .. factor*i + factor-1.
        """
        return (
            factor * (self.first_line - 1) + 1,
            factor * (self.first_column - 1) + 1,
            factor * self.n_lines,
            factor * self.n_columns,
        )

    def index(self, line, column):
        """0-based array index of FD 2 km (line, column) in this window."""
        return np.asarray(line) - self.first_line, np.asarray(column) - self.first_column


@dataclass(frozen=True)
class StaticFields:
    """Per-pixel static attributes; arrays share one shape (the window's, or any subset of it)."""

    line: np.ndarray  # int32, FD 2 km, 1-based
    column: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    land: np.ndarray  # bool, False = water (sea or lake)
    landfrac: np.ndarray  # smoothed land fraction 0..1 (coast taper of the DEM, land cover)
    dem: np.ndarray  # m, >= 0
    landcover: np.ndarray  # uint8 IGBP 1..17 (255 only after a planted defect)
    albedo_var: np.ndarray  # static surface-brightness variation, ~N(0, 1)
    # land fraction within ~3 px (Gaussian, sigma DIURNAL_SIGMA_PX): damps the diurnal cycle near the
    # sea. Narrow on purpose: a 9x9 patch of the land-sea mask sees all of it, so the term is observable.
    landfrac_local: np.ndarray

    def take(self, rows, cols) -> StaticFields:
        """The attributes at 0-based window indices (arrays of any shape)."""
        return StaticFields(*(getattr(self, f)[rows, cols] for f in self.__dataclass_fields__))

    def with_landcover(self, landcover: np.ndarray) -> StaticFields:
        return replace(self, landcover=landcover)


def periodic_noise(seed: int, purpose: int, scale_px: float, size: int = NOISE_TILE) -> np.ndarray:
    """A periodic Gaussian random field (unit std), correlation length ~scale_px pixels."""
    rng = np.random.default_rng([seed, 1000 + purpose])
    white = rng.standard_normal((size, size))
    k = np.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    field = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2.0 * (np.pi * scale_px) ** 2 * k2)).real
    return ((field - field.mean()) / field.std()).astype(np.float32)


def sample_tile(tile: np.ndarray, rows, cols) -> np.ndarray:
    """Bilinear sample of a periodic tile at fractional positions (any broadcastable shapes)."""
    size = tile.shape[0]
    rows = np.asarray(rows, dtype=np.float64)
    cols = np.asarray(cols, dtype=np.float64)
    r0 = np.floor(rows)
    c0 = np.floor(cols)
    fr = (rows - r0).astype(np.float32)
    fc = (cols - c0).astype(np.float32)
    r0 = r0.astype(np.int64) % size
    c0 = c0.astype(np.int64) % size
    r1 = (r0 + 1) % size
    c1 = (c0 + 1) % size
    top = tile[r0, c0] * (1 - fc) + tile[r0, c1] * fc
    bottom = tile[r1, c0] * (1 - fc) + tile[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _inside_polygon(lon: np.ndarray, lat: np.ndarray, poly) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    inside = np.zeros(lon.shape, dtype=bool)
    xs = [p[0] for p in poly]
    ys = [p[1] for p in poly]
    n = len(poly)
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        crosses = (y1 > lat) != (y2 > lat)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (lon < x_at)
    return inside


def _distance_to_polyline(lon, lat, pts) -> np.ndarray:
    """Distance (deg, lon scaled by cos 37N) from points to a polyline."""
    kx = np.cos(np.radians(37.0))
    best = np.full(lon.shape, np.inf)
    for (xa, ya), (xb, yb) in zip(pts[:-1], pts[1:], strict=True):
        dx, dy = (xb - xa) * kx, yb - ya
        t = np.clip(((lon - xa) * kx * dx + (lat - ya) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        best = np.minimum(best, np.hypot((lon - xa) * kx - t * dx, lat - ya - t * dy))
    return best


def _blur(a: np.ndarray, sigma: float, pad: int) -> np.ndarray:
    """Separable Gaussian blur of a padded array, cropped by `pad` on every side ('valid' part)."""
    radius = pad
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = sum(kernel[i] * a[i : a.shape[0] - 2 * radius + i, :] for i in range(2 * radius + 1))
    out = sum(kernel[i] * out[:, i : out.shape[1] - 2 * radius + i] for i in range(2 * radius + 1))
    return out


def static_fields(window: Window, seed: int) -> StaticFields:
    """Land/sea, DEM and land cover on the window (absolute-coordinate model, see module doc)."""
    pad = int(np.ceil(3 * SMOOTH_SIGMA_PX))
    lines = np.arange(window.first_line - pad, window.first_line + window.n_lines + pad, dtype=np.float64)
    cols = np.arange(
        window.first_column - pad, window.first_column + window.n_columns + pad, dtype=np.float64
    )
    ll, cc = np.meshgrid(lines, cols, indexing="ij")
    lon, lat = linecol_to_lonlat(ll, cc)

    # Roughened coast: test membership at jittered positions (two scales of noise, in degrees).
    jlon = 0.05 * sample_tile(periodic_noise(seed, 1, 6.0), ll, cc)
    jlon += 0.02 * sample_tile(periodic_noise(seed, 2, 2.0), ll, cc)
    jlat = 0.05 * sample_tile(periodic_noise(seed, 3, 6.0), ll, cc)
    jlat += 0.02 * sample_tile(periodic_noise(seed, 4, 2.0), ll, cc)
    plon, plat = lon + jlon, lat + jlat
    land = _inside_polygon(plon, plat, KOREA_OUTLINE)
    for x0, y0, ax, ay in ISLANDS:
        land |= ((plon - x0) / ax) ** 2 + ((plat - y0) / ay) ** 2 <= 1.0
    landfrac_padded = _blur(land.astype(np.float64), SMOOTH_SIGMA_PX, pad)
    landfrac_local = np.clip(_blur(land.astype(np.float64), DIURNAL_SIGMA_PX, pad), 0.0, 1.0)

    def crop(a):
        return a[pad:-pad, pad:-pad]

    lon, lat, ll, cc, land = crop(lon), crop(lat), crop(ll), crop(cc), crop(land)
    landfrac = np.clip(landfrac_padded, 0.0, 1.0)

    # Reservoirs: rare inland water pixels far from the coast.
    lakes = land & (landfrac > 0.995) & (sample_tile(periodic_noise(seed, 5, 2.5), ll, cc) > 3.0)
    land &= ~lakes

    # DEM: ranges + peaks + rolling hills, tapered to 0 at the coast (sea level).
    relief = np.zeros(lon.shape)
    for pts, height, width in RANGES:
        relief += height * np.exp(-((_distance_to_polyline(lon, lat, pts) / width) ** 2))
    kx = np.cos(np.radians(37.0))
    for x0, y0, height, width in PEAKS:
        relief += height * np.exp(-np.hypot((lon - x0) * kx, lat - y0) / width)
    hills = sample_tile(periodic_noise(seed, 6, 10.0), ll, cc)
    rough = sample_tile(periodic_noise(seed, 7, 2.0), ll, cc)
    relief = relief * (1.0 + 0.2 * rough) + 120.0 * np.clip(hills + 1.0, 0.0, None) + 30.0 * rough
    relief = 1800.0 * np.tanh(np.clip(relief, 0.0, None) / 1800.0)  # soft cap: Korea peaks near 1900 m
    taper = np.clip((landfrac - 0.45) * 2.5, 0.0, 1.0)
    dem = np.where(land, np.clip(relief * taper, 0.0, None), 0.0).astype(np.float32)

    landcover = _landcover(seed, lon, lat, ll, cc, land, landfrac, dem)
    albedo_var = sample_tile(periodic_noise(seed, 8, 1.5), ll, cc).astype(np.float32)
    return StaticFields(
        ll.astype(np.int32),
        cc.astype(np.int32),
        lon.astype(np.float32),  # float32 halves the per-slot truth cost; 1e-6 deg is plenty
        lat.astype(np.float32),
        land,
        landfrac.astype(np.float32),
        dem,
        landcover,
        albedo_var,
        landfrac_local.astype(np.float32),
    )


def _landcover(seed, lon, lat, ll, cc, land, landfrac, dem) -> np.ndarray:
    n1 = sample_tile(periodic_noise(seed, 9, 3.0), ll, cc)
    n2 = sample_tile(periodic_noise(seed, 10, 5.0), ll, cc)
    lc = np.full(lon.shape, 12, dtype=np.uint8)  # croplands (paddies) in the lowlands
    lc[(dem < 150) & (n1 > 0.5)] = 14  # cropland/natural mosaic
    lc[(dem < 150) & (n1 < -1.6)] = 10  # grassland
    lc[(dem < 150) & (n1 < -2.3)] = 16  # barren
    lc[(dem >= 150) & (dem < 350)] = 5
    lc[(dem >= 150) & (dem < 350) & (n1 > 0.3)] = 14
    hill = dem >= 350
    lc[hill] = 5  # mixed forest dominates Korean mountains
    lc[hill & (n2 > 0.4)] = 4
    lc[hill & (n2 < -0.6)] = 1
    lc[(landfrac < 0.6) & (dem < 20) & (lon < 127.0) & (n2 > 0.8)] = 11  # tidal wetlands, west coast
    kx = np.cos(np.radians(37.0))
    urban = n1 > 2.6  # scattered towns
    for x0, y0, r in CITIES:
        urban |= np.hypot((lon - x0) * kx, lat - y0) < r * (1.0 + 0.4 * n2)
    lc[urban] = URBAN
    lc[~land] = WATER
    return lc


def write_static(path, fields: StaticFields, window: Window, compression_level: int) -> None:
    """Static NetCDF: dem, land_sea_mask (1 = land), landcover (IGBP 1..17, 255 = fill) on (line, column)."""
    import xarray as xr

    coff, cfac, _ = FD_GRIDS[2.0]
    ds = xr.Dataset(
        {
            "dem": (
                ("line", "column"),
                fields.dem.astype(np.float32),
                {"units": "m", "long_name": "pixel-mean terrain height above mean sea level"},
            ),
            "land_sea_mask": (
                ("line", "column"),
                fields.land.astype(np.float32),
                {"units": "1", "long_name": "land fraction", "comment": "1 = land, 0 = water"},
            ),
            "landcover": (
                ("line", "column"),
                fields.landcover.astype(np.uint8),
                {
                    "long_name": "MODIS MCD12Q1 IGBP land cover (LC_Type1, Collection 6.1 codes)",
                    "flag_values": np.arange(1, 18, dtype=np.uint8),
                    "comment": "1..17 IGBP classes (17 = water bodies); 255 = unclassified/fill",
                },
            ),
        },
        coords={
            "line": ("line", window.lines, {"long_name": "FD 2 km line, 1-based, grows southward"}),
            "column": ("column", window.columns, {"long_name": "FD 2 km column, 1-based, grows eastward"}),
        },
        attrs={
            "title": "ta2d demo static fields (synthetic)",
            "projection_type": "GEOS",
            "sub_longitude_deg": SUB_LON_DEG,
            "fd_coff_2km": coff,
            "fd_cfac_2km": cfac,
            "source": "ta2d.demo.static: synthetic peninsula, not real terrain",
        },
    )
    enc = {v: {"zlib": True, "complevel": compression_level, "_FillValue": None} for v in ds.data_vars}
    enc.update({c: {"_FillValue": None} for c in ds.coords})
    ds.to_netcdf(path, engine="h5netcdf", encoding=enc)
