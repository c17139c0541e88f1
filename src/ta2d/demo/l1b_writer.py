"""Encode physical fields into GK-2A AMI L1B NetCDF files (sector windows of the full-disk grid).

This is the INVERSE of the KMA calibration (docs/gk2a-format.md#calibration-coefficients), written
independently of the pipeline's reader so that tests can compare reader output with the truth:
  emissive:   BT -> undo Tb = c0 + c1*Teff + c2*Teff^2 -> inverse Planck at the EFFECTIVE wavenumber
              -> radiance L (mW m-2 sr-1 (cm-1)-1) -> count = round((L - offset) / gain)
  reflective: albedo -> L = albedo / Radiance_to_Albedo_c -> count = round((L - offset) / gain)
Counts are clipped to [0, 2^valid_bits - 1]; bits 15-14 carry the DQF (0 good, 1 conditional,
2 off-disk, 3 error). Files are plain HDF5 with netCDF-4 dimension scales, written with h5py
(half the time of h5netcdf, which matters for 8000 files), readable by xarray/h5netcdf/netCDF4.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ta2d.channels import ALL_CHANNELS, CHANNELS, l1b_filename
from ta2d.demo.static import Window
from ta2d.grid import EQ_RADIUS_KM, FD_GRIDS, POLAR_RADIUS_KM, SAT_RADIUS_KM, SUB_LON_DEG, linecol_to_lonlat
from ta2d.solar import J2000_UNIX

LIGHT_SPEED = 2.99792458e8  # m s-1, as stored in the files
BOLTZMANN = 1.3806488e-23  # J K-1
PLANCK = 6.62606957e-34  # J s
OBS_START_DELAY_S = 31.96  # the FD scan starts ~30 s after the nominal slot (satpy fixture)
OBS_DURATION_S = 543.65
DQF_CONDITIONAL, DQF_OFF_DISK, DQF_ERROR = 1, 2, 3
DQF_MEANING = "0:good_pixel, 1:conditionally_usable_pixel, 2:out_of_scan_area_pixel, 3:error_pixel"
DIM_NAME = "This is a netCDF dimension but not a netCDF variable.%10d"


@dataclass(frozen=True)
class Calibration:
    """One channel's calibration coefficients as stored in its files."""

    gain: float
    offset: float
    albedo_c: float | None = None  # reflective
    c0: float | None = None  # emissive Teff -> Tb polynomial
    c1: float | None = None
    c2: float | None = None


def _f32(x: float) -> float:
    """Real coefficients are float32 values printed as doubles (161.580139160156)."""
    return float(np.float32(x))


def planck_radiance(wavenumber_cm: float, t_k):
    """Radiance in the files' unit mW m-2 sr-1 (cm-1)-1 of a blackbody at t_k."""
    nu = 100.0 * wavenumber_cm  # m-1
    l_si = (
        2.0
        * PLANCK
        * LIGHT_SPEED**2
        * nu**3
        / np.expm1(PLANCK * LIGHT_SPEED * nu / (BOLTZMANN * np.asarray(t_k)))
    )
    return l_si * 1e5


def _emissive(name: str, t_sat: float, delta: float) -> Calibration:
    """Plausible coefficients: count 0 = t_sat (hottest, IR gains are negative), L = 0 at ~99.5 % of
    the count range (as the real IR105 file: 8152 of 8191); polynomial ~identity near 280 K."""
    ch = CHANNELS[name]
    offset = _f32(planck_radiance(ch.wavenumber_cm, t_sat))
    gain = _f32(-offset / (0.995 * (2**ch.valid_bits - 1)))
    c1 = 1.0 + delta
    c2 = -delta * 8.6e-4
    c0 = -(delta * 280.0 + c2 * 280.0**2)
    return Calibration(gain, offset, c0=c0, c1=c1, c2=c2)


def _reflective(name: str, albedo_c: float) -> Calibration:
    """Albedo 0 at count 20 (scaled with the bit depth, as real VI005), ~1.16 at the top count."""
    ch = CHANNELS[name]
    n_max = 2**ch.valid_bits - 1
    n0 = 20 * 2 ** (ch.valid_bits - 11)
    gain = _f32(1.16 / albedo_c / (n_max - n0))
    return Calibration(gain, _f32(-gain * n0), albedo_c=albedo_c)


CALIBRATION: dict[str, Calibration] = {
    # Real coefficients (docs/gk2a-format.md#real-coefficients).
    # gain, offset (DN -> radiance), then the Teff -> Tbb polynomial c0 + c1 T + c2 T^2
    "ir105": Calibration(-0.0198196955025196, 161.580139160156,
                         c0=-0.142866448475177, c1=1.00064069572049, c2=-5.50443294960498e-7),
    "ir087": Calibration(-0.0144806550815701, 118.050903320312,
                         c0=-0.141418528203155, c1=1.00052232906885, c2=-3.6287276076109e-7),
    "vi005": Calibration(0.343625485897064, -6.87249755859375, albedo_c=0.0016595767),
    # Plausible others. Radiance_to_Albedo_c ~ pi / (band solar irradiance).
    "vi004": _reflective("vi004", 0.0015730),
    "vi006": _reflective("vi006", 0.0019630),
    "vi008": _reflective("vi008", 0.0031400),
    "nr013": _reflective("nr013", 0.0087270),
    "nr016": _reflective("nr016", 0.0130900),
    "sw038": _emissive("sw038", 400.0, 3.1e-4),
    "wv063": _emissive("wv063", 330.0, 4.2e-4),
    "wv069": _emissive("wv069", 330.0, 4.8e-4),
    "wv073": _emissive("wv073", 330.0, 5.1e-4),
    "ir096": _emissive("ir096", 330.0, 5.7e-4),
    "ir112": _emissive("ir112", 330.0, 6.6e-4),
    "ir123": _emissive("ir123", 330.0, 7.2e-4),
    "ir133": _emissive("ir133", 330.0, 7.9e-4),
}


# GSICS corrections of the IR radiances, in `gsics_coeff_slope` / `gsics_coeff_intercept` variables of the IR files
# (docs/gk2a-format.md#calibration-coefficients; satpy's calib_mode="GSICS" applies L' = (L - intercept) / slope to
# every channel it loads, so it cannot load VIS files; ta2d and satpy's default modes do not apply it). IR087's are
# the real values of satpy's fixture; the others plausible: no correction near a typical clear-sky radiance L =
# intercept / (1 - slope), up to ~0.4 K at the coldest cloud tops, like IR087's.
GSICS: dict[str, tuple[float, float]] = {  # (slope, intercept in mW m-2 sr-1 (cm-1)-1)
    "sw038": (1.0021, -0.0012),
    "wv063": (0.9978, 0.0105),
    "wv069": (0.9983, 0.0231),
    "wv073": (0.9989, 0.0362),
    "ir087": (0.9967594, 0.1859369),
    "ir096": (0.9992, 0.0843),
    "ir105": (0.9974, 0.2215),
    "ir112": (0.9981, 0.1732),
    "ir123": (0.9995, 0.0628),
    "ir133": (1.0012, -0.0517),
}
SIDEREAL_DAY_S = 86164.0905


def sc_position_ecef(slot: dt.datetime) -> np.ndarray:
    """ECEF x, y, z (m) of the spacecraft at the FD centre-pixel time, as `sc_position_center_pixel`:
    a station-kept geostationary orbit at 128.2 E with a daily wobble (latitude +-0.02 deg, longitude
    +-0.01 deg, radius +-3 km around 42164 km). A pure function of the slot time (deterministic)."""
    t = slot.timestamp() + OBS_START_DELAY_S + OBS_DURATION_S / 2
    phase = 2.0 * np.pi * ((t / SIDEREAL_DAY_S) % 1.0)
    lat = np.radians(0.02 * np.sin(phase))
    lon = np.radians(SUB_LON_DEG + 0.01 * np.cos(phase))
    r = SAT_RADIUS_KM * 1000.0 + 3000.0 * np.sin(phase + 1.0)
    return np.array([r * np.cos(lat) * np.cos(lon), r * np.cos(lat) * np.sin(lon), r * np.sin(lat)])


def encode_counts(channel: str, values: np.ndarray) -> np.ndarray:
    """Physical values (BT in K, or albedo) -> uint16 counts (no DQF bits)."""
    ch = CHANNELS[channel]
    cal = CALIBRATION[channel]
    if ch.kind == "emissive":
        values = np.asarray(values, dtype=np.float64)
        # Invert Tb = c0 + c1 T + c2 T^2 with the cancellation-free root (also fine for c2 = 0).
        disc = np.sqrt(np.maximum(cal.c1**2 - 4.0 * cal.c2 * (cal.c0 - values), 0.0))
        t_eff = 2.0 * (values - cal.c0) / (cal.c1 + disc)
        radiance = planck_radiance(ch.wavenumber_cm, np.maximum(t_eff, 1.0))
    else:  # linear: float32 is exact to ~1e-3 count and twice as fast on the 0.5 km images
        radiance = np.asarray(values, dtype=np.float32) / np.float32(cal.albedo_c)
    counts = np.rint((radiance - radiance.dtype.type(cal.offset)) / radiance.dtype.type(cal.gain))
    top = 2**ch.valid_bits - 1
    if cal.gain < 0:
        # Keep L > 0: counts at or beyond -offset/gain have no Planck inverse and a reader must
        # reject them, which would plant unlisted NaNs under the coldest SW038 cloud tops.
        top = min(top, int(np.ceil(-cal.offset / cal.gain)) - 1)
    return np.clip(counts, 0, top).astype(np.uint16)


def _nominal_wavelength(channel: str) -> str:
    """The rounded nominal name the files carry in channel_center_wavelength ("10.5" for ir105):
    a trap for readers, never to be used in the Planck inversion."""
    return f"{int(channel[2:]) / 10:.1f}"


def sector_geometry(window: Window, channel: str) -> dict:
    """Grid attributes of a sector file at the channel's native resolution
    (docs/gk2a-format.md#sector-and-sub-window-files)."""
    res = CHANNELS[channel].resolution_km
    factor = CHANNELS[channel].factor
    off, fac, _ = FD_GRIDS[res]
    first_line, first_col, n_lines, n_cols = window.at(factor)
    coff = off - (first_col - 1)
    loff = off - (first_line - 1)
    step_deg = 2**16 / fac
    last_line, last_col = first_line + n_lines - 1, first_col + n_cols - 1
    corners = {
        "upperleft": (first_line, first_col),
        "lowerright": (last_line, last_col),
        "center": ((first_line + last_line) / 2, (first_col + last_col) / 2),
    }
    geo = {"n_lines": n_lines, "n_cols": n_cols, "coff": coff, "loff": loff, "cfac": fac, "lfac": -fac}
    for name, (line, col) in corners.items():
        lon, lat = linecol_to_lonlat(line, col, res)
        geo[f"image_{name}_longitude"] = float(lon)
        geo[f"image_{name}_latitude"] = float(lat)
        # Scan angles (rad) of the pixel centre; y positive northward (file convention, lfac < 0).
        geo[f"image_{name}_x"] = float(np.radians((col - off) * step_deg))
        geo[f"image_{name}_y"] = float(np.radians(-(line - off) * step_deg))
    return geo


def _j2000(t: dt.datetime) -> float:
    return t.timestamp() - J2000_UNIX


def global_attributes(channel: str, slot: dt.datetime, geo: dict, file_name: str) -> dict:
    """Global attributes with the real files' inconsistent types: strings, numpy scalars, 1-element arrays."""
    ch = CHANNELS[channel]
    cal = CALIBRATION[channel]
    start = slot + dt.timedelta(seconds=OBS_START_DELAY_S)
    attrs = {
        "satellite_name": "GK-2A",
        "instrument_name": "AMI",
        "data_processing_center": "NMSC",
        "data_processing_mode": "ta2d synthetic demo (not real GK-2A data)",
        "channel_spatial_resolution": f"{ch.resolution_km:.1f}",
        "channel_center_wavelength": _nominal_wavelength(channel),
        "scene_acquisition_time": start.strftime("%Y%m%d_%H%M%S"),
        "mission_reference_time": "20000101_120000",
        "file_generation_time": (slot + dt.timedelta(minutes=20)).strftime("%Y%m%d_%H%M%S"),
        "file_name": file_name,
        "file_format_version": "1.0",
        "number_of_columns": np.array([geo["n_cols"]], dtype=np.int32),
        "number_of_lines": np.int32(geo["n_lines"]),
        "total_pixel_data_size": np.int64(geo["n_cols"] * geo["n_lines"] * 2),
        "number_of_total_swaths": "1",
        "observation_mode": "FD",
        "observation_start_time": np.float64(_j2000(start)),
        "observation_end_time": np.array([_j2000(start) + OBS_DURATION_S], dtype=np.float64),
        "time_synchro_obt": np.float64(_j2000(start)),
        "time_synchro_utc": np.float64(_j2000(start)),
        "projection_type": "GEOS",
        "sub_longitude": np.float64(np.radians(SUB_LON_DEG)),
        "cfac": np.array([geo["cfac"]], dtype=np.float64),
        "lfac": np.float64(geo["lfac"]),
        "coff": np.float64(geo["coff"]),
        "loff": np.array([geo["loff"]], dtype=np.float64),
        "nominal_satellite_height": np.float64(SAT_RADIUS_KM * 1000.0),
        "earth_equatorial_radius": np.float64(EQ_RADIUS_KM * 1000.0),
        "earth_polar_radius": np.array([POLAR_RADIUS_KM * 1000.0], dtype=np.float64),
        "earth_ellipsoid_center": np.array([0.0, 0.0, 0.0]),
        "resampling_kernel_type": "Lanczos",
        "DN_to_Radiance_Gain": np.array([cal.gain], dtype=np.float64),
        "DN_to_Radiance_Offset": np.float64(cal.offset),
    }
    for key in ("upperleft", "lowerright", "center"):
        attrs[f"image_{key}_latitude"] = np.float64(geo[f"image_{key}_latitude"])
        attrs[f"image_{key}_longitude"] = np.float64(geo[f"image_{key}_longitude"])
    for key in ("upperleft", "lowerright"):
        attrs[f"image_{key}_x"] = np.float64(geo[f"image_{key}_x"])
        attrs[f"image_{key}_y"] = np.array([geo[f"image_{key}_y"]], dtype=np.float64)
    if ch.kind == "reflective":
        attrs["Radiance_to_Albedo_c"] = np.float64(cal.albedo_c)
    else:
        attrs["Teff_to_Tbb_c0"] = np.float64(cal.c0)
        attrs["Teff_to_Tbb_c1"] = np.array([cal.c1], dtype=np.float64)
        attrs["Teff_to_Tbb_c2"] = np.float64(cal.c2)
        attrs["light_speed"] = np.float64(LIGHT_SPEED)
        attrs["Boltzmann_constant_k"] = np.float64(BOLTZMANN)
        attrs["Plank_constant_h"] = np.array([PLANCK], dtype=np.float64)  # sic: the files misspell it
    attrs["ta2d_demo"] = "synthetic file written by ta2d.demo (docs/demo.md); layout of real AMI L1B FD files"
    return attrs


def variable_attributes(channel: str, raw: np.ndarray) -> dict:
    ch = CHANNELS[channel]
    dqf = raw >> 14
    step = np.radians(2**16 / FD_GRIDS[ch.resolution_km][1])
    return {
        "channel_name": channel.upper(),
        "detector_side": np.int16(1),
        "number_of_total_pixels": np.int64(raw.size),
        # Off-disk + error pixels (conditional ones are usable), as a 1-element array.
        "number_of_error_pixels": np.array([np.count_nonzero(dqf >= DQF_OFF_DISK)], dtype=np.int32),
        "max_pixel_value": np.int32(raw.max()),
        "min_pixel_value": np.int32(raw.min()),
        "average_pixel_value": np.float64(raw.mean()),
        "stddev_pixel_value": np.float64(raw.std()),
        "number_of_total_bits_per_pixel": np.int32(16),
        "number_of_data_quality_flag_bits_per_pixel": np.int32(2),
        "number_of_valid_bits_per_pixel": np.int32(ch.valid_bits),
        "data_quality_flag_meaning": DQF_MEANING,
        "ground_sample_distance_ew": np.float64(step),
        "ground_sample_distance_ns": np.float64(step),
    }


def write_l1b(
    path, channel: str, slot: dt.datetime, window: Window, raw: np.ndarray, compression_level: int,
    chunks: tuple[int, int] | None = None,
) -> None:
    """Write one L1B file: image_pixel_values (dim_image_y, dim_image_x) uint16 plus attributes.

    `chunks` is the HDF5 chunk shape of image_pixel_values (clipped to the image); None (the demo)
    stores the whole image as ONE chunk. benchmarks/bench_calibrate_fd.py writes tiled and striped
    full-disk files with it: what a windowed read costs depends on it.
    """
    geo = sector_geometry(window, channel)
    if raw.shape != (geo["n_lines"], geo["n_cols"]):
        raise ValueError(f"{channel}: raw shape {raw.shape} != sector {(geo['n_lines'], geo['n_cols'])}")
    chunk_shape = raw.shape if chunks is None else tuple(
        max(1, min(int(c), n)) for c, n in zip(chunks, raw.shape, strict=True))
    with h5py.File(path, "w", libver="earliest") as f:
        scales = []
        for name, n in (("dim_image_y", raw.shape[0]), ("dim_image_x", raw.shape[1])):
            d = f.create_dataset(name, shape=(n,), dtype="f4")
            d.make_scale(name)
            d.attrs["NAME"] = np.bytes_(DIM_NAME % n)  # netCDF-4: a dimension without a variable
            scales.append(d)
        var = f.create_dataset(
            "image_pixel_values",
            data=raw,
            chunks=chunk_shape,
            compression="gzip",
            compression_opts=int(compression_level),
            shuffle=True,
        )
        for i, d in enumerate(scales):
            var.dims[i].attach_scale(d)
        for key, value in variable_attributes(channel, raw).items():
            _set_attr(var, key, value)
        _write_dim1_variables(f, channel, slot)
        for key, value in global_attributes(channel, slot, geo, path.name).items():
            _set_attr(f, key, value)


def _write_dim1_variables(f: h5py.File, channel: str, slot: dt.datetime) -> None:
    """The real files' small `dim_1` block that satpy's ami_l1b reader needs: `sc_position` (its
    attribute `sc_position_center_pixel` = ECEF m; satpy reads it for every file) and, in IR files,
    `gsics_coeff_slope` / `gsics_coeff_intercept` (satpy reads element [0]). ta2d ignores them."""
    dim = f.create_dataset("dim_1", shape=(1,), dtype="f4")
    dim.make_scale("dim_1")
    dim.attrs["NAME"] = np.bytes_(DIM_NAME % 1)
    values = {"sc_position": 0.0}
    if CHANNELS[channel].kind == "emissive":
        values["gsics_coeff_slope"], values["gsics_coeff_intercept"] = GSICS[channel]
    for name, value in values.items():
        var = f.create_dataset(name, data=np.array([value], dtype=np.float64))
        var.dims[0].attach_scale(dim)
    _set_attr(f["sc_position"], "sc_position_center_pixel", sc_position_ecef(slot))


def _set_attr(obj, key: str, value) -> None:
    """Write one attribute with h5py's low-level API: ~40 % faster than attrs[key] = value, which
    counts at 64 attributes x 8000 files. Strings become fixed-length char attributes (netCDF NC_CHAR,
    as netCDF-C writes them); numbers keep their numpy type and shape (scalar or 1-element array)."""
    if isinstance(value, str):
        data = np.array(value.encode("utf-8"))
        tid = h5py.h5t.C_S1.copy()
        tid.set_size(max(1, len(value.encode("utf-8"))))
        tid.set_strpad(h5py.h5t.STR_NULLPAD)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
    else:
        data = np.array(value)  # keeps 0-d scalars 0-d (np.ascontiguousarray would make them 1-element)
        tid = h5py.h5t.py_create(data.dtype)
        space = h5py.h5s.create_simple(data.shape) if data.shape else h5py.h5s.create(h5py.h5s.SCALAR)
    h5py.h5a.create(obj.id, key.encode(), tid, space).write(data)


# -- one slot: truth -> 16 raw images -> files ---------------------------------------------------------
@dataclass(frozen=True)
class PixelFlag:
    """A planted DQF flag on a whole 2 km pixel of one channel file."""

    channel: str
    line: int  # FD 2 km, 1-based
    column: int
    dqf: int  # DQF_ERROR or DQF_OFF_DISK


@dataclass(frozen=True)
class FileFlags:
    """Background flags of every file: never inside a station patch, so no label is rejected by them."""

    error_pixels: int = 3
    conditional_pixels: int = 3
    padding_bit_fraction: float = 0.002  # pixels with junk in the bits between the count and the DQF


class SubPixelTexture:
    """Zero-block-mean surface texture for the 1 km / 0.5 km channels, cropped to the window.

    Each factor x factor block averages to exactly 0 (absolute FD indexing keeps the blocks aligned),
    so the block mean of a fine image equals its 2 km truth up to count quantisation, while a reader
    that samples one sub-pixel instead of averaging is off by the texture. Only ~10 % of the 2 km
    pixels (coherent "rough terrain" patches) are textured and there is no fine-resolution noise:
    texture everywhere would make the fine files incompressible and the demo 2x larger.
    """

    def __init__(self, seed: int, factor: int, window: Window):
        from ta2d.demo.static import periodic_noise, sample_tile

        tile = np.clip(periodic_noise(seed, 40 + factor, 1.0), -2.5, 2.5)
        n = tile.shape[0]
        blocks = tile.reshape(n // factor, factor, n // factor, factor)
        tile = (blocks - blocks.mean(axis=(1, 3), keepdims=True)).reshape(n, n)
        tile /= tile.std()
        first_line, first_col, n_lines, n_cols = window.at(factor)
        rows = (first_line - 1 + np.arange(n_lines)) % n
        cols = (first_col - 1 + np.arange(n_cols)) % n
        rough = (
            sample_tile(periodic_noise(seed, 60, 3.0), window.lines[:, None], window.columns[None, :]) > 1.28
        )
        self.factor = factor
        self.crop = (tile[np.ix_(rows, cols)] * upsample(rough, factor)).astype(np.float32)


def upsample(a: np.ndarray, f: int) -> np.ndarray:
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1) if f > 1 else a


def fine_field(obs_2km: np.ndarray, clean_2km: np.ndarray, texture: SubPixelTexture) -> np.ndarray:
    """The fine-resolution image whose f x f block means are exactly obs_2km (texture 5 % of the signal)."""
    f = texture.factor
    amplitude = upsample((0.05 * clean_2km).astype(np.float32), f)
    return upsample(obs_2km.astype(np.float32), f) + amplitude * texture.crop


def apply_flags(
    counts: np.ndarray,
    channel: str,
    factor: int,
    allowed_2km: np.ndarray,
    flags: FileFlags,
    planted: list[PixelFlag],
    window: Window,
    rng: np.random.Generator,
) -> np.ndarray:
    """Counts -> raw uint16 with padding junk, background DQF flags and the planted pixel flags."""
    bits = CHANNELS[channel].valid_bits
    raw = counts.copy()
    n_pad = int(round(flags.padding_bit_fraction * raw.size))
    if bits < 14 and n_pad:
        where = rng.choice(raw.size, size=n_pad, replace=False)
        raw.flat[where] |= (rng.integers(1, 2 ** (14 - bits), size=n_pad) << bits).astype(np.uint16)
    n_bg = flags.error_pixels + flags.conditional_pixels
    if n_bg and len(allowed_2km):
        pick = allowed_2km[rng.choice(len(allowed_2km), size=min(n_bg, len(allowed_2km)), replace=False)]
        rows = (pick // window.n_columns) * factor + rng.integers(0, factor, size=len(pick))
        cols = (pick % window.n_columns) * factor + rng.integers(0, factor, size=len(pick))
        dqf = np.where(np.arange(len(pick)) < flags.error_pixels, DQF_ERROR, DQF_CONDITIONAL).astype(
            np.uint16
        )
        raw[rows, cols] = (dqf << 14) | counts[rows, cols]
    for flag in planted:
        r, c = window.index(flag.line, flag.column)
        block = (slice(r * factor, (r + 1) * factor), slice(c * factor, (c + 1) * factor))
        if flag.dqf == DQF_OFF_DISK:
            raw[block] = 0x8000  # what FD files hold in space pixels
        else:
            raw[block] = (flag.dqf << 14) | counts[block]
    return raw


@dataclass
class SlotWriter:
    """Writes the 16 channel files of one slot (picklable: sent once to each worker process)."""

    window: Window
    static: object  # StaticFields of the whole window
    model: object  # TruthModel
    raw_dir: Path
    subdir: str
    area: str
    compression_level: int
    flags: FileFlags
    allowed_2km: np.ndarray  # flat window indices open to background flags
    missing: set[tuple[int, str]]  # (slot unix s, channel) not written
    corrupt: set[tuple[int, str]]  # written, then truncated
    planted: dict[int, list[PixelFlag]]
    seed: int

    def __post_init__(self):
        self.textures = {f: SubPixelTexture(self.seed, f, self.window) for f in (2, 4)}

    def path(self, slot: dt.datetime, channel: str) -> Path:
        folder = self.raw_dir / slot.strftime(self.subdir) if self.subdir else self.raw_dir
        return folder / l1b_filename(channel, self.area, slot.strftime("%Y%m%d%H%M"))

    def __call__(self, t_unix: int) -> tuple[int, int]:
        """Write one slot; returns (files written, bytes written)."""
        slot = dt.datetime.fromtimestamp(t_unix, dt.UTC)
        clean = self.model.fields(float(t_unix), self.static)
        obs = self.model.observed(float(t_unix), self.static, clean)
        n_files = n_bytes = 0
        for i, channel in enumerate(ALL_CHANNELS):
            path = self.path(slot, channel)
            if (t_unix, channel) in self.missing:
                path.unlink(missing_ok=True)  # a previous run may have written it
                continue
            rng = np.random.default_rng([self.seed, 3, t_unix, i])
            factor = CHANNELS[channel].factor
            values = obs[channel]
            if factor > 1:
                values = fine_field(values, clean[channel], self.textures[factor])
            counts = encode_counts(channel, values)
            planted = [f for f in self.planted.get(t_unix, []) if f.channel == channel]
            raw = apply_flags(
                counts, channel, factor, self.allowed_2km, self.flags, planted, self.window, rng
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            write_l1b(path, channel, slot, self.window, raw, self.compression_level)
            if (t_unix, channel) in self.corrupt:
                with open(path, "r+b") as fh:  # a transfer cut short: HDF5 refuses the file
                    fh.truncate(path.stat().st_size * 4 // 10)
            n_files += 1
            n_bytes += path.stat().st_size
        return n_files, n_bytes
