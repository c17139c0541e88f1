"""read_l1b on tiny L1B files written in the real format (sector windows, messy attribute types)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import h5netcdf
import numpy as np
import pytest

from ta2d.channels import CHANNELS, l1b_filename
from ta2d.grid import FD_GRIDS, Domain
from ta2d.l1b import L1BError, parse_l1b_name, read_l1b

# Real coefficients (shared/notes/gk2a_data.md 1.3): IR105's for every emissive channel, VI005's for
# every reflective one. Fixture bit widths are fixed per kind so the same counts fit every channel.
IR_COEFFS = {"DN_to_Radiance_Gain": -0.0198196955025196, "DN_to_Radiance_Offset": 161.580139160156,
             "Teff_to_Tbb_c0": -0.142866448475177, "Teff_to_Tbb_c1": 1.00064069572049,
             "Teff_to_Tbb_c2": -5.50443294960498e-7}
VIS_COEFFS = {"DN_to_Radiance_Gain": 0.343625485897064, "DN_to_Radiance_Offset": -6.87249755859375,
              "Radiance_to_Albedo_c": 0.0016595767}
BITS = {"emissive": 13, "reflective": 11}
H, C, K = 6.62606957e-34, 299792458.0, 1.3806488e-23

DOMAIN = Domain(895, 898, 2698, 2702)  # around Seoul, 4 x 5 pixels
STAMP = "202404010000"


def truth_field(channel: str, lines, cols):
    """Smooth physical field on FD native coordinates (1-based): BT in K or albedo fraction."""
    lines, cols = np.asarray(lines, float), np.asarray(cols, float)
    wave = np.sin(lines * 0.37) + np.cos(cols * 0.23)
    if CHANNELS[channel].kind == "emissive":
        return 270.0 + 15.0 * wave
    return 0.3 + 0.12 * wave


def phys_to_count(channel: str, values):
    """Invert the calibration (notes 1.3) to integer counts, as KMA's quantisation would give."""
    values = np.asarray(values, float)
    if CHANNELS[channel].kind == "reflective":
        rad = values / VIS_COEFFS["Radiance_to_Albedo_c"]
        count = (rad - VIS_COEFFS["DN_to_Radiance_Offset"]) / VIS_COEFFS["DN_to_Radiance_Gain"]
    else:
        c0, c1, c2 = (IR_COEFFS[f"Teff_to_Tbb_c{i}"] for i in range(3))
        t_eff = (-c1 + np.sqrt(c1 * c1 - 4 * c2 * (c0 - values))) / (2 * c2)
        nu = CHANNELS[channel].wavenumber_cm * 100.0
        rad = 2 * H * C**2 * nu**3 / (np.exp(H * C * nu / (K * t_eff)) - 1) / 1e-5
        count = (rad - IR_COEFFS["DN_to_Radiance_Offset"]) / IR_COEFFS["DN_to_Radiance_Gain"]
    bits = BITS[CHANNELS[channel].kind]
    return np.clip(np.rint(count), 0, 2**bits - 1).astype(np.uint16)


def count_to_phys(channel: str, count):
    """Straight-line forward calibration, element by element (independent of ta2d.calibration)."""
    out = np.empty(np.shape(count))
    for idx, n in np.ndenumerate(np.asarray(count, float)):
        if CHANNELS[channel].kind == "reflective":
            rad = VIS_COEFFS["DN_to_Radiance_Gain"] * n + VIS_COEFFS["DN_to_Radiance_Offset"]
            out[idx] = max(rad * VIS_COEFFS["Radiance_to_Albedo_c"], 0.0)
            continue
        rad = IR_COEFFS["DN_to_Radiance_Gain"] * n + IR_COEFFS["DN_to_Radiance_Offset"]
        nu = CHANNELS[channel].wavenumber_cm * 100.0
        t_eff = H * C * nu / K / math.log(2 * H * C * C * nu**3 / (rad * 1e-5) + 1)
        out[idx] = IR_COEFFS["Teff_to_Tbb_c0"] + IR_COEFFS["Teff_to_Tbb_c1"] * t_eff + \
            IR_COEFFS["Teff_to_Tbb_c2"] * t_eff**2
    return out


def native_window(channel: str, domain: Domain = DOMAIN, margin: int = 3, extra: int = 2):
    """FD native (first_line, first_column, n_lines, n_columns) of a sector covering `domain`.

    An odd `margin` puts the window's first pixel off the 2 km block boundaries, as real sectors may be.
    """
    f = CHANNELS[channel].factor
    nl, nc = domain.shape
    first_line = (domain.first_line - 1) * f + 1 - margin
    first_col = (domain.first_column - 1) * f + 1 - margin
    return first_line, first_col, nl * f + margin + extra, nc * f + margin + extra


def write_l1b(path, channel: str, window=None, flags=None, attrs=None, drop=(), field=truth_field,
              stamp: str = STAMP):
    """Write a L1B NetCDF in the real layout; returns the uint16 words written.

    window: FD native (first_line, first_column, n_lines, n_columns), 1-based; default native_window().
    flags: {(row, col): dqf} for pixels of the window; attrs: overrides; drop: attribute names to omit.
    Attribute types are deliberately mixed (str, bytes, numpy scalars, 1-element arrays).
    """
    spec = CHANNELS[channel]
    first_line, first_col, n_lines, n_cols = window or native_window(channel)
    lines, cols = np.meshgrid(np.arange(first_line, first_line + n_lines),
                              np.arange(first_col, first_col + n_cols), indexing="ij")
    raw = phys_to_count(channel, field(channel, lines, cols))
    if spec.kind == "reflective":
        raw[0, 0] |= np.uint16(1 << 12)  # a padding bit above the 11 valid bits: must be masked off
    for (r, c), dqf in (flags or {}).items():
        raw[r, c] = (raw[r, c] & 0x3FFF) | (dqf << 14)
    fd_off, fd_fac, _ = FD_GRIDS[spec.resolution_km]
    gattrs = {
        "satellite_name": "GK-2A", "observation_mode": "ELA", "projection_type": "GEOS",
        "channel_spatial_resolution": f"{spec.resolution_km:.1f}",
        "channel_center_wavelength": f"{spec.wavelength_um:.1f}",  # rounded on purpose, as in real files
        "number_of_lines": str(n_lines), "number_of_columns": np.array([n_cols], np.int32),
        "cfac": repr(fd_fac), "lfac": np.array([-fd_fac]), "coff": np.float64(fd_off - (first_col - 1)),
        "loff": np.array([fd_off - (first_line - 1)], np.float32),
        "sub_longitude": 2.2375121, "nominal_satellite_height": 42164000.0,
        "observation_start_time": np.float64(765201632.0),
    }
    if spec.kind == "emissive":
        gattrs |= {k: np.array([v]) for k, v in IR_COEFFS.items()}
        gattrs |= {"light_speed": "299792458", "Boltzmann_constant_k": np.float64(1.3806488e-23),
                   "Plank_constant_h": np.array([6.62606957e-34])}
    else:
        gattrs |= {k: np.float64(v) for k, v in VIS_COEFFS.items()}
        gattrs["Radiance_to_Albedo_c"] = f"{VIS_COEFFS['Radiance_to_Albedo_c']!r}"
    gattrs |= attrs or {}
    vattrs = {"channel_name": channel.upper().encode(), "number_of_valid_bits_per_pixel":
              np.array([BITS[spec.kind]], np.int16), "number_of_total_bits_per_pixel": 16,
              "data_quality_flag_meaning": "0:good_pixel, 1:conditionally_usable_pixel, "
                                           "2:out_of_scan_area_pixel, 3:error_pixel"}
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"dim_image_y": n_lines, "dim_image_x": n_cols}
        var = f.create_variable("image_pixel_values", ("dim_image_y", "dim_image_x"), np.uint16, data=raw,
                                chunks=(min(n_lines, 8), min(n_cols, 8)), compression="gzip")
        var.attrs.update({k: v for k, v in vattrs.items() if k not in drop})
        f.attrs.update({k: v for k, v in gattrs.items() if k not in drop})
    return raw


def expected_on_domain(channel: str, raw, window=None, domain: Domain = DOMAIN, allow_conditional=False):
    """Block means of the straight-line calibrated valid native pixels, via a direct reshape."""
    f = CHANNELS[channel].factor
    first_line, first_col, _, _ = window or native_window(channel, domain)
    r0 = (domain.first_line - 1) * f + 1 - first_line
    c0 = (domain.first_column - 1) * f + 1 - first_col
    nl, nc = domain.shape
    block = raw[r0:r0 + nl * f, c0:c0 + nc * f]
    dqf = block >> 14
    phys = count_to_phys(channel, block & (2 ** BITS[CHANNELS[channel].kind] - 1))
    ok = (dqf == 0) | (allow_conditional & (dqf == 1))
    phys = np.where(ok, phys, np.nan).reshape(nl, f, nc, f)
    n = np.isfinite(phys).sum(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(phys, axis=(1, 3)) / n, np.nan)


def path_for(tmp_path, channel, stamp=STAMP, area="ela"):
    return tmp_path / l1b_filename(channel, area, stamp)


# --- names ---------------------------------------------------------------------------------------------

def test_parse_l1b_name():
    parsed = parse_l1b_name("/a/b/gk2a_ami_le1b_vi006_fd005ge_201909300310.nc")
    assert parsed == ("vi006", "fd", "005", datetime(2019, 9, 30, 3, 10, tzinfo=UTC))
    assert parse_l1b_name("gk2a_ami_le1b_ir105_ela020ge_201909300300.nc").area == "ela"
    for bad in ["gk2a_ami_le2_cld_fd020ge_201909300300.nc", "gk2a_ami_le1b_ir999_fd020ge_201909300300.nc",
                "gk2a_ami_le1b_ir105_ko020lc_201909300300.nc", "gk2a_ami_le1b_ir105_fd020ge_201913300300.nc",
                "notes.txt"]:
        assert parse_l1b_name(bad) is None


# --- values --------------------------------------------------------------------------------------------

def test_ir105_sector_values_and_flags(tmp_path):
    path = path_for(tmp_path, "ir105")
    flags = {(3, 3): 1, (3, 4): 2, (4, 5): 3}  # window pixels inside the domain (margin 3)
    raw = write_l1b(path, "ir105", flags=flags)
    img = read_l1b(path, DOMAIN)
    assert img.channel == "ir105" and img.values.shape == DOMAIN.shape and img.values.dtype == np.float32
    assert img.slot == datetime(2024, 4, 1, tzinfo=UTC)
    expected = expected_on_domain("ir105", raw)
    np.testing.assert_array_equal(np.isnan(img.values), np.isnan(expected))
    assert np.isnan(img.values[0, 0]) and np.isnan(img.values[0, 1]) and np.isnan(img.values[1, 2])
    np.testing.assert_allclose(img.values, expected, atol=0.01, equal_nan=True)
    # against the unquantised truth: IR105 counts are ~0.02-0.03 K apart
    truth = truth_field("ir105", DOMAIN.lines[:, None], DOMAIN.columns[None, :])
    np.testing.assert_allclose(img.values[2:], truth[2:], atol=0.05)
    assert img.n_flagged == 3

    conditional = read_l1b(path, DOMAIN, allow_conditional=True)
    assert np.isfinite(conditional.values[0, 0]) and np.isnan(conditional.values[0, 1])


@pytest.mark.parametrize("channel", ["vi005", "vi006", "vi008", "nr016"])
def test_reflective_block_means(tmp_path, channel):
    f = CHANNELS[channel].factor
    path = path_for(tmp_path, channel)
    # flag every sub-pixel of 2 km pixel (0, 0) and one sub-pixel of (1, 1); margin 3 = window offset
    flags = {(3 + r, 3 + c): 3 for r in range(f) for c in range(f)}
    flags[(3 + f, 3 + f)] = 2
    raw = write_l1b(path, channel, flags=flags)
    img = read_l1b(path, DOMAIN)
    expected = expected_on_domain(channel, raw)
    assert np.isnan(img.values[0, 0]) and np.isnan(expected[0, 0])
    np.testing.assert_allclose(img.values, expected, atol=1e-6, equal_nan=True)
    n_empty = 1 if f > 1 else 2  # at 2 km the one flagged pixel is the whole block
    assert np.isfinite(img.values).sum() == DOMAIN.shape[0] * DOMAIN.shape[1] - n_empty
    assert 0.0 <= np.nanmin(img.values) and np.nanmax(img.values) < 1.2


def test_sector_offset_gives_same_values(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for channel in ["ir105", "vi004", "vi006"]:
        w1 = native_window(channel, margin=3, extra=2)
        w2 = native_window(channel, margin=10, extra=7)
        write_l1b(path_for(a, channel), channel, window=w1)
        write_l1b(path_for(b, channel), channel, window=w2)
        np.testing.assert_array_equal(read_l1b(path_for(a, channel), DOMAIN).values,
                                      read_l1b(path_for(b, channel), DOMAIN).values)


def test_full_disk_offsets_accepted(tmp_path):
    # a window starting at FD pixel (1, 1) has exactly the FD COFF/LOFF
    domain = Domain(1, 2, 1, 3)
    path = path_for(tmp_path, "ir105", area="fd")
    write_l1b(path, "ir105", window=(1, 1, 5, 6))
    assert read_l1b(path, domain).values.shape == (2, 3)


# --- errors --------------------------------------------------------------------------------------------

def _error(path, domain=DOMAIN) -> str:
    with pytest.raises(L1BError) as info:
        read_l1b(path, domain)
    assert str(path) in str(info.value)
    return info.value.reason


def test_navigation_mismatch(tmp_path):
    path = path_for(tmp_path, "ir105")
    write_l1b(path, "ir105", attrs={"cfac": FD_GRIDS[1.0][1]})
    assert "navigation mismatch" in _error(path) and "cfac" in _error(path)
    write_l1b(path, "ir105", attrs={"lfac": -FD_GRIDS[1.0][1]})
    assert "lfac" in _error(path)
    write_l1b(path, "ir105", attrs={"coff": 100.25})
    assert "coff" in _error(path)


def test_truncated_file(tmp_path):
    path = path_for(tmp_path, "ir105")
    write_l1b(path, "ir105")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable" in _error(path)
    path.write_bytes(b"CDF\x01 netcdf3 or garbage")
    assert "not a readable" in _error(path)


@pytest.mark.parametrize(("channel", "attr"), [("ir105", "Teff_to_Tbb_c1"), ("vi005", "Radiance_to_Albedo_c"),
                                               ("ir105", "DN_to_Radiance_Gain"), ("ir105", "loff")])
def test_missing_attribute_is_named(tmp_path, channel, attr):
    path = path_for(tmp_path, channel)
    write_l1b(path, channel, drop=(attr,))
    assert _error(path) == f"missing attribute {attr}"


def test_non_numeric_attribute_is_named(tmp_path):
    path = path_for(tmp_path, "ir105")
    write_l1b(path, "ir105", attrs={"DN_to_Radiance_Offset": "n/a"})
    assert "DN_to_Radiance_Offset is not numeric" in _error(path)


def test_wrong_shape_vs_attributes(tmp_path):
    path = path_for(tmp_path, "ir105")
    write_l1b(path, "ir105", attrs={"number_of_lines": "5500"})
    assert "number_of_lines" in _error(path)


def test_no_pixel_variable(tmp_path):
    path = path_for(tmp_path, "ir105")
    with h5netcdf.File(path, "w") as f:
        f.attrs["cfac"] = 1.0
    assert "no variable image_pixel_values" in _error(path)


def test_domain_not_covered(tmp_path):
    path = path_for(tmp_path, "vi006")
    write_l1b(path, "vi006")
    assert "not covered" in _error(path, Domain(895, 899, 2698, 2702))


def test_all_pixels_flagged(tmp_path):
    path = path_for(tmp_path, "ir105")
    _, _, n_lines, n_cols = native_window("ir105")
    write_l1b(path, "ir105", flags={(r, c): 2 for r in range(n_lines) for c in range(n_cols)})
    assert "flagged" in _error(path)


def test_channel_name_mismatch(tmp_path):
    path = path_for(tmp_path, "ir105")
    write_l1b(path, "ir105")
    other = path_for(tmp_path, "ir112")
    path.rename(other)
    assert "channel_name" in _error(other)
