"""satpy's ``ami_l1b`` reader as an independent oracle: it opens the demo's L1B files (so they carry what
real files carry, e.g. ``sc_position``) and calibrates them as ta2d's scene does.

ta2d follows satpy's ``calib_mode="FILE"`` (file gain/offset, inverse Planck, Teff_to_Tbb polynomial, no
GSICS correction), so that mode is compared; satpy's default "PYSPECTRAL" drops the polynomial (~0.035 K
off here) and "GSICS" applies the files' GSICS coefficients (~0.3 K at cold cloud tops).
IR105: the one modelled difference is the wavenumber, 1e4/10.35 um = 966.184 cm-1 in satpy's yaml vs the
effective 966.153 cm-1 in ta2d (notes section 2): ~4 mK. One IR105 count is 0.010-0.036 K (320-220 K),
so TOL_BT_K = 0.01 K fails on any count or pixel shift.
VI006: ta2d stores the mean of the valid 0.5 km albedos of each 4x4 block (float32 lookup table). One
count of one sub-pixel moves a block mean by gain * Radiance_to_Albedo_c / 16 = 1.8e-5; float32 rounding
of albedos <= 1.2 is 1e-7, so TOL_ALBEDO = 1e-6 fails on a single misplaced sub-pixel count.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ta2d.channels import CHANNELS, l1b_filename
from ta2d.grid import EQ_RADIUS_KM, FD_GRIDS, SAT_RADIUS_KM, SUB_LON_DEG
from ta2d.ingest.archive import calibrate_period, write_inventory
from ta2d.ingest.scene import read_scene

Scene = pytest.importorskip("satpy").Scene  # a dev dependency (test-only oracle): CI runs this module

KEY = "20240401"
DAY_HOURS = (3, 4, 2, 5)  # around 12 KST: VI006 has signal; the first slot the scene has as ok is used
TOL_BT_K = 0.01
TOL_ALBEDO = 1e-6
TOL_LONLAT_DEG = 1e-4  # ~10 m: pyresample's and ta2d's GEOS navigation (float32 scene lat/lon)

@pytest.fixture(scope="module")
def slot(tiny_demo, tmp_path_factory):
    """ta2d's calibrated scene of one daytime slot of the tiny demo and the slot's IR105/VI006 files."""
    cfg = tiny_demo["config"]
    out = tmp_path_factory.mktemp("satpy_scene")
    inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    write_inventory(inputs, KEY, "D", cfg["period"], out / f"{KEY}.tsv")
    calibrate_period(inputs, out / f"{KEY}.tsv", KEY, "D", cfg["period"], cfg["domain"], cfg["scene"],
                     out / f"{KEY}.nc", out / f"{KEY}.status.csv", progress=False)
    with read_scene(out / f"{KEY}.nc") as sc:
        ok = [t for t in sc["time"].to_index() if t.hour in DAY_HOURS and sc["status"].sel(time=t) == "ok"]
        t = min(ok, key=lambda t: DAY_HOURS.index(t.hour))
        scene = sc.sel(time=t).load()
    l1b = cfg["inputs"]["l1b"]
    folder = tiny_demo["root"] / l1b["dir"] / t.strftime(l1b["subdir"])
    files = {ch: folder / l1b_filename(ch, l1b["area"], f"{t:%Y%m%d%H%M}") for ch in ("ir105", "vi006")}
    return {"scene": scene, "files": files}


@pytest.fixture(scope="module")
def satpy_data(slot):
    """satpy's IR105 BT (K) and VI006 reflectance (%) in FILE mode, as (y, x) numpy arrays of each file."""
    scn = Scene(reader="ami_l1b", filenames=[str(p) for p in slot["files"].values()],
                reader_kwargs={"calib_mode": "FILE"})
    scn.load(["IR105", "VI006"])  # default calibrations: brightness_temperature, reflectance
    assert scn["IR105"].attrs["calibration"] == "brightness_temperature" and scn["IR105"].attrs["units"] == "K"
    assert scn["VI006"].attrs["calibration"] == "reflectance" and scn["VI006"].attrs["units"] == "%"
    return {"scn": scn, "ir105": scn["IR105"].values, "vi006": scn["VI006"].values}


def domain_rows_cols(path, channel: str, scene):
    """0-based (rows, cols) of the file's image holding the scene's first 2 km domain pixel's first native
    sub-pixel, from the file's own loff/coff (notes 3.5: first FD native line L0 = LOFF_FD - loff + 1)."""
    f = CHANNELS[channel].factor
    fd_off = FD_GRIDS[CHANNELS[channel].resolution_km][0]
    with h5py.File(path, "r") as h5:
        first_line = round(fd_off - float(np.ravel(h5.attrs["loff"])[0])) + 1
        first_col = round(fd_off - float(np.ravel(h5.attrs["coff"])[0])) + 1
    line0, col0 = int(scene["line"][0]), int(scene["column"][0])
    return (line0 - 1) * f + 1 - first_line, (col0 - 1) * f + 1 - first_col


def on_domain(image: np.ndarray, path, channel: str, scene) -> np.ndarray:
    """The file image's native pixels covering the scene's domain, block-averaged (valid ones) to 2 km."""
    f = CHANNELS[channel].factor
    r0, c0 = domain_rows_cols(path, channel, scene)
    nl, nc = scene.sizes["line"], scene.sizes["column"]
    assert r0 >= 0 and c0 >= 0 and r0 + nl * f <= image.shape[0] and c0 + nc * f <= image.shape[1]
    blocks = image[r0: r0 + nl * f, c0: c0 + nc * f].reshape(nl, f, nc, f)
    n = np.isfinite(blocks).sum(axis=(1, 3))
    total = np.nansum(blocks, axis=(1, 3))
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def test_ir105_brightness_temperature_matches_satpy_file_mode(slot, satpy_data):
    scene = slot["scene"]
    ours = scene["bt"].sel(bt_channel="ir105").values.astype(np.float64)
    theirs = on_domain(satpy_data["ir105"], slot["files"]["ir105"], "ir105", scene)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))  # same DQF / invalid-radiance masking
    assert np.isfinite(ours).mean() > 0.95
    diff = np.abs(ours - theirs)
    assert np.nanmax(diff) <= TOL_BT_K, np.nanmax(diff)
    assert np.nanmax(diff) > 0  # the wavenumbers do differ: a test comparing ta2d with itself would not


def test_vi006_reflectance_matches_satpy_block_means(slot, satpy_data):
    scene = slot["scene"]
    ours = scene["rf"].sel(rf_channel="vi006").values.astype(np.float64)
    # satpy: % and no clipping; ta2d: fraction, negatives (noise near zero signal) clipped to 0 per pixel
    albedo = np.maximum(satpy_data["vi006"] / 100.0, 0.0)  # NaN stays NaN
    theirs = on_domain(albedo, slot["files"]["vi006"], "vi006", scene)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.nanmean(ours) > 0.02  # a daytime slot: the comparison is not all zeros
    assert np.nanmax(np.abs(ours - theirs)) <= TOL_ALBEDO, np.nanmax(np.abs(ours - theirs))


def test_satpy_area_is_the_domain_mirrored_about_the_equator(slot, satpy_data):
    """satpy 0.60 mis-navigates offset sectors (notes 3.2): its extent formula is right only for the symmetric
    full disk and mirrors a window with its own LOFF to the southern hemisphere. So the comparisons above map
    pixels with the files' loff/coff, never with satpy's area. Modelling the bug exactly also checks that
    mapping against satpy's own use of coff (x) and loff (y): file row i is satpy's row n_lines - 1 - i."""
    scene = slot["scene"]
    lons, lats = satpy_data["scn"]["IR105"].attrs["area"].get_lonlats()
    r0, c0 = domain_rows_cols(slot["files"]["ir105"], "ir105", scene)
    nl, nc = scene.sizes["line"], scene.sizes["column"]
    mirrored = np.arange(lons.shape[0] - 1 - r0, lons.shape[0] - 1 - r0 - nl, -1)
    assert np.abs(lons[mirrored, c0: c0 + nc] - scene["lon"].values).max() <= TOL_LONLAT_DEG
    assert np.abs(lats[mirrored, c0: c0 + nc] + scene["lat"].values).max() <= TOL_LONLAT_DEG


def test_file_extras_satpy_reads(slot, satpy_data):
    """sc_position gives a geostationary orbit at 128.2 E; the IR GSICS coefficients are read and are a
    small correction that ta2d (like FILE mode) does not apply."""
    orbit = satpy_data["scn"]["IR105"].attrs["orbital_parameters"]
    assert orbit["satellite_actual_longitude"] == pytest.approx(SUB_LON_DEG, abs=0.05)
    assert abs(orbit["satellite_actual_latitude"]) < 0.1
    assert orbit["satellite_actual_altitude"] == pytest.approx((SAT_RADIUS_KM - EQ_RADIUS_KM) * 1e3, abs=10e3)
    gsics = Scene(reader="ami_l1b", filenames=[str(slot["files"]["ir105"])], reader_kwargs={"calib_mode": "GSICS"})
    gsics.load(["IR105"])
    delta = np.abs(gsics["IR105"].values - satpy_data["ir105"])
    assert TOL_BT_K < np.nanmax(delta) < 1.0
