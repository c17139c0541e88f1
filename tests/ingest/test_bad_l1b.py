"""Bad-input battery, calibrate stage: faults in the raw L1B files of one slot or day (tests/bad_inputs.py).

Each fault hits the files of slot 2024-04-01 05:00: the slot becomes a `bad_scene` reject for exactly its
rows, with a status naming the channel and what is wrong, and the calibrate log names the file.
Attributes stored another way (strings, 1-element arrays) decode to the same scene.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from bad_inputs import (
    DAYS,
    SLOT_DIR,
    SLOT_T,
    as_array,
    as_text,
    assert_outcome,
    del_attr,
    delete_file,
    one_day,
    rename_pixels,
    replace_pixels,
    run_library,
    set_attr,
    truncate,
    whole_slot,
)

from ta2d.ingest.archive import calibrate_period, write_inventory

FD_2KM_CFAC = 20425338.903339352

# (id, fault, expected regex in the bad_scene detail). Each fault hits the files of slot 2024-04-01 05:00.
SCENE_FAULTS = [
    ("truncated_file", truncate("ir105", 0.4),
     r"^unreadable:ir105:not a readable NetCDF4/HDF5 file \(Unable to synchronously open file"),
    ("empty_file", truncate("ir105", 0.0), r"unreadable:ir105:not a readable NetCDF4/HDF5 file"),
    ("wrong_variable_name", rename_pixels, r"unreadable:ir105:no variable image_pixel_values"),
    ("wrong_shape_rows", replace_pixels("ir105", lambda v: v[:40]),
     r"unreadable:ir105:image_pixel_values shape \(40, 64\) != number_of_lines/columns \(56, 64\)"),
    ("wrong_shape_3d", replace_pixels("ir105", lambda v: v[None]),
     r"unreadable:ir105:image_pixel_values has 3 dimensions, expected 2"),
    ("missing_channel_file", delete_file, r"^missing_channel:ir105$"),
    ("all_fill_slot", whole_slot(lambda v: np.full_like(v, 0xFFFF)),
     r"^unreadable:(\w+:all \d+ pixels inside the domain are flagged or invalid;?){16}$"),
    ("all_error_flagged_slot", whole_slot(lambda v: (v & 0x3FFF) | 0xC000),
     r"^unreadable:(\w+:all \d+ pixels inside the domain are flagged or invalid;?){16}$"),
    ("gain_not_numeric", set_attr("ir105", "DN_to_Radiance_Gain", np.bytes_(b"abc")),
     r"unreadable:ir105:attribute DN_to_Radiance_Gain is not numeric"),
    ("gain_missing", del_attr("ir105", "DN_to_Radiance_Gain"),
     r"unreadable:ir105:missing attribute DN_to_Radiance_Gain"),
    ("albedo_c_missing", del_attr("vi006", "Radiance_to_Albedo_c"),
     r"unreadable:vi006:missing attribute Radiance_to_Albedo_c"),
    ("gain_two_values", set_attr("ir105", "DN_to_Radiance_Gain", np.array([-0.0198, 1.0])),
     r"unreadable:ir105:attribute DN_to_Radiance_Gain has 2 values, expected one number"),
    ("gain_nan", set_attr("ir105", "DN_to_Radiance_Gain", np.nan),
     r"unreadable:ir105:attribute DN_to_Radiance_Gain is not finite"),
    ("cfac_off_grid", set_attr("ir105", "cfac", np.array([FD_2KM_CFAC * 1.01])),
     r"unreadable:ir105:navigation mismatch: \|cfac\| .* is not the 2 km FD value"),
    ("lfac_of_1km_grid", set_attr("ir105", "lfac", -2 * FD_2KM_CFAC),
     r"unreadable:ir105:navigation mismatch: \|lfac\| .* is not the 2 km FD value"),
    ("coff_half_pixel", set_attr("ir105", "coff", 80.0),
     r"unreadable:ir105:navigation mismatch: coff 80.0 is not the 2 km FD offset 2750.5"),
    ("loff_off_disk", set_attr("ir105", "loff", np.array([-6000.5])),
     r"unreadable:ir105:navigation mismatch: loff -6000.5 is not the 2 km FD offset"),
]


@pytest.mark.parametrize("plant, detail", [f[1:] for f in SCENE_FAULTS], ids=[f[0] for f in SCENE_FAULTS])
def test_scene_fault_marks_the_slot_bad(base, case, plant, detail, caplog):
    plant(case)
    with caplog.at_level(logging.WARNING, logger="ta2d.ingest.scene"):
        res = run_library(case, case.dir / "out", recalibrate=("20240401",), base=base)
    rows = base.rows(time=SLOT_T)
    assert len(rows) == 6
    assert_outcome(res, base, dict.fromkeys(rows, "bad_scene"), base.keys(time=SLOT_T), detail)
    # the calibrate log names the file (status strings stay short)
    logged = caplog.text
    if "missing_channel" in detail:
        assert "slot 202404010500: no L1B file for channel(s) ir105" in logged
    else:
        assert str(case.raw / SLOT_DIR) in logged and "unreadable L1B file" in logged


# stored differently, same numbers: the slot must stay ok and decode to the same values
HARMLESS = [
    ("gain_as_char_string", as_text("ir105", "DN_to_Radiance_Gain")),
    ("gain_as_python_str", as_text("ir105", "DN_to_Radiance_Gain", kind=str)),
    ("albedo_c_as_string", as_text("vi006", "Radiance_to_Albedo_c")),
    ("cfac_as_string", as_text("ir105", "cfac")),
    ("c0_as_1_element_array", as_array("ir105", "Teff_to_Tbb_c0")),
    ("offset_as_1_element_array", as_array("vi005", "DN_to_Radiance_Offset")),
    ("valid_bits_as_string", set_attr("ir105", "number_of_valid_bits_per_pixel", np.bytes_(b"13"), on_variable=True)),
]


@pytest.mark.parametrize("plant", [h[1] for h in HARMLESS], ids=[h[0] for h in HARMLESS])
def test_attribute_stored_another_way_still_works(base, case, plant):
    """The scene comes out bit-identical to the clean one, so every later step is unchanged too."""
    plant(case)
    cfg, out = case.config, case.dir / "out"
    raw = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    write_inventory(raw, "20240401", "D", one_day("20240401"), out / "20240401.tsv")
    summary = calibrate_period(raw, out / "20240401.tsv", "20240401", "D", one_day("20240401"), cfg["domain"],
                               cfg["scene"], out / "20240401.nc", out / "20240401.status.csv", progress=False)
    assert summary["n_ok"] == 24 and summary["bad_slots"] == {}
    with xr.open_dataset(out / "20240401.nc", engine="h5netcdf") as got, \
            xr.open_dataset(base.out / "scenes/20240401.nc", engine="h5netcdf") as want:
        for var in ("bt", "rf", "sza"):
            np.testing.assert_array_equal(got[var].values, want[var].values)


def test_empty_day_becomes_no_scene(base, case):
    (case.raw / "202404/02").unlink()  # the day's folder (a link to the shared data) is gone
    res = run_library(case, case.dir / "out", recalibrate=DAYS, base=base)
    day2_start = int(pd.Timestamp("2024-04-02", tz="UTC").timestamp())
    day2 = set(base.index.loc[base.index["time"] >= day2_start, "row"])
    assert len(day2) == 144
    lost = {k for k in base.result.samples if k[1] >= day2_start}
    assert_outcome(res, base, dict.fromkeys(day2, "no_scene"), lost, r"^no satellite files for 2024-04-02 \d\d:00 UTC$")


