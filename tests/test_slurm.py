"""The real Snakefile on a real SLURM cluster, through profiles/slurm (README "Running on a SLURM cluster").

A single-node SLURM 22.05 cluster is started with the project's shared tool
(../shared/tools/local-slurm/start.sh: Debian packages, private munge, all state in a sandbox) and
stopped again at the end. Snakemake submits through snakemake-executor-plugin-slurm with the
profile as written; only what is specific to this cluster is overridden on the command line:
its partition, `squeue` as status command (no slurmdbd here) and a 2 s first status check.

Every claim is checked against SLURM itself (`scontrol show job`), not only against Snakemake's
own messages. Needs root and apt-get (start.sh installs SLURM); skipped elsewhere. CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SNAKEMAKE, make_workdir

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

LOCAL_SLURM = REPO.parent / "shared" / "tools" / "local-slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
GROUPED = ("calibrate", "build_patch_chunk", "embed_chunk")  # the rules profiles/slurm batches into group jobs


@pytest.fixture(scope="module")
def slurm_partition():
    """Start the local SLURM cluster for this module; yields its partition name; always stops it."""
    # CI sets TA2D_REQUIRE_SLURM=1 (.ci/run): there a missing prerequisite is a failure, not a skip
    skip = pytest.fail if os.environ.get("TA2D_REQUIRE_SLURM") == "1" else pytest.skip
    if os.geteuid() != 0:
        skip("the local SLURM cluster needs root (start.sh installs and runs slurmctld/slurmd)")
    if not shutil.which("apt-get"):
        skip("the local SLURM cluster needs apt-get (Debian/Ubuntu) to install SLURM")
    if not (LOCAL_SLURM / "start.sh").is_file():
        skip(f"{LOCAL_SLURM} not found (the project's shared/ folder sits beside the repository)")
    # not under pytest's basetemp: munged wants every folder above its socket world-executable (0700 there)
    sandbox = Path(tempfile.mkdtemp(prefix="ta2d-slurm-", dir="/tmp"))
    sandbox.chmod(0o755)
    env = {
        **os.environ,
        # one fake GPU (gres/gpu): jobs asking for --gpus=1 are scheduled and see CUDA_VISIBLE_DEVICES
        "LOCAL_SLURM_FAKE_GPUS": "1",
        # advertise more than a 2-core CI machine has (bookkeeping only, no cgroups), so that jobs
        # run side by side as on a real cluster; the tiny jobs use far less than they ask for
        "LOCAL_SLURM_CPUS": "8",
        "LOCAL_SLURM_MEM_MB": "65536",
    }
    started = subprocess.run([str(LOCAL_SLURM / "start.sh"), str(sandbox)], capture_output=True, text=True,
                             env=env, stdin=subprocess.DEVNULL, timeout=600)
    try:
        assert started.returncode == 0, f"local SLURM did not start:\n{started.stderr[-4000:]}"
        yield started.stdout.strip()
    finally:
        subprocess.run([str(LOCAL_SLURM / "stop.sh"), str(sandbox), "--purge"], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=120)


def local_cluster_args(partition: str) -> list[str]:
    """CLI overrides for the local cluster. A CLI option replaces the profile's value for that key whole,
    so --default-resources / --set-resources repeat the profile's entries with the partition replaced."""
    profile = yaml.safe_load(PROFILE.read_text())
    default = {**profile.get("default-resources", {}), "slurm_partition": partition}
    args = ["--default-resources", *(f"{k}={v}" for k, v in default.items())]
    set_resources = profile.get("set-resources", {})
    if any("slurm_partition" in res for res in set_resources.values()):
        args += ["--set-resources", *(f"{rule}:{k}={partition if k == 'slurm_partition' else v}"
                                      for rule, res in set_resources.items() for k, v in res.items())]
    return args + [
        "--slurm-status-command", "squeue",  # no slurmdbd on the local cluster, so no sacct
        "--slurm-init-seconds-before-status-checks", "2",  # the profile's 40 s suits a real cluster
        "--slurm-keep-successful-logs",  # so that every job's SLURM log can be checked below
    ]


def run_on_slurm(work: Path, partition: str, *args: str, timeout: int = 480) -> dict:
    cmd = [SNAKEMAKE, "--workflow-profile", "profiles/slurm", "--configfile", "config/test/tiny.yaml",
           *local_cluster_args(partition), *args]
    t0 = time.monotonic()
    # stdin closed, own session (a signal to the test's terminal must not reach it), hard timeout:
    # on SIGTERM Snakemake only "exits after running jobs finish", which can take forever
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, start_new_session=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    out = proc.stdout + proc.stderr
    jobs = [{"snakemake_job": m[1], "slurm_id": m[2], "log": Path(m[3]), **scontrol(m[2])}
            for m in SUBMITTED.finditer(out)]
    return {"rc": proc.returncode, "out": out, "jobs": jobs, "wall_s": time.monotonic() - t0}


def scontrol(job_id: str) -> dict[str, str]:
    """SLURM's own record of a job (kept by slurmctld for MinJobAge = 300 s after it ended)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                          check=True).stdout
    return dict(tok.split("=", 1) for tok in text.split() if "=" in tok)


def rule_of(job: dict) -> str:
    """The plugin's --comment: rule_<rule>[_wildcards_...] or rule_<group>_<rule> for a group job."""
    return job["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def mtimes(paths) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in paths}


def changed(before: dict, after: dict) -> set[str]:
    return {Path(k).name for k in after.keys() | before.keys() if before.get(k) != after.get(k)}


def check_summary(work: Path) -> dict:
    summary = json.loads((work / "results/summary.json").read_text())
    assert summary["invariant_holds"]
    assert summary["n_label_rows"] == summary["n_samples"] + summary["n_rejected"] > 0
    chunks = sorted((work / "results/patch_pt").glob("*.pt"))
    assert chunks and summary["n_chunks"] == len(chunks)
    return summary


@pytest.fixture(scope="module")
def first_run(slurm_partition, tmp_path_factory):
    """The tiny demo workflow from scratch on SLURM (shared by the tests below)."""
    work = make_workdir(tmp_path_factory.mktemp("slurm_wf") / "wf")
    run = run_on_slurm(work, slurm_partition)
    assert run["rc"] == 0, run["out"][-8000:]
    return {"work": work, "partition": slurm_partition, **run}


def test_workflow_runs_as_slurm_jobs(first_run):
    work, jobs = first_run["work"], first_run["jobs"]
    rules = [rule_of(j) for j in jobs]
    print(f"\n[slurm] {len(jobs)} SLURM jobs with grouping, {first_run['wall_s']:.0f} s wall: "
          + ", ".join(f"{j['slurm_id']}={rule_of(j)}" for j in jobs))

    # every submitted job ran as a SLURM job of this workflow, on the local partition, and succeeded
    assert jobs
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == first_run["partition"] and Path(job["WorkDir"]) == work, job
        assert job["StdOut"] == str(job["log"]) and job["log"].is_file(), job  # SLURM wrote the log
        assert "Finished jobid" in job["log"].read_text(), job["log"]
    # all that is not a local rule went through SLURM ...
    assert {"demo", "build_index", "stats", "train"} <= set(rules), rules
    # ... and the per-day rules went as batches: one group job for the 3 calibrate jobs, one for the 3 chunks, ...
    for rule in GROUPED:
        batches = [r for r in rules if r.endswith(rule)]
        assert batches and all(r != rule for r in batches), rules  # group jobs, not single jobs
        assert len(batches) == 1, rules
    # a batch asks for what the plugin really does: its members one after another on 1 CPU
    calib = next(j for j in jobs if rule_of(j).endswith("calibrate"))
    assert calib["NumCPUs"] == "1" and calib["TimeLimit"] == "01:30:00", calib  # 3 x 30 min
    # a training run that needs a GPU got one from SLURM (fake gres/gpu here)
    gpu_jobs = [j for j in jobs if "gpu" in j.get("TresPerJob", "")]
    assert gpu_jobs and all(rule_of(j).endswith(("train", "embed_chunk")) for j in gpu_jobs), jobs
    assert any(rule_of(j) == "train" and "gpu" not in j.get("TresPerJob", "") for j in jobs)  # ridge: no GPU

    # the outputs are those of a local run
    check_summary(work)
    assert (work / "results/stats.json").is_file()
    assert {p.parent.name for p in (work / "results/runs").glob("*/best.pt")} == set(
        re.findall(r"Training run (\S+)", first_run["out"]))


def _label_row_of(work: Path, chunk_csv: Path) -> int:
    """The label-file data row (1-based, as in the manifest) of the chunk's first sample."""
    with chunk_csv.open() as f:
        f.readline()
        return int(f.readline().split(",")[0])


def test_failed_chunk_reruns_alone_after_fix(first_run):
    """One chunk job fails (bad scene), the run fails; after the fix only that job and its downstream run.

    Needs the chunk files among rule all's inputs: otherwise a missing chunk whose consumers' outputs are
    up to date (summary.json: its index input changed with the same checksum) is never rebuilt."""
    work, partition = first_run["work"], first_run["partition"]
    chunk_dir = work / "results/index/chunks"
    # the test split's chunk: only the (local) summary and evaluate read it, so the rerun is small
    manifest = sorted(chunk_dir.glob("test_chunk_*.csv"))[0]
    key = manifest.stem.split("_chunk_")[1]
    chunk = work / f"results/patch_pt/test_chunk_{key}.pt"
    scene = work / f"results/scenes/{key}.nc"
    watched = lambda: mtimes([*(work / "results").rglob("*.pt"), *(work / "results/scenes").glob("*"),  # noqa: E731
                              work / "results/stats.json", work / "results/summary.json"])
    before = watched()

    # 1. new data: one label row of that day changes (so its chunk must be rebuilt) ...
    labels = work / "resources/demo/labels/OBS_ASOS_TIM_demo.csv"
    lines = labels.read_bytes().decode("cp949").splitlines(keepends=True)
    row = _label_row_of(work, manifest)
    fields = lines[row].split(",")
    fields[3] = f"{float(fields[3]) + 1.5:.1f}"
    lines[row] = ",".join(fields)
    labels.write_bytes("".join(lines).encode("cp949"))
    # ... and the fault: the day's scene is unreadable, with its old mtime, so calibrate does not rerun
    good = scene.read_bytes()
    stat = scene.stat()
    scene.write_bytes(b"injected fault: not a NetCDF file\n")
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    failed = run_on_slurm(work, partition)
    print(f"\n[slurm] failing run: {len(failed['jobs'])} SLURM jobs, {failed['wall_s']:.0f} s: "
          + ", ".join(f"{j['slurm_id']}={rule_of(j)}:{j['JobState']}" for j in failed["jobs"]))
    assert failed["rc"] != 0, failed["out"][-4000:]
    chunk_jobs = [j for j in failed["jobs"] if rule_of(j).endswith("build_patch_chunk")]
    # the profile's `retries: 1`: submitted twice, and SLURM saw both attempts fail
    assert len(chunk_jobs) == 2 and all(j["JobState"] == "FAILED" for j in chunk_jobs), failed["jobs"]
    assert "Trying to restart job" in failed["out"]
    assert "file signature not found" in failed["out"] or "NetCDF" in failed["out"]
    # what else failed read the same broken scene (e.g. a TA map of that day)
    assert all(j in chunk_jobs or key in j["Comment"] for j in failed["jobs"] if j["JobState"] != "COMPLETED")
    assert not chunk.exists()  # a failed job's outputs are removed

    # 2. the fault is fixed (same bytes, same mtime): the rerun does the failed chunk and the summary only
    scene.write_bytes(good)
    os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after_fail = watched()
    rerun = run_on_slurm(work, partition)
    assert rerun["rc"] == 0, rerun["out"][-8000:]
    print(f"[slurm] rerun after the fix: {len(rerun['jobs'])} SLURM job(s), {rerun['wall_s']:.0f} s: "
          + ", ".join(f"{j['slurm_id']}={rule_of(j)}:{j['JobState']}" for j in rerun["jobs"]))
    # SLURM jobs: the chunk batch, the jobs that failed with it and evaluate (it reads the test chunks)
    failed_jobs = {j["Comment"] for j in failed["jobs"] if j["JobState"] != "COMPLETED"}
    assert all(j["Comment"] in failed_jobs or rule_of(j) == "evaluate" for j in rerun["jobs"]), rerun["jobs"]
    assert sum(j["Comment"] == chunk_jobs[0]["Comment"] for j in rerun["jobs"]) == 1, rerun["jobs"]
    assert all(j["JobState"] == "COMPLETED" for j in rerun["jobs"]), rerun["jobs"]
    batch = next(j for j in rerun["jobs"] if j["Comment"] == chunk_jobs[0]["Comment"])
    assert f"Building chunk test/{key}" in batch["log"].read_text()
    assert changed(after_fail, watched()) == {chunk.name, "summary.json"}
    assert changed(before, watched()) == {chunk.name, "summary.json"}  # scenes, other chunks, runs untouched
    check_summary(work)
    out = run_on_slurm(work, partition, "--dry-run")
    assert "Nothing to be done" in out["out"] and not out["jobs"]
