"""Config loading and validation: JSON schema first, then the checks a schema cannot express.

Every error names the config key (dotted path) and what is wrong, before any job runs.
"""

from __future__ import annotations

import copy
import functools
import glob
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePath

import jsonschema
import pandas as pd
import yaml

SCHEMA_RESOURCE = ("ta2d.schemas", "config.schema.yaml")
PRETRAIN_DIR = "results/pretrain"  # rule pretrain writes {PRETRAIN_DIR}/{name}/encoder.ckpt


def is_path_like(value: str) -> bool:
    """Whether a train run's ``encoder_from`` names a file (a '/' or a .ckpt/.pt suffix) rather than a pretrain run."""
    return "/" in value or value.endswith((".ckpt", ".pt"))


def encoder_from_path(value: str) -> str:
    """The checkpoint a train run's ``encoder_from`` points at: results/pretrain/{name}/encoder.ckpt, or the path
    itself (relative paths against the working directory, the workflow's)."""
    return value if is_path_like(value) else f"{PRETRAIN_DIR}/{value}/encoder.ckpt"


# Keys a config may still carry from an older ta2d: what replaced them, appended to "unknown key ...".
REPLACED_KEYS = {
    "freeze_encoder": " (replaced by finetune: frozen | last_k | full; freeze_encoder true = frozen, false = full)",
    "times": " (maps.times, single slots, was replaced by maps.days: every hour of the mapped days)",
    "runs": " (maps.runs was replaced by maps.model: a run, best or a model file, or a list of them)",
}


# Train run key finetune (what of the Clay encoder trains), and the transformer depth of each Clay preset
# (= ta2d.models.PRESETS, which imports torch; tests/training/test_finetune.py checks they agree): here so that
# validating a config, which every Snakefile parse does, never imports torch.
FINETUNE_MODES = ("frozen", "last_k", "full")
FITTED_KINDS = ("ridge", "gbt")  # fitted in one call (closed form / boosting), not by gradient steps
# The run keys that change a frozen encoder's embeddings: an embed_chunk job's params, so that a head setting
# retrains the head without recomputing any embedding.
ENCODER_KEYS = ("model", "preset", "clay_ckpt_path", "encoder_from", "waves_um", "patch_mode", "pool", "seed", "amp",
                "amp_dtype", "drop_features")
CLAY_DEPTHS = {"tiny": 6, "small": 6, "base": 12, "large": 24}


def uses_embedding_cache(run_cfg: Mapping) -> bool:
    """Whether a resolved run trains its head on cached embeddings (rule embed_chunk): a frozen Clay
    encoder with embed_cache, unless the run drops the embedding (the head-alone ablation needs none)."""
    return (run_cfg["model"] == "clay_transfer" and run_cfg["finetune"] == "frozen" and run_cfg["embed_cache"]
            and "embedding" not in run_cfg.get("drop_features", ()))


def finetune_problems(cfg: Mapping) -> list[tuple[str, str]]:
    """What the schema cannot check of a run's fine-tuning keys (values already valid): finetune_blocks against
    the preset's depth. (key, message) pairs."""
    k = cfg.get("finetune_blocks")
    if cfg.get("finetune") == "last_k" and cfg.get("model") == "clay_transfer" and cfg.get("preset") in CLAY_DEPTHS:
        depth = CLAY_DEPTHS[cfg["preset"]]
        if k > depth:
            return [("finetune_blocks", f"{k} with finetune: last_k, but preset {cfg['preset']} has {depth} "
                                        f"transformer blocks; use 1..{depth} (or finetune: full)")]
    return []


class ConfigError(ValueError):
    """A config key is missing, unknown, of the wrong type or inconsistent."""


@functools.cache
def _schema_text() -> str:
    return resources.files(SCHEMA_RESOURCE[0]).joinpath(SCHEMA_RESOURCE[1]).read_text()


def load_schema() -> dict:
    return yaml.safe_load(_schema_text())  # a fresh copy: callers may change it


def run_schema(section: str) -> dict:
    """The schema of one entry of ``train.runs`` (section "train") or ``pretrain.runs`` ("pretrain")."""
    return load_schema()["properties"][section]["properties"]["runs"]["additionalProperties"]


def run_defaults(section: str) -> dict:
    """The schema's defaults of one entry of ``train.runs`` (section "train") or ``pretrain.runs`` ("pretrain"):
    the only copy (ta2d.training.RUN_DEFAULTS and PRETRAIN_DEFAULTS are these). Every run key has one, so that
    a run config can be resolved without Snakemake's validation."""
    props = run_schema(section)["properties"]
    missing = sorted(k for k, p in props.items() if "default" not in p)
    if missing:
        raise RuntimeError(f"config schema: {section}.runs keys without a default: {missing}")
    return {k: p["default"] for k, p in props.items()}


def schema_default(*keys: str):
    """The schema's default of one config key, e.g. ``schema_default("maps", "batch_size")``: library functions
    that take such a setting default to it, so the value has one home."""
    node = load_schema()
    for key in keys:
        node = node["properties"][key]
    return node["default"]


def resolve_run(cfg: Mapping, section: str = "train") -> dict:
    """A run config as a job uses it: the schema's defaults filled in, checked against the schema's run entry
    (keys, types, allowed values) and by :func:`run_problems`. The one resolution of a run's settings: the
    config's validation runs the same checks on every run before any job starts, and a job (or a Python
    caller: tests, benchmarks, notebooks) resolves the settings it was handed with this. Raises ConfigError
    naming the key."""
    # Python callers hand tuples and paths; the schema knows JSON's lists and strings
    out = {k: list(v) if isinstance(v, tuple) else str(v) if isinstance(v, PurePath) else copy.deepcopy(v)
           for k, v in cfg.items()}
    validator = _with_defaults(jsonschema.Draft202012Validator)(run_schema(section))
    errors = sorted(validator.iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("run config: " + "; ".join(_describe(e) for e in errors[:5]))
    problems = run_problems(out) if section == "train" else pretrain_run_problems(out)
    if problems:
        raise ConfigError("; ".join(f"run config {key}: {msg}" for key, msg in problems))
    return out


def run_problems(cfg: Mapping) -> list[tuple[str, str]]:
    """What the schema cannot check of a train run (defaults filled in): (key, message) pairs."""
    problems = finetune_problems(cfg)
    if cfg["gpus"] > 1 and cfg["model"] in FITTED_KINDS:
        problems.append(("gpus", f"{cfg['gpus']} with model {cfg['model']}: ridge and gbt are fitted in one process "
                                 "(no data parallelism); set gpus: 1"))
    if "embedding" in cfg["drop_features"] and cfg["model"] != "clay_transfer":
        problems.append(("drop_features", f"embedding is a clay_transfer input; model {cfg['model']} has none"))
    if cfg["encoder_from"] is not None:
        if cfg["model"] != "clay_transfer":
            problems.append(("encoder_from", f"only a clay_transfer run has an encoder (model is {cfg['model']})"))
        if cfg["clay_ckpt_path"] is not None:
            problems.append(("encoder_from", "set encoder_from or clay_ckpt_path, not both"))
    return problems


def pretrain_run_problems(cfg: Mapping) -> list[tuple[str, str]]:
    """What the schema cannot check of a pretrain run (defaults filled in): (key, message) pairs."""
    if cfg.get("teacher") == "clay" and not cfg.get("clay_ckpt_path"):
        return [("teacher", "clay needs clay_ckpt_path (the DINOv2 teacher is inside clay-v1.5.ckpt); use teacher "
                            "ema without it")]
    return []


def job_params(cfg: Mapping, section: str = "train", keys: Sequence[str] | None = None) -> dict:
    """The params of a train (section "train"), embed_chunk (``keys=ENCODER_KEYS``) or pretrain job: the run's
    settings that differ from the schema's defaults (see :func:`explicit_settings`); a train job's always
    name its model. The job resolves them again with :func:`resolve_run`."""
    always = ("model",) if section == "train" else ()
    return explicit_settings(cfg, run_defaults(section), keys=keys, always=always)


def run_gpus(cfg: Mapping) -> int:
    """GPUs of one process of a run: one for a network unless it runs on the CPU; ridge and gbt fit on the CPU."""
    return 0 if cfg["model"] in FITTED_KINDS or cfg["device"] == "cpu" else 1


def explicit_settings(cfg: Mapping, defaults: Mapping, keys=None, always=()) -> dict:
    """The settings of ``cfg`` (only ``keys``, if given) that differ from ``defaults``, plus those in ``always``.

    What the workflow hands a training or pretraining job as its params; Snakemake reruns a job whose params
    changed. Handed the whole config after validation (defaults filled in), a new schema key with a default
    would change every run's params and retrain every run, baselines included; handed what the user set
    away from the defaults, it changes nothing, and neither does writing a default out. The job fills the
    defaults in again (``resolve_run_config``). A changed default, like a change of library code, is no
    rerun trigger (docs/configuration.md#reruns)."""
    wanted = cfg if keys is None else {k: cfg[k] for k in keys if k in cfg}
    return {k: v for k, v in wanted.items() if k in always or k not in defaults or v != defaults[k]}


def deep_merge(base: dict, extra: Mapping) -> dict:
    """``extra`` merged into ``base`` in place, as Snakemake merges a --configfile over the Snakefile's
    configfile: mappings key by key, anything else replaced."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config(*paths: str | Path, check_files: bool = True) -> dict:
    """The config files merged in order (``snakemake --configfile my.yaml`` = config/config.yaml, my.yaml),
    then validated."""
    if not paths:
        raise ConfigError("no config file given")
    config: dict = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with open(path) as fh:
            part = yaml.safe_load(fh) or {}
        if not isinstance(part, Mapping):
            raise ConfigError(f"config file {path}: the top level is a {type(part).__name__}, not a mapping")
        deep_merge(config, part)
    return validate_config(config, source=" + ".join(map(str, paths)), check_files=check_files)


def validate_config(config: dict, source: str = "config", check_files: bool = True) -> dict:
    """Validate `config` in place (defaults filled in) and return it."""
    schema = load_schema()
    validator_cls = _with_defaults(jsonschema.Draft202012Validator)
    errors = sorted(validator_cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in errors[:5]))
    _check_semantics(config, source, check_files)
    return config


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = REPLACED_KEYS.get(extra[0], "")
        return (f"unknown key {key + '.' if key != '<top level>' else ''}{extra[0]}{hint} "
                f"(allowed here: {', '.join(allowed)})")
    if error.validator == "required":
        return f"key {key}: {error.message}"
    return f"key {key}: {error.message}"


def _with_defaults(validator_cls):
    """A validator that fills `default` values of absent properties (as snakemake.utils.validate does)."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def _check_semantics(config: dict, source: str, check_files: bool) -> None:
    problems = []
    for key, span in (("period", config.get("period")), ("maps.period", config.get("maps", {}).get("period"))):
        if span is None:
            continue
        try:
            start, end = pd.Timestamp(span["start"]), pd.Timestamp(span["end"])
            if start > end:
                problems.append(f"key {key}: start {start.date()} is after end {end.date()}")
        except ValueError as err:
            problems.append(f"key {key}: not a date ({err})")
    if config.get("period") is not None:
        for key in ("labels", "stations"):
            if config["inputs"].get(key) is None:
                problems.append(f"key inputs.{key}: needed with a training period (period is set)")
    elif config.get("demo", {}).get("enabled"):
        problems.append("key demo.enabled: the demo needs a training period (period is null)")
    if (config["inputs"].get("labels") is None) != (config["inputs"].get("stations") is None):
        problems.append("keys inputs.labels and inputs.stations: give both (observations need their stations) or "
                        "neither")
    problems += _check_maps(config)
    dom = config["domain"]
    for axis in ("line", "column"):
        if dom[f"first_{axis}"] > dom[f"last_{axis}"]:
            problems.append(f"key domain: first_{axis} {dom[f'first_{axis}']} > last_{axis} {dom[f'last_{axis}']}")
    size = config["patch"]["size"]
    if size % 2 == 0:
        problems.append(f"key patch.size: must be odd so the station pixel is the centre, got {size}")
    fractions = config["split"]["fractions"]
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        problems.append(f"key split.fractions: must sum to 1, got {sum(fractions.values()):g}")
    problems += _check_pretrain(config)
    problems += _check_runs(config)
    demo_makes_inputs = config.get("demo", {}).get("enabled", False)
    if check_files and not demo_makes_inputs:
        labels = str((config["inputs"].get("labels") or {}).get("path", ""))
        if glob.has_magic(labels) and not any(Path(p).is_file() for p in glob.iglob(labels)):
            problems.append(f"key inputs.labels.path: the pattern {labels} matches no file")
        for key in ("labels", "stations", "static"):
            if config["inputs"].get(key) is None:
                continue
            path = config["inputs"][key]["path"]
            if key == "labels" and glob.has_magic(str(path)):
                continue
            if not Path(path).is_file():
                why = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
                problems.append(f"key inputs.{key}.path: file {path} {why}")
        problems += _background_file_problems(config["inputs"].get("background"))
        if config["inputs"]["kind"] == "l1b" and not Path(config["inputs"]["l1b"]["dir"]).is_dir():
            problems.append(f"key inputs.l1b.dir: folder {config['inputs']['l1b']['dir']} does not exist")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _background_file_problems(background: Mapping | None) -> list[str]:
    if background is None:
        return []
    problems = []
    t2m = background["t2m"]
    for pattern in [t2m] if isinstance(t2m, str) else t2m:
        if not any(Path(p).is_file() for p in glob.iglob(pattern)):
            problems.append(f"key inputs.background.t2m: {pattern} matches no file")
    orography = Path(background["orography"])
    if not orography.is_file():
        why = "is a folder, not a file" if orography.is_dir() else "does not exist"
        problems.append(f"key inputs.background.orography: file {orography} {why}")
    return problems


def map_models(config: Mapping) -> list[str]:
    """maps.model as a list: runs of train.runs, "best" or model file paths."""
    model = config.get("maps", {}).get("model", "best")
    return [model] if isinstance(model, str) else list(model)


def is_model_path(value: str) -> bool:
    """Whether a maps.model entry names a model file (a '/' or a .pt suffix) rather than a run or best."""
    return "/" in value or value.endswith(".pt")


def _check_maps(config: dict) -> list[str]:
    """maps.model names runs that exist (and a training period), or model files that exist."""
    problems = []
    runs = config.get("train", {}).get("runs", {}) if config.get("period") is not None else {}
    for value in map_models(config):
        if is_model_path(value):
            continue
        if config.get("period") is None:
            problems.append(f"key maps.model: {value!r} names a run, but there is no training period (period is "
                            "null): name a model file (e.g. models/cnn.pt)")
        elif value == "best":
            if not runs:
                problems.append("key maps.model: 'best' needs at least one run in train.runs")
            elif "best" in runs:
                problems.append("key maps.model: a run of train.runs is called 'best', the name of the pseudo-run "
                                "'best run on the held-out days'; rename that run")
        elif value not in runs:
            problems.append(f"key maps.model: {value!r} is neither a run of train.runs ({sorted(runs)}), 'best' nor "
                            "a model file path (with a '/' or ending in .pt)")
    return problems


def _check_runs(config: dict) -> list[str]:
    """What the schema cannot check of every train run (:func:`run_problems`, as a job's resolve_run checks it)."""
    runs = config.get("train", {}).get("runs", {})
    return [f"key train.runs.{name}.{key}: {msg}" for name, run in runs.items() for key, msg in run_problems(run)]


def _check_pretrain(config: dict) -> list[str]:
    """encoder_from names a pretrain run of the same preset (or a file); at most one encoder source per run."""
    problems = []
    pretrain_runs = config.get("pretrain", {}).get("runs", {})
    for name, run in config.get("train", {}).get("runs", {}).items():
        source = run.get("encoder_from")
        if source is None:
            continue
        key = f"key train.runs.{name}.encoder_from"
        if is_path_like(source):
            continue
        if source not in pretrain_runs:
            have = ", ".join(pretrain_runs) or "none"
            problems.append(f"{key}: {source!r} is not a run of pretrain.runs (has: {have})")
        elif pretrain_runs[source].get("preset") != run.get("preset"):
            problems.append(f"{key}: pretrain run {source!r} has preset {pretrain_runs[source].get('preset')}, "
                            f"this run {run.get('preset')}")
    for name, run in pretrain_runs.items():
        problems += [f"key pretrain.runs.{name}.{key}: {msg}" for key, msg in pretrain_run_problems(run)]
    return problems
