"""read_l1b on tiny L1B files written in the real format (sector windows, messy attribute types) by
tests/fakes.py."""

from __future__ import annotations

from datetime import UTC, datetime

import h5netcdf
import numpy as np
import pytest
from fakes import L1B_DOMAIN, L1B_STAMP, expected_on_domain, l1b_path, native_window, truth_field, write_l1b

from ta2d.channels import CHANNELS
from ta2d.grid import FD_GRIDS, Domain
from ta2d.ingest.l1b import L1BError, parse_l1b_name, read_l1b

DOMAIN = L1B_DOMAIN  # around Seoul, 4 x 5 pixels


def path_for(tmp_path, channel, stamp=L1B_STAMP, area="ela"):
    return l1b_path(tmp_path, channel, stamp, area)


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


# --- chunking of the demo writer (benchmarks/bench_calibrate_fd.py) ---------------------------------------

@pytest.mark.parametrize("channel", ["ir105", "vi006"])
def test_demo_writer_chunks_option_reads_the_same(tmp_path, channel):
    """write_l1b(chunks=...) tiles the image (clipped to it); None keeps one chunk; the reader's values agree."""
    import h5py

    from ta2d.demo.l1b_writer import write_l1b as demo_write_l1b
    from ta2d.demo.static import Window

    window = Window(DOMAIN.first_line - 3, DOMAIN.first_column - 2, DOMAIN.shape[0] + 5, DOMAIN.shape[1] + 7)
    f = CHANNELS[channel].factor
    rng = np.random.default_rng(0)
    raw = rng.integers(100, 2000, size=(window.n_lines * f, window.n_columns * f)).astype(np.uint16)
    slot = datetime(2024, 4, 1, 3, tzinfo=UTC)
    values = {}
    for chunks, expected in ((None, raw.shape), ((3, 5), (3, 5)), ((1000, 4), (raw.shape[0], 4))):
        path = tmp_path / str(chunks) / f"gk2a_ami_le1b_{channel}_fd0{'05' if f == 4 else '20'}ge_202404010300.nc"
        path.parent.mkdir()
        demo_write_l1b(path, channel, slot, window, raw, 1, chunks=chunks)
        with h5py.File(path, "r") as h5:
            assert h5["image_pixel_values"].chunks == expected
        values[chunks] = read_l1b(path, DOMAIN).values
    for v in values.values():
        np.testing.assert_array_equal(v, values[None])
