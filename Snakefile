# ta2d: GK-2A AMI L1B + station TA -> calibrated scenes -> index -> per-chunk .pt patch files.
# The DAG and the file contracts are described in docs/architecture.md.
import os
import sys

from snakemake.utils import min_version

min_version("9.0")

# The library lives in src/; make it importable here and in every job's script, also when ta2d is
# not pip-installed (e.g. inside the conda environment of envs/ta2d.yaml).
SRC = os.path.join(workflow.basedir, "src")
sys.path.insert(0, SRC)
_inherited = [p for p in dict(os.environ).get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ.update(PYTHONPATH=os.pathsep.join([SRC, *_inherited]))


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/maps.smk"


# the training side only with a training period (a mapping-only config has none: ta2d.plan.Plan.trains)
TRAINING_TARGETS = [
    "results/stats.json",
    "results/summary.json",
    *expand("results/index/{ikey}/index.csv", ikey=PLAN.index_keys),
    # every chunk is a target itself: a missing or failed chunk must be rebuilt even when the
    # files downstream of it (summary, stats, runs) look up to date
    *chunk_files(),
    *expand("results/pretrain/{name}/encoder.ckpt", name=PRETRAIN_RUNS),
    *expand("results/runs/{run}/best.pt", run=RUNS),
    "results/eval/metrics.csv",
    *expand("results/models/{run}.pt", run=RUNS),
] if TRAINS else []


rule all:
    default_target: True
    input:
        TRAINING_TARGETS,
        MAP_TARGETS,
