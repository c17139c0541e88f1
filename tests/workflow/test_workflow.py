"""The real Snakefile on tiny generated data: end-to-end outputs, and which jobs a change reruns.

Real runs where a test checks what a run did; dry runs (conftest.dry_run) where it checks what a run would
do: "nothing to be done", and the jobs a config change would start."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from conftest import REPO, dry_run, run_snakemake

from ta2d.demo.synthetic import make_workdir

pytestmark = pytest.mark.slow
RUNS = sorted(yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())["train"]["runs"])
# the summary needs every scene, the index and every chunk, nothing that trains
UP_TO_CHUNKS = "results/summary.json"


def mtimes(paths) -> dict[str, int]:
    return {Path(p).name: Path(p).stat().st_mtime_ns for p in paths}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in after if before.get(k) != after[k]}


def test_demo_end_to_end_then_nothing_to_do(demo_run):
    work = demo_run

    summary = json.loads((work / "results/summary.json").read_text())
    assert summary["invariant_holds"]
    assert summary["n_label_rows"] == summary["n_samples"] + summary["n_rejected"] > 0
    chunks = sorted((work / "results/patch_pt").glob("*.pt"))
    assert chunks and summary["n_chunks"] == len(chunks)
    assert sum(torch.load(c, weights_only=True, mmap=True)["y"].shape[0] for c in chunks) == summary["n_samples"]
    stats = json.loads((work / "results/stats.json").read_text())
    assert len(stats["x_mean"]) == 19 and stats["n_samples"] == summary["samples_by_split"]["train"]
    # every planted defect kind of the demo shows up as its documented reject reason
    defects = json.loads((work / "resources/demo/defects.json").read_text())
    expected = {d["expected_reason"] for d in defects["records"] if d.get("expected_reason")}
    assert expected <= set(summary["rejected_by_reason"]), (expected, summary["rejected_by_reason"])
    # ... row by row: exactly the rows the generator planted, each with its reason
    got = pd.concat([pd.read_csv(work / "results/labels/rejects.csv")]
                    + [pd.read_csv(p) for p in (work / "results/patch_pt").glob("*.rejects.csv")])
    want = pd.read_csv(work / "resources/demo/truth/expected_rejects.csv")
    assert sorted(zip(got["row"] + 1, got["reason"], strict=True)) == \
        sorted(zip(want["csv_line"], want["reason"], strict=True))
    runs = RUNS
    for run in runs:
        assert (work / f"results/runs/{run}/best.pt").is_file()
        assert (work / f"results/runs/{run}/metrics.csv").is_file()
    evaluation = pd.read_csv(work / "results/eval/metrics.csv")
    overall = evaluation[evaluation["scheme"] == "all"]  # one row per run and validation scheme
    assert sorted(overall["run"]) == sorted([*runs, "background"]) and (overall["n"] > 0).all()
    assert (evaluation.groupby("scheme")["n"].nunique() == 1).all()  # the same samples for every run
    # the reanalysis baseline (inputs.background: the demo's ERA5-Land-like files), scored like every run
    predictions = pd.read_csv(work / "results/eval/predictions.csv")
    scored = predictions.dropna(subset=[f"pred_{run}" for run in [*runs, "background"]])
    background = overall.set_index("run").loc["background"]
    assert bool(background["baseline"]) and background["n"] == len(scored)
    assert background["rmse"] == pytest.approx(np.sqrt(np.mean((scored["pred_background"] - scored["y"]) ** 2)),
                                               rel=1e-5)
    # maps (maps.model: best by default): the hourly archive of each mapped day, its plots, the correction table
    for day in yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())["maps"]["days"]:
        stamp = pd.Timestamp(day).strftime("%Y%m%d")
        with xr.open_dataset(work / f"results/maps/best/{stamp}.nc", engine="h5netcdf") as ds:
            assert ds.sizes["time"] == 24 and ds["TA"].attrs["standard_name"] == "air_temperature"
            assert ds.attrs["run"] in runs and ds.attrs["map_run"] == "best"
            assert np.isfinite(ds["TA"].values).any() and np.isfinite(ds["TA_corrected"].values).any()
        assert len(list((work / f"results/maps/best/{stamp}_png").glob("ta_*.png"))) == 24
        assert (work / f"results/maps/best/{stamp}.gif").read_bytes()[:6] == b"GIF89a"
    correction = pd.read_csv(work / "results/eval/map_correction.csv")
    assert {"rmse_raw", "rmse_corrected", "fold", "scheme"} <= set(correction.columns)
    out = subprocess.run([sys.executable, "-m", "ta2d", "verify", str(work)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr  # every product's stored checksums hold

    jobs, _ = dry_run(work)
    assert jobs == {}  # "Nothing to be done"


def dry_run_with_runs(work: Path, edit) -> tuple[dict, str]:
    """A dry run with ``edit(train.runs)`` applied to the workflow's config file, which is then restored."""
    config_path = work / "config/test/tiny.yaml"
    original = config_path.read_text()
    config = yaml.safe_load(original)
    edit(config["train"]["runs"])
    # keys in their order: Snakemake compares params as written, so a reordered period would rerun the demo
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        return dry_run(work)
    finally:
        config_path.write_text(original)


def test_head_change_reruns_only_that_run(demo_run):
    """A head hyper-parameter: that run retrains; no chunk, no embedding, no other run (a dry run after the
    full run above: what Snakemake would start)."""
    work = demo_run
    embeddings = mtimes((work / "results/embed").rglob("*.pt"))
    assert embeddings  # the run uses the embedding cache
    jobs, out = dry_run_with_runs(work, lambda runs: runs["clay_frozen"].update(head_hidden=64))  # default larger
    assert jobs.get("train") == 1 and re.findall(r"Training run (\S+)", out) == ["clay_frozen"], (jobs, out[-3000:])
    upstream = {"demo", "inventory", "calibrate", "label_parts", "build_index", "build_patch_chunk", "stats",
                "embed_chunk"}
    assert not upstream & set(jobs), jobs
    assert mtimes((work / "results/embed").rglob("*.pt")) == embeddings  # a dry run changes nothing


def test_new_schema_key_reruns_nothing(demo_run):
    """A job's params hold the settings that differ from the schema's defaults (ta2d.config.explicit_settings):
    a newer ta2d whose schema has one more run key, with a default, retrains nothing (here: the workdir's copy
    of the package, which the Snakefile imports, given such a key); a key set away from its default retrains
    that run alone."""
    schema_path = demo_run / "src/ta2d/schemas/config.schema.yaml"
    original = schema_path.read_text()
    schema = yaml.safe_load(original)
    for section in ("train", "pretrain"):
        run_props = schema["properties"][section]["properties"]["runs"]["additionalProperties"]["properties"]
        run_props["a_newer_key"] = {"type": "integer", "default": 3, "description": "added by a newer ta2d"}
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    try:
        plain = dry_run_with_runs(demo_run, lambda runs: None)
        written_out = dry_run_with_runs(demo_run, lambda runs: runs["cnn"].update(a_newer_key=3))  # at its default
        jobs, out = dry_run_with_runs(demo_run, lambda runs: runs["cnn"].update(a_newer_key=4))
    finally:
        schema_path.write_text(original)
    assert plain[0] == {}, plain
    assert written_out[0] == {}, written_out
    assert jobs.get("train") == 1 and re.findall(r"Training run (\S+)", out) == ["cnn"], (jobs, out[-3000:])


def _write_config(work: Path, data_root: Path, end: str) -> None:
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    config["period"]["end"] = end
    config["demo"] = {"enabled": False}
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())["inputs"]
    config["inputs"] = {
        "l1b": {**base["l1b"], "dir": str(data_root / "raw")},
        "labels": {"path": str(data_root / "labels.csv")},
        "stations": {"path": str(data_root / "stations.csv")},
        "static": {"path": str(data_root / "static.nc")},
        "background": None,  # not config/config.yaml's demo files: the demo is off
    }
    (work / "config/test/tiny.yaml").write_text(yaml.safe_dump(config))


def test_changes_rerun_only_what_they_touch(tmp_path, four_days):
    """What a change of the inputs or the period rebuilds. The steps check scenes and chunks, so the runs
    stop at the summary (UP_TO_CHUNKS: no training); a change of a run: test_head_change_reruns_only_that_run."""
    # a private, writable copy of the inputs
    data = tmp_path / "data"
    src = four_days / "resources/demo"
    shutil.copytree(src / "raw", data / "raw")
    shutil.copy2(next((src / "labels").glob("OBS_*.csv")), data / "labels.csv")
    shutil.copy2(next((src / "labels").glob("META_*.csv")), data / "stations.csv")
    shutil.copy2(src / "static/static_2km.nc", data / "static.nc")
    work = make_workdir(tmp_path / "wf")
    _write_config(work, data, "2024-04-03")
    run_snakemake(work, UP_TO_CHUNKS)
    scenes = lambda: mtimes((work / "results/scenes").glob("*.nc"))  # noqa: E731
    chunks = lambda: mtimes((work / "results/patch_pt").glob("*.pt"))  # noqa: E731
    s0, c0 = scenes(), chunks()
    assert set(s0) == {"20240401.nc", "20240402.nc", "20240403.nc"}

    # 1. nothing changed: nothing runs (the whole workflow: test_demo_end_to_end_then_nothing_to_do)
    jobs, _ = dry_run(work, UP_TO_CHUNKS)
    assert jobs == {}
    assert scenes() == s0 and chunks() == c0

    # 2. one raw L1B file of 2024-04-02 is reprocessed (it arrives by rename, as archives deliver a new version):
    # that day's scene and chunks, nothing else
    raw = sorted((data / "raw").glob("202404/02/05/gk2a_ami_le1b_ir105_*.nc"))[0]
    incoming = raw.with_name(raw.name + ".part")  # not an L1B name: the listing ignores it
    shutil.copy2(raw, incoming)
    with h5py.File(incoming, "r+") as f:
        v = f["image_pixel_values"]
        block = v[5:9, 5:9]
        v[5:9, 5:9] = np.where(block < 16384, np.maximum(block.astype(np.int64) - 40, 0), block).astype(np.uint16)
    os.replace(incoming, raw)
    run_snakemake(work, UP_TO_CHUNKS)
    s1, c1 = scenes(), chunks()
    assert changed(s0, s1) == {"20240402.nc"}
    assert changed(c0, c1) == {k for k in c1 if k.endswith("_20240402.pt")} != set()

    # 3. one label row (2024-04-03 12:00 KST = 03:00 UTC) changes: exactly one chunk
    text = (data / "labels.csv").read_bytes().decode("cp949").splitlines(keepends=True)
    i = next(i for i, line in enumerate(text) if ",2024-04-03 12:00," in line and line.split(",")[3].strip())
    fields = text[i].split(",")
    fields[3] = f"{float(fields[3]) + 1.5:.1f}"
    text[i] = ",".join(fields)
    (data / "labels.csv").write_bytes("".join(text).encode("cp949"))
    jobs, _ = dry_run(work, UP_TO_CHUNKS)  # the parse reads the changed file and rewrites one chunk's label part
    assert jobs == {"build_patch_chunk": 1, "build_index": 1, "summary": 1}, jobs
    run_snakemake(work, UP_TO_CHUNKS)
    s2, c2 = scenes(), chunks()
    assert s2 == s1
    assert len(changed(c1, c2)) == 1 and changed(c1, c2).pop().endswith("_20240403.pt")

    # 4. one more day: only its chunks are new, no existing scene or chunk is rebuilt
    _write_config(work, data, "2024-04-04")
    run_snakemake(work, UP_TO_CHUNKS)
    s3, c3 = scenes(), chunks()
    assert changed(s2, s3) == {"20240404.nc"}
    assert changed(c2, c3) == {k for k in c3 if k.endswith("_20240404.pt")} != set()
