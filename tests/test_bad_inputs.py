"""Bad-input battery (issue 6, items 1-2): one planted fault per case, the real code path, the exact outcome.

Every case starts from the same clean tiny demo (2 days, 6 stations, no planted defects: 288 label rows,
288 samples), copies it into its own folder, plants exactly ONE fault and runs either the library
functions the rule scripts call (ta2d.archive.calibrate_period, ta2d.index.build_index,
ta2d.patches.build_patch_chunk, ta2d.summary.summarize, ta2d.train.train_run) or the real Snakefile.
It then asserts either a clear error naming the file / row / config key and what is wrong, or a
counted reject with its reason, with the invariant n_label_rows == n_samples + n_rejected holding and
every other row still a sample.

Labels written in UTC while inputs.labels.timezone says KST cannot be told apart from KST labels by
the reader (both are plain wall-clock times); ta2d documents the key (config schema) instead of
guessing, and test_utc_labels_configured_as_kst shows what the mistake does: every row lands on the
slot 9 h earlier and the first 9 h fall outside the period.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from conftest import REPO, make_workdir, run_snakemake, tiny_config

from ta2d.archive import calibrate_period, write_inventory
from ta2d.config import ConfigError, validate_config
from ta2d.data import ChunkError, open_chunk
from ta2d.grid import Domain
from ta2d.index import build_index
from ta2d.labels import LabelsError
from ta2d.patches import build_patch_chunk
from ta2d.static import read_static
from ta2d.stats import write_stats
from ta2d.summary import summarize
from ta2d.training import train_run

PERIOD = {"start": "2024-04-01", "end": "2024-04-02"}
DAYS = ("20240401", "20240402")
NO_DEFECTS = {k: 0 for k in ("missing_files", "corrupt_files", "out_of_domain_stations", "relocated_stations",
                             "invalid_landcover_stations", "missing_ta", "duplicate_rows", "unparseable_rows",
                             "error_pixels_in_patch", "off_disk_pixels_in_patch")}
SLOT = pd.Timestamp("2024-04-01 05:00", tz="UTC")  # the slot the scene faults hit
SLOT_T = int(SLOT.timestamp())
SLOT_DIR = "202404/01/05"
HOUR = 3600
N_ROWS = 288  # 6 stations x 48 UTC hours


# --- shared clean data -------------------------------------------------------------------------------

@dataclass
class Result:
    summary: dict
    rejects: pd.DataFrame  # index + chunk rejects: row, stn, time, reason, detail
    samples: set  # (stn, time) of every sample in every chunk


@dataclass
class Base:
    root: Path
    data: Path  # raw/, labels.csv, stations.csv, static.nc
    config: dict  # validated, demo disabled, inputs under `data`
    out: Path  # the clean run: scenes/, index/, patch_pt/, summary.json
    result: Result
    index: pd.DataFrame  # row, stn, time, line, column of the clean run

    def rows(self, **where) -> set[int]:
        sel = np.ones(len(self.index), bool)
        for col, value in where.items():
            sel &= (self.index[col] == value).to_numpy()
        return set(self.index.loc[sel, "row"])

    def keys(self, **where) -> set[tuple[int, int]]:
        sel = self.index[self.index["row"].isin(self.rows(**where))]
        return set(zip(sel["stn"], sel["time"], strict=True))


@dataclass
class Case:
    dir: Path
    data: Path
    config: dict

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def labels(self) -> Path:
        return self.data / "labels.csv"

    @property
    def stations(self) -> Path:
        return self.data / "stations.csv"

    @property
    def static(self) -> Path:
        return self.data / "static.nc"

    def l1b(self, channel: str) -> Path:
        """A raw file of the fault slot, in a private copy of the slot's folder (the others are links)."""
        folder = self.raw / SLOT_DIR
        if folder.is_symlink():
            shared = folder.resolve()
            folder.unlink()
            shutil.copytree(shared, folder)
        return folder / f"gk2a_ami_le1b_{channel}_fd{_res(channel)}ge_{SLOT.strftime('%Y%m%d%H%M')}.nc"


def _res(channel: str) -> str:
    return {"vi006": "005", "vi004": "010", "vi005": "010", "vi008": "010"}.get(channel, "020")


def _copy_data(src: Path, dest: Path) -> Path:
    """Labels, stations, static copied; the raw archive as symbolic links to the shared one's folders
    (a real folder for the fault day, with one link per slot folder), so a case costs a few files."""
    fault_day = Path(SLOT_DIR).parent
    for day in sorted((src / "raw").glob("*/*")):
        rel = day.relative_to(src / "raw")
        (dest / "raw" / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel == fault_day:
            (dest / "raw" / rel).mkdir()
            for slot in sorted(day.iterdir()):
                (dest / "raw" / rel / slot.name).symlink_to(slot)
        else:
            (dest / "raw" / rel).symlink_to(day)
    for name in ("labels.csv", "stations.csv", "static.nc"):
        shutil.copy2(src / name, dest / name)
    return dest


def _config_for(data: Path, base_config: dict) -> dict:
    config = copy.deepcopy(base_config)
    config["inputs"]["l1b"]["dir"] = str(data / "raw")
    for key, name in (("labels", "labels.csv"), ("stations", "stations.csv"), ("static", "static.nc")):
        config["inputs"][key]["path"] = str(data / name)
    return config


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    from ta2d.demo import generate_demo

    root = tmp_path_factory.mktemp("bad_inputs")
    gen_config = tiny_config(root / "gen", period=PERIOD, demo={"defects": NO_DEFECTS, "workers": 2})
    generate_demo(gen_config, progress=False)
    inputs = gen_config["inputs"]
    data = root / "clean"
    shutil.copytree(inputs["l1b"]["dir"], data / "raw")
    shutil.copy2(inputs["labels"]["path"], data / "labels.csv")
    shutil.copy2(inputs["stations"]["path"], data / "stations.csv")
    shutil.copy2(inputs["static"]["path"], data / "static.nc")
    config = copy.deepcopy(gen_config)
    config["demo"] = {**config["demo"], "enabled": False}
    config = validate_config(_config_for(data, config))
    out = root / "clean_out"
    result = run_library(Case(root, data, config), out, recalibrate=DAYS)
    assert result.summary["n_label_rows"] == result.summary["n_samples"] == N_ROWS and result.rejects.empty
    index = pd.read_csv(out / "index/index.csv")
    return Base(root, data, config, out, result, index)


@pytest.fixture
def case(base, tmp_path) -> Case:
    data = _copy_data(base.data, tmp_path / "data")
    return Case(tmp_path, data, _config_for(data, base.config))


# --- running the real code -----------------------------------------------------------------------------

def _day(key: str) -> dict:
    day = f"{key[:4]}-{key[4:6]}-{key[6:]}"
    return {"start": day, "end": day}


def run_library(case: Case, out: Path, recalibrate=(), base: Base | None = None) -> Result:
    """What the rules do, in-process: calibrate (the days in `recalibrate`; the others are the clean
    run's scenes, as Snakemake would keep them), build_index, build_patch_chunk per manifest, summary."""
    cfg = case.config
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    domain = Domain.from_config(cfg["domain"])
    for key in DAYS:
        scene, status = out / f"scenes/{key}.nc", out / f"scenes/{key}.status.csv"
        if key in recalibrate:
            write_inventory(raw_inputs, key, "D", _day(key), out / f"inventory/{key}.tsv")
            calibrate_period(raw_inputs, out / f"inventory/{key}.tsv", key, "D", _day(key), cfg["domain"],
                             cfg["scene"], scene, status, progress=False)
        else:
            scene.parent.mkdir(parents=True, exist_ok=True)
            for path in (scene, status):
                os.link(base.out / "scenes" / path.name, path)
    build_index(labels_cfg=cfg["inputs"]["labels"], stations_path=cfg["inputs"]["stations"]["path"],
                static_cfg=cfg["inputs"]["static"],
                scene_status_paths=[out / f"scenes/{key}.status.csv" for key in DAYS], domain=domain,
                period=cfg["period"], freq="D", split_cfg=cfg["split"], patch_size=cfg["patch"]["size"],
                out_dir=out / "index")
    st = cfg["inputs"]["static"]
    static = read_static(st["path"], domain, st["dem_var"], st["land_sea_mask_var"], st["landcover_var"])
    chunks = []
    for manifest in sorted((out / "index/chunks").glob("*_chunk_*.csv")):
        chunk = out / "patch_pt" / f"{manifest.stem}.pt"
        key = manifest.stem.rsplit("_", 1)[1]
        build_patch_chunk(manifest, out / f"scenes/{key}.nc", static, cfg["patch"]["size"], chunk,
                          chunk.with_suffix(".rejects.csv"))
        chunks.append(chunk)
    summarize(out / "index/summary.json", chunks, out / "summary.json")
    return load_result(out)


def load_result(results: Path) -> Result:
    """summary.json, all rejects and all samples of a results folder (library run or Snakemake's results/)."""
    tables = [results / "index/rejects.csv", *sorted(results.glob("patch_pt/*.rejects.csv"))]
    rejects = pd.concat([pd.read_csv(p, dtype={"detail": str}) for p in tables], ignore_index=True)
    samples = set()
    for chunk in results.glob("patch_pt/*.pt"):
        d = torch.load(chunk, weights_only=True)
        samples |= set(zip(d["stn"].tolist(), d["time"].tolist(), strict=True))
    return Result(json.loads((results / "summary.json").read_text()), rejects.fillna({"detail": ""}), samples)


def assert_outcome(res: Result, base: Base, rejected: dict[int, str], lost: set, detail: str | None = None,
                   n_label_rows: int = N_ROWS) -> None:
    """Exactly the rows `rejected` ({row: reason}) are rejects, exactly the samples `lost` are missing,
    every detail matches `detail` (regex), and the run's invariant holds."""
    s = res.summary
    assert s["invariant_holds"], s
    assert s["n_label_rows"] == n_label_rows == s["n_samples"] + s["n_rejected"], s
    assert sorted(zip(res.rejects["row"], res.rejects["reason"], strict=True)) == sorted(rejected.items())
    if detail is not None:
        for d in res.rejects["detail"]:
            assert re.search(detail, d), (detail, d)
    assert res.samples == base.result.samples - lost


# --- file editing helpers ------------------------------------------------------------------------------

def edit_lines(path: Path, edit) -> None:
    """Rewrite a CP949 KMA CSV line by line (line endings kept); edit(lines) gets [header, row 1, ...]."""
    text = path.read_bytes().decode("cp949")
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = text.rstrip(nl).split(nl)
    path.write_bytes((nl.join(edit(lines)) + nl).encode("cp949"))


def set_field(row: int, field: int, value: str):
    def edit(lines):
        fields = lines[row].split(",")
        fields[field] = value
        lines[row] = ",".join(fields)
        return lines

    return edit


def set_attr(channel: str, key: str, value, on_variable: bool = False):
    def plant(case: Case):
        with h5py.File(case.l1b(channel), "r+") as f:
            (f["image_pixel_values"] if on_variable else f).attrs[key] = value

    return plant


def del_attr(channel: str, key: str):
    def plant(case: Case):
        with h5py.File(case.l1b(channel), "r+") as f:
            del f.attrs[key]

    return plant


def as_text(channel: str, key: str, kind=np.bytes_):
    """The attribute's own value, stored as a string (NC_CHAR bytes or a variable-length str)."""
    def plant(case: Case):
        with h5py.File(case.l1b(channel), "r+") as f:
            value = repr(float(np.asarray(f.attrs[key]).ravel()[0]))
            f.attrs[key] = kind(value.encode()) if kind is np.bytes_ else value

    return plant


def as_array(channel: str, key: str):
    def plant(case: Case):
        with h5py.File(case.l1b(channel), "r+") as f:
            f.attrs[key] = np.atleast_1d(np.asarray(f.attrs[key]).ravel()[0])

    return plant


def truncate(channel: str, fraction: float):
    def plant(case: Case):
        path = case.l1b(channel)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return plant


def replace_pixels(channel: str, make):
    def plant(case: Case):
        with h5py.File(case.l1b(channel), "r+") as f:
            values = f["image_pixel_values"][...]
            del f["image_pixel_values"]
            f["image_pixel_values"] = make(values)

    return plant


def rename_pixels(case: Case):
    with h5py.File(case.l1b("ir105"), "r+") as f:
        f.move("image_pixel_values", "image_pixel_value")


def delete_file(case: Case):
    case.l1b("ir105").unlink()


def whole_slot(word):
    """Every pixel of every channel file of the slot replaced: the slot has no data at all."""
    def plant(case: Case):
        for path in sorted((case.raw / SLOT_DIR).glob("*.nc")):
            channel = path.name.split("_")[3]
            with h5py.File(case.l1b(channel), "r+") as f:
                v = f["image_pixel_values"]
                v[...] = word(v[...])

    return plant


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
    with caplog.at_level(logging.WARNING, logger="ta2d.scene"):
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
    write_inventory(raw, "20240401", "D", _day("20240401"), out / "20240401.tsv")
    summary = calibrate_period(raw, out / "20240401.tsv", "20240401", "D", _day("20240401"), cfg["domain"],
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


# --- labels ----------------------------------------------------------------------------------------------

STN = 183  # an ordinary station; its row at the fault hour:
FAULT_T = SLOT_T + 3 * HOUR

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

def _station_line(lines, stn):
    return next(i for i, line in enumerate(lines) if line.split(",")[0] == str(stn))


def move_station(lat=None, lon=None):
    def edit(lines):
        i = _station_line(lines, STN)
        f = lines[i].split(",")
        if lat is not None:
            f[6] = f"{float(f[6]) + lat:.4f}"
        if lon is not None:
            f[7] = lon
        lines[i] = ",".join(f)
        return lines

    return edit


def drop_station(lines):
    return [line for i, line in enumerate(lines) if i != _station_line(lines, STN)]


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
    edit_lines(case.stations, lambda lines: set_field(_station_line(lines, STN), 6, "abc")(lines))
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


# --- chunks given to training ---------------------------------------------------------------------------

TRAIN_CFG = {"model": "cnn", "cnn_channels": [8, 16], "epochs": 3, "batch_size": 32, "lr": 3e-3, "seed": 3,
             "device": "cpu"}


@pytest.fixture(scope="module")
def chunks(base, tmp_path_factory):
    d = tmp_path_factory.mktemp("train_inputs")
    train, val = base.out / "patch_pt/train_chunk_20240401.pt", base.out / "patch_pt/val_chunk_20240402.pt"
    write_stats([train], d / "stats.json")
    return train, val, d / "stats.json"


def _save(obj):
    return lambda path, good: torch.save(obj(torch.load(good, weights_only=True)), path)


CHUNK_FAULTS = [
    ("truncated", lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("last_bytes_missing", lambda p, good: p.write_bytes(good.read_bytes()[:-100]),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("not_a_torch_file", lambda p, good: p.write_bytes(b"<html>404</html>"),
     ChunkError, "not a readable chunk file (truncated or corrupt? rebuild it)"),
    ("empty_file", lambda p, good: p.write_bytes(b""), ChunkError, "not a readable chunk file"),
    ("not_a_dict", _save(lambda d: d["x"]), ChunkError, "holds a Tensor, not a dict of tensors"),
    ("field_missing", _save(lambda d: {k: v for k, v in d.items() if k != "x"}), KeyError, "missing fields ['x']"),
    ("fields_disagree", _save(lambda d: {**d, "y": d["y"][:10]}), ChunkError,
     "fields disagree on the number of samples"),
]


@pytest.mark.parametrize("plant, error, message", [f[1:] for f in CHUNK_FAULTS], ids=[f[0] for f in CHUNK_FAULTS])
def test_bad_chunk_given_to_training_names_the_file(chunks, tmp_path, plant, error, message):
    train, val, stats = chunks
    bad = tmp_path / "patch_pt" / train.name
    bad.parent.mkdir()
    plant(bad, train)
    with pytest.raises(error) as info:
        train_run({**TRAIN_CFG, "epochs": 1}, [bad], [val], stats, tmp_path / "run", progress=False,
                  log=lambda s: None)
    assert str(bad) in str(info.value) and message in str(info.value)


# --- kill -9 ---------------------------------------------------------------------------------------------

def _child(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"child exited ({proc.returncode}) before {path.name}:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.05)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


CHUNK_CHILD = """
    import io, json, sys, time
    from pathlib import Path
    import torch
    manifest, scene, static_path, domain, out, marker = sys.argv[1:]
    real_save = torch.save

    def save_half_then_hang(obj, f, *args, **kwargs):  # the kill lands in the middle of the write
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        with open(f, "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            Path(marker).write_text(str(f))
            time.sleep(300)
            fh.write(data[len(data) // 2:])

    torch.save = save_half_then_hang
    from ta2d.grid import Domain
    from ta2d.patches import build_patch_chunk
    from ta2d.static import read_static
    static = read_static(static_path, Domain.from_config(json.loads(domain)))
    build_patch_chunk(manifest, scene, static, 9, out, out.replace(".pt", ".rejects.csv"))
"""


def test_kill_during_chunk_build_leaves_no_complete_looking_chunk(base, tmp_path):
    name = "train_chunk_20240401"
    out = tmp_path / "patch_pt" / f"{name}.pt"
    marker = tmp_path / "writing"
    manifest, scene = base.out / f"index/chunks/{name}.csv", base.out / "scenes/20240401.nc"
    static_path, domain = base.config["inputs"]["static"]["path"], json.dumps(base.config["domain"])
    proc = _child(CHUNK_CHILD, str(manifest), str(scene), static_path, domain, str(out), str(marker))
    _wait_for(marker, proc)
    _kill9(proc)
    part = Path(marker.read_text())
    assert not out.exists() and not out.with_suffix(".rejects.csv").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == [part.name]  # only the hidden temp file
    assert part.name.startswith(f".{name}.pt.") and part.name.endswith(".part") and part.stat().st_size > 0
    with pytest.raises(ChunkError, match="not a readable chunk file"):
        open_chunk(part)
    # the rerun (Snakemake: rerun-incomplete) rebuilds it, identical to an undisturbed build
    st = base.config["inputs"]["static"]
    static = read_static(st["path"], Domain.from_config(base.config["domain"]))
    build_patch_chunk(manifest, scene, static, 9, out, out.with_suffix(".rejects.csv"))
    got, want = torch.load(out, weights_only=True), torch.load(base.out / f"patch_pt/{name}.pt", weights_only=True)
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


TRAIN_CHILD = """
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from ta2d.training import train_run
    cfg, train, val, stats, out, kill_after, marker = sys.argv[1:]

    def hang(epoch, row):  # stands for "still training epoch 3" when the kill comes
        if epoch == int(kill_after):
            Path(marker).write_text(str(epoch))
            time.sleep(300)

    res = train_run(json.loads(cfg), [train], [val], stats, out, progress=False, log=print, on_epoch_end=hang)
    print("RESULT", json.dumps(res))
"""


def _metrics(path: Path) -> list[dict]:
    return pd.read_csv(path).drop(columns="seconds").to_dict("records")


def test_kill_during_training_resumes_to_the_same_metrics(chunks, tmp_path):
    train, val, stats = chunks
    args = [json.dumps(TRAIN_CFG), str(train), str(val), str(stats)]
    marker = tmp_path / "epoch_done"
    whole = _child(TRAIN_CHILD, *args, str(tmp_path / "whole"), "0", str(tmp_path / "unused"))
    killed = _child(TRAIN_CHILD, *args, str(tmp_path / "killed"), "2", str(marker))
    _wait_for(marker, killed)
    _kill9(killed)
    run = tmp_path / "killed"
    assert torch.load(run / "current.pt", weights_only=True)["epoch"] == 2
    assert len(_metrics(run / "metrics.csv")) == 2
    # Snakemake deletes the declared outputs of an incomplete job before rerunning it
    (run / "best.pt").unlink()
    (run / "metrics.csv").unlink()
    resumed = _child(TRAIN_CHILD, *args, str(run), "0", str(tmp_path / "unused"))
    outputs = [proc.communicate(timeout=300)[0] for proc in (whole, resumed)]
    assert whole.returncode == 0 and resumed.returncode == 0, outputs
    assert '"resumed_from": 2' in outputs[1] and "resuming" in outputs[1] and "at epoch 3" in outputs[1]
    assert _metrics(run / "metrics.csv") == _metrics(tmp_path / "whole/metrics.csv")
    assert len(_metrics(run / "metrics.csv")) == 3
    for name in ("best.pt", "current.pt"):
        a = torch.load(tmp_path / "whole" / name, weights_only=True)["model"]
        b = torch.load(run / name, weights_only=True)["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)


# --- unwritable results folder ---------------------------------------------------------------------------

def _write_index(base, out):
    cfg = base.config
    build_index(cfg["inputs"]["labels"], cfg["inputs"]["stations"]["path"], cfg["inputs"]["static"],
                [base.out / f"scenes/{k}.status.csv" for k in DAYS], Domain.from_config(cfg["domain"]),
                cfg["period"], "D", cfg["split"], 9, out / "index")


def _write_scene(base, out):
    cfg = base.config
    raw = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    calibrate_period(raw, base.out / "inventory/20240401.tsv", "20240401", "D", _day("20240401"),
                     cfg["domain"], cfg["scene"], out / "scenes/20240401.nc", out / "scenes/20240401.status.csv",
                     progress=False)


def _write_chunk(base, out):
    st = base.config["inputs"]["static"]
    static = read_static(st["path"], Domain.from_config(base.config["domain"]))
    build_patch_chunk(base.out / "index/chunks/train_chunk_20240401.csv", base.out / "scenes/20240401.nc", static,
                      9, out / "patch_pt/x.pt", out / "patch_pt/x.rejects.csv")


def _write_run(base, out):
    chunk = base.out / "patch_pt/train_chunk_20240401.pt"
    write_stats([chunk], base.root / "stats_for_unwritable.json")
    train_run({**TRAIN_CFG, "epochs": 1}, [chunk], [], base.root / "stats_for_unwritable.json", out / "runs/cnn",
              progress=False, log=lambda s: None)


WRITERS = {"calibrate": (_write_scene, "scenes"), "build_index": (_write_index, "index"),
           "build_patch_chunk": (_write_chunk, "patch_pt"), "train": (_write_run, "runs")}


@pytest.mark.parametrize("stage", list(WRITERS))
def test_results_path_under_a_file_is_a_clear_error(base, tmp_path, stage):
    write, folder = WRITERS[stage]
    results = tmp_path / "results"
    results.write_text("a file where the results folder should be")
    with pytest.raises(OSError) as info:
        write(base, results)
    msg = str(info.value)
    assert "cannot create the output folder" in msg and f"{results} is a file, not a folder" in msg, msg
    assert f"{results}/{folder}" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the ENOTDIR case covers it")
def test_read_only_results_folder_is_a_clear_error(base, tmp_path):
    results = tmp_path / "results"
    (results / "patch_pt").mkdir(parents=True)
    (results / "patch_pt").chmod(0o555)
    try:
        message = f"cannot write {results}/patch_pt/x.pt: Permission denied"
        with pytest.raises(PermissionError, match=re.escape(message)):
            _write_chunk(base, results)
    finally:
        (results / "patch_pt").chmod(0o755)


# --- config ----------------------------------------------------------------------------------------------

CONFIG_FAULTS = [
    ("typo_top_level", lambda c: c.__setitem__("pach", {"size": 9}), "unknown key pach (allowed here:"),
    ("typo_nested", lambda c: c["inputs"]["labels"].__setitem__("timezon", "UTC"),
     "unknown key inputs.labels.timezon (allowed here: encoding, format, path, timezone)"),
    ("typo_train_run", lambda c: c["train"]["runs"]["cnn"].__setitem__("epoch", 3), "unknown key train.runs.cnn.epoch"),
    ("wrong_type", lambda c: c["patch"].__setitem__("size", "9"), "key patch.size: '9' is not of type 'integer'"),
    ("wrong_type_list", lambda c: c["inputs"]["l1b"].__setitem__("slot_minutes", 0),
     "key inputs.l1b.slot_minutes: 0 is not of type 'array'"),
    ("wrong_enum", lambda c: c["inputs"]["labels"].__setitem__("timezone", "JST"),
     "key inputs.labels.timezone: 'JST' is not one of ['KST', 'UTC']"),
    ("missing_labels_file", lambda c: c["inputs"]["labels"].__setitem__("path", "/nonexistent/labels.csv"),
     "key inputs.labels.path: file /nonexistent/labels.csv does not exist"),
    ("static_path_is_a_folder", lambda c: c["inputs"]["static"].__setitem__("path", "/tmp"),
     "key inputs.static.path: file /tmp is a folder, not a file"),
    ("missing_raw_folder", lambda c: c["inputs"]["l1b"].__setitem__("dir", "/nonexistent/raw"),
     "key inputs.l1b.dir: folder /nonexistent/raw does not exist"),
    ("impossible_date", lambda c: c["period"].__setitem__("end", "2024-02-30"), "key period: not a date"),
]


@pytest.mark.parametrize("fault, message", [f[1:] for f in CONFIG_FAULTS], ids=[f[0] for f in CONFIG_FAULTS])
def test_config_fault_names_the_key(base, fault, message):
    config = copy.deepcopy(base.config)
    fault(config)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(config)


# --- torch.load -------------------------------------------------------------------------------------------

def test_every_torch_load_is_weights_only():
    """Chunks and checkpoints are data: no torch.load in src/ may unpickle arbitrary objects."""
    offenders, n = [], 0
    for path in sorted((REPO / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            is_load = isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) \
                and f.value.id == "torch"
            if not is_load:
                continue
            n += 1
            ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                     for k in node.keywords)
            if not ok:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert n >= 5 and not offenders, offenders
    text = "\n".join(p.read_text() for p in (REPO / "src").rglob("*.py"))
    assert not re.search(r"from torch import[^\n]*\bload\b", text)


# --- through the real Snakefile ----------------------------------------------------------------------------

def _workflow(base: Base, case: Case, tmp_path: Path, **changes) -> Path:
    """A scratch workflow whose config points at the case's data (demo disabled, no map times)."""
    work = make_workdir(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    config["period"] = dict(PERIOD)
    config["demo"] = {"enabled": False}
    config["maps"] = {"times": []}
    default_l1b = yaml.safe_load((REPO / "config/config.yaml").read_text())["inputs"]["l1b"]
    config["inputs"] = {
        "l1b": {**default_l1b, "dir": str(case.raw)},
        "labels": {"path": str(case.labels)},
        "stations": {"path": str(case.stations)},
        "static": {"path": str(case.static)},
    }
    for fault in changes.values():
        fault(config)
    (work / "config/test/tiny.yaml").write_text(yaml.safe_dump(config))
    return work


def _snakemake_summary(work: Path):
    # a flag between --configfile (which takes several values) and the target
    return run_snakemake(work, "--printshellcmds", "results/summary.json")


@pytest.mark.slow
def test_snakemake_truncated_l1b_file(base, case, tmp_path):
    truncate("ir105", 0.4)(case)
    work = _workflow(base, case, tmp_path)
    _snakemake_summary(work)
    res = load_result(work / "results")
    rows = base.rows(time=SLOT_T)
    assert_outcome(res, base, dict.fromkeys(rows, "bad_scene"), base.keys(time=SLOT_T),
                   r"^unreadable:ir105:not a readable NetCDF4/HDF5 file")
    log = (work / "logs/calibrate/20240401.log").read_text()
    assert f"unreadable L1B file {case.raw / SLOT_DIR / 'gk2a_ami_le1b_ir105_fd020ge_202404010500.nc'}: " \
           "not a readable NetCDF4/HDF5 file" in log


@pytest.mark.slow
def test_snakemake_empty_day(base, case, tmp_path):
    (case.raw / "202404/02").unlink()
    work = _workflow(base, case, tmp_path)
    _snakemake_summary(work)
    res = load_result(work / "results")
    day2_start = int(pd.Timestamp("2024-04-02", tz="UTC").timestamp())
    day2 = set(base.index.loc[base.index["time"] >= day2_start, "row"])
    lost = {k for k in base.result.samples if k[1] >= day2_start}
    assert_outcome(res, base, dict.fromkeys(day2, "no_scene"), lost, r"^no satellite files for 2024-04-02 ")
    assert sorted(p.name for p in (work / "results/patch_pt").glob("*.pt")) == ["train_chunk_20240401.pt"]


@pytest.mark.slow
def test_snakemake_off_disk_station(base, case, tmp_path):
    edit_lines(case.stations, move_station(lon="-60.0000"))
    work = _workflow(base, case, tmp_path)
    _snakemake_summary(work)
    res = load_result(work / "results")
    assert_outcome(res, base, dict.fromkeys(base.rows(stn=STN), "off_disk"), base.keys(stn=STN),
                   r"^station is not visible from GK-2A$")


SNAKEMAKE_CONFIG_FAULTS = [
    ("typo_key", lambda c: c["split"].__setitem__("sed", 3), "unknown key split.sed (allowed here:"),
    ("wrong_type", lambda c: c["domain"].__setitem__("first_line", "880"),
     "key domain.first_line: '880' is not of type 'integer'"),
    ("missing_file", lambda c: c["inputs"]["stations"].__setitem__("path", "/nonexistent/stations.csv"),
     "key inputs.stations.path: file /nonexistent/stations.csv does not exist"),
]


@pytest.mark.slow
@pytest.mark.parametrize("fault, message", [f[1:] for f in SNAKEMAKE_CONFIG_FAULTS],
                         ids=[f[0] for f in SNAKEMAKE_CONFIG_FAULTS])
def test_snakemake_config_fault_fails_before_any_job(base, case, tmp_path, fault, message):
    work = _workflow(base, case, tmp_path, fault=fault)
    proc = run_snakemake(work, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "ConfigError" in proc.stderr + proc.stdout
    assert not (work / "results").exists() and not (work / "logs").exists()  # no job ran
