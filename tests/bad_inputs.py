"""Bad-input battery (docs/faults.md): one planted fault per case, the real code path, the exact outcome.

Every case starts from the same clean tiny demo (2 days, 6 stations, no planted defects: 288 label rows,
288 samples), copies it into its own folder, plants exactly ONE fault and runs either the library
functions the rule scripts call (ta2d.ingest.archive.calibrate_period, ta2d.index.route.route_labels,
ta2d.chunks.patches.build_patch_chunk, ta2d.index.build.build_month_index, ta2d.chunks.summary.summarize,
ta2d.training.train_run) or the real Snakefile.
It then asserts either a clear error naming the file / row / config key and what is wrong, or a
counted reject with its reason, with the invariant n_label_rows == n_samples + n_rejected holding and
every other row still a sample.

This module holds what the cases share: the clean data and its run (made once per session by the
conftest.py fixtures `base`, `case` and `train_inputs`), running the library as the rules do, the
outcome check, and the helpers that plant faults. The cases, by stage: test_bad_l1b.py,
test_bad_labels.py (labels, stations, static fields), test_bad_chunks.py, test_bad_outputs.py,
test_bad_config.py and test_bad_workflow.py (the real Snakefile).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from fakes import make_tiny_demo

from ta2d.chunks.patches import build_patch_chunk
from ta2d.chunks.stats import write_stats
from ta2d.chunks.summary import summarize
from ta2d.config import validate_config
from ta2d.grid import Domain
from ta2d.index.build import build_month_index
from ta2d.index.route import route_labels
from ta2d.index.stations import read_stations
from ta2d.ingest.archive import calibrate_period, write_inventory
from ta2d.plan import Plan, chunk_name
from ta2d.static import read_static

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
# the input files of the clean data and of a case's copy, beside raw/: {config inputs key: file name}
INPUT_FILES = {"labels": "labels.csv", "stations": "stations.csv", "static": "static.nc"}


# --- shared clean data -------------------------------------------------------------------------------

@dataclass
class Result:
    summary: dict
    rejects: pd.DataFrame  # index + chunk rejects: row, stn, time, reason, detail
    samples: set  # (stn, time) of every sample in every chunk


@dataclass
class Base:
    root: Path
    data: Path  # raw/ and INPUT_FILES
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
    # the case's inputs under `data`: raw/ and INPUT_FILES
    raw: Path = field(init=False)
    labels: Path = field(init=False)
    stations: Path = field(init=False)
    static: Path = field(init=False)

    def __post_init__(self):
        self.raw = self.data / "raw"
        for key, name in INPUT_FILES.items():
            setattr(self, key, self.data / name)

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
    for name in INPUT_FILES.values():
        shutil.copy2(src / name, dest / name)
    return dest


def _config_for(data: Path, base_config: dict) -> dict:
    config = copy.deepcopy(base_config)
    config["inputs"]["l1b"]["dir"] = str(data / "raw")
    for key, name in INPUT_FILES.items():
        config["inputs"][key]["path"] = str(data / name)
    return config


def make_base(root: Path) -> Base:
    """The clean data and its clean run (conftest.py: the session fixture `base`)."""
    gen_config = make_tiny_demo(root / "gen", period=PERIOD, demo={"defects": NO_DEFECTS, "workers": 2})["config"]
    inputs = gen_config["inputs"]
    data = root / "clean"
    shutil.copytree(inputs["l1b"]["dir"], data / "raw")
    for key, name in INPUT_FILES.items():
        shutil.copy2(inputs[key]["path"], data / name)
    config = copy.deepcopy(gen_config)
    config["demo"] = {**config["demo"], "enabled": False}
    config = validate_config(_config_for(data, config))
    out = root / "clean_out"
    result = run_library(Case(root, data, config), out, recalibrate=DAYS)
    assert result.summary["n_label_rows"] == result.summary["n_samples"] == N_ROWS and result.rejects.empty
    index = pd.concat([pd.read_csv(p) for p in sorted(out.glob("index/*/index.csv"))], ignore_index=True)
    return Base(root, data, config, out, result, index)


def make_case(base: Base, folder: Path) -> Case:
    """A case's own copy of the clean data (conftest.py: the fixture `case`)."""
    data = _copy_data(base.data, folder / "data")
    return Case(folder, data, _config_for(data, base.config))


# --- running the real code -----------------------------------------------------------------------------

def one_day(key: str) -> dict:
    day = f"{key[:4]}-{key[4:6]}-{key[6:]}"
    return {"start": day, "end": day}


def run_library(case: Case, out: Path, recalibrate=(), base: Base | None = None) -> Result:
    """What the rules do, in-process: calibrate (the days in `recalibrate`; the others are the clean
    run's scenes, as Snakemake would keep them), label_parts, build_patch_chunk per planned chunk,
    build_index per month, summary."""
    cfg = case.config
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    domain = Domain.from_config(cfg["domain"])
    for key in DAYS:
        scene, status = out / f"scenes/{key}.nc", out / f"scenes/{key}.status.csv"
        if key in recalibrate:
            write_inventory(raw_inputs, key, "D", one_day(key), out / f"inventory/{key}.tsv")
            calibrate_period(raw_inputs, out / f"inventory/{key}.tsv", key, "D", one_day(key), cfg["domain"],
                             cfg["scene"], scene, status, progress=False)
        else:
            scene.parent.mkdir(parents=True, exist_ok=True)
            for path in (scene, status):
                os.link(base.out / "scenes" / path.name, path)
    plan = Plan.from_config(cfg)
    route_labels(cfg["inputs"]["labels"], plan, out / "labels", force=True)
    st = cfg["inputs"]["static"]
    static = read_static(st["path"], domain, st["dem_var"], st["land_sea_mask_var"], st["landcover_var"])
    stations = read_stations(cfg["inputs"]["stations"]["path"])
    for split, key in plan.chunks:
        chunk = out / "patch_pt" / chunk_name(split, key)
        build_patch_chunk(out / "labels" / chunk_name(split, key, ".csv"), stations, out / f"scenes/{key}.nc",
                          static, cfg["patch"]["size"], chunk, chunk.with_suffix(".rejects.csv"),
                          chunk.with_suffix(".index.csv"))
    for ikey in plan.index_keys:
        chunks = [out / "patch_pt" / chunk_name(s, k, "") for s, k in plan.chunks_of_index(ikey)]
        build_month_index([f"{c}.index.csv" for c in chunks], [f"{c}.rejects.csv" for c in chunks], cfg["split"],
                          out / "index" / ikey)
    summarize(out / "labels/summary.json", sorted(out.glob("index/*/summary.json")), out / "summary.json")
    return load_result(out)


def load_result(results: Path) -> Result:
    """summary.json, all rejects and all samples of a results folder (library run or Snakemake's results/)."""
    tables = [results / "labels/rejects.csv", *sorted(results.glob("patch_pt/*.rejects.csv"))]
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


# --- stations -------------------------------------------------------------------------------------------

STN = 183  # an ordinary station; its row at the fault hour:
FAULT_T = SLOT_T + 3 * HOUR


def station_line(lines, stn):
    return next(i for i, line in enumerate(lines) if line.split(",")[0] == str(stn))


def move_station(lat=None, lon=None):
    def edit(lines):
        i = station_line(lines, STN)
        f = lines[i].split(",")
        if lat is not None:
            f[6] = f"{float(f[6]) + lat:.4f}"
        if lon is not None:
            f[7] = lon
        lines[i] = ",".join(f)
        return lines

    return edit


def drop_station(lines):
    return [line for i, line in enumerate(lines) if i != station_line(lines, STN)]


# --- training -------------------------------------------------------------------------------------------

TRAIN_CFG = {"model": "cnn", "cnn_channels": [8, 16], "epochs": 3, "batch_size": 32, "lr": 3e-3, "seed": 3,
             "device": "cpu"}


def make_train_inputs(base: Base, folder: Path) -> tuple[Path, Path, Path]:
    """A train and a val chunk of the clean run, and the train chunk's stats (the fixture `train_inputs`)."""
    train, val = base.out / "patch_pt/train_chunk_20240401.pt", base.out / "patch_pt/val_chunk_20240402.pt"
    write_stats([train], folder / "stats.json")
    return train, val, folder / "stats.json"
