# Shared set-up: config validation (before any job runs), period keys, and input functions.
# Kept cheap: every SLURM job re-parses the workflow.
import os

from ta2d.ingest.archive import refresh_inventories, slot_minutes
from ta2d.ingest.background import expand_paths
from ta2d.plan import CHUNK_STEM, chunk_name
from ta2d.config import ENCODER_KEYS, job_params, run_gpus as process_gpus, uses_embedding_cache, validate_config
from ta2d.index.route import LABELS_DIR, obs_part_name, planned_parts, refresh_label_parts
from ta2d.periods import key_freq
from ta2d.plan import Plan, background_t2m_files

validate_config(config, source="config")

PERIOD = config["period"]  # None: a mapping-only config (no index, chunk, stats or train job)
PLAN = Plan.from_config(config)  # every period, chunk, scene and map unit, from the config alone
TRAINS = PLAN.trains
KEYS = PLAN.keys  # chunk periods (training)
SCENE_KEYS = PLAN.scene_keys  # training periods, then the map units' own scenes outside them
LABELS = config["inputs"]["labels"]  # None: no observations
STATIONS = config["inputs"]["stations"]
DEMO = config["demo"]["enabled"]
DEMO_MANIFEST = os.path.join(config["demo"]["out_dir"], "demo.json")
SPLITS = ("train", "val", "test")
# what calibrate needs of inputs: the labels or static paths must not rerun it
RAW_INPUTS = {k: config["inputs"][k] for k in ("kind", "l1b", "calibrated")}


wildcard_constraints:
    key="[0-9WT]+",
    ikey="[0-9]+",
    split="train|val|test",


# The raw archive is listed here, in the main process only, so that files added, removed or
# changed since the last run rewrite their period's inventory (bytes compared, mtime kept when
# equal) and Snakemake reruns exactly those calibrate jobs. Inventories that do not exist yet
# are made by rule inventory, after the demo data (if any) has been generated.
# Label files likewise: only files changed since the last run are read, and only the chunk parts (and map
# observation parts) whose rows changed are rewritten (ta2d.index.route), so a changed label row rebuilds
# exactly its chunk.
if workflow.is_main_process:
    refresh_inventories(RAW_INPUTS, PLAN, "results/inventory")
    if LABELS is not None:
        refresh_label_parts(LABELS, PLAN, LABELS_DIR)


def period_bounds(wildcards):
    """The scene's own first and last day (ta2d.plan.Plan.scene_bounds): extending a period changes this only for
    the scenes at its ends, so no other scene is rebuilt."""
    return PLAN.scene_bounds(wildcards.key)


def scene_freq(wildcards):
    return key_freq(wildcards.key)


def demo_inputs(wildcards):
    return [DEMO_MANIFEST] if DEMO else []


BACKGROUND = config["inputs"].get("background")  # None: no reanalysis background


def background_files_of_days(first_day=None, last_day=None):
    """The reanalysis files a job of these UTC days reads (all days: None), so a changed or added file reruns what
    reads it: the t2m files named for those days when the names tell (ta2d.plan.background_t2m_files), and the
    orography. The demo's are written by rule demo, whose outputs (the static file every such job reads) stand
    for them."""
    if BACKGROUND is None or DEMO:
        return []
    # the config's validation made sure every pattern matches a file
    return [*background_t2m_files(expand_paths(BACKGROUND["t2m"]), first_day, last_day), BACKGROUND["orography"]]


def background_files(wildcards):
    """Every reanalysis file (evaluate: the background baseline on every test day)."""
    return background_files_of_days()


def chunk_background_files(wildcards):
    """The reanalysis files of a chunk's days: a changed month reruns the chunks of that month only."""
    bounds = PLAN.scene_bounds(wildcards.key)
    return background_files_of_days(bounds["start"], bounds["end"])


def map_background_files(wildcards):
    """The reanalysis files of a map job's day (map_day: {day}; map_slot: the day of {slot})."""
    day = wildcards.day if "day" in wildcards.keys() else wildcards.slot[:8]
    return background_files_of_days(day, day)


def chunk_files(splits=SPLITS):
    """The planned chunk files of the given splits (ta2d.plan: known from the config alone)."""
    return [f"results/patch_pt/{name}" for name in PLAN.chunk_names(splits)]


# --- training runs -----------------------------------------------------------------------------
RUNS = config["train"]["runs"] if TRAINS else {}  # without a training period nothing is trained


wildcard_constraints:
    run="|".join(RUNS) or "NO_RUNS",


def run_gpus(wildcards):
    """GPUs of a run's embed_chunk job (ta2d.config.run_gpus: one for a network, none for ridge, gbt or the CPU)."""
    return process_gpus(RUNS[wildcards.run])


def train_gpus(wildcards):
    """GPUs of a run's train job: its `gpus` (data-parallel processes, one torchrun) for a network on a GPU."""
    return process_gpus(RUNS[wildcards.run]) * RUNS[wildcards.run]["gpus"]


def train_params(wildcards):
    """What the user set for the run, not every default: a new schema key must not retrain every run."""
    return job_params(RUNS[wildcards.run], "train")


def encoder_params(wildcards):
    """Only what changes a frozen encoder's embeddings: a head setting reruns train, no embed_chunk."""
    return job_params(RUNS[wildcards.run], "train", keys=ENCODER_KEYS)


def train_threads(wildcards):
    """2 CPU threads per training process (the model's and, on CUDA, one loader worker: num_workers auto)."""
    return 2 * RUNS[wildcards.run]["gpus"]


def embedding_files(wildcards):
    if not uses_embedding_cache(RUNS[wildcards.run]):
        return []
    chunks = chunk_files(("train", "val"))
    return [f"results/embed/{wildcards.run}/{os.path.basename(c)}" for c in chunks]


# --- self-supervised pretraining (pretrain.smk) ------------------------------------------------
PRETRAIN = config["pretrain"]
PRETRAIN_RUNS = PRETRAIN["runs"] if TRAINS else {}


def pretrained_encoder(wildcards):
    """The encoder.ckpt a run starts from (encoder_from: a pretrain run's, or a file), else nothing."""
    from ta2d.config import encoder_from_path

    source = RUNS[wildcards.run].get("encoder_from")
    return [encoder_from_path(source)] if source else []


# --- maps (maps.smk) ------------------------------------------------------------------------------
def map_report_labels(wc, figure):
    """The report labels of a map day's figures: the same keys for each, so the report lists them in one table."""
    return {"map": wc.maprun, "day (UTC)": f"{wc.day[:4]}-{wc.day[4:6]}-{wc.day[6:]}",
            "labelled": "yes" if PLAN.in_training(wc.day) else "no (outside the training period)", "figure": figure}
