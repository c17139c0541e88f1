"""Serving a trained model with the real Snakefile: model files, a day mapped after the training period, a
mapping-only config (no training-side job), a model file in a fresh process, and near-real-time slots (maps.unit
slot: one new slot reruns exactly its own jobs; an incomplete slot is missing with its reason until its files are
complete), under the faults of operating it (docs/faults.md): slots out of order, a slot delivered twice, a file
still being written, a channel hours late, two invocations at once."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from conftest import REPO, SNAKEMAKE, dry_run, run_snakemake

from ta2d.demo.synthetic import make_workdir

pytestmark = pytest.mark.slow
TRAINING_RULES = {"build_index", "build_patch_chunk", "stats", "summary", "embed_chunk", "train",
                  "evaluate", "export_model", "select_best_model", "build_unlabeled_chunk", "pretrain"}


def mtimes(paths) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in paths}


def test_model_files_and_a_day_after_the_training_period(demo_run):
    """Every run has a model file, best.pt is the best run's; the unlabelled day after the period (demo
    unlabelled_days, maps.period) is mapped by it, uncorrected, and says so."""
    work = demo_run
    runs = sorted(yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())["train"]["runs"])
    metrics = pd.read_csv(work / "results/eval/metrics.csv")
    for run in runs:
        info = torch.load(work / f"results/models/{run}.pt", weights_only=True)
        assert info["run"] == run and info["training"]["period"] == {"start": "2024-04-01", "end": "2024-04-03"}
        want = metrics[(metrics["run"] == run) & (metrics["scheme"] == "held_out_days")]["rmse"].item()
        assert info["scores"]["held_out_days"]["rmse"] == pytest.approx(want)
    best = torch.load(work / "results/models/best.pt", weights_only=True)
    # among the trained runs: the background baseline has no model file
    days = metrics[(metrics["scheme"] == "held_out_days") & metrics["run"].isin(runs)].sort_values("rmse")
    assert best["run"] == days["run"].iloc[0] and "held_out_days" in best["selected"]
    with xr.open_dataset(work / "results/maps/best/20240404.nc", engine="h5netcdf") as ds:
        assert ds.attrs["run"] == best["run"] and ds.attrs["model_trained_on"] == "2024-04-01..2024-04-03"
        assert ds.attrs["station_correction"].startswith("none: no station observations")
        assert np.isfinite(ds["TA"].values).sum() > 1000
        np.testing.assert_array_equal(ds["TA_corrected"].values, ds["TA"].values)
    assert (work / "results/scenes/20240404.nc").is_file()  # the day's own scene: chunking D, outside the period
    out = subprocess.run([sys.executable, "-m", "ta2d.cli", "model-info", str(work / "results/models/best.pt")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "held_out_days" in out.stdout and f"run {best['run']}" in out.stdout


def test_model_file_maps_in_a_fresh_process_from_nothing_else(demo_run, tmp_path):
    """The model file, the scene and the static file copied elsewhere: `ta2d map-day` in a new process gives the
    in-run map of the day."""
    for name, src in (("best.pt", "results/models/best.pt"), ("scene.nc", "results/scenes/20240404.nc"),
                      ("static.nc", "resources/demo/static/static_2km.nc"),
                      ("t2m.nc", "resources/demo/background/era5land_t2m_202404.nc"),
                      ("orography.nc", "resources/demo/background/era5land_geopotential.nc")):
        shutil.copy2(demo_run / src, tmp_path / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "ta2d.cli", "map-day", "--model", "best.pt", "--scene", "scene.nc",
                          "--static", "static.nc", "--day", "2024-04-04", "--out", "day.nc", "--device", "cpu",
                          "--background-t2m", "t2m.nc", "--orography", "orography.nc"],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    with xr.open_dataset(tmp_path / "day.nc", engine="h5netcdf") as got, \
            xr.open_dataset(demo_run / "results/maps/best/20240404.nc", engine="h5netcdf") as want:
        np.testing.assert_array_equal(got["TA"].values, want["TA"].values)
        np.testing.assert_array_equal(got["mask"].values, want["mask"].values)


def _map_only_workdir(tmp_path: Path, four_days: Path, model: Path, maps: dict, raw: Path | None = None) -> Path:
    """A fresh workflow whose config maps with a model file only: no training period, the demo off, the four
    days' archive (or `raw`), labels and stations for the correction."""
    work = make_workdir(tmp_path / "wf")
    (work / "models").mkdir()
    shutil.copy2(model, work / "models/demo.pt")
    src = four_days / "resources/demo"
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())["inputs"]
    config.update(period=None, demo={"enabled": False}, maps={"model": "models/demo.pt", "days": [], **maps})
    config["inputs"] = {
        "l1b": {**base["l1b"], "dir": str(raw or src / "raw")},
        "labels": {"path": str(next((src / "labels").glob("OBS_*.csv")))},
        "stations": {"path": str(next((src / "labels").glob("META_*.csv")))},
        "static": {"path": str(src / "static/static_2km.nc")},
        # the four days' reanalysis, not config/config.yaml's demo files (the demo is off): the demo's model files
        # were trained with it, and map with it
        "background": {"t2m": str(src / "background/era5land_t2m_*.nc"),
                       "orography": str(src / "background/era5land_geopotential.nc")},
    }
    (work / "config/test/tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def test_mapping_only_config_runs_no_training_job(demo_run, four_days, tmp_path):
    """period null and a model file: inventory -> calibrate -> maps, nothing else; a day with observations is
    corrected, the day without is not (and says so); the labelled day equals the training workflow's map."""
    work = _map_only_workdir(tmp_path, four_days, demo_run / "results/models/best.pt",
                             {"period": {"start": "2024-04-03", "end": "2024-04-05"}})
    jobs, _ = dry_run(work)
    assert not TRAINING_RULES & set(jobs), jobs
    assert jobs == {"label_parts": 1, "inventory": 3, "calibrate": 3, "map_day": 3, "map_plots": 3, "all": 1}, jobs
    run_snakemake(work)
    with xr.open_dataset(work / "results/maps/demo/20240403.nc", engine="h5netcdf") as ds:
        assert ds.attrs["station_correction"].startswith("applied at")
        assert not np.allclose(np.nan_to_num(ds["TA_corrected"].values), np.nan_to_num(ds["TA"].values))
    with xr.open_dataset(work / "results/maps/demo/20240405.nc", engine="h5netcdf") as ds:
        assert ds.attrs["station_correction"].startswith("none: no station observations")
    assert not (work / "results/patch_pt").exists() and not (work / "results/runs").exists()
    assert dry_run(work)[0] == {}
    # without observations at all (inputs.labels null): inventory -> calibrate -> maps, not even the routing
    bare = _map_only_workdir(tmp_path / "bare", four_days, demo_run / "results/models/best.pt",
                             {"period": {"start": "2024-04-05", "end": "2024-04-05"}})
    config = yaml.safe_load((bare / "config/test/tiny.yaml").read_text())
    config["inputs"].update(labels=None, stations=None)
    (bare / "config/test/tiny.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs, _ = dry_run(bare)
    assert jobs == {"inventory": 1, "calibrate": 1, "map_day": 1, "map_plots": 1, "all": 1}, jobs


def outputs(work: Path) -> dict[str, tuple[bytes, int]]:
    """(bytes, mtime) of every file under results/ but the inventories' folder-mtime sidecars (bookkeeping of the
    parse, not outputs)."""
    return {str(p.relative_to(work)): (p.read_bytes(), p.stat().st_mtime_ns) for p in (work / "results").rglob("*")
            if p.is_file() and p.suffix not in (".dirs", ".hashes")}


def _copy_slot(src_raw: Path, dst_raw: Path, hour: int, day: str = "2024/04/03", skip=()) -> list[Path]:
    """The L1B files of one slot of the four days' archive into dst_raw (by rename, as archives deliver)."""
    ymd = day.replace("/", "")
    folder = Path(ymd[:6]) / ymd[6:] / f"{hour:02d}"
    (dst_raw / folder).mkdir(parents=True, exist_ok=True)
    out = []
    for f in sorted((src_raw / folder).glob("*.nc")):
        if any(f"_{ch}_" in f.name for ch in skip):
            continue
        tmp = dst_raw / folder / (f.name + ".part")
        shutil.copy2(f, tmp)
        os.replace(tmp, dst_raw / folder / f.name)
        out.append(dst_raw / folder / f.name)
    return out


def slot_lands_alone(work: Path, src_raw: Path, raw: Path, hour: int) -> None:
    """Slot `hour` of 2024-04-03 lands: the next invocation runs its inventory, calibration and map, nothing else,
    and every earlier output keeps its bytes and mtime."""
    before = outputs(work)
    _copy_slot(src_raw, raw, hour)
    jobs, out = dry_run(work, "maps")
    assert jobs == {"inventory": 1, "calibrate": 1, "map_slot": 1, "maps": 1}, jobs
    assert re.findall(r"at slot (\d{8}T\d{4})", out) == [f"20240403T{hour:02d}00"], out[-3000:]
    run_snakemake(work, "maps")
    assert {k: v for k, v in outputs(work).items() if k in before} == before


def test_near_real_time_slots_rerun_only_their_own_jobs(demo_run, four_days, tmp_path):
    """maps.unit slot: slots land one by one; each invocation maps exactly the new slot (its inventory,
    calibration, map) and earlier outputs keep their bytes and mtimes; a slot with a channel missing is mapped
    as missing with the reason and remapped once the file arrives; the completed day is assembled once and
    equals the day mapped in one job."""
    src_raw = four_days / "resources/demo/raw"
    raw = tmp_path / "archive"
    work = _map_only_workdir(tmp_path, four_days, demo_run / "results/models/best.pt",
                             {"period": {"start": "2024-04-03", "end": "2024-04-03"}, "unit": "slot",
                              "plots": False}, raw=raw)
    for hour in (0, 1):
        _copy_slot(src_raw, raw, hour)
    run_snakemake(work, "maps")
    slots = work / "results/maps/demo/slots"
    assert sorted(p.name for p in slots.glob("*.nc")) == ["20240403T0000.nc", "20240403T0100.nc"]
    assert not (work / "results/maps/demo/20240403.nc").exists()  # the day is not complete

    # the next slot lands: its three jobs, nothing else
    slot_lands_alone(work, src_raw, raw, 2)

    # a slot whose ir105 file has not arrived: mapped as missing, with the reason
    _copy_slot(src_raw, raw, 3, skip=("ir105",))
    run_snakemake(work, "maps")
    with xr.open_dataset(slots / "20240403T0300.nc", engine="h5netcdf") as ds:
        assert str(ds["slot_status"].values[0]) == "bad_scene: missing_channel:ir105"
        assert np.isnan(ds["TA"].values).all()
    # ... and mapped, without being told, once it has
    _copy_slot(src_raw, raw, 3)
    jobs, _ = dry_run(work, "maps")
    assert jobs == {"calibrate": 1, "map_slot": 1, "maps": 1}, jobs  # the parse rewrote the slot's inventory
    run_snakemake(work, "maps")
    with xr.open_dataset(slots / "20240403T0300.nc", engine="h5netcdf") as ds:
        assert str(ds["slot_status"].values[0]) == "ok" and np.isfinite(ds["TA"].values).any()

    # the rest of the day: the day file is assembled, and equals the day mapped in one job (unit day)
    for hour in range(4, 24):
        _copy_slot(src_raw, raw, hour)
    run_snakemake(work, "maps")
    day_work = _map_only_workdir(tmp_path / "day", four_days, demo_run / "results/models/best.pt",
                                 {"period": {"start": "2024-04-03", "end": "2024-04-03"}, "plots": False}, raw=raw)
    run_snakemake(day_work, "maps")
    with xr.open_dataset(work / "results/maps/demo/20240403.nc", engine="h5netcdf") as got, \
            xr.open_dataset(day_work / "results/maps/demo/20240403.nc", engine="h5netcdf") as want:
        assert got.sizes["time"] == 24 and got.attrs["missing_slots"] == want.attrs["missing_slots"]
        for var in ("TA", "TA_corrected", "mask", "n_stations"):
            np.testing.assert_array_equal(got[var].values, want[var].values, err_msg=var)
        assert [str(s) for s in got["correction_status"].values] == [str(s) for s in want["correction_status"].values]
    got = pd.read_csv(work / "results/maps/demo/20240403_stations.csv")
    want = pd.read_csv(day_work / "results/maps/demo/20240403_stations.csv")
    pd.testing.assert_frame_equal(got.sort_values(["time", "stn"]).reset_index(drop=True),
                                  want.sort_values(["time", "stn"]).reset_index(drop=True))


# docs/maps.md#near-real-time: the cron command. A second invocation while one runs exits at once with 0.
NRT_COMMAND = ("flock", "--nonblock", "--conflict-exit-code", "0", ".nrt.lock", SNAKEMAKE, "maps", "--cores", "2",
               "--configfile", "config/test/tiny.yaml")


class SlowCopy(threading.Thread):
    """Writes `src` to `dest` under its final name the way `cp` over a slow link does: 40 % at once, then a
    little every 20 ms, the last KiB only once `finish` is set."""

    def __init__(self, src: Path, dest: Path):
        super().__init__(daemon=True)
        self.data, self.dest = src.read_bytes(), dest
        self.finish = threading.Event()
        with open(dest, "wb") as fh:
            fh.write(self.data[: len(self.data) * 4 // 10])

    def run(self) -> None:
        with open(self.dest, "ab") as fh:
            at = len(self.data) * 4 // 10
            while not self.finish.wait(0.02):
                if at < len(self.data) - 1024:
                    fh.write(self.data[at : at + 64])
                    fh.flush()
                    at += 64
            fh.write(self.data[at:])


def _slot_is_intact(folder: Path) -> bool:
    """All 16 channel files of a demo slot there and readable (the demo plants truncated and missing files)."""
    import h5py

    files = sorted(folder.glob("*.nc"))
    try:
        for f in files:
            h5py.File(f, "r").close()
    except OSError:
        return False
    return len(files) == 16


def slot_status(slot_file: Path) -> str:
    with xr.open_dataset(slot_file, engine="h5netcdf") as ds:
        return str(ds["slot_status"].values[0])


def test_near_real_time_service_under_operating_faults(demo_run, four_days, tmp_path):
    """The faults of running the mapping service for months (docs/faults.md), each on real files through the
    real Snakefile: a slot arriving after a later one, a slot delivered twice (same bytes: nothing reruns;
    changed bytes: its jobs rerun), a file still being written while the slot is calibrated, a channel arriving
    after its day was assembled, and two cron invocations at once."""
    src_raw = four_days / "resources/demo/raw"
    raw = tmp_path / "archive"
    work = _map_only_workdir(tmp_path, four_days, demo_run / "results/models/best.pt",
                             {"period": {"start": "2024-04-03", "end": "2024-04-04"}, "unit": "slot",
                              "plots": False}, raw=raw)
    slots = work / "results/maps/demo/slots"
    for hour in (0, 2):
        _copy_slot(src_raw, raw, hour)
    run_snakemake(work, "maps")
    assert sorted(p.name for p in slots.glob("*.nc")) == ["20240403T0000.nc", "20240403T0200.nc"]

    # out of order: 01:00 lands after 02:00 -> its own jobs only, nothing earlier touched
    slot_lands_alone(work, src_raw, raw, 1)

    # delivered twice, the same bytes (new mtimes, by rename): nothing reruns
    before = outputs(work)
    _copy_slot(src_raw, raw, 2)
    assert dry_run(work, "maps")[0] == {}
    run_snakemake(work, "maps")
    assert outputs(work) == before
    # ... changed bytes (a reprocessed ir105 file): that slot's calibration and map, nothing else
    ir105 = next((raw / "202404/03/02").glob("*_ir105_*.nc"))
    other = next((src_raw / "202404/02/02").glob("*_ir105_*.nc"))
    shutil.copy2(other, ir105.with_suffix(".part"))
    os.replace(ir105.with_suffix(".part"), ir105)
    jobs, out = dry_run(work, "maps")
    assert jobs == {"calibrate": 1, "map_slot": 1, "maps": 1}, jobs
    assert re.findall(r"at slot (\d{8}T\d{4})", out) == ["20240403T0200"], out[-3000:]
    run_snakemake(work, "maps")
    after = outputs(work)
    rewritten = {k for k in before if after[k] != before[k]}
    assert {"results/scenes/20240403T0200.nc", "results/maps/demo/slots/20240403T0200.nc"} <= rewritten
    assert all("20240403T0200" in k for k in rewritten), rewritten  # its inventory, scene, map, job benchmarks

    # a file still being written while the slot is listed and calibrated: missing, with the reason ...
    _copy_slot(src_raw, raw, 3, skip=("ir105",))
    copy = SlowCopy(next((src_raw / "202404/03/03").glob("*_ir105_*.nc")),
                    raw / "202404/03/03" / next((src_raw / "202404/03/03").glob("*_ir105_*.nc")).name)
    copy.start()
    try:
        run_snakemake(work, "maps")
    finally:
        copy.finish.set()
        copy.join(30)
    assert slot_status(slots / "20240403T0300.nc") == "bad_scene: still_being_written:ir105"
    # ... and mapped by the next invocation, once the copy is complete
    jobs, _ = dry_run(work, "maps")
    assert jobs == {"calibrate": 1, "map_slot": 1, "maps": 1}, jobs
    run_snakemake(work, "maps")
    assert slot_status(slots / "20240403T0300.nc") == "ok"

    # a channel hours late: the day is assembled without it (the next day has begun) ...
    _copy_slot(src_raw, raw, 4, skip=("ir105",))
    for hour in range(5, 24):
        _copy_slot(src_raw, raw, hour)
    _copy_slot(src_raw, raw, 0, day="2024/04/04")
    run_snakemake(work, "maps")
    day_file = work / "results/maps/demo/20240403.nc"
    with xr.open_dataset(day_file, engine="h5netcdf") as ds:
        assert str(ds["slot_status"].values[4]) == "bad_scene: missing_channel:ir105"
        assert np.isnan(ds["TA"].values[4]).all() and np.isfinite(ds["TA"].values[5]).any()
    # ... and when it arrives, that slot and the day file are redone, nothing else
    _copy_slot(src_raw, raw, 4)
    jobs, _ = dry_run(work, "maps")
    assert jobs == {"calibrate": 1, "map_slot": 1, "assemble_day": 1, "maps": 1}, jobs
    run_snakemake(work, "maps")
    with xr.open_dataset(day_file, engine="h5netcdf") as ds:
        assert str(ds["slot_status"].values[4]) == "ok" and np.isfinite(ds["TA"].values[4]).any()

    # two invocations of the cron command at once: the second exits at once with 0, the first maps the slot
    hour = next(h for h in range(1, 24) if _slot_is_intact(src_raw / f"202404/04/{h:02d}"))  # not a planted defect
    _copy_slot(src_raw, raw, hour, day="2024/04/04")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(NRT_COMMAND, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             stdin=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    # Snakemake's own locks exist from its DAG to its end: the first invocation holds the flock then (a probe
    # with flock itself would take the lock from it)
    while not any((work / ".snakemake/locks").glob("*")):
        assert time.monotonic() < deadline and first.poll() is None, "the first invocation never got going"
        time.sleep(0.05)
    t0 = time.monotonic()
    second = subprocess.run(NRT_COMMAND, cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env=env, timeout=60)
    assert second.returncode == 0 and time.monotonic() - t0 < 5 and not second.stdout + second.stderr
    assert first.wait(600) == 0, first.stdout.read()[-4000:]
    assert slot_status(slots / f"20240404T{hour:02d}00.nc") == "ok"
    assert dry_run(work, "maps")[0] == {}
