"""The model file: a trained run as one self-contained, ``weights_only``-loadable file (``results/models/{run}.pt``).

What serving a model needs, and nothing of the run's folder: the weights and the normalisation statistics (the
model's first layer), what it takes as input (the 19 x planes with each channel's name, kind and wavelength, the
patch size, the side features), the model kind and the resolved run config (its hyper-parameters), where it comes
from (training period, stations, data fingerprint, epochs) and how good it is (test RMSE per validation scheme, from
the evaluation). ``FORMAT_VERSION`` grows when the layout changes meaning; a file newer than the code is refused.
``error_model`` (optional, added within version 1: older files have none and still load) is the run's error model
from the evaluation (``ta2d.evaluation.uncertainty.ErrorModel.to_dict``): the maps' per-pixel standard error.

Everything in it is a tensor, a number, a string, a list or a dict, so ``torch.load(path, weights_only=True)`` reads
it, and :func:`ta2d.models.load_model` rebuilds the model from it as from a best.pt. Beside them ``crc32`` holds the
CRC-32 of every tensor by dotted path (``model.head.0.weight``; ta2d.checksums): a file whose bytes changed on disk
is refused before it predicts anything. Files written before ta2d recorded them have none and are not checked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import ta2d
from ta2d.channels import CHANNELS, X_CHANNELS
from ta2d.checksums import CHECKSUM_KEY, save_with_checksums, tensor_checksum_problems

log = logging.getLogger(__name__)

FORMAT = "ta2d-model"
FORMAT_VERSION = 1
# the side inputs every model kind sees beside the planes (ta2d.chunks.patches.pixel_inputs)
SIDE_FEATURES = ("time7: doy cos/sin, UTC hour cos/sin, month cos/sin, centre SZA", "lat, lon", "landcover (IGBP 1-17)",
                 "elevation (m; a map pixel's own DEM)")
# only a model trained on chunks with the background field (its stats have the background's) takes this one
BACKGROUND_FEATURE = ("background: reanalysis 2 m temperature at the pixel and slot, °C, height-corrected to the "
                      "pixel DEM (inputs.background)")
BACKGROUND_KEY = "inputs.background"  # the config key a map job needs set for such a model
SCORE_COLUMNS = ("n", "rmse", "mae", "bias", "floor", "rmse_over_floor")


class ModelFileError(ValueError):
    """A file that cannot serve as a model here: not a ta2d model file, too new, or not fit for the inputs."""


def input_spec(patch_size: int, background: bool = False) -> dict:
    """What a model takes: the x planes in order (spectral ones with kind and effective wavelength), patch size, the
    side features and whether it needs the reanalysis background (``background``: a model built with it)."""
    planes = []
    for name in X_CHANNELS:
        ch = CHANNELS.get(name)
        planes.append({"name": name, "kind": "bt" if ch and ch.kind == "emissive" else "rf" if ch else "aux",
                       "wavelength_um": ch.wavelength_um if ch else None,
                       "units": "K" if ch and ch.kind == "emissive" else "1" if ch else
                       {"sza": "degree", "dem": "m", "land_sea_mask": "1"}[name]})
    side = list(SIDE_FEATURES) + ([BACKGROUND_FEATURE] if background else [])
    return {"planes": planes, "patch_size": int(patch_size), "side_features": side, "background": bool(background)}


def needs_background(info: Mapping) -> bool:
    """Whether a model file's model takes the reanalysis background (files written before the key: from its stats,
    which hold the background's exactly when the model was built with it)."""
    if "background" in info.get("inputs", {}):
        return bool(info["inputs"]["background"])
    return "background_mean" in info.get("stats", {})


def check_background(info: Mapping, path, background: Mapping | None) -> None:
    """ModelFileError naming the model file and the config key when its model needs the background and the config
    (``inputs.background``) has none: without it every pixel would lack an input the model was trained on."""
    if needs_background(info) and background is None:
        raise ModelFileError(f"model file {path}: the model was trained with the reanalysis background as an input, "
                             f"but {BACKGROUND_KEY} is null: set {BACKGROUND_KEY} (t2m files covering the mapped "
                             "hours, orography; ta2d map-day: --background-t2m and --orography) to map with it")


def scores_from_metrics(metrics_csv: str | Path, run: str) -> dict:
    """{scheme: {n, rmse, mae, bias, floor, rmse_over_floor}} of `run` in an evaluate metrics.csv."""
    import pandas as pd

    try:
        table = pd.read_csv(metrics_csv)
    except (OSError, ValueError) as err:
        raise ValueError(f"{metrics_csv}: cannot read the evaluation table ({err})") from err
    if not {"run", "scheme", "rmse", "n"} <= set(table.columns):
        raise ValueError(f"{metrics_csv}: not an evaluate metrics.csv (columns {list(table.columns)})")
    rows = table[table["run"] == run]
    if rows.empty:
        raise ValueError(f"{metrics_csv}: no scores of run {run!r}")
    out = {}
    for r in rows.to_dict("records"):
        out[str(r["scheme"])] = {k: (None if r.get(k) is None or r[k] != r[k] else
                                     int(r[k]) if k == "n" else float(r[k])) for k in SCORE_COLUMNS if k in r}
    return out


def training_stations(chunks: Sequence[str | Path]) -> list[int]:
    """The station ids of the samples in the chunks (each file's ``stn`` only, memory-mapped)."""
    ids: set[int] = set()
    for path in chunks:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ids.update(int(s) for s in torch.unique(data["stn"]).tolist())
    return sorted(ids)


def error_model_of(error_models_json: str | Path | None, run: str) -> dict | None:
    """The run's entry of an evaluate error_models.json ({run: error model dict}), or None (logged) without one."""
    if error_models_json is None:
        return None
    try:
        models = json.loads(Path(error_models_json).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{error_models_json}: cannot read the error models ({err})") from err
    if not isinstance(models, dict) or not isinstance(models.get(run, {}), dict):
        raise ValueError(f"{error_models_json}: not an evaluate error_models.json")
    if run not in models:
        log.warning("%s: no error model of run %r (evaluated without validation samples?): the model file gets "
                    "none and its maps no standard error", error_models_json, run)
        return None
    return models[run]


def export_model(checkpoint: str | Path, out_path: str | Path, run: str, metrics_csv: str | Path,
                 train_chunks: Sequence[str | Path], val_chunks: Sequence[str | Path], period: Mapping,
                 patch_size: int, error_models: str | Path | None = None) -> dict:
    """Rule export_model: a run's best.pt + its scores (+ its error model from ``error_models``, the evaluation's
    error_models.json) -> the model file. Returns what it wrote (without weights)."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    damaged = tensor_checksum_problems(ck).problems  # fresh CRCs over damaged weights would vouch for them
    if damaged:
        raise ModelFileError(f"checkpoint {checkpoint}: {'; '.join(damaged)}")
    model_chunk = torch.load(train_chunks[0], map_location="cpu", weights_only=True, mmap=True) if train_chunks \
        else None
    if model_chunk is not None and model_chunk["x"].dim() == 4 and model_chunk["x"].shape[-1] != patch_size:
        raise ValueError(f"{train_chunks[0]}: {model_chunk['x'].shape[-1]}x{model_chunk['x'].shape[-1]} patches, "
                         f"not patch.size {patch_size}")
    n_train = sum(int(torch.load(p, map_location="cpu", weights_only=True, mmap=True)["y"].shape[0])
                  for p in train_chunks)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ta2d_version": ta2d.__version__,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "run": run,
        "model_kind": ck["model_kind"],
        "run_config": ck["run_config"],
        "inputs": input_spec(patch_size, background="background_mean" in ck["stats"]),
        "training": {
            "period": {"start": str(period["start"]), "end": str(period["end"])},
            "stations": training_stations([*train_chunks, *val_chunks]),
            "n_train_samples": n_train,
            "data_fingerprint": ck.get("data_fingerprint"),
            "epoch": int(ck.get("epoch", 0)),
            "best_val_mse_norm": float(ck.get("best_val", float("nan"))),
        },
        "scores": scores_from_metrics(metrics_csv, run),
    }
    error_model = error_model_of(error_models, run)
    if error_model is not None:
        info["error_model"] = error_model
    save_with_checksums({**info, "stats": ck["stats"], "model": ck["model"]}, out_path)
    return info


def read_model_file(path: str | Path) -> dict:
    """The model file's contents (weights memory-mapped, read whole once to check their CRCs); ModelFileError naming
    the file when it is no ta2d model file, one newer than this code, or one whose tensors fail their CRCs."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path}: does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a file that is not its own
        raise ModelFileError(f"model file {path}: not a ta2d model file (torch cannot read it: "
                             f"{str(err).splitlines()[0][:200]})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        hint = ""
        if isinstance(data, dict) and "run_config" in data and "optimizer" in data:
            hint = (" (it is a training checkpoint, best.pt or current.pt: rule export_model turns a run's best.pt "
                    "into results/models/{run}.pt)")
        raise ModelFileError(f"model file {path}: not a ta2d model file, no format {FORMAT!r}{hint}")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"model file {path}: format version {version} is newer than this ta2d "
                             f"({ta2d.__version__}) reads ({FORMAT_VERSION}): update ta2d to map with it")
    damaged = tensor_checksum_problems(data).problems
    if damaged:
        raise ModelFileError(f"model file {path}: {'; '.join(damaged)}")
    return data


def load_model_file(path: str | Path):
    """(model in eval mode, the file's contents) of a model file (see :func:`read_model_file`)."""
    from ta2d.models import load_model

    data = read_model_file(path)
    return load_model(path), data


def check_inputs(info: Mapping, path, scene_path, bt_channels: Sequence[str], rf_channels: Sequence[str],
                 patch_size: int) -> None:
    """ModelFileError naming the model file when the scene lacks a channel it needs or the patch size differs."""
    spec = info["inputs"]
    have = {"bt": set(bt_channels), "rf": set(rf_channels)}
    missing = [p["name"] for p in spec["planes"] if p["kind"] in have and p["name"] not in have[p["kind"]]]
    if missing:
        raise ModelFileError(f"model file {path}: needs channel(s) {missing}, which the scene {scene_path} lacks "
                             f"(it has {sorted(have['bt'] | have['rf'])})")
    if int(spec["patch_size"]) != int(patch_size):
        raise ModelFileError(f"model file {path}: trained on {spec['patch_size']}x{spec['patch_size']} patches, "
                             f"but patch.size is {patch_size}: set patch.size: {spec['patch_size']} to map with it")


def describe(info: Mapping, path) -> str:
    """``ta2d model-info``: the model file in a few lines."""
    t, cfg = info["training"], info["run_config"]
    spectral = [f"{p['name']} ({p['wavelength_um']:.2f} µm)" for p in info["inputs"]["planes"] if p["wavelength_um"]]
    keys = ("preset", "patch_mode", "pool", "finetune") if info["model_kind"] == "clay_transfer" else \
        ("cnn_channels", "cnn_padding", "head_hidden") if info["model_kind"] == "cnn" else \
        tuple(k for k in cfg if k.startswith("gbt_")) if info["model_kind"] == "gbt" else ("ridge_alpha",)
    lines = [
        f"{path}: ta2d model file, format {info['format_version']}, written by ta2d {info['ta2d_version']} "
        f"at {info['created_utc']}",
        f"run {info['run']}: model {info['model_kind']} ({', '.join(f'{k}={cfg.get(k)}' for k in keys)})",
        f"inputs: {info['inputs']['patch_size']}x{info['inputs']['patch_size']} patches of "
        f"{len(info['inputs']['planes'])} planes: {', '.join(spectral)}, sza, dem, land_sea_mask; side features "
        f"{'; '.join(info['inputs']['side_features'])}",
        f"trained on {t['period']['start']}..{t['period']['end']}: {t['n_train_samples']:,} samples of "
        f"{len(t['stations'])} stations, {t['epoch']} epoch(s), data fingerprint {t['data_fingerprint']}",
        "test scores (K):",
    ]
    def num(v, fmt):
        return "–" if v is None else format(v, fmt)

    for scheme, s in info["scores"].items():
        floor = f", {s['rmse_over_floor']:.2f} x floor" if s.get("rmse_over_floor") else ""
        lines.append(f"  {scheme:18s} RMSE {num(s.get('rmse'), '.3f')}  MAE {num(s.get('mae'), '.3f')}  "
                     f"bias {num(s.get('bias'), '+.3f')}  n={s.get('n') or 0:,}{floor}")
    em = info.get("error_model")
    if em:
        lines.append(f"standard error: log sigma linear in {', '.join(em.get('features', []))} (fit on "
                     f"{em.get('n_fit', 0):,} {em.get('fit_on', 'validation residuals')}; sigma "
                     f"{num(em.get('typical_sigma_k'), '.3f')} K at their mean): maps get TA_standard_error")
    else:
        lines.append("standard error: none (no error model in this file: exported before ta2d stored one, or "
                     "evaluated without validation chunks): maps get no TA_standard_error")
    if "selected" in info:
        lines.append(f"selected as best: {info['selected']}")
    return "\n".join(lines)


def copy_as_best(model_path: str | Path, out_path: str | Path, why: str) -> dict:
    """Rule select_best_model: the chosen run's model file as results/models/best.pt, with why it was chosen."""
    data = dict(read_model_file(model_path))
    data["selected"] = why
    save_with_checksums(data, out_path)
    return {k: v for k, v in data.items() if k not in ("model", "stats", CHECKSUM_KEY)}
