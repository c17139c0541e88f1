"""Shared fixtures and helpers.

* Demo data made by the demo generator itself, once per session, so tests and the demo exercise the same
  file formats: `tiny_demo` (config/test/tiny.yaml on config/config.yaml) and the clean run that the
  bad-input battery starts from (`base`, `case`, `train_inputs`; tests/bad_inputs.py).
* A scratch copy of the workflow (`make_workdir`), real Snakemake runs (`run_snakemake`) and dry runs
  (`dry_run`: the jobs a run would start, by rule).
* The real-SLURM scenario (tests/slurm_scenario.py) starts in the background with the session when a
  `slurm` test is selected; those tests run last.
* Other fake inputs (chunks, L1B files) come from tests/fakes.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ta2d.config import deep_merge as deep_update  # Snakemake's --configfile merge

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs", "src")




def tiny_config(root: Path, **overrides) -> dict:
    """config/config.yaml + config/test/tiny.yaml with every input path under `root`, validated."""
    from ta2d.config import validate_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    deep_update(config, yaml.safe_load((REPO / "config/test/tiny.yaml").read_text()))
    deep_update(config, overrides)
    inputs = config["inputs"]
    inputs["l1b"]["dir"] = str(root / inputs["l1b"]["dir"])
    for key in ("labels", "stations", "static"):
        inputs[key]["path"] = str(root / inputs[key]["path"])
    config["demo"]["out_dir"] = str(root / config["demo"]["out_dir"])
    return validate_config(config)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The tiny demo inputs (3 days, 6 stations), generated once per session. Treat as read-only."""
    from ta2d.demo import generate_demo

    root = tmp_path_factory.mktemp("tiny_demo")
    config = tiny_config(root)
    summary = generate_demo(config, progress=False)
    return {"root": root, "config": config, "summary": summary}


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """Bad-input battery (tests/bad_inputs.py): clean tiny demo data (2 days, no planted defects) and its
    clean run through the library, shared by every test_bad_*.py module. Treat as read-only."""
    from bad_inputs import make_base

    return make_base(tmp_path_factory.mktemp("bad_inputs"))


@pytest.fixture
def case(base, tmp_path):
    """Bad-input battery: this test's own copy of the clean data (raw files linked), to plant one fault in."""
    from bad_inputs import make_case

    return make_case(base, tmp_path)


@pytest.fixture(scope="session")
def train_inputs(base, tmp_path_factory):
    """Bad-input battery: (train chunk, val chunk, stats.json) of the clean run."""
    from bad_inputs import make_train_inputs

    return make_train_inputs(base, tmp_path_factory.mktemp("train_inputs"))


def make_workdir(dest: Path) -> Path:
    """A scratch copy of the workflow (results/ and resources/ start empty)."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / part)
    return dest


def run_snakemake(workdir: Path, *args: str, timeout: int = 900, check: bool = True) -> subprocess.CompletedProcess:
    # targets and options first: --configfile takes several values and would swallow a target
    cmd = [SNAKEMAKE, *args, "--cores", "2", "--configfile", "config/test/tiny.yaml"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dry_run(workdir: Path, *args: str) -> tuple[dict[str, int], str]:
    """`snakemake -n`: the jobs a run would do now, counted by rule from its job stats ({} when nothing
    is to be done), and its output (each job's message, e.g. "Training run cnn", names its wildcards)."""
    proc = run_snakemake(workdir, "--dry-run", *args)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}, out
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {}
    for line in table.splitlines()[3:]:  # after the blank, "job count" and dashes lines
        rule, n = line.split()
        if rule != "total":
            counts[rule] = int(n)
    return counts, out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The tiny demo workflow run from scratch (demo generated by its rule), once per session. Tests that change
    it restore what they change; the others copy what they need."""
    work = make_workdir(tmp_path_factory.mktemp("demo_run") / "wf")
    run_snakemake(work)
    return work


@pytest.fixture(scope="session")
def four_days(tmp_path_factory):
    """Demo inputs for 4 days (and the unlabelled day after them), generated outside the workflow. Read-only."""
    from ta2d.demo import generate_demo

    root = tmp_path_factory.mktemp("four_days")
    config = tiny_config(root, period={"start": "2024-04-01", "end": "2024-04-04"})
    generate_demo(config, progress=False)
    return root


# --- the SLURM scenario in the background --------------------------------------------------------------

def pytest_collection_modifyitems(config, items):
    """The SLURM tests last: their scenario runs in the background meanwhile (slurm_scenario fixture)."""
    slurm = [item for item in items if item.get_closest_marker("slurm")]
    if slurm:
        items[:] = [item for item in items if not item.get_closest_marker("slurm")] + slurm


@pytest.fixture(scope="session", autouse=True)
def slurm_scenario(request, tmp_path_factory):
    """tests/slurm_scenario.py, started with the first test when a `slurm` test is selected (else None);
    stopped with the session (its Snakemake killed, the cluster stopped) if it is still running then."""
    if not any(item.get_closest_marker("slurm") for item in request.session.items):
        yield None
        return
    from slurm_scenario import SlurmScenario

    scenario = SlurmScenario(tmp_path_factory.mktemp("slurm_wf"))
    scenario.start()
    yield scenario
    scenario.stop()
