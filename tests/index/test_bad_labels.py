"""Bad-input battery, index stage: faults in the labels, the station table and the static fields
(tests/bad_inputs.py). A bad row is a counted reject with its reason; a file the reader cannot use is an
error naming the file and the row or variable.

Labels written in UTC while inputs.labels.timezone says KST cannot be told apart from KST labels by
the reader (both are plain wall-clock times); ta2d documents the key (config schema) instead of
guessing, and test_utc_labels_configured_as_kst shows what the mistake does: every row lands on the
slot 9 h earlier and the first 9 h fall outside the period.
"""

from __future__ import annotations

import re

import h5py
import numpy as np
import pandas as pd
import pytest
from bad_inputs import (
    FAULT_T,
    HOUR,
    N_ROWS,
    PERIOD,
    STN,
    assert_outcome,
    drop_station,
    edit_lines,
    move_station,
    run_library,
    set_field,
    station_line,
)

from ta2d.index.labels import LabelsError

# --- labels ----------------------------------------------------------------------------------------------

LABEL_FAULTS = [
    # (id, field, value, reason, detail)
    ("ta_minus_99", 3, "-99.0", "missing_ta", r"^TA -99 is a missing-value sentinel$"),
    ("ta_minus_999", 3, "-999", "missing_ta", r"^TA -999 is a missing-value sentinel$"),
    ("ta_empty", 3, "", "missing_ta", r"^TA is empty$"),
    ("qc_flag_9", 4, "9", "missing_ta", r"^QC flag 9 \(missing\)$"),
    ("ta_nan", 3, "NaN", "unparseable_row", r"^TA 'NaN' is not a number$"),
    ("ta_text", 3, "ERR", "unparseable_row", r"^TA 'ERR' is not a number$"),
    ("qc_flag_1", 4, "1", "qc_flag", r"^QC flag 1$"),
    ("ta_implausible", 3, "99.9", "implausible_ta", r"^TA 99.9 outside \[-50, 50\] °C$"),
    ("time_hour_25", 2, "2024-04-01 25:00", "unparseable_row", r"^time '2024-04-01 25:00' is not a valid time$"),
    ("time_text", 2, "yesterday", "unparseable_row", r"^time 'yesterday' is not a valid time$"),
    ("station_text", 0, "abc", "unparseable_row", r"^station id 'abc' is not an integer$"),
    ("extra_fields", 4, ",x,y", "unparseable_row", r"^expected 5 fields, found 7$"),
]


@pytest.mark.parametrize("field, value, reason, detail", [f[1:] for f in LABEL_FAULTS],
                         ids=[f[0] for f in LABEL_FAULTS])
def test_label_row_fault_is_a_counted_reject(base, case, field, value, reason, detail):
    (row,) = base.rows(stn=STN, time=FAULT_T)
    edit_lines(case.labels, set_field(row, field, value))
    res = run_library(case, case.dir / "out", base=base)
    assert_outcome(res, base, {row: reason}, base.keys(stn=STN, time=FAULT_T), detail)


def test_truncated_label_line_is_a_counted_reject(base, case):
    (row,) = base.rows(stn=STN, time=FAULT_T)

    def cut(lines):
        lines[row] = lines[row][:20]  # "183,산릉,2024-04-01 1": 3 fields
        return lines

    edit_lines(case.labels, cut)
    res = run_library(case, case.dir / "out", base=base)
    assert_outcome(res, base, {row: "unparseable_row"}, base.keys(stn=STN, time=FAULT_T),
                   r"^expected 5 fields, found 3$")


@pytest.mark.parametrize("same_ta", [True, False], ids=["exact_copy", "different_ta"])
def test_duplicated_row_keeps_the_first(base, case, same_ta):
    (row,) = base.rows(stn=STN, time=FAULT_T)

    def duplicate(lines):
        copy_ = lines[row] if same_ta else lines[row].replace(lines[row].split(",")[3], "30.5")
        return lines[: row + 1] + [copy_] + lines[row + 1:]

    edit_lines(case.labels, duplicate)
    res = run_library(case, case.dir / "out", base=base)
    detail = rf"^duplicate of row {row}: " + ("same TA$" if same_ta else r"TA 30\.5 differs from kept")
    # the copy is row + 1 of the file; the original stays a sample, so no sample is lost
    assert_outcome(res, base, {row + 1: "duplicate_row"}, set(), detail, n_label_rows=N_ROWS + 1)


def test_utc_labels_configured_as_kst(base, case):
    """Documented, not detected: a UTC file read as KST moves every row 9 h earlier (a different slot),
    and the first 9 hours of the period fall before its start. timezone: UTC reads the same file right."""
    def to_utc(lines):
        out = [lines[0]]
        for line in lines[1:]:
            f = line.split(",")
            f[2] = (pd.Timestamp(f[2]) - pd.Timedelta(hours=9)).strftime("%Y-%m-%d %H:%M")
            out.append(",".join(f))
        return out

    edit_lines(case.labels, to_utc)
    start = int(pd.Timestamp(PERIOD["start"], tz="UTC").timestamp())
    early = set(base.index.loc[base.index["time"] < start + 9 * HOUR, "row"])
    assert len(early) == 6 * 9
    res = run_library(case, case.dir / "wrong_tz", base=base)
    assert res.summary["invariant_holds"] and res.summary["n_label_rows"] == N_ROWS
    assert set(zip(res.rejects["row"], res.rejects["reason"], strict=True)) == {(r, "outside_period") for r in early}
    shifted = {(stn, t - 9 * HOUR) for stn, t in base.result.samples if t - 9 * HOUR >= start}
    assert res.samples == shifted  # every sample sits on the slot 9 h before its real time

    case.config["inputs"]["labels"]["timezone"] = "UTC"
    res = run_library(case, case.dir / "right_tz", base=base)
    assert_outcome(res, base, {}, set())


# --- stations and static fields ------------------------------------------------------------------------

STATION_FAULTS = [
    ("outside_domain", move_station(lat=2.0), "out_of_domain",
     r"^pixel \(\d+, \d+\) with its 9x9 patch is outside the domain$"),
    ("off_disk_lon_minus_60", move_station(lon="-60.0000"), "off_disk", r"^station is not visible from GK-2A$"),
    ("not_in_station_table", drop_station, "unknown_station", rf"^station {STN} is not in the station table$"),
]


@pytest.mark.parametrize("edit, reason, detail", [f[1:] for f in STATION_FAULTS], ids=[f[0] for f in STATION_FAULTS])
def test_station_fault_rejects_its_rows(base, case, edit, reason, detail):
    edit_lines(case.stations, edit)
    res = run_library(case, case.dir / "out", base=base)
    rows = base.rows(stn=STN)
    assert len(rows) == 48
    assert_outcome(res, base, dict.fromkeys(rows, reason), base.keys(stn=STN), detail)


def test_unparseable_station_table_names_file_and_row(base, case):
    edit_lines(case.stations, lambda lines: set_field(station_line(lines, STN), 6, "abc")(lines))
    with pytest.raises(LabelsError, match=re.escape(f"{case.stations}: data row 3: lat 'abc' is not a number")):
        run_library(case, case.dir / "out", base=base)


def test_landcover_fill_at_station_pixel(base, case):
    line, column = base.index.loc[base.index["stn"] == STN, ["line", "column"]].iloc[0]
    with h5py.File(case.static, "r+") as f:
        i = int(np.flatnonzero(f["line"][...] == line)[0])
        j = int(np.flatnonzero(f["column"][...] == column)[0])
        f["landcover"][i, j] = 255
    res = run_library(case, case.dir / "out", base=base)
    rows = base.rows(stn=STN)
    assert_outcome(res, base, dict.fromkeys(rows, "invalid_landcover"), base.keys(stn=STN),
                   r"^land cover code 255 at the station pixel \(valid: IGBP 1\.\.17\)$")


def test_static_file_without_landcover_names_file_and_variable(base, case):
    with h5py.File(case.static, "r+") as f:
        f.move("landcover", "land_cover")
    with pytest.raises(ValueError, match=re.escape(f"static file {case.static}: no variable 'landcover'")):
        run_library(case, case.dir / "out", base=base)


