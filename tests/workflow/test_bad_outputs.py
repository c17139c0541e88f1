"""Bad-input battery, outputs (tests/bad_inputs.py): a results folder that cannot be written is a clear
error naming the path, at every stage that writes one.
"""

from __future__ import annotations

import os
import re

import pytest
from bad_inputs import (
    TRAIN_CFG,
    one_day,
)

from ta2d.chunks.patches import build_patch_chunk
from ta2d.chunks.stats import write_stats
from ta2d.grid import Domain
from ta2d.index.route import route_labels
from ta2d.ingest.archive import calibrate_period
from ta2d.plan import Plan
from ta2d.static import read_static
from ta2d.training import train_run

# --- unwritable results folder ---------------------------------------------------------------------------

def _write_label_parts(base, out):
    cfg = base.config
    route_labels(cfg["inputs"]["labels"], Plan.from_config(cfg), out / "labels", force=True)


def _write_scene(base, out):
    cfg = base.config
    raw = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    calibrate_period(raw, base.out / "inventory/20240401.tsv", "20240401", "D", one_day("20240401"),
                     cfg["domain"], cfg["scene"], out / "scenes/20240401.nc", out / "scenes/20240401.status.csv",
                     progress=False)


def _write_chunk(base, out):
    st = base.config["inputs"]["static"]
    static = read_static(st["path"], Domain.from_config(base.config["domain"]))
    build_patch_chunk(base.out / "labels/train_chunk_20240401.csv", base.config["inputs"]["stations"]["path"],
                      base.out / "scenes/20240401.nc", static, 9, out / "patch_pt/train_chunk_x.pt",
                      out / "patch_pt/train_chunk_x.rejects.csv", out / "patch_pt/train_chunk_x.index.csv")


def _write_run(base, out):
    chunk = base.out / "patch_pt/train_chunk_20240401.pt"
    write_stats([chunk], base.root / "stats_for_unwritable.json")
    train_run({**TRAIN_CFG, "epochs": 1}, [chunk], [], base.root / "stats_for_unwritable.json", out / "runs/cnn",
              progress=False, log=lambda s: None)


WRITERS = {"calibrate": (_write_scene, "scenes"), "label_parts": (_write_label_parts, "labels"),
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
        message = f"cannot write {results}/patch_pt/train_chunk_x.pt: Permission denied"
        with pytest.raises(PermissionError, match=re.escape(message)):
            _write_chunk(base, results)
    finally:
        (results / "patch_pt").chmod(0o755)


