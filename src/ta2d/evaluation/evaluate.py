"""Test-split evaluation of trained runs, side by side on the same samples (rule evaluate).

``evaluate_runs`` predicts every sample of the test chunks with every run (:mod:`.samples`), keeps the samples
every run predicted (finite), scores them overall, per validation scheme (:mod:`.schemes`) and by station, hour
of day (KST = UTC+9), month (KST) and IGBP land-cover class (:mod:`.tables`, :mod:`.metrics`), and writes

  metrics.csv         run, model, baseline, scheme, n, rmse, mae, bias, r2, floor, rmse_over_floor,
                      floor_satellite, floor_background, floor_corrected,
                      crps, coverage_90 (of N(pred, sigma²); empty without validation chunks)
                      (long format; scheme "all" = every test sample). floor_{set} = the best RMSE a model
                      given that input set can reach on exactly those samples, from the demo's truth file
                      (ta2d.evaluation.tables); floor = the runs' own set's; empty without a truth file
  by_station.csv      run, stn, n, rmse, mae, bias, r2        (and by_hour.csv: hour_kst,
  by_month.csv        month, by_landcover.csv: landcover, landcover_name)
  predictions.csv     one row per sample: stn, time, hour_kst, month, landcover, line, column, bt_ir105, rf_vi006,
                      [scheme], y, [ta_true_c, ta_pixel_c, floor_target_{set}], pred_{run}, [sigma_{run}]
  error_models.json   {run: ErrorModel.to_dict()} of every run ({} without validation chunks): what export_model
                      puts into the model file, for the maps' standard errors
  metrics.md / .html  the report (:mod:`.report`)
  scatter.png, residual_by_hour.png, rmse_by_station.png, reliability.png   (:mod:`.plots`)

Errors are in K (a difference of °C); TA itself in °C.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ta2d.atomic import atomic_path
from ta2d.evaluation.plots import plot_reliability, plot_residual_by_hour, plot_rmse_by_station, plot_scatter
from ta2d.evaluation.report import html_report, markdown_report
from ta2d.evaluation.samples import (
    BACKGROUND_RUN,
    annotate_samples,
    background_predictions,
    common_samples,
    open_background_inputs,
    predict_runs,
    read_truth,
    run_kind,
)
from ta2d.evaluation.schemes import SCHEME_ALL
from ta2d.evaluation.tables import BREAKDOWNS, breakdown, scheme_table
from ta2d.evaluation.uncertainty import add_sigmas, fit_error_models
from ta2d.training.inference import INFERENCE_BATCH_SIZE

log = logging.getLogger(__name__)

OUTPUTS = ("metrics.csv", "metrics.md", "metrics.html", "by_station.csv", "by_hour.csv", "by_month.csv",
           "by_landcover.csv", "predictions.csv", "scatter.png", "residual_by_hour.png", "rmse_by_station.png",
           "reliability.png", "error_models.json")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6g")


def evaluate_runs(checkpoints: Mapping[str, str | Path], test_chunks: Sequence[str | Path], out_dir: str | Path | None,
                  noise_sigma_k: float | None = None, batch_size: int = INFERENCE_BATCH_SIZE, device: str | None = None,
                  outputs: Mapping[str, str | Path] | None = None, split_cfg: Mapping | None = None,
                  truth_path: str | Path | None = None, background: Mapping | None = None,
                  static: Mapping | None = None, domain: Mapping | None = None,
                  val_chunks: Sequence[str | Path] = ()) -> pd.DataFrame:
    """Evaluate every run on the test chunks and write the OUTPUTS into out_dir; returns metrics.csv's table.

    ``outputs`` may map a name of OUTPUTS to another path (out_dir may then be None if it maps all).
    ``noise_sigma_k`` (the demo's label noise) is stated in the report.
    ``split_cfg`` (the config's split section) gives each test sample its validation scheme
    (ta2d.splits); without it only "all" is scored. ``truth_path`` (the demo's truth/labels_truth.csv)
    gives the floors; without it (or when the file does not exist) the floor columns are empty.
    ``background`` (the config's inputs.background, with its inputs.static and domain) adds the baseline
    ``background``: the reanalysis interpolated to each sample and height-corrected to its pixel's DEM.
    ``val_chunks``: every run (and the background) predicts them too, and its error model fit there
    (ta2d.evaluation.uncertainty) gives each test prediction a standard error: sigma_{run} in predictions.csv,
    CRPS and the 90 % interval's coverage in metrics.csv, reliability.png; the error models themselves go to
    error_models.json (empty without validation samples).
    """
    outputs = dict(outputs or {})
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing and out_dir is None:
        raise ValueError(f"evaluate_runs: no out_dir and no paths for {missing}")
    paths = {name: Path(outputs[name]) if name in outputs else Path(out_dir) / name for name in OUTPUTS}
    runs = list(checkpoints)
    kinds = {run: run_kind(ck) for run, ck in checkpoints.items()}
    all_samples = predict_runs(checkpoints, list(test_chunks), batch_size=batch_size, device=device)
    val_samples = predict_runs(checkpoints, list(val_chunks), batch_size=batch_size, device=device) if val_chunks \
        else None
    if background is not None:
        reanalysis, static_fields = open_background_inputs(background, static, domain)
        for samples in (all_samples, val_samples):
            if samples is not None:
                samples[f"pred_{BACKGROUND_RUN}"] = background_predictions(
                    samples, reanalysis, static_fields, background["lapse_rate_k_per_km"])
        runs.append(BACKGROUND_RUN)
        kinds[BACKGROUND_RUN] = BACKGROUND_RUN
    error_models = {}
    if val_samples is not None and len(val_samples):
        error_models = fit_error_models(val_samples, runs)
        all_samples = add_sigmas(all_samples, None, runs, error_models)
    else:
        log.warning("no validation samples: no error model, so no standard errors (and none in the maps)")
    with atomic_path(paths["error_models.json"]) as tmp:
        tmp.write_text(json.dumps({run: m.to_dict() for run, m in error_models.items()}, indent=1) + "\n",
                       encoding="utf-8")
    truth = None
    if truth_path is not None and Path(truth_path).is_file():
        truth = read_truth(truth_path)
    elif truth_path is not None:
        log.warning("no truth file %s: the floor columns stay empty", truth_path)
    all_samples = annotate_samples(all_samples, split_cfg, truth)
    df = common_samples(all_samples, runs)
    if len(df) < len(all_samples):
        log.warning("%d of %d test samples left out: some run predicted no finite value",
                    len(all_samples) - len(df), len(all_samples))
    # every run is given the background when one is configured (ta2d.chunks: the chunks' background field)
    table = scheme_table(df, kinds, input_set="satellite" if background is None else "background")
    _write_csv(table, paths["metrics.csv"])
    tables = {stem: breakdown(df, runs, by) for stem, by in BREAKDOWNS.items()}
    for stem, t in tables.items():
        _write_csv(t, paths[f"{stem}.csv"])
    _write_csv(all_samples, paths["predictions.csv"])
    for name, text in (("metrics.md", markdown_report(df, table, len(all_samples), noise_sigma_k)),
                       ("metrics.html", html_report(df, table, len(all_samples), noise_sigma_k))):
        with atomic_path(paths[name]) as tmp:
            tmp.write_text(text, encoding="utf-8")
    plot_scatter(df, table[table["scheme"] == SCHEME_ALL], paths["scatter.png"])
    plot_residual_by_hour(df, runs, paths["residual_by_hour.png"])
    plot_rmse_by_station(tables["by_station"], runs, paths["rmse_by_station.png"], noise_sigma_k)
    plot_reliability(df, runs, paths["reliability.png"])
    for r in table.itertuples(index=False):
        log.info("%s (%s) %s: n=%d RMSE %.3f MAE %.3f bias %+.3f R2 %.3f floor %.3f", r.run, r.model, r.scheme, r.n,
                 r.rmse, r.mae, r.bias, r.r2, r.floor)
    return table
