"""Known-truth physical fields of the demo: air temperature, skin temperature, clouds, BTs, albedos.

Everything is a pointwise function of time (Unix s UTC) and the static attributes of a pixel
(`StaticFields`, any array shape), plus periodic noise tiles sampled at absolute FD positions; so the
same code gives whole-window scenes for the L1B files and single pixels for the station labels.

TA (deg C) = seasonal climatology(lat) + diurnal cycle (peak ~15 h local solar time; damped near and
over water, reduced under cloud) - 6.5 K/km * DEM + urban +1.2 K + a drifting synoptic anomaly (the visible
part) + a hidden boundary-layer anomaly (night-time cold pools, daytime mixing, sea breeze, air under thick cloud).
Skin temperature = TA + (+2..+10 K by day ~ cos SZA over land, -2..-4 K at night), water damped.
Clear-sky BTs follow docs/gk2a-format.md#typical-values-over-korean-land; clouds (thresholded, advected smooth
noise, ~cloud_fraction of the area) replace the surface by a cold, bright cloud top.

Every term of the visible part leaves a trace in the inputs (docs/demo.md): the airmass (seasonal
climatology at the pixel's latitude + the synoptic anomaly) sets the temperature of the free troposphere,
which the upper (WV063) and mid-level (WV069) water-vapour channels sense above the demo's clouds, and which
also shifts cloud tops; the diurnal cycle's coastal damping uses a land
fraction narrow enough for a 9x9 patch of the land-sea mask to see it. The hidden part leaves none: its
expectation given the inputs is 0, so what it adds to the floor is exact (ta2d.demo.floors).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ta2d.channels import BT_CHANNELS, RF_CHANNELS
from ta2d.demo.static import NOISE_TILE, URBAN, WATER, StaticFields, periodic_noise, sample_tile
from ta2d.solar import J2000_UNIX, solar_zenith_deg

LAPSE_K_PER_M = -0.0065
DAY_S = 86400.0
SCAN_DELAY_S = 120.0  # Korea is scanned ~2 min after the nominal slot (docs/gk2a-format.md#scan-timing)
MID_TROP_GAIN = 0.8  # K of free-troposphere anomaly per K of surface airmass anomaly

# The hidden boundary-layer anomaly (TruthModel.boundary_layer_anomaly), K at hidden_scale 1, and its scales in
# 2 km pixels. Sized so that a satellite-only model on held-out stations lands where the literature does
# (docs/demo.md#the-hidden-boundary-layer-anomaly).
POOL_K, POOL_SCALE_PX = 3.0, 14.0  # night-time inversion strength, strongest over low ground
MIXING_K, MIXING_SCALE_PX = 1.3, 10.0  # daytime mixed-layer variability
SEA_BREEZE_K = 1.5  # daily sea-breeze strength (N(0, 1) per day) on the coastal land
RAIN_K, RAIN_SCALE_PX = 1.5, 4.0  # under thick cloud: rain-cooled or warm-sector air the surface hides
STATION_ERROR_SCALE_PX = 40.0  # the station error that neighbouring stations share (tables.label_truth)

# Sensor noise (1 sigma) added to the 2 km fields: K for BT channels, albedo units for reflective ones.
SENSOR_NOISE = {
    "sw038": 0.25,
    "wv063": 0.15,
    "wv069": 0.15,
    "wv073": 0.15,
    "ir087": 0.10,
    "ir096": 0.10,
    "ir105": 0.08,
    "ir112": 0.08,
    "ir123": 0.08,
    "ir133": 0.20,
    "vi004": 0.0015,
    "vi005": 0.0015,
    "vi006": 0.0015,
    "vi008": 0.0015,
    "nr013": 0.0010,
    "nr016": 0.0015,
}

# Clear-sky surface albedo (at cos SZA = 1) per IGBP class group: vi004 vi005 vi006 vi008 nr013 nr016.
_ALBEDO = {
    "forest": (0.06, 0.06, 0.04, 0.30, 0.010, 0.15),
    "crop": (0.07, 0.08, 0.07, 0.28, 0.010, 0.20),
    "urban": (0.10, 0.11, 0.14, 0.20, 0.015, 0.22),
    "barren": (0.12, 0.14, 0.20, 0.27, 0.020, 0.32),
    "water": (0.07, 0.05, 0.03, 0.02, 0.005, 0.01),
}
_FOREST = (1, 2, 3, 4, 5, 6, 7, 8)
_BARE = (16,)


@dataclass(frozen=True)
class Clouds:
    cover: np.ndarray  # 0..1 fraction of the pixel (soft edges)
    tau: np.ndarray  # 0..1 thickness index: thick = brighter and colder
    top_k: np.ndarray  # cloud-top temperature, 213..268 K


class TruthModel:
    """The demo's physical truth for one seed (deterministic, vectorised over pixels)."""

    def __init__(self, seed: int, cloud_fraction: float = 0.3, hidden_scale: float = 1.0):
        self.seed = seed
        self.cloud_fraction = float(cloud_fraction)
        self.hidden_scale = float(hidden_scale)
        self._pools = [periodic_noise(seed, p, POOL_SCALE_PX) for p in (30, 31)]
        self._mixing = [periodic_noise(seed, p, MIXING_SCALE_PX) for p in (32, 33)]
        self._rain = periodic_noise(seed, 34, RAIN_SCALE_PX)
        self._station_error = [periodic_noise(seed, p, STATION_ERROR_SCALE_PX) for p in (35, 36)]
        self._cloud = [periodic_noise(seed, p, s) for p, s in ((20, 14.0), (21, 14.0), (22, 4.0), (23, 4.0))]
        self._humidity = periodic_noise(seed, 24, 40.0)
        self._upper_humidity = periodic_noise(seed, 25, 25.0)
        self._ozone = periodic_noise(seed, 26, 60.0)
        rng = np.random.default_rng([seed, 27])
        # Synoptic anomaly: three travelling plane waves (wavelengths 300-800 px = 600-1600 km,
        # periods 3-7 days), about 2.5 K rms in total.
        self._waves = [
            (
                rng.uniform(300, 800),
                rng.uniform(0, 2 * np.pi),
                rng.uniform(3, 7) * DAY_S,
                rng.uniform(0, 2 * np.pi),
                amp,
            )
            for amp in (2.5, 1.5, 1.0)
        ]
        self._cloudiness_phase = rng.uniform(0, 2 * np.pi)

    # -- building blocks ----------------------------------------------------------------------------
    @staticmethod
    def sza(t_unix: float, pts: StaticFields) -> np.ndarray:
        return solar_zenith_deg(t_unix + SCAN_DELAY_S, pts.lat, pts.lon)

    def clouds(self, t_unix: float, pts: StaticFields, airmass: np.ndarray | float = 0.0) -> Clouds:
        hours = (t_unix - J2000_UNIX) / 3600.0
        rows, cols = _axes(pts)
        # Advection: ~12 px/h eastward (~7 m/s), 1.5 px/h southward; the two mixtures of each scale
        # rotate (cos/sin weights keep unit variance) so clouds grow and decay while drifting.
        rows = rows - _wrap(1.5 * hours)
        cols = cols - _wrap(12.0 * hours)
        a = 2 * np.pi * hours / 36.0
        b = 2 * np.pi * hours / 9.0
        tiles = self._cloud
        big = np.cos(a) * sample_tile(tiles[0], rows, cols) + np.sin(a) * sample_tile(tiles[1], rows, cols)
        small = np.cos(b) * sample_tile(tiles[2], rows, cols) + np.sin(b) * sample_tile(tiles[3], rows, cols)
        field = np.float32(0.85) * big + np.float32(0.53) * small
        # Domain-wide cloudiness varies over ~4 days between ~0.4x and ~1.6x the configured fraction.
        frac = np.clip(
            self.cloud_fraction * (1 + 0.6 * np.sin(2 * np.pi * hours / 103.0 + self._cloudiness_phase)),
            0.02,
            0.95,
        )
        thr = np.float32(NormalDist().inv_cdf(1.0 - frac))
        cover = np.clip((field - thr) / np.float32(0.35), 0.0, 1.0)
        tau = np.clip((field - thr) / np.float32(1.3), 0.0, 1.0)
        return Clouds(cover, tau, 268.0 - 55.0 * tau + airmass)

    @staticmethod
    def land_climatology(t_unix: float, pts: StaticFields) -> np.ndarray:
        doy = (t_unix - J2000_UNIX) / DAY_S % 365.2425
        return 13.5 - 13.5 * np.cos(2 * np.pi * (doy - 18.0) / 365.2425) - 0.9 * (pts.lat - 36.5)

    def airmass_anomaly(self, t_unix: float, pts: StaticFields) -> np.ndarray:
        """Free-troposphere temperature anomaly (K): MID_TROP_GAIN x (land climatology - 13.5 + synoptic).

        The synoptic anomaly is a travelling airmass, and the seasonal cycle warms the whole column:
        the water-vapour channels and the cloud tops carry both, under cloud as well as in clear sky.
        """
        return MID_TROP_GAIN * (self.land_climatology(t_unix, pts) - 13.5 + self.synoptic_anomaly(t_unix, pts))

    def synoptic_anomaly(self, t_unix: float, pts: StaticFields) -> np.ndarray:
        out = np.zeros(np.shape(pts.line))
        for wavelength, direction, period, phase, amp in self._waves:
            along = pts.column * np.cos(direction) + pts.line * np.sin(direction)
            out += amp * np.cos(2 * np.pi * (along / wavelength - (t_unix - J2000_UNIX) / period) + phase)
        return out

    # -- air and skin temperature --------------------------------------------------------------------
    def air_temperature(self, t_unix: float, pts: StaticFields, clouds: Clouds | None = None) -> np.ndarray:
        """TA in deg C at the pixels (noise-free truth): the visible part plus the hidden boundary-layer anomaly."""
        clouds = self.clouds(t_unix, pts) if clouds is None else clouds
        return self.visible_air_temperature(t_unix, pts, clouds) + self.boundary_layer_anomaly(t_unix, pts, clouds)

    def visible_air_temperature(self, t_unix: float, pts: StaticFields, clouds: Clouds | None = None) -> np.ndarray:
        """The part of TA (deg C) that the inputs determine: every term leaves a trace in a channel or a static
        field (module docstring). The skin temperature follows it."""
        clouds = self.clouds(t_unix, pts) if clouds is None else clouds
        doy = (t_unix - J2000_UNIX) / DAY_S % 365.2425
        water = pts.landcover == WATER
        land_clim = self.land_climatology(t_unix, pts)
        sea_clim = 15.0 - 8.0 * np.cos(2 * np.pi * (doy - 63.0) / 365.2425) - 0.6 * (pts.lat - 36.5)
        base = np.where(water, sea_clim, land_clim)

        solar_hour = ((t_unix % DAY_S) / 3600.0 + pts.lon / 15.0) % 24.0
        phase = 2 * np.pi * (solar_hour - 15.0) / 24.0
        shape = np.cos(phase) + 0.2 * np.cos(2 * phase - 0.5)
        amp = 5.0 * (0.35 + 0.65 * pts.landfrac_local)
        amp = np.where(water, 0.7, amp * np.where(pts.landcover == URBAN, 0.8, 1.0))
        # Cloud cuts daytime heating and night-time cooling.
        damp = np.where(shape > 0, 1.0 - 0.5 * clouds.cover, 1.0 - 0.4 * clouds.cover)
        diurnal = amp * shape * damp

        ta = base + diurnal + LAPSE_K_PER_M * pts.dem + np.where(pts.landcover == URBAN, 1.2, 0.0)
        return ta + np.where(water, 0.5, 1.0) * self.synoptic_anomaly(t_unix, pts)

    def boundary_layer_anomaly(self, t_unix: float, pts: StaticFields, clouds: Clouds | None = None) -> np.ndarray:
        """The hidden part of TA (K): what happens below the free troposphere that no channel sees.

        Four terms, each a zero-mean random field times a weight the inputs do know (solar hour, terrain,
        coast, cloud thickness), so its expectation given the inputs is 0 and the observable floor stays exact:
        the night-time inversion's departure from its mean (cold pools; strongest at ~03 h solar time over
        low ground), the daytime mixed layer's, a sea breeze of a daily random strength on the coastal land
        (~14 h), and the air under thick cloud that the cloud hides (rain-cooled or warm-sector). It does not
        enter the skin temperature, so clear-sky IR cannot see it either.
        """
        if self.hidden_scale == 0:
            return np.zeros(np.shape(pts.line))
        clouds = self.clouds(t_unix, pts) if clouds is None else clouds
        hours = (t_unix - J2000_UNIX) / 3600.0
        rows, cols = _axes(pts)
        solar_hour = ((t_unix % DAY_S) / 3600.0 + pts.lon / 15.0) % 24.0
        night = ((1 + np.cos(2 * np.pi * (solar_hour - 3.0) / 24.0)) / 2) ** 2
        day = ((1 + np.cos(2 * np.pi * (solar_hour - 14.0) / 24.0)) / 2) ** 2
        low_ground = 0.4 + 0.8 * np.exp(-pts.dem / 400.0)
        pools = _rotating(self._pools, rows - _wrap(0.5 * hours), cols - _wrap(2.0 * hours), hours / 30.0)
        mixing = _rotating(self._mixing, rows - _wrap(1.0 * hours), cols - _wrap(6.0 * hours), hours / 20.0)
        rain = sample_tile(self._rain, rows - _wrap(1.5 * hours), cols - _wrap(12.0 * hours))  # moves with the cloud
        coast = np.clip(2.0 * (1.0 - pts.landfrac), 0.0, 1.0) * pts.land
        hidden = (POOL_K * night * low_ground * pools + MIXING_K * day * mixing
                  + SEA_BREEZE_K * self.daily_strength(t_unix, 28) * day * coast + RAIN_K * clouds.tau * rain)
        return self.hidden_scale * hidden

    def daily_strength(self, t_unix: float, purpose: int) -> float:
        """A N(0, 1) number per UTC day (keyed by the day, so any sub-period reproduces it), linear in time."""
        days = (t_unix - J2000_UNIX) / DAY_S
        first = int(np.floor(days))
        a, b = (np.random.default_rng([self.seed, purpose, d + 100000]).standard_normal() for d in (first, first + 1))
        w = days - first
        return float((1 - w) * a + w * b)

    def shared_station_error(self, t_unix: float, pts: StaticFields) -> np.ndarray:
        """A unit-variance field of ~80 km that drifts and turns over in ~2 days: the part of station errors
        that neighbouring stations share (a network's sensors, their screens, the weather they fail in)."""
        hours = (t_unix - J2000_UNIX) / 3600.0
        rows, cols = _axes(pts)
        return _rotating(self._station_error, rows - _wrap(0.3 * hours), cols - _wrap(1.5 * hours), hours / 48.0)

    @staticmethod
    def skin_temperature(
        ta_c: np.ndarray, cos_sza: np.ndarray, pts: StaticFields, clouds: Clouds
    ) -> np.ndarray:
        """Surface skin temperature (K): TA + solar heating by day, radiative cooling at night."""
        cz = np.clip(cos_sza, 0.0, 1.0)
        heat = np.select(
            [pts.landcover == URBAN, np.isin(pts.landcover, _BARE), np.isin(pts.landcover, _FOREST)],
            [1.2, 1.2, 0.8],
            1.0,
        )
        land_offset = (-3.5 + 13.5 * cz**0.8 * heat) * (1.0 - 0.7 * clouds.cover)
        water_offset = 0.3 + 1.0 * cz
        offset = np.where(pts.landcover == WATER, water_offset, land_offset)
        return ta_c + 273.15 + offset

    # -- channel fields ------------------------------------------------------------------------------
    def fields(self, t_unix: float, pts: StaticFields) -> dict[str, np.ndarray]:
        """All noise-free physical fields: ta (deg C), ts/BT (K), albedo (0..1), sza (deg), cloud cover."""
        airmass = self.airmass_anomaly(t_unix, pts)
        clouds = self.clouds(t_unix, pts, airmass)
        sza = self.sza(t_unix, pts)
        cz = np.clip(np.cos(np.radians(sza)), 0.0, 1.0)
        visible = self.visible_air_temperature(t_unix, pts, clouds)
        ta = visible + self.boundary_layer_anomaly(t_unix, pts, clouds)
        ts = self.skin_temperature(visible, cz, pts, clouds)

        hours = (t_unix - J2000_UNIX) / 3600.0
        rows, cols = _axes(pts)
        hum = np.clip(
            0.5 + 0.25 * sample_tile(self._humidity, rows - _wrap(0.5 * hours), cols - _wrap(4.0 * hours)),
            0,
            1,
        )
        uhum = np.clip(0.5 + 0.25 * sample_tile(self._upper_humidity, rows, cols - _wrap(8.0 * hours)), 0, 1)
        ozone = np.clip(0.5 + 0.25 * sample_tile(self._ozone, rows, cols - _wrap(3.0 * hours)), 0, 1)
        lc = pts.landcover
        bare = np.select([np.isin(lc, (URBAN, 16)), np.isin(lc, _FOREST), lc == WATER], [1.0, 0.1, 0.0], 0.4)
        alb = self.surface_albedo(pts)

        clear = {}
        clear["ir105"] = ts - 0.4 - 1.2 * hum
        clear["ir112"] = clear["ir105"] - 0.3 - 0.6 * hum
        clear["ir123"] = clear["ir105"] - 0.5 - 2.5 * hum  # split window ~ water vapour
        clear["ir087"] = clear["ir105"] - 1.0 - 2.0 * bare  # emissivity: larger deficit over bare soil
        clear["ir096"] = clear["ir105"] - 12.0 - 14.0 * ozone
        clear["ir133"] = 228.0 + 0.4 * (clear["ir105"] - 250.0)
        # WV073 peaks low enough to see the surface; WV069 and WV063 sense the mid and upper
        # troposphere (airmass temperature, upper humidity), above the demo's cloud tops.
        clear["wv073"] = 240.0 + 0.35 * (clear["ir105"] - 260.0) + 8.0 * (1.0 - uhum) + 0.5 * airmass
        clear["wv069"] = 236.0 + airmass - 3.0 * uhum
        clear["wv063"] = 226.0 + airmass - 6.0 * uhum
        clear["sw038"] = clear["ir105"] - 1.0 - 1.5 * bare + 60.0 * alb["nr016"] * cz  # + reflected sunlight

        top = clouds.top_k
        cloudy = {
            "ir105": top,
            "ir112": top - 0.4 * clouds.tau,
            "ir123": top - 1.0 * clouds.tau,
            "ir087": top - 0.6,
            "ir096": top - 4.0,
            "ir133": np.minimum(top, clear["ir133"]) - 1.0,
            "wv073": np.minimum(top + 2.0, clear["wv073"]),
            "wv069": clear["wv069"],
            "wv063": clear["wv063"],
            "sw038": top - 0.5 + 10.0 * cz * (1.0 - clouds.tau),
        }
        bright = 0.3 + 0.6 * clouds.tau**0.7
        cloud_alb = {
            "vi004": bright,
            "vi005": bright,
            "vi006": bright,
            "vi008": bright,
            "nr013": 0.05 + 0.35 * clouds.tau,
            "nr016": 0.2 + 0.35 * clouds.tau,
        }

        c = clouds.cover
        out = {"ta": ta, "ts": ts, "sza": sza, "cloud": c}
        for ch in BT_CHANNELS:
            out[ch] = (1.0 - c) * clear[ch] + c * cloudy[ch]
        for ch in RF_CHANNELS:
            out[ch] = ((1.0 - c) * alb[ch] + c * cloud_alb[ch]) * cz
        return out

    @staticmethod
    def surface_albedo(pts: StaticFields) -> dict[str, np.ndarray]:
        lc = pts.landcover
        group = np.select(
            [np.isin(lc, _FOREST), lc == URBAN, np.isin(lc, _BARE), lc == WATER], [0, 2, 3, 4], 1
        )
        table = np.array([_ALBEDO[g] for g in ("forest", "crop", "urban", "barren", "water")])
        scale = 1.0 + 0.12 * np.clip(pts.albedo_var, -3, 3)
        return {ch: table[group, i] * scale for i, ch in enumerate(RF_CHANNELS)}

    def observed(self, t_unix: float, pts: StaticFields, fields: dict | None = None) -> dict[str, np.ndarray]:
        """fields() plus sensor noise: the 2 km values a perfect reader recovers (up to quantisation).

        The noise is keyed by the slot time (not its position in the run), so any sub-period of a
        demo reproduces the same values.
        """
        out = dict(self.fields(t_unix, pts) if fields is None else fields)
        rng = np.random.default_rng([self.seed, 2, int(t_unix)])
        shape = np.shape(pts.line)
        for ch in BT_CHANNELS + RF_CHANNELS:
            out[ch] = out[ch] + SENSOR_NOISE[ch] * rng.standard_normal(shape, dtype=np.float32)
        return out


def _rotating(tiles, rows, cols, turns: float) -> np.ndarray:
    """cos/sin mixture of two unit-variance tiles: a field that keeps unit variance while it evolves."""
    a = 2 * np.pi * turns
    return np.cos(a) * sample_tile(tiles[0], rows, cols) + np.sin(a) * sample_tile(tiles[1], rows, cols)


def _wrap(shift: float) -> float:
    """A tile shift reduced modulo the tile size in float64, so float32 positions stay exact."""
    return shift % NOISE_TILE


def _axes(pts: StaticFields):
    """FD (line, column) of the pixels; for a whole window as (H, 1) and (1, W) vectors, which makes
    tile sampling ~5x cheaper (broadcast indices instead of full index arrays)."""
    line, col = pts.line, pts.column
    if line.ndim == 2 and (line[:, :1] == line).all() and (col[:1, :] == col).all():
        return line[:, :1].astype(np.float64), col[:1, :].astype(np.float64)
    return line.astype(np.float64), col.astype(np.float64)
