"""Calibration against the worked numbers of docs/gk2a-format.md#worked-numbers and a straight-line oracle."""

import math

import numpy as np
import pytest

from ta2d.channels import BT_CHANNELS, CHANNELS
from ta2d.ingest.calibration import Calibration, brightness_temperature, calibrate, radiance, split_raw, valid_dqf

# Real coefficients (notes 1.3)
IR105 = Calibration("ir105", gain=-0.0198196955025196, offset=161.580139160156, valid_bits=13,
                    tbb_c0=-0.142866448475177, tbb_c1=1.00064069572049, tbb_c2=-5.50443294960498e-7)
VI005 = Calibration("vi005", gain=0.343625485897064, offset=-6.87249755859375, valid_bits=11,
                    albedo_c=0.0016595767)


def straight_line_bt(count, cal: Calibration, wavenumber_cm: float) -> float:
    """Scalar, written out from the formula (notes 1.3, FILE mode) -- independent of the vectorised code."""
    h, c, k = 6.62606957e-34, 299792458.0, 1.3806488e-23
    rad = cal.gain * count + cal.offset
    if rad <= 0:
        return math.nan
    nu = wavenumber_cm * 100.0
    t_eff = h * c * nu / k / math.log(2 * h * c * c * nu**3 / (rad * 1e-5) + 1)
    return cal.tbb_c0 + cal.tbb_c1 * t_eff + cal.tbb_c2 * t_eff * t_eff


@pytest.mark.parametrize(("count", "kelvin"), [(3508, 291.54), (6198, 246.95), (0, 330.05)])
def test_ir105_worked_numbers(count, kelvin):
    assert IR105.table()[count] == pytest.approx(kelvin, abs=0.005)


def test_ir105_radiance_worked_number():
    assert radiance(3508, IR105.gain, IR105.offset) == pytest.approx(92.05, abs=0.005)


def test_nominal_wavelength_would_be_wrong():
    # the rounded channel_center_wavelength (10.5 um) makes IR105 ~1.56 K too cold (notes 0.4)
    rad = radiance(3508, IR105.gain, IR105.offset)
    wrong = brightness_temperature(rad, 1e4 / 10.5, IR105.tbb_c0, IR105.tbb_c1, IR105.tbb_c2)
    assert wrong == pytest.approx(289.98, abs=0.01)


@pytest.mark.parametrize(("count", "fraction"), [(146, 0.072), (539, 0.296), (2047, 1.156), (17, 0.0)])
def test_vi005_worked_numbers(count, fraction):
    assert VI005.table()[count] == pytest.approx(fraction, abs=0.0005)


@pytest.mark.parametrize("channel", BT_CHANNELS)
def test_table_matches_straight_line_formula(channel):
    cal = Calibration(channel, IR105.gain, IR105.offset, 13, tbb_c0=IR105.tbb_c0, tbb_c1=IR105.tbb_c1,
                      tbb_c2=IR105.tbb_c2)
    table = cal.table()
    for count in np.random.default_rng(1).integers(0, 8152, 50).tolist() + [8151, 8152, 8191]:
        expected = straight_line_bt(count, cal, CHANNELS[channel].wavenumber_cm)
        if math.isnan(expected):
            assert np.isnan(table[count])
        else:
            assert table[count] == pytest.approx(expected, abs=1e-9)


def test_non_positive_radiance_is_nan():
    table = IR105.table()
    zero_count = -IR105.offset / IR105.gain  # ~8152.5
    assert np.isfinite(table[int(zero_count)])
    assert np.all(np.isnan(table[int(zero_count) + 1:]))


def test_split_raw_masks_dqf_and_padding_bits():
    raw = np.array([539, 539 | (1 << 14), 539 | (2 << 14), 0x8000, 539 | (3 << 14), 539 | (1 << 12)], np.uint16)
    dqf, count = split_raw(raw, 11)
    assert dqf.tolist() == [0, 1, 2, 2, 3, 0]
    assert count.tolist() == [539, 539, 539, 0, 539, 539]  # bit 12 is padding for an 11-bit channel
    assert valid_dqf(dqf).tolist() == [True, False, False, False, False, True]
    assert valid_dqf(dqf, allow_conditional=True).tolist() == [True, True, False, False, False, True]


def test_calibrate_flags_and_dtype():
    raw = np.array([[3508, 3508 | (1 << 14)], [6198 | (3 << 14), 8191]], np.uint16)
    out = calibrate(raw, IR105)
    assert out.dtype == np.float32
    assert out[0, 0] == pytest.approx(291.5379, abs=1e-3)
    assert np.isnan(out[0, 1]) and np.isnan(out[1, 0]) and np.isnan(out[1, 1])
    assert calibrate(raw, IR105, allow_conditional=True)[0, 1] == out[0, 0]


def test_constants_from_file_are_used():
    other = Calibration(**{**IR105.__dict__, "planck_h": 6.626e-34})
    assert other.table()[3508] != IR105.table()[3508]
