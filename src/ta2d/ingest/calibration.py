"""AMI L1B counts -> physical values (brightness temperature in K, albedo as a fraction).

Follows satpy's ``calib_mode="FILE"`` (docs/gk2a-format.md#calibration-coefficients), with two project choices:
- the inverse Planck uses the channel's *effective* wavenumber from :mod:`ta2d.channels`, never the
  file's rounded ``channel_center_wavelength`` (1.56 K too cold on IR105);
- albedo is a fraction (satpy's % / 100), small negatives near zero signal are clipped to 0.

Counts are at most 14 bits, so a channel is calibrated through a lookup table of every possible count:
the transcendental functions run 16384 times per file instead of once per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ta2d.channels import CHANNELS

# Physical constants as GK-2A files store them (used when a file lacks the attribute).
PLANCK_H = 6.62606957e-34  # J s       (file attribute: Plank_constant_h, sic)
LIGHT_SPEED = 299792458.0  # m s-1     (light_speed)
BOLTZMANN_K = 1.3806488e-23  # J K-1   (Boltzmann_constant_k)

DQF_SHIFT = 14  # bits 15-14 of every pixel: 0 good, 1 conditional, 2 off-disk, 3 error
DQF_GOOD, DQF_CONDITIONAL = 0, 1


@dataclass(frozen=True)
class Calibration:
    """The calibration coefficients of one file. `albedo_c` for reflective, `tbb_c*` for emissive channels."""

    channel: str
    gain: float
    offset: float
    valid_bits: int
    albedo_c: float | None = None
    tbb_c0: float | None = None
    tbb_c1: float | None = None
    tbb_c2: float | None = None
    planck_h: float = PLANCK_H
    light_speed: float = LIGHT_SPEED
    boltzmann_k: float = BOLTZMANN_K

    @property
    def emissive(self) -> bool:
        return CHANNELS[self.channel].kind == "emissive"

    def table(self) -> np.ndarray:
        """float64 physical value of every count 0 .. 2**valid_bits - 1 (NaN where not invertible)."""
        counts = np.arange(2**self.valid_bits, dtype=np.float64)
        rad = radiance(counts, self.gain, self.offset)
        if self.emissive:
            return brightness_temperature(
                rad, CHANNELS[self.channel].wavenumber_cm, self.tbb_c0, self.tbb_c1, self.tbb_c2,
                self.planck_h, self.light_speed, self.boltzmann_k,
            )
        return albedo(rad, self.albedo_c)


def split_raw(raw, valid_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """uint16 pixel words -> (dqf, count). Padding bits between count and DQF are masked off."""
    raw = np.asarray(raw, dtype=np.uint16)
    dqf = raw >> DQF_SHIFT
    count = raw & np.uint16(2**valid_bits - 1)
    return dqf, count


def valid_dqf(dqf, allow_conditional: bool = False) -> np.ndarray:
    """True where the quality flag allows the pixel: good, or also conditionally usable when allowed."""
    dqf = np.asarray(dqf)
    return (dqf == DQF_GOOD) | (allow_conditional & (dqf == DQF_CONDITIONAL))


def radiance(count, gain: float, offset: float) -> np.ndarray:
    """Linear count -> radiance (VIS/NIR W m-2 sr-1 um-1; IR mW m-2 sr-1 (cm-1)-1)."""
    return gain * np.asarray(count, dtype=np.float64) + offset


def brightness_temperature(rad, wavenumber_cm: float, c0: float, c1: float, c2: float,
                           planck_h: float = PLANCK_H, light_speed: float = LIGHT_SPEED,
                           boltzmann_k: float = BOLTZMANN_K) -> np.ndarray:
    """IR radiance (mW m-2 sr-1 (cm-1)-1) -> K. Radiance <= 0 has no Planck inverse -> NaN."""
    rad = np.asarray(rad, dtype=np.float64)
    nu = 100.0 * wavenumber_cm  # m-1
    rad_si = rad * 1e-5  # W m-2 sr-1 (m-1)-1
    positive = rad_si > 0
    safe = np.where(positive, rad_si, 1.0)
    t_eff = (planck_h * light_speed * nu / boltzmann_k) / np.log(
        2.0 * planck_h * light_speed**2 * nu**3 / safe + 1.0
    )
    tb = c0 + c1 * t_eff + c2 * t_eff**2
    return np.where(positive, tb, np.nan)


def albedo(rad, albedo_c: float) -> np.ndarray:
    """VIS/NIR radiance -> TOA albedo fraction (not divided by cos SZA). Negatives are noise -> 0."""
    return np.maximum(np.asarray(rad, dtype=np.float64) * albedo_c, 0.0)


def calibrate(raw, cal: Calibration, allow_conditional: bool = False, table: np.ndarray | None = None):
    """uint16 pixel words -> float32 physical values, NaN where flagged or not invertible.

    Pass `table` (``cal.table()``) when calibrating several blocks of the same file.
    """
    dqf, count = split_raw(raw, cal.valid_bits)
    lut = (cal.table() if table is None else table).astype(np.float32)
    out = lut[count]
    out[~valid_dqf(dqf, allow_conditional)] = np.nan
    return out
