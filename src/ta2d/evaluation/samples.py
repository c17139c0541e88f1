"""The per-sample table the evaluation scores: every sample of the test chunks, each run's prediction, the
sample's validation scheme and demo truth, and the samples every run predicted.

Every run's model is rebuilt from its best.pt alone (:func:`ta2d.models.load_model`) and predicts every sample
of the test chunks (:func:`ta2d.training.predict_chunks`). TA in °C; hours and months in KST (UTC+9).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ta2d.channels import X_CHANNELS
from ta2d.chunks.loader import open_chunk
from ta2d.splits import NOT_TEST, scheme_of
from ta2d.training.inference import INFERENCE_BATCH_SIZE

log = logging.getLogger(__name__)

KST_OFFSET_S = 9 * 3600


def run_kind(checkpoint: str | Path) -> str:
    """The model kind (clay_transfer, cnn, ridge) a checkpoint was trained as."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return str(ck.get("model_kind") or ck["run_config"]["model"])


def sample_table(chunk_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Per-sample description of the chunks in file order (the order of predict_chunks)."""
    parts = []
    for p in chunk_paths:
        d = open_chunk(p, ["y", "stn", "time", "landcover_onehot", "pixel", "x"])
        centre = d["x"].shape[-1] // 2
        parts.append(pd.DataFrame({
            "stn": d["stn"].numpy().astype(np.int64),
            "time": d["time"].numpy().astype(np.int64),
            "landcover": d["landcover_onehot"].numpy().argmax(axis=1).astype(np.int64) + 1,
            "line": d["pixel"][:, 0].numpy().astype(np.int64),
            "column": d["pixel"][:, 1].numpy().astype(np.int64),
            # the centre pixel's cloud signs, for the error model (ta2d.evaluation.uncertainty)
            "bt_ir105": d["x"][:, X_CHANNELS.index("ir105"), centre, centre].numpy().astype(np.float64),
            "rf_vi006": d["x"][:, X_CHANNELS.index("vi006"), centre, centre].numpy().astype(np.float64),
            "y": d["y"].numpy().astype(np.float64),
        }))
    cols = ["stn", "time", "landcover", "line", "column", "bt_ir105", "rf_vi006", "y"]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    kst = pd.to_datetime(df["time"].to_numpy(np.int64) + KST_OFFSET_S, unit="s")
    df.insert(2, "hour_kst", np.asarray(kst.hour, dtype=np.int64))
    df.insert(3, "month", np.asarray(kst.month, dtype=np.int64))
    return df


def predict_runs(checkpoints: Mapping[str, str | Path], chunk_paths: Sequence[str | Path],
                 batch_size: int = INFERENCE_BATCH_SIZE, device: str | None = None) -> pd.DataFrame:
    """sample_table plus one pred_{run} column (°C) per run, each model rebuilt from its checkpoint alone."""
    from ta2d.models import load_model
    from ta2d.training.inference import predict_chunks

    df = sample_table(chunk_paths)
    for run, ckpt in checkpoints.items():
        model = load_model(ckpt)
        out = predict_chunks(model, list(chunk_paths), batch_size=batch_size, device=device)
        if len(out["y_pred"]) != len(df) or not np.array_equal(out["stn"].numpy(), df["stn"].to_numpy()):
            raise RuntimeError(f"run {run}: predictions are not aligned with the chunk samples")
        df[f"pred_{run}"] = out["y_pred"].numpy().astype(np.float64)
        log.info("run %s: %d test predictions", run, len(df))
    return df


BACKGROUND_RUN = "background"  # the reanalysis baseline's name in every table: pred_background, run background


def open_background_inputs(background: Mapping, static: Mapping, domain: Mapping):
    """(Background, StaticFields) of the config's inputs.background, inputs.static and domain."""
    from ta2d.grid import Domain
    from ta2d.ingest.background import open_background
    from ta2d.static import read_static

    fields = read_static(static["path"], Domain.from_config(domain), static.get("dem_var", "dem"),
                         static.get("land_sea_mask_var", "land_sea_mask"), static.get("landcover_var", "landcover"))
    return open_background(background["t2m"], background["orography"]), fields


def background_predictions(df: pd.DataFrame, background, static, lapse_rate_k_per_km: float) -> np.ndarray:
    """The reanalysis background (ta2d.ingest.background.Background) at every sample's pixel and hour, in °C:
    bilinear in space, linear in time, height-corrected from the reanalysis orography to the pixel's DEM
    (``static``: ta2d.static.StaticFields of the domain; :meth:`Background.at_pixels`, what a chunk's
    ``background`` field holds). NaN where the background has no value; the reasons are counted in the log."""
    celsius, reasons = background.at_pixels(static, df["line"].to_numpy(np.int64), df["column"].to_numpy(np.int64),
                                            df["time"].to_numpy(np.int64), lapse_rate_k_per_km / 1000.0)
    missing = pd.Series(reasons[reasons != ""]).value_counts()
    for reason, n in missing.items():
        log.warning("background: %d of %d test samples without a value: %s", n, len(df), reason)
    return celsius


INPUT_SETS = ("satellite", "background", "corrected")  # the demo's floors: what each set of inputs can explain
UNSEEN_STATION_SCHEMES = ("held_out_stations", "held_out_both")  # schemes whose stations no model trained on


def read_truth(path: str | Path) -> pd.DataFrame:
    """The demo's truth table (truth/labels_truth.csv, written by ta2d.demo.tables.write_truth) as
    stn, time (Unix s UTC), ta_true_c (the true TA at the station), ta_pixel_c (TA at the station pixel) and, where
    the file has them, oracle_{satellite,background,corrected}_c (the best prediction each input set allows) and
    siting_c (the station's persistent siting error)."""
    wanted = ["stn", "time_utc", "ta_true_c", "ta_pixel_c", "siting_c", *(f"oracle_{s}_c" for s in INPUT_SETS)]
    truth = pd.read_csv(path, usecols=lambda c: c in wanted)
    missing = [c for c in wanted[:4] if c not in truth]
    if missing:
        raise ValueError(f"{path}: not a demo truth table, no column(s) {missing}")
    truth = truth.astype({"stn": "int64", "time_utc": "int64"}).rename(columns={"time_utc": "time"})
    dup = truth.duplicated(["stn", "time"])
    if dup.any():
        raise ValueError(f"{path}: {int(dup.sum())} duplicate (stn, time_utc) rows")
    return truth


def floor_targets(merged: pd.DataFrame, scheme: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per input set, the best prediction of each sample: the oracle, plus the station's siting error where the
    models trained on the station (learnable there: a model sees its position). A truth table without oracles
    (an older demo, whose every term was visible) gives ta_true_c as the satellite set's."""
    if "oracle_satellite_c" not in merged:
        return {"satellite": merged["ta_true_c"].to_numpy()}
    seen = np.ones(len(merged), bool) if scheme is None else ~np.isin(scheme, UNSEEN_STATION_SCHEMES)
    siting = np.where(seen, merged["siting_c"].to_numpy(), 0.0)
    return {s: merged[f"oracle_{s}_c"].to_numpy() + siting for s in INPUT_SETS if f"oracle_{s}_c" in merged}


def annotate_samples(df: pd.DataFrame, split_cfg: Mapping | None = None,
                     truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """df (sample_table or predict_runs) plus `scheme` (from split_cfg) and ta_true_c, ta_pixel_c and
    floor_target_{input set} (from truth, :func:`floor_targets`), inserted after y; rows and their order are kept.
    A truth row missing for a sample leaves nan."""
    df = df.reset_index(drop=True).copy()
    if split_cfg is not None:
        scheme = scheme_of(df["stn"].to_numpy(), df["time"].to_numpy(), dict(split_cfg))
        stray = scheme == NOT_TEST
        if stray.any():
            raise ValueError(f"{int(stray.sum())} of {len(df)} samples of the test chunks are not test samples by "
                             "the split config (the chunks were built with another config?)")
        df.insert(df.columns.get_loc("y"), "scheme", scheme)
    if truth is not None:
        keys = df[["stn", "time"]].astype("int64")
        merged = keys.merge(truth, on=["stn", "time"], how="left", validate="many_to_one")
        at = df.columns.get_loc("y") + 1
        df.insert(at, "ta_true_c", merged["ta_true_c"].to_numpy())
        df.insert(at + 1, "ta_pixel_c", merged["ta_pixel_c"].to_numpy())
        targets = floor_targets(merged, df["scheme"].to_numpy() if "scheme" in df else None)
        for k, (name, values) in enumerate(targets.items()):
            df.insert(at + 2 + k, f"floor_target_{name}", values)
        missing = int(merged["ta_true_c"].isna().sum())
        if missing:
            log.warning("%d of %d test samples have no row in the truth file: floors of sets holding them are nan",
                        missing, len(df))
    return df


def common_samples(df: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """The samples with a finite observation and a finite prediction of every run."""
    ok = np.isfinite(df["y"].to_numpy())
    for run in runs:
        ok &= np.isfinite(df[f"pred_{run}"].to_numpy())
    return df[ok]
