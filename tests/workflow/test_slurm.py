"""The real Snakefile on a real SLURM cluster, through profiles/slurm (docs/slurm.md).

A single-node SLURM 22.05 cluster is started with ta2d's own script
(tools/local-slurm/start.sh: Debian packages, private munge, all state in a sandbox) and
stopped again at the end. Snakemake submits through snakemake-executor-plugin-slurm with the
profile as written; only what is specific to this cluster is overridden on the command line:
its partition, `squeue` as status command (no slurmdbd here) and a 2 s first status check.

The runs themselves (tests/slurm_scenario.py) start in the background with the test session, since
they are mostly waiting for SLURM; these tests come last and check what was recorded. Every claim is
checked against SLURM itself (`scontrol show job`), not only against Snakemake's own messages.
Needs root and apt-get (start.sh installs SLURM); skipped elsewhere. CI runs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from slurm_scenario import CANCEL_AFTER_EPOCH, PREEMPTED_RUN, SLURM_RUNS, Skip, rule_of

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

GROUPED = ("calibrate", "build_patch_chunk", "embed_chunk")  # the rules profiles/slurm batches into group jobs


@pytest.fixture(scope="module")
def scenario(slurm_scenario):
    """What the background SLURM scenario recorded (conftest.py started it with the session)."""
    try:
        return slurm_scenario.wait()
    except Skip as e:
        # CI sets TA2D_REQUIRE_SLURM=1 (.ci/run): there a missing prerequisite is a failure, not a skip
        (pytest.fail if os.environ.get("TA2D_REQUIRE_SLURM") == "1" else pytest.skip)(str(e))


@pytest.fixture(scope="module")
def first_run(scenario):
    run = scenario["first_run"]
    assert run["rc"] == 0, run["out"][-8000:]
    return {"work": scenario["work"], "partition": scenario["partition"], **run}


def check_summary(summary: dict, chunks: list[str]) -> dict:
    assert summary["invariant_holds"]
    assert summary["n_label_rows"] == summary["n_samples"] + summary["n_rejected"] > 0
    assert chunks and summary["n_chunks"] == len(chunks)
    return summary


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
    assert {"demo", "label_parts", "stats", "train"} <= set(rules), rules
    # ... and the per-day rules went as batches: one group job for the 3 calibrate jobs, one for the 3 chunks, ...
    for rule in GROUPED:
        batches = [r for r in rules if r.endswith(rule)]
        assert batches and all(r != rule for r in batches), rules  # group jobs, not single jobs
        assert len(batches) == 1, rules
    # a batch asks for what the plugin really does: its members one after another on 1 CPU
    calib = next(j for j in jobs if rule_of(j).endswith("calibrate"))
    # 4 daily calibrate jobs (the 3 labelled days and the unlabelled map day of config/test/tiny.yaml) x
    # (10 min + 10 s per slot: 24 hourly slots) = 56 min (workflow/rules/ingest.smk)
    assert calib["NumCPUs"] == "1" and calib["TimeLimit"] == "00:56:00", calib
    # a training run that needs a GPU got one from SLURM (fake gres/gpu here)
    gpu_jobs = [j for j in jobs if "gpu" in j.get("TresPerJob", "")]
    assert gpu_jobs and all(rule_of(j).endswith(("train", "embed_chunk")) for j in gpu_jobs), jobs
    assert any(rule_of(j) == "train" and "gpu" not in j.get("TresPerJob", "") for j in jobs)  # ridge: no GPU

    # the outputs are those of a local run (as the run left them, before the failure scenario)
    outputs = first_run["outputs"]
    check_summary(outputs["summary"], outputs["chunks"])
    assert outputs["stats_exists"]
    assert set(outputs["runs_with_best"]) == set(re.findall(r"Training run (\S+)", first_run["out"]))
    assert set(outputs["runs_with_best"]) == set(SLURM_RUNS)


def test_failed_chunk_reruns_alone_after_fix(first_run, scenario):
    """One chunk job fails (bad scene), the run fails; after the fix only that job and its downstream run.

    Needs the chunk files among rule all's inputs: otherwise a missing chunk whose consumers' outputs are
    up to date (summary.json: its index input changed with the same checksum) is never rebuilt."""
    key, chunk = scenario["key"], scenario["chunk"]

    # 1. new data (one label row of the test day) and a fault (that day's scene unreadable): the run fails
    failed = scenario["failed"]
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
    assert not failed["chunk_exists"]  # a failed job's outputs are removed

    # 2. the fault is fixed (same bytes, same mtime): the rerun does the failed chunk and the summary only
    rerun = scenario["rerun"]
    assert rerun["rc"] == 0, rerun["out"][-8000:]
    print(f"[slurm] rerun after the fix: {len(rerun['jobs'])} SLURM job(s), {rerun['wall_s']:.0f} s: "
          + ", ".join(f"{j['slurm_id']}={rule_of(j)}:{j['JobState']}" for j in rerun["jobs"]))
    # SLURM jobs: the chunk batch, the jobs that failed with it, evaluate (it reads the test chunks) and the
    # maps of the best run, which evaluate's metrics choose (they never ran in the failed run)
    failed_jobs = {j["Comment"] for j in failed["jobs"] if j["JobState"] != "COMPLETED"}
    after_evaluate = ("evaluate", "map_day", "map_plots", "map_correction")  # a map batch: map_day_map_plots

    def after_evaluation(job) -> bool:
        rules = rule_of(job).split("_batch_")[-1]
        return any(rules == r or rules.startswith(r + "_") for r in after_evaluate)

    assert all(j["Comment"] in failed_jobs or after_evaluation(j) for j in rerun["jobs"]), rerun["jobs"]
    assert sum(j["Comment"] == chunk_jobs[0]["Comment"] for j in rerun["jobs"]) == 1, rerun["jobs"]
    assert all(j["JobState"] == "COMPLETED" for j in rerun["jobs"]), rerun["jobs"]
    batch = next(j for j in rerun["jobs"] if j["Comment"] == chunk_jobs[0]["Comment"])
    assert f"Building chunk test/{key}" in batch["log"].read_text()
    # the model files carry each run's test RMSE, which the changed label row moved; scenes, the other chunks
    # and the runs' weights (results/runs/*/best.pt) are untouched
    rewritten = {f"patch_pt/{chunk.name}", "summary.json", *(f"models/{run}.pt" for run in (*SLURM_RUNS, "best"))}
    assert rerun["changed_since_fail"] == rewritten
    assert rerun["changed_since_start"] == rewritten
    check_summary(rerun["summary"], rerun["chunks"])
    out = scenario["dry_run"]
    assert "Nothing to be done" in out["out"] and not out["jobs"]


def test_training_preempted_by_slurm_resumes_to_the_metrics_of_an_uninterrupted_run(scenario):
    """The scheduler cancels a train job mid-epoch (SIGTERM, then SIGKILL: preemption or a time limit); the
    profile's retry resumes it from current.pt and it ends with exactly the uninterrupted run's metrics and
    weights (CPU, fixed seeds). docs/slurm.md documents the settings."""
    record = scenario.get("preemption")
    assert record, "step 4 (preemption) did not run: an earlier step of the scenario failed"
    reference, preempted = record["reference"], record["preempted"]
    assert reference["rc"] == 0, reference["out"][-8000:]
    assert record["cancelled"] is not None, record["cancel_error"] or "the train job ended before it was cancelled"
    print(f"\n[slurm] preempted training: {len(preempted['jobs'])} SLURM job(s), {preempted['wall_s']:.0f} s: "
          + ", ".join(f"{j['slurm_id']}={rule_of(j)}:{j['JobState']}" for j in preempted["jobs"]))
    assert preempted["rc"] == 0, preempted["out"][-8000:]

    cancelled = record["cancelled"]["slurm_id"]
    train_jobs = [j for j in preempted["jobs"] if rule_of(j) == "train"]
    assert [j["slurm_id"] for j in train_jobs][:1] == [cancelled], train_jobs
    assert train_jobs[0]["JobState"] == "CANCELLED", train_jobs[0]  # SLURM's own record of the stop
    assert len(train_jobs) == 2 and train_jobs[1]["JobState"] == "COMPLETED", train_jobs  # the profile's retry
    ended = [int(e) for e in re.findall(r"^.*epoch (\d+): train rmse_K", record["log_at_cancel"], re.M)]
    assert ended and max(ended) < PREEMPTED_RUN[1]["epochs"], record["log_at_cancel"]
    resumed = re.search(r"resuming \S+ from current\.pt at epoch (\d+)", record["resumed_log"])
    assert resumed and int(resumed[1]) > CANCEL_AFTER_EPOCH, record["resumed_log"][-3000:]

    run_dir = scenario["work"] / "results/runs" / PREEMPTED_RUN[0]
    got = pd.read_csv(run_dir / "metrics.csv").drop(columns="seconds")
    want = pd.read_csv(record["reference_dir"] / "metrics.csv").drop(columns="seconds")
    assert len(got) == PREEMPTED_RUN[1]["epochs"]
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    got_w = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    want_w = torch.load(record["reference_dir"] / "best.pt", weights_only=True)["model"]
    assert got_w.keys() == want_w.keys()
    for name, tensor in want_w.items():
        assert torch.equal(got_w[name], tensor), name
