"""The real-SLURM scenario of tests/workflow/test_slurm.py, run in a background thread from the session's start.

A SLURM run is mostly waiting (the plugin polls job states at growing intervals; each job re-parses
the workflow), so conftest.py starts this scenario as soon as a selected test carries the `slurm`
marker, and the rest of the suite runs meanwhile; tests/workflow/test_slurm.py (ordered last) then only
asserts on what was recorded here. Every SLURM fact is recorded right after its run, since slurmctld
forgets a job MinJobAge = 300 s after it ended.

The steps (what the tests check is described there):
1. start the local cluster (tools/local-slurm/start.sh) and run the tiny demo workflow from
   scratch through profiles/slurm;
2. plant a fault: one label row of the test day changes (its chunk must be rebuilt) and that day's
   scene becomes unreadable (old mtime, so calibrate does not rerun); run again (it fails);
3. fix the scene (same bytes, same mtime) and run again; then a dry run;
4. preemption: a CNN run is trained once uninterrupted (the reference), then again from nothing while the
   scheduler cancels its job mid-epoch (`scancel`: SIGTERM, then SIGKILL after KillWait, as a preempting
   partition or a time limit does); the profile's `retries: 1` resubmits it and it resumes from current.pt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import yaml
from conftest import REPO, SNAKEMAKE

from ta2d.demo.synthetic import make_workdir

LOCAL_SLURM = REPO / "tools" / "local-slurm"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
SUBMITTED = re.compile(r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
# The SLURM runs train two of the tiny config's runs: one network on a (fake) GPU through the embedding
# cache and one CPU model; what SLURM does for the other two is the same (tests/workflow/test_workflow.py runs
# them all locally).
SLURM_RUNS = ("clay_frozen", "ridge")
RUN_TIMEOUT_S = 480
# step 4's run: enough epochs (~15 s) that the job is still training when the watcher has seen an epoch end
PREEMPTED_RUN = ("cnn", {"model": "cnn", "epochs": 300, "patience": 0})  # ~0.05 s an epoch
CANCEL_AFTER_EPOCH = 2


class Skip(Exception):
    """A prerequisite of the local cluster is missing (a skip, or a failure where SLURM is required)."""


def prerequisites() -> None:
    if os.geteuid() != 0:
        raise Skip("the local SLURM cluster needs root (start.sh installs and runs slurmctld/slurmd)")
    if not shutil.which("apt-get"):
        raise Skip("the local SLURM cluster needs apt-get (Debian/Ubuntu) to install SLURM")


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
        "--slurm-keep-successful-logs",  # so that every job's SLURM log can be checked
    ]


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


def changed(before: dict, after: dict, root: Path) -> set[str]:
    """The paths (relative to root) that appeared, went or were rewritten between two mtimes() snapshots."""
    return {Path(k).relative_to(root).as_posix() for k in after.keys() | before.keys() if before.get(k) != after.get(k)}


def label_row_of(part_csv: Path) -> int:
    """The label-file data row (1-based, as in the label part: source, row, ...) of the chunk's first row."""
    with part_csv.open() as f:
        f.readline()
        return int(f.readline().split(",")[1])


def outputs_of(work: Path) -> dict:
    """What a finished run left in results/ (recorded, since later steps of the scenario change it)."""
    return {
        "summary": json.loads((work / "results/summary.json").read_text()),
        "chunks": sorted(p.name for p in (work / "results/patch_pt").glob("*.pt")),
        "stats_exists": (work / "results/stats.json").is_file(),
        "runs_with_best": sorted(p.parent.name for p in (work / "results/runs").glob("*/best.pt")),
    }


class SlurmScenario(threading.Thread):
    """Runs the scenario once; `wait()` returns its record or raises what went wrong."""

    def __init__(self, root: Path):
        super().__init__(name="ta2d-slurm-scenario", daemon=True)
        self.root = root
        self.record: dict = {}
        self.error: BaseException | None = None
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    # --- control --------------------------------------------------------------------------------------

    def wait(self, timeout: float = 3 * RUN_TIMEOUT_S + 900) -> dict:
        self.join(timeout)
        if self.is_alive():
            raise TimeoutError(f"the SLURM scenario did not finish within {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        return self.record

    def stop(self) -> None:
        """End the scenario early (session over): the command it runs (Snakemake or start.sh) with its
        process group, then the cluster (run() stops it)."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                # its own session: that Snakemake and its children only (SIGTERM would wait for running
                # jobs); stop.sh then cancels the cluster's jobs
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.is_alive():
            self.join(180)

    # --- the scenario -----------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            prerequisites()
        except Skip as e:
            self.error = e
            return
        # not under pytest's basetemp: munged wants every folder above its socket world-executable (0700 there)
        sandbox = Path(tempfile.mkdtemp(prefix="ta2d-slurm-", dir="/tmp"))
        sandbox.chmod(0o755)
        try:
            partition = self._start_cluster(sandbox)
            self.record["partition"] = partition
            self._scenario(partition)
        except BaseException as e:  # noqa: BLE001 - handed to the test that waits for it
            self.error = e
        finally:
            subprocess.run([str(LOCAL_SLURM / "stop.sh"), str(sandbox), "--purge"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=120)

    def _start_cluster(self, sandbox: Path) -> str:
        env = {
            **os.environ,
            # one fake GPU (gres/gpu): jobs asking for --gpus=1 are scheduled and see CUDA_VISIBLE_DEVICES
            "TA2D_SLURM_FAKE_GPUS": "1",
            # advertise more than a 2-core CI machine has (bookkeeping only, no cgroups), so that jobs
            # run side by side as on a real cluster; the tiny jobs use far less than they ask for
            "TA2D_SLURM_CPUS": "8",
            "TA2D_SLURM_MEM_MB": "65536",
        }
        rc, stdout, stderr = self._run([str(LOCAL_SLURM / "start.sh"), str(sandbox)], timeout=600, env=env)
        if rc != 0:
            raise RuntimeError(f"local SLURM did not start:\n{stderr[-4000:]}")
        return stdout.strip()

    def _run(self, cmd: list[str], timeout: float, **kwargs) -> tuple[int, str, str]:
        """Run a command in its own session (a signal to the test's terminal must not reach it; stop() can
        kill it and its children), stdin closed, with a hard timeout."""
        with self._lock:  # stop() either sees this process or keeps it from starting
            if self._stopping.is_set():
                raise RuntimeError("the test session ended before this step of the SLURM scenario")
            self._proc = proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                 stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr) from None
        finally:
            self._proc = None
        return proc.returncode, stdout, stderr

    def run_on_slurm(self, work: Path, partition: str, *args: str, timeout: int = RUN_TIMEOUT_S) -> dict:
        cmd = [SNAKEMAKE, "--workflow-profile", "profiles/slurm", "--configfile", "config/test/tiny.yaml",
               *local_cluster_args(partition), *args]
        t0 = time.monotonic()
        # a hard timeout: on SIGTERM Snakemake only "exits after running jobs finish", which can take forever
        rc, stdout, stderr = self._run(cmd, timeout, cwd=work, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        out = stdout + stderr
        jobs = [{"snakemake_job": m[1], "slurm_id": m[2], "log": Path(m[3]), **scontrol(m[2])}
                for m in SUBMITTED.finditer(out)]
        return {"rc": rc, "out": out, "jobs": jobs, "wall_s": time.monotonic() - t0}

    def _scenario(self, partition: str) -> None:
        work = make_workdir(self.root / "wf")
        # a --configfile is merged into config/config.yaml key by key, so a run is dropped from both
        for name in ("config/config.yaml", "config/test/tiny.yaml"):
            config = yaml.safe_load((work / name).read_text())
            config["train"]["runs"] = {k: v for k, v in config["train"]["runs"].items() if k in SLURM_RUNS}
            (work / name).write_text(yaml.safe_dump(config, sort_keys=False))
        self.record["work"] = work

        # 1. the tiny demo workflow from scratch on SLURM
        first = self.run_on_slurm(work, partition)
        self.record["first_run"] = first
        if first["rc"] != 0:
            return
        first["outputs"] = outputs_of(work)

        # 2. new data and a fault: one label row of the test day changes (its chunk must be rebuilt) and
        # that day's scene is unreadable, with its old mtime, so calibrate does not rerun. The test split's
        # chunk: only the (local) summary and evaluate read it, so the rerun is small.
        manifest = sorted((work / "results/labels").glob("test_chunk_*.csv"))[0]
        key = manifest.stem.split("_chunk_")[1]
        chunk = work / f"results/patch_pt/test_chunk_{key}.pt"
        scene = work / f"results/scenes/{key}.nc"

        def watched():
            return mtimes([*(work / "results").rglob("*.pt"), *(work / "results/scenes").glob("*"),
                           work / "results/stats.json", work / "results/summary.json"])

        before = watched()
        labels = work / "resources/demo/labels/OBS_ASOS_TIM_demo.csv"
        lines = labels.read_bytes().decode("cp949").splitlines(keepends=True)
        row = label_row_of(manifest)
        fields = lines[row].split(",")
        fields[3] = f"{float(fields[3]) + 1.5:.1f}"
        lines[row] = ",".join(fields)
        labels.write_bytes("".join(lines).encode("cp949"))
        good = scene.read_bytes()
        stat = scene.stat()
        scene.write_bytes(b"injected fault: not a NetCDF file\n")
        os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        failed = self.run_on_slurm(work, partition)
        failed["chunk_exists"] = chunk.exists()
        self.record.update(key=key, chunk=chunk, failed=failed)

        # 3. the fault is fixed (same bytes, same mtime): run again, then a dry run
        scene.write_bytes(good)
        os.utime(scene, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        after_fail = watched()
        rerun = self.run_on_slurm(work, partition)
        rerun["changed_since_fail"] = changed(after_fail, watched(), work / "results")
        rerun["changed_since_start"] = changed(before, watched(), work / "results")
        rerun["summary"] = json.loads((work / "results/summary.json").read_text())
        rerun["chunks"] = sorted(p.name for p in (work / "results/patch_pt").glob("*.pt"))
        self.record["rerun"] = rerun
        if rerun["rc"] == 0:
            self.record["dry_run"] = self.run_on_slurm(work, partition, "--dry-run")
            self._preemption(work, partition)

    def _preemption(self, work: Path, partition: str) -> None:
        """4. Train PREEMPTED_RUN uninterrupted (the reference), then again from nothing with its SLURM job
        cancelled once CANCEL_AFTER_EPOCH epochs have ended; records both and the cancel."""
        run, settings = PREEMPTED_RUN
        for name in ("config/config.yaml", "config/test/tiny.yaml"):
            config = yaml.safe_load((work / name).read_text())
            config["train"]["runs"][run] = settings
            (work / name).write_text(yaml.safe_dump(config, sort_keys=False))
        run_dir = work / "results/runs" / run
        target = f"results/runs/{run}/best.pt"
        reference = self.run_on_slurm(work, partition, target)
        record = self.record["preemption"] = {"run": run, "reference": reference}
        if reference["rc"] != 0:
            return
        kept = work / "reference_run"
        shutil.copytree(run_dir, kept)
        record["reference_dir"] = kept
        shutil.rmtree(run_dir)
        log = work / f"logs/train/{run}.log"
        log.unlink()  # the reference's: the watcher must see the new job's epochs

        watcher = CancelMidEpoch(log, run)
        watcher.start()
        try:
            preempted = self.run_on_slurm(work, partition, target)
        finally:
            watcher.done.set()
            watcher.join(30)
        record.update(preempted=preempted, cancelled=watcher.cancelled, cancel_error=watcher.error,
                      log_at_cancel=watcher.log_at_cancel)
        record["resumed_log"] = (work / f"logs/train/{run}.log").read_text() if preempted["rc"] == 0 else ""


class CancelMidEpoch(threading.Thread):
    """Cancels the SLURM job training `run` once its log shows epoch CANCEL_AFTER_EPOCH ended (and the last has
    not): what the scheduler does to a preempted job (or one at its time limit)."""

    def __init__(self, log: Path, run: str):
        super().__init__(name="ta2d-slurm-preempt", daemon=True)
        self.log, self.run_name = log, run
        self.done = threading.Event()
        self.cancelled: dict | None = None
        self.log_at_cancel = ""
        self.error = ""

    def run(self) -> None:
        try:
            while not self.done.wait(0.2):
                text = self.log.read_text() if self.log.is_file() else ""
                if f"epoch {CANCEL_AFTER_EPOCH}:" not in text:
                    continue
                job = self._train_job()
                if job is None:
                    continue
                subprocess.run(["scancel", job], check=True, capture_output=True, timeout=30)
                self.cancelled, self.log_at_cancel = {"slurm_id": job, **scontrol(job)}, text
                return
        except Exception as e:  # noqa: BLE001 - recorded for the test to report
            self.error = repr(e)

    def _train_job(self) -> str | None:
        out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k"], capture_output=True, text=True,
                             timeout=30).stdout
        for line in out.splitlines():
            job, _, comment = line.partition("|")
            if comment.startswith("rule_train_wildcards") and self.run_name in comment:
                return job.strip()
        return None
