"""Read one GK-2A AMI L1B NetCDF file onto the 2 km domain grid.

Only the rows and columns that cover the domain are read (h5py hyperslab; FD files hold up to 22000^2
pixels). A file may be a full disk or any GEOS sub-window (ELA sector, cropped test fixture): its own
COFF/LOFF place it on the FD grid, COFF' = COFF - (C0 - 1) (docs/gk2a-format.md#sector-and-sub-window-files).
The 1 km and 0.5 km grids nest exactly in the 2 km grid, so 2 km pixel i (0-based) is the mean of the
valid native pixels f*i .. f*i + f - 1 in each direction (f = 2 or 4; docs/gk2a-format.md#nested-resolutions).

Every failure raises :class:`L1BError` naming the file and what is wrong; callers (the scene builder)
turn it into a per-slot status instead of stopping.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import h5py
import numpy as np

from ta2d.channels import CHANNELS
from ta2d.grid import FD_GRIDS, Domain
from ta2d.ingest.calibration import BOLTZMANN_K, LIGHT_SPEED, PLANCK_H, Calibration, calibrate

PIXEL_VARIABLE = "image_pixel_values"
J2000_NOON = datetime(2000, 1, 1, 12, tzinfo=UTC)  # epoch of observation_start_time (docs/gk2a-format.md#scan-timing)
_CFAC_RTOL = 1e-6  # float32-stored factors still pass; a different resolution's grid never does
_OFFSET_ATOL = 1e-3  # sector offsets are the FD offsets minus a whole number of pixels
_ROWS_PER_BLOCK = 512  # 2 km output rows calibrated at a time: bounds memory for FD-sized domains

_NAME_RE = re.compile(
    r"^gk2a_ami_le1b_(?P<channel>[a-z]{2}\d{3})_(?P<area>[a-z]+?)(?P<res>005|010|020)ge_(?P<stamp>\d{12})\.nc$"
)


class L1BError(ValueError):
    """A L1B file that cannot be used. `reason` is the short text without the path (for scene status)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class L1BName(NamedTuple):
    channel: str
    area: str
    res_code: str
    time: datetime  # nominal slot start, UTC


@dataclass
class L1BImage:
    """One channel of one slot on the 2 km domain grid."""

    channel: str
    values: np.ndarray  # float32, domain.shape; K (emissive) or albedo fraction (reflective); NaN = no data
    slot: datetime  # nominal slot time, UTC
    path: str
    area: str
    observation_start: datetime | None  # scan start from the file, when present
    n_valid: int  # native pixels used
    n_flagged: int  # native pixels inside the domain rejected by DQF or calibration
    calibration: Calibration


def parse_l1b_name(path) -> L1BName | None:
    """gk2a_ami_le1b_{chan}_{area}{res}ge_{YYYYMMDDhhmm}.nc -> L1BName, or None for any other name."""
    m = _NAME_RE.match(os.path.basename(os.fspath(path)))
    if m is None or m["channel"] not in CHANNELS:
        return None
    stamp = m["stamp"]
    try:  # int slicing: strptime is the slowest step of listing a large archive
        time = datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[8:10]), int(stamp[10:]),
                        tzinfo=UTC)
    except ValueError:
        return None
    return L1BName(m["channel"], m["area"], m["res"], time)


def read_l1b(path, domain: Domain, allow_conditional: bool = False) -> L1BImage:
    """Calibrated values of one L1B file on `domain`, block-averaged to 2 km. Raises L1BError."""
    path = os.fspath(path)
    name = parse_l1b_name(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:  # h5py reports truncation / wrong format as OSError
        raise L1BError(path, f"not a readable NetCDF4/HDF5 file ({_first_line(exc)})") from None
    with h5:
        try:
            return _read_open(h5, path, name, domain, allow_conditional)
        except L1BError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # damaged data blocks
            raise L1BError(path, f"read failed: {type(exc).__name__}: {_first_line(exc)}") from None


def _read_open(h5: h5py.File, path: str, name: L1BName | None, domain: Domain, allow_conditional: bool):
    if PIXEL_VARIABLE not in h5:
        raise L1BError(path, f"no variable {PIXEL_VARIABLE}")
    var = h5[PIXEL_VARIABLE]
    if var.ndim != 2:
        raise L1BError(path, f"{PIXEL_VARIABLE} has {var.ndim} dimensions, expected 2")
    gattrs, vattrs = h5.attrs, var.attrs

    channel = _channel(path, name, vattrs, gattrs)
    spec = CHANNELS[channel]
    n_lines = int(_number(path, gattrs, "number_of_lines", default=var.shape[0]))
    n_cols = int(_number(path, gattrs, "number_of_columns", default=var.shape[1]))
    if var.shape != (n_lines, n_cols):
        raise L1BError(
            path, f"{PIXEL_VARIABLE} shape {var.shape} != number_of_lines/columns ({n_lines}, {n_cols})"
        )

    line_shift, col_shift = _navigation_shift(path, gattrs, spec.resolution_km, var.shape)
    cal = _calibration(path, channel, gattrs, vattrs)

    f = spec.factor
    row0 = (domain.first_line - 1) * f - line_shift
    col0 = (domain.first_column - 1) * f - col_shift
    nl, nc = domain.shape
    if row0 < 0 or col0 < 0 or row0 + nl * f > n_lines or col0 + nc * f > n_cols:
        # 2 km lines/columns whose f x f native blocks lie wholly inside the file
        fd_lines = (-(-line_shift // f) + 1, (line_shift + n_lines) // f)
        fd_cols = (-(-col_shift // f) + 1, (col_shift + n_cols) // f)
        raise L1BError(
            path,
            f"domain lines {domain.first_line}-{domain.last_line}, columns {domain.first_column}-"
            f"{domain.last_column} not covered by the file (2 km lines {fd_lines[0]}-{fd_lines[1]}, "
            f"columns {fd_cols[0]}-{fd_cols[1]})",
        )

    table = cal.table()
    values = np.empty((nl, nc), dtype=np.float32)
    n_valid = 0
    for i in range(0, nl, _ROWS_PER_BLOCK):
        rows = min(_ROWS_PER_BLOCK, nl - i)
        raw = var[row0 + i * f: row0 + (i + rows) * f, col0: col0 + nc * f]
        phys = calibrate(raw, cal, allow_conditional, table)
        values[i: i + rows], n = block_mean(phys, f)
        n_valid += n
    n_total = nl * nc * f * f
    if n_valid == 0:
        raise L1BError(path, f"all {n_total} pixels inside the domain are flagged or invalid")

    slot = name.time if name else _observation_time(gattrs, "observation_start_time")
    if slot is None:
        raise L1BError(path, "no slot time: file name does not parse and observation_start_time is missing")
    return L1BImage(
        channel=channel, values=values, slot=slot, path=path,
        area=name.area if name else _text(gattrs.get("observation_mode", "")).lower(),
        observation_start=_observation_time(gattrs, "observation_start_time"),
        n_valid=n_valid, n_flagged=n_total - n_valid, calibration=cal,
    )


def block_mean(values: np.ndarray, f: int) -> tuple[np.ndarray, int]:
    """Mean of the finite values of each f x f block (NaN where none) and the number of finite values."""
    if f == 1:
        return values.astype(np.float32, copy=False), int(np.isfinite(values).sum())
    h, w = values.shape[0] // f, values.shape[1] // f
    blocks = values.reshape(h, f, w, f)
    finite = np.isfinite(blocks)
    n = finite.sum(axis=(1, 3))
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return mean.astype(np.float32), int(n.sum())


# --- attributes ---------------------------------------------------------------------------------------

_MISSING = object()


def _text(value) -> str:
    value = np.asarray(value).ravel()
    if value.size == 0:
        return ""
    v = value[0]
    return v.decode("utf-8", "replace").strip() if isinstance(v, bytes) else str(v).strip()


def _number(path, attrs, key: str, default=_MISSING) -> float:
    """A numeric attribute however it is stored: "5500", b"2.0", numpy scalar, 1-element array."""
    if key not in attrs:
        if default is _MISSING:
            raise L1BError(path, f"missing attribute {key}")
        return default
    size = np.asarray(attrs[key]).size
    if size != 1:  # a 1-element array is how KMA stores many numbers; more values would be ambiguous
        raise L1BError(path, f"attribute {key} has {size} values, expected one number: {attrs.get(key)!r:.60}")
    try:
        value = float(_text(attrs[key]))
    except (TypeError, ValueError, OSError):
        raise L1BError(path, f"attribute {key} is not numeric: {attrs.get(key)!r:.60}") from None
    if not np.isfinite(value):
        raise L1BError(path, f"attribute {key} is not finite: {value}")
    return value


def _channel(path, name: L1BName | None, vattrs, gattrs) -> str:
    attr = _text(vattrs.get("channel_name", gattrs.get("channel_name", ""))).lower()
    if name is not None:
        if attr and attr != name.channel:
            raise L1BError(path, f"file name says channel {name.channel}, channel_name attribute says {attr}")
        return name.channel
    if attr not in CHANNELS:
        raise L1BError(path, f"unknown channel: name does not parse and channel_name is {attr!r}")
    return attr


def _navigation_shift(path, gattrs, resolution_km: float, shape) -> tuple[int, int]:
    """Whole-pixel (line, column) offset of the file's first pixel on the native FD grid, validated."""
    fd_off, fd_fac, fd_size = FD_GRIDS[resolution_km]
    for key in ("cfac", "lfac"):
        fac = abs(_number(path, gattrs, key))
        if not np.isclose(fac, fd_fac, rtol=_CFAC_RTOL, atol=0):
            raise L1BError(
                path,
                f"navigation mismatch: |{key}| {fac!r} is not the {resolution_km:g} km FD value {fd_fac!r}",
            )
    shifts = []
    for key, size in (("loff", shape[0]), ("coff", shape[1])):
        off = _number(path, gattrs, key)
        shift = fd_off - off
        whole = round(shift)
        if abs(shift - whole) > _OFFSET_ATOL or whole < 0 or whole + size > fd_size:
            raise L1BError(
                path,
                f"navigation mismatch: {key} {off!r} is not the {resolution_km:g} km FD offset {fd_off} "
                f"minus a whole number of pixels inside the disk (size {size})",
            )
        shifts.append(int(whole))
    return shifts[0], shifts[1]


def _calibration(path, channel: str, gattrs, vattrs) -> Calibration:
    def coeff(key):  # KMA stores them as global attributes; accept the variable's as a fallback
        return _number(path, gattrs if key in gattrs or key not in vattrs else vattrs, key)

    bits_default = CHANNELS[channel].valid_bits  # older files may lack it; the channel table is nominal
    valid_bits = int(_number(path, vattrs, "number_of_valid_bits_per_pixel", default=bits_default))
    if not 1 <= valid_bits <= 14:
        raise L1BError(path, f"number_of_valid_bits_per_pixel {valid_bits} outside 1..14")
    common = dict(channel=channel, gain=coeff("DN_to_Radiance_Gain"), offset=coeff("DN_to_Radiance_Offset"),
                  valid_bits=valid_bits)
    if CHANNELS[channel].kind == "reflective":
        return Calibration(**common, albedo_c=coeff("Radiance_to_Albedo_c"))
    return Calibration(
        **common,
        tbb_c0=coeff("Teff_to_Tbb_c0"), tbb_c1=coeff("Teff_to_Tbb_c1"), tbb_c2=coeff("Teff_to_Tbb_c2"),
        planck_h=_number(path, gattrs, "Plank_constant_h", default=PLANCK_H),
        light_speed=_number(path, gattrs, "light_speed", default=LIGHT_SPEED),
        boltzmann_k=_number(path, gattrs, "Boltzmann_constant_k", default=BOLTZMANN_K),
    )


def _observation_time(gattrs, key: str) -> datetime | None:
    try:
        seconds = float(_text(gattrs[key]))
    except (KeyError, TypeError, ValueError, OSError):
        return None
    if not np.isfinite(seconds):
        return None
    return J2000_NOON + timedelta(seconds=seconds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
