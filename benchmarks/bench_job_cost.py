"""Per-job fixed CPU cost of each rule, and the share of an archive build it takes
(docs/performance.md#per-job-fixed-cost).

    .venv/bin/python benchmarks/bench_job_cost.py [--repeats 5] [--slot-cpu 0.6] [--stations 96,600]

What a job costs besides its work, measured as CPU seconds of child processes (resource.getrusage
RUSAGE_CHILDREN, user + system; the median of --repeats runs):

* script   the process Snakemake starts for a `script:` rule: a fresh interpreter, Snakemake's
           preamble (`from snakemake.logging import logger; from snakemake.iocontainers import
           Snakemake`) and the imports at the top of the rule's scripts/*.py (read from the file, so a
           new import is measured without editing this file). Paid by every job, locally and on SLURM.
* inner    on SLURM, every SLURM job (a single job or a group batch) runs its own `python -m snakemake
           --mode remote --target-jobs ...`, which imports Snakemake, parses the whole workflow and
           builds the DAG of its target jobs. Measured as exactly that command with --dry-run (the
           script run is the `script` row), for 1 and for 6 target jobs (the marginal cost of a batch
           member), on gk2a.yaml with a six-year period.
* main     the Snakemake you started spends ~0.11 s per job (scheduling, metadata, submission;
           docs/performance.md#snakemake-overhead-per-job: 4,383 trivial jobs in 482 s on 2 cores).

Work per job (not measured here; pass your own figures):
* calibrate: --slot-cpu CPU-s per slot (benchmarks/bench_calibrate_fd.py, gk2a.yaml domain) x 24
  hourly slots per day (gk2a.yaml slot_minutes [0]);
* build_patch_chunk: --chunk-day-cpu per day of scene read (decompression) + --chunk-sample-cpu
  per sample (benchmarks/bench_chunk_build.py: 14,400 samples in 1.27 s of which ~0.7 s is the day's
  scene), samples = stations x 24 slots x days;
* embed_chunk (frozen Clay on a GPU) and the one-off jobs (build_index, stats, train, evaluate, maps)
  are listed with their fixed cost but not in the archive fraction: one-off jobs pay it once, and
  embed_chunk's work is GPU time this machine cannot measure (it pays the same imports as
  build_patch_chunk, plus CUDA start-up and loading the encoder).

The archive table: six years (2019-01-01 .. 2024-12-29, 2,190 days), every chunking period (D, W,
M) and SLURM batch size, the fixed share = fixed / (fixed + work) of calibrate + build_patch_chunk,
locally (`--cores N`: script + main) and on SLURM (script + main + inner / batch size).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from ta2d.periods import period_days, period_keys
from ta2d.splits import assign_split_by_day

REPO = Path(__file__).resolve().parents[1]
PREAMBLE = "import pickle\nfrom snakemake.logging import logger\nfrom snakemake.iocontainers import Snakemake\n"
HEAVY = ("torch", "lightgbm", "matplotlib", "scipy", "sklearn", "xarray", "pandas", "h5netcdf", "h5py")
# Modules a rule's library code imports only when the job runs (kept out of module level so that the Snakefile
# parse and other rules do not pay them); the job itself still pays them, so they count as its fixed cost.
RUNTIME_IMPORTS = {"calibrate": "import ta2d.ingest.scene\n"}
MAIN_PER_JOB_S = 0.11  # docs/performance.md#snakemake-overhead-per-job
START, END = "2019-01-01", "2024-12-29"


def child_cpu(cmd: list[str], repeats: int, cwd=None) -> float:
    """Median CPU seconds (user + sys) of running `cmd` to completion."""
    samples = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(cmd, check=True, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        samples.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(samples)


def rule_scripts() -> dict[str, tuple[str, bool]]:
    """{rule: (script file name, localrule)} from workflow/rules/*.smk."""
    out = {}
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            name = re.search(r"rule (\w+):", block)
            script = re.search(r'script:\s*\n\s*"[./]*scripts/(\w+\.py)"', block)
            if name and script:
                out[name.group(1)] = (script.group(1), "localrule: True" in block)
    return out


def script_imports(script: str) -> str:
    """The top-level import statements of scripts/<script>, as source."""
    tree = ast.parse((REPO / "scripts" / script).read_text())
    return "".join(ast.unparse(node) + "\n" for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))


def heavy_modules(code: str) -> list[str]:
    probe = code + f"import sys\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return [m for m in out.stdout.strip().split(",") if m]


def inner_snakemake_cpu(repeats: int, n_targets: int) -> float:
    """CPU of the per-SLURM-job `snakemake --mode remote` (parse + DAG of n_targets calibrate jobs), dry run."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("labels.csv", "stations.csv", "static.nc"):
            (work / name).touch()
        (work / "raw").mkdir()
        cfg = yaml.safe_load((REPO / "config/gk2a.yaml").read_text())
        cfg["period"] = {"start": START, "end": END}
        cfg["inputs"]["l1b"]["dir"] = str(work / "raw")
        for key, name in (("labels", "labels.csv"), ("stations", "stations.csv"), ("static", "static.nc")):
            cfg["inputs"][key]["path"] = str(work / name)
        cfg["chunking"]["period"] = "D"
        (work / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        keys = period_keys(START, END, "D")[:n_targets]
        (work / "results/inventory").mkdir(parents=True)
        for key in keys:
            (work / f"results/inventory/{key}.tsv").touch()
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "cfg.yaml"), "--workflow-profile", "none", "--mode", "remote",
               "--allowed-rules", "calibrate", "--cores", "1", "--dry-run", "--quiet", "all",
               "--target-jobs", *[f"calibrate:key={k}" for k in keys]]
        return child_cpu(cmd, repeats)


def chunk_jobs(freq: str) -> tuple[int, int]:
    """(periods, chunk jobs) of the six-year archive: a chunk per (split, period) that has days of that split."""
    keys = period_keys(START, END, freq)
    days = pd.Series(pd.date_range(START, END, freq="D").strftime("%Y%m%d"))
    split = dict(zip(days, assign_split_by_day(days, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=42),
                     strict=True))
    n = 0
    for key in keys:
        n += len({split[f"{d:%Y%m%d}"] for d in period_days(key, freq, START, END)})
    return len(keys), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slot-cpu", default="0.3,7.3",
                    help="calibrate CPU-s per slot, comma list (bench_calibrate_fd.py, gk2a.yaml domain: tiled "
                         "vs single-chunk files)")
    ap.add_argument("--chunk-day-cpu", type=float, default=0.7, help="build_patch_chunk CPU-s per scene day")
    ap.add_argument("--chunk-sample-cpu", type=float, default=(1.27 - 0.7) / 14400,
                    help="build_patch_chunk CPU-s per sample")
    ap.add_argument("--stations", default="96,600", help="stations with hourly labels (ASOS ~96, AWS ~600)")
    ap.add_argument("--batches", default="1,6,12,30", help="SLURM group-components to tabulate")
    args = ap.parse_args()

    base = child_cpu([sys.executable, "-c", "pass"], args.repeats)
    preamble = child_cpu([sys.executable, "-c", PREAMBLE], args.repeats)
    print(f"interpreter start: {base:.2f} CPU-s; + Snakemake's script preamble: {preamble:.2f} CPU-s\n")
    print(f"{'rule':22} {'script':24} {'CPU-s':>6}  heavy modules imported")
    fixed = {}
    for rule, (script, local) in sorted(rule_scripts().items()):
        code = PREAMBLE + script_imports(script) + RUNTIME_IMPORTS.get(rule, "")
        fixed[rule] = child_cpu([sys.executable, "-c", code], args.repeats)
        print(f"{rule + (' (local)' if local else ''):22} {script:24} {fixed[rule]:6.2f}  "
              f"{', '.join(heavy_modules(code)) or '-'}")

    inner1 = inner_snakemake_cpu(args.repeats, 1)
    inner6 = inner_snakemake_cpu(args.repeats, 6)
    member = max(0.0, (inner6 - inner1) / 5)
    print(f"\ninner `snakemake --mode remote` per SLURM job: {inner1:.2f} CPU-s with 1 target job, "
          f"{inner6:.2f} with 6 ({member:.3f} per extra member); main Snakemake ~{MAIN_PER_JOB_S} s per job "
          "(notes)\n")

    stations = [int(s) for s in args.stations.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    slot_cpus = [float(s) for s in args.slot_cpu.split(",")]
    n_days = len(pd.date_range(START, END, freq="D"))
    print(f"six-year archive {START} .. {END} ({n_days} days, 24 slots/day): fixed share of calibrate + "
          "build_patch_chunk CPU")
    head = "".join(f" {'SLURM/' + str(b):>9}" for b in batches)
    print(f"{'slot s':>6} {'period':6} {'stations':>8} {'cal jobs':>8} {'chunks':>7} {'work h':>7} {'local':>7}{head}"
          f"  chunk rule alone (local)   per-job work: calibrate / chunk")
    jobs = {freq: chunk_jobs(freq) for freq in ("D", "W", "M")}
    for slot_cpu, freq, n_st in itertools.product(slot_cpus, ("D", "W", "M"), stations):
        n_periods, n_chunks = jobs[freq]
        cal_work = n_days * 24 * slot_cpu
        chunk_work = n_days * args.chunk_day_cpu + n_days * 24 * n_st * args.chunk_sample_cpu
        work = cal_work + chunk_work
        per_job = n_periods * fixed["calibrate"] + n_chunks * fixed["build_patch_chunk"] \
            + (n_periods + n_chunks) * MAIN_PER_JOB_S
        cells = []
        for b in batches:  # one batch = b members of one rule; a batch pays one inner Snakemake
            slurm_batches = -(-n_periods // b) + -(-n_chunks // b)
            f_slurm = per_job + slurm_batches * inner1 + (n_periods + n_chunks) * member
            cells.append(f" {f_slurm / (f_slurm + work):9.1%}")
        chunk_fixed = n_chunks * (fixed["build_patch_chunk"] + MAIN_PER_JOB_S)
        print(f"{slot_cpu:6.2f} {freq:6} {n_st:8d} {n_periods:8d} {n_chunks:7d} {work / 3600:7.1f} "
              f"{per_job / (per_job + work):7.1%}{''.join(cells)}   "
              f"{chunk_fixed / (chunk_fixed + chunk_work):22.1%}   "
              f"{cal_work / n_periods:6.0f} s / {chunk_work / n_chunks:5.1f} s")
    print("\n(local: --cores N, no inner Snakemake; SLURM/b: group-components b for both calibrate_batch and "
          "chunk_batch)")


if __name__ == "__main__":
    main()
