"""The real Snakefile on tiny generated data: end-to-end outputs, and which jobs a change reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, make_workdir, run_snakemake, tiny_config

pytestmark = pytest.mark.slow
CHECK_CHUNKS = REPO.parent / "shared" / "tools" / "check_chunks.py"


def mtimes(paths) -> dict[str, int]:
    return {Path(p).name: Path(p).stat().st_mtime_ns for p in paths}


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in after if before.get(k) != after[k]}


def test_demo_end_to_end_then_nothing_to_do(tmp_path):
    work = make_workdir(tmp_path / "wf")
    run_snakemake(work)

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
    got = pd.concat([pd.read_csv(work / "results/index/rejects.csv")]
                    + [pd.read_csv(p) for p in (work / "results/patch_pt").glob("*.rejects.csv")])
    want = pd.read_csv(work / "resources/demo/truth/expected_rejects.csv")
    assert sorted(zip(got["row"] + 1, got["reason"], strict=True)) == \
        sorted(zip(want["csv_line"], want["reason"], strict=True))
    runs = sorted(yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())["train"]["runs"])
    for run in runs:
        assert (work / f"results/runs/{run}/best.pt").is_file()
        assert (work / f"results/runs/{run}/metrics.csv").is_file()
    evaluation = pd.read_csv(work / "results/eval/metrics.csv")
    overall = evaluation[evaluation["scheme"] == "all"]  # one row per run and validation scheme
    assert sorted(overall["run"]) == runs and (overall["n"] > 0).all()
    assert (evaluation.groupby("scheme")["n"].nunique() == 1).all()  # the same samples for every run
    for time in yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())["maps"]["times"]:
        stamp = pd.Timestamp(time).strftime("%Y%m%dT%H%M")
        for run in runs:
            assert (work / f"results/maps/{run}/ta_{stamp}.nc").is_file()
            assert (work / f"results/maps/{run}/ta_{stamp}.png").is_file()
    if CHECK_CHUNKS.is_file():
        out = subprocess.run([sys.executable, str(CHECK_CHUNKS), str(work)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr

    again = run_snakemake(work)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.fixture(scope="module")
def four_days(tmp_path_factory):
    """Demo inputs for 4 days, generated outside the workflow (demo disabled in the runs below)."""
    from ta2d.demo import generate_demo

    root = tmp_path_factory.mktemp("four_days")
    config = tiny_config(root, period={"start": "2024-04-01", "end": "2024-04-04"})
    generate_demo(config, progress=False)
    return root


def _write_config(work: Path, data_root: Path, end: str, head_hidden: int = 256) -> None:
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    config["period"]["end"] = end
    config["train"]["runs"]["clay_frozen"]["head_hidden"] = head_hidden
    config["demo"] = {"enabled": False}
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())["inputs"]
    config["inputs"] = {
        "l1b": {**base["l1b"], "dir": str(data_root / "raw")},
        "labels": {"path": str(data_root / "labels.csv")},
        "stations": {"path": str(data_root / "stations.csv")},
        "static": {"path": str(data_root / "static.nc")},
    }
    (work / "config/test/tiny.yaml").write_text(yaml.safe_dump(config))


def test_changes_rerun_only_what_they_touch(tmp_path, four_days):
    # a private, writable copy of the inputs
    data = tmp_path / "data"
    src = four_days / "resources/demo"
    shutil.copytree(src / "raw", data / "raw")
    shutil.copy2(next((src / "labels").glob("OBS_*.csv")), data / "labels.csv")
    shutil.copy2(next((src / "labels").glob("META_*.csv")), data / "stations.csv")
    shutil.copy2(src / "static/static_2km.nc", data / "static.nc")
    work = make_workdir(tmp_path / "wf")
    _write_config(work, data, "2024-04-03")
    run_snakemake(work)
    scenes = lambda: mtimes((work / "results/scenes").glob("*.nc"))  # noqa: E731
    chunks = lambda: mtimes((work / "results/patch_pt").glob("*.pt"))  # noqa: E731
    s0, c0 = scenes(), chunks()
    assert set(s0) == {"20240401.nc", "20240402.nc", "20240403.nc"}

    # 1. nothing changed: nothing runs
    out = run_snakemake(work)
    assert "Nothing to be done" in out.stdout + out.stderr
    assert scenes() == s0 and chunks() == c0

    # 2. one raw L1B file of 2024-04-02 changes: that day's scene and chunks, nothing else
    raw = sorted((data / "raw").glob("202404/02/05/gk2a_ami_le1b_ir105_*.nc"))[0]
    with h5py.File(raw, "r+") as f:
        v = f["image_pixel_values"]
        block = v[5:9, 5:9]
        v[5:9, 5:9] = np.where(block < 16384, np.maximum(block.astype(np.int64) - 40, 0), block).astype(np.uint16)
    run_snakemake(work)
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
    run_snakemake(work)
    s2, c2 = scenes(), chunks()
    assert s2 == s1
    assert len(changed(c1, c2)) == 1 and changed(c1, c2).pop().endswith("_20240403.pt")

    # 4. one more day: only its chunks are new, no existing scene or chunk is rebuilt
    _write_config(work, data, "2024-04-04")
    run_snakemake(work)
    s3, c3 = scenes(), chunks()
    assert changed(s2, s3) == {"20240404.nc"}
    assert changed(c2, c3) == {k for k in c3 if k.endswith("_20240404.pt")} != set()

    # 5. a head hyper-parameter: that run retrains; no chunk, no embedding, no other run
    embeddings = lambda: mtimes((work / "results/embed").rglob("*.pt"))  # noqa: E731
    runs = lambda: {p.parent.name: p.stat().st_mtime_ns for p in work.glob("results/runs/*/best.pt")}  # noqa: E731
    e3, r3 = embeddings(), runs()
    assert e3
    _write_config(work, data, "2024-04-04", head_hidden=64)
    run_snakemake(work)
    assert chunks() == c3 and embeddings() == e3 and scenes() == s3
    assert changed(r3, runs()) == {"clay_frozen"}
