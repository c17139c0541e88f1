"""Bad-input battery through the real Snakefile (tests/bad_inputs.py): the faults of the library tests
give the same outcome in a real run, and a config fault stops Snakemake before any job.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from bad_inputs import (
    PERIOD,
    SLOT_DIR,
    SLOT_T,
    STN,
    Base,
    Case,
    assert_outcome,
    edit_lines,
    load_result,
    move_station,
    truncate,
)
from conftest import REPO, run_snakemake

from ta2d.chunks.contract import open_chunk
from ta2d.demo.synthetic import make_workdir

# --- through the real Snakefile ----------------------------------------------------------------------------

def _workflow(base: Base, case: Case, tmp_path: Path, **changes) -> Path:
    """A scratch workflow whose config points at the case's data (demo disabled, no maps)."""
    work = make_workdir(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config/test/tiny.yaml").read_text())
    config["period"] = dict(PERIOD)
    config["demo"] = {"enabled": False}
    config["maps"] = {"days": []}
    default_l1b = yaml.safe_load((REPO / "config/config.yaml").read_text())["inputs"]["l1b"]
    config["inputs"] = {
        "l1b": {**default_l1b, "dir": str(case.raw)},
        "labels": {"path": str(case.labels)},
        "stations": {"path": str(case.stations)},
        "static": {"path": str(case.static)},
        "background": None,  # not config/config.yaml's demo files: the demo is off
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
    # the day's planned chunk is still written, with zero rows, and the summary names it
    (day1,) = (work / "results/patch_pt").glob("*_chunk_20240401.pt")
    (day2,) = (work / "results/patch_pt").glob("*_chunk_20240402.pt")
    assert len(open_chunk(day1)["y"]) > 0 and open_chunk(day2)["y"].shape == (0,)
    assert res.summary["empty_chunks"] == [day2.stem]


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
