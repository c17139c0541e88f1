"""Shared fixtures: tiny demo data made by the demo generator itself, so tests and the demo exercise
the same file formats; and a scratch copy of the workflow for Snakemake runs."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_PARTS = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs", "src")


def deep_update(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


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
