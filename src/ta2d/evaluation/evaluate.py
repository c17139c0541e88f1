"""Test-split evaluation of trained runs, side by side on the same samples.

``predict_runs`` rebuilds every run's model from its best.pt alone (:func:`ta2d.models.load_model`) and
predicts every sample of the test chunks (:func:`ta2d.training.predict_chunks`); ``evaluate_runs`` keeps
the samples every run predicted (finite), computes RMSE, MAE, bias (predicted - observed), R² and n
overall, per validation scheme (:mod:`ta2d.splits`: held_out_days, held_out_stations, time_block,
held_out_both, from the split config) and by station, hour of day (KST = UTC+9), month (KST) and IGBP
land-cover class, and writes

  metrics.csv         run, model, baseline, scheme, n, rmse, mae, bias, r2, floor, rmse_over_floor, floor_pixel
                      (long format; scheme "all" = every test sample). floor = sqrt(mean((y - ta_true_c)^2))
                      over exactly those samples, from the demo's truth file (the best RMSE any model can
                      reach there); floor_pixel the same against ta_pixel_c; empty without a truth file
  by_station.csv      run, stn, n, rmse, mae, bias, r2        (and by_hour.csv: hour_kst,
  by_month.csv        month, by_landcover.csv: landcover, landcover_name)
  predictions.csv     one row per sample: stn, time, hour_kst, month, landcover, line, column, [scheme], y,
                      [ta_true_c, ta_pixel_c], pred_{run}
  metrics.md / .html  RMSE and RMSE/floor per run and scheme side by side, the floor row, then the per-run
                      table on all test samples, the demo's noise sigma when known, and whether each
                      non-baseline run beats every baseline (BASELINE_KINDS), judged on held_out_days
  scatter.png, residual_by_hour.png, rmse_by_station.png

Errors are in K (a difference of °C); TA itself in °C.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ta2d.atomic import atomic_path
from ta2d.chunks.loader import open_chunk
from ta2d.splits import NOT_TEST, SCHEMES, scheme_of

log = logging.getLogger(__name__)

BASELINE_KINDS = ("ridge", "cnn", "gbt")
KST_OFFSET_S = 9 * 3600
METRICS = ("n", "rmse", "mae", "bias", "r2")
IGBP_NAMES = {
    1: "evergreen needleleaf forest",
    2: "evergreen broadleaf forest",
    3: "deciduous needleleaf forest",
    4: "deciduous broadleaf forest",
    5: "mixed forest",
    6: "closed shrubland",
    7: "open shrubland",
    8: "woody savanna",
    9: "savanna",
    10: "grassland",
    11: "permanent wetland",
    12: "cropland",
    13: "urban and built-up",
    14: "cropland/natural mosaic",
    15: "snow and ice",
    16: "barren",
    17: "water",
}
SCHEME_ALL = "all"  # every test sample
SCHEME_ORDER = (*SCHEMES, SCHEME_ALL)
SCHEME_TITLES = {
    "held_out_days": "held-out days",
    "held_out_stations": "held-out stations",
    "time_block": "time block",
    "held_out_both": "held-out stations × test days",
    SCHEME_ALL: "all test samples",
}
SCHEME_NOTES = {
    "held_out_days": "random test days, stations seen in training, outside the time block",
    "held_out_stations": "held-out stations on days that are train/val days by the day rule, outside the time block",
    "time_block": "days on or after split.time_block_start, stations seen in training",
    "held_out_both": "held-out stations on test days or time-block days (not a headline scheme)",
    SCHEME_ALL: "every test sample",
}
JUDGE_SCHEME = "held_out_days"  # "beats every baseline" is judged here
FLOORS = ("floor", "floor_pixel")
TABLE_COLUMNS = ["run", "model", "baseline", "scheme", *METRICS, "floor", "rmse_over_floor", "floor_pixel"]
BREAKDOWNS = {  # file stem -> grouping column(s) of the predictions table
    "by_station": ["stn"],
    "by_hour": ["hour_kst"],
    "by_month": ["month"],
    "by_landcover": ["landcover"],
}


# --- metrics --------------------------------------------------------------------------------------------

def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """n, RMSE, MAE, bias (mean of pred - y) and R² (1 - SSE/SST; nan when n < 2 or y is constant)."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    n = len(y)
    if n == 0:
        return {"n": 0, "rmse": math.nan, "mae": math.nan, "bias": math.nan, "r2": math.nan}
    err = pred - y
    sse = float(np.sum(err**2))
    sst = float(np.sum((y - y.mean()) ** 2))
    return {
        "n": n,
        "rmse": math.sqrt(sse / n),
        "mae": float(np.mean(np.abs(err))),
        "bias": float(np.mean(err)),
        "r2": 1.0 - sse / sst if n > 1 and sst > 0 else math.nan,
    }


def run_kind(checkpoint: str | Path) -> str:
    """The model kind (clay_transfer, cnn, ridge) a checkpoint was trained as."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return str(ck.get("model_kind") or ck["run_config"]["model"])


# --- predictions ----------------------------------------------------------------------------------------

def sample_table(chunk_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Per-sample description of the chunks in file order (the order of predict_chunks)."""
    parts = []
    for p in chunk_paths:
        d = open_chunk(p, ["y", "stn", "time", "landcover_onehot", "pixel"])
        parts.append(pd.DataFrame({
            "stn": d["stn"].numpy().astype(np.int64),
            "time": d["time"].numpy().astype(np.int64),
            "landcover": d["landcover_onehot"].numpy().argmax(axis=1).astype(np.int64) + 1,
            "line": d["pixel"][:, 0].numpy().astype(np.int64),
            "column": d["pixel"][:, 1].numpy().astype(np.int64),
            "y": d["y"].numpy().astype(np.float64),
        }))
    cols = ["stn", "time", "landcover", "line", "column", "y"]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({c: [] for c in cols})
    kst = pd.to_datetime(df["time"].to_numpy(np.int64) + KST_OFFSET_S, unit="s")
    df.insert(2, "hour_kst", np.asarray(kst.hour, dtype=np.int64))
    df.insert(3, "month", np.asarray(kst.month, dtype=np.int64))
    return df


def predict_runs(checkpoints: Mapping[str, str | Path], chunk_paths: Sequence[str | Path],
                 batch_size: int = 4096, device: str | None = None) -> pd.DataFrame:
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


# --- tables ---------------------------------------------------------------------------------------------

def common_samples(df: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """The samples with a finite observation and a finite prediction of every run."""
    ok = np.isfinite(df["y"].to_numpy())
    for run in runs:
        ok &= np.isfinite(df[f"pred_{run}"].to_numpy())
    return df[ok]


def metrics_table(df: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    rows = []
    for run, kind in kinds.items():
        rows.append({"run": run, "model": kind, "baseline": kind in BASELINE_KINDS,
                     **metrics(df["y"].to_numpy(), df[f"pred_{run}"].to_numpy())})
    return pd.DataFrame(rows, columns=["run", "model", "baseline", *METRICS])


def read_truth(path: str | Path) -> pd.DataFrame:
    """The demo's truth table (truth/labels_truth.csv, written by ta2d.demo.tables.write_truth) as
    stn, time (Unix s UTC), ta_true_c (what the inputs can explain), ta_pixel_c (TA at the station pixel)."""
    truth = pd.read_csv(path, usecols=["stn", "time_utc", "ta_true_c", "ta_pixel_c"],
                        dtype={"stn": "int64", "time_utc": "int64", "ta_true_c": "float64", "ta_pixel_c": "float64"})
    truth = truth.rename(columns={"time_utc": "time"})
    dup = truth.duplicated(["stn", "time"])
    if dup.any():
        raise ValueError(f"{path}: {int(dup.sum())} duplicate (stn, time_utc) rows")
    return truth


def annotate_samples(df: pd.DataFrame, split_cfg: Mapping | None = None,
                     truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """df (sample_table or predict_runs) plus `scheme` (from split_cfg) and ta_true_c, ta_pixel_c (from truth),
    inserted before y; rows and their order are kept. A truth row missing for a sample leaves nan."""
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
        merged = keys.merge(truth[["stn", "time", "ta_true_c", "ta_pixel_c"]], on=["stn", "time"], how="left",
                            validate="many_to_one")
        at = df.columns.get_loc("y") + 1
        df.insert(at, "ta_true_c", merged["ta_true_c"].to_numpy())
        df.insert(at + 1, "ta_pixel_c", merged["ta_pixel_c"].to_numpy())
        missing = int(merged["ta_true_c"].isna().sum())
        if missing:
            log.warning("%d of %d test samples have no row in the truth file: floors of sets holding them are nan",
                        missing, len(df))
    return df


def floor_rmse(y: np.ndarray, truth: np.ndarray) -> float:
    """sqrt(mean((y - truth)^2)) over exactly these samples: the RMSE a model predicting the truth would get.
    nan when there are no samples or one of them has no truth."""
    y, truth = np.asarray(y, np.float64), np.asarray(truth, np.float64)
    if len(y) == 0 or not np.isfinite(truth).all():
        return math.nan
    return math.sqrt(float(np.mean((y - truth) ** 2)))


def scheme_subsets(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scheme name -> its samples: every scheme of SCHEMES when df has a scheme column, and "all"."""
    out = {s: df[df["scheme"] == s] for s in SCHEMES} if "scheme" in df else {}
    out[SCHEME_ALL] = df
    return out


def scheme_table(df: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """metrics.csv: per run and per scheme (and "all") n, RMSE, MAE, bias, R², floor, RMSE/floor, floor_pixel."""
    subsets = scheme_subsets(df)
    rows = []
    for run, kind in kinds.items():
        for scheme, g in subsets.items():
            y = g["y"].to_numpy()
            m = metrics(y, g[f"pred_{run}"].to_numpy())
            floor = floor_rmse(y, g["ta_true_c"].to_numpy()) if "ta_true_c" in g else math.nan
            pixel = floor_rmse(y, g["ta_pixel_c"].to_numpy()) if "ta_pixel_c" in g else math.nan
            ratio = m["rmse"] / floor if np.isfinite(floor) and floor > 0 else math.nan
            rows.append({"run": run, "model": kind, "baseline": kind in BASELINE_KINDS, "scheme": scheme, **m,
                         "floor": floor, "rmse_over_floor": ratio, "floor_pixel": pixel})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def breakdown(df: pd.DataFrame, runs: Sequence[str], by: Sequence[str]) -> pd.DataFrame:
    """Metrics per run and per group of `by` (long format: run, *by, n, rmse, mae, bias, r2)."""
    rows = []
    for run in runs:
        for key, g in df.groupby(list(by), sort=True):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({"run": run, **dict(zip(by, key, strict=True)),
                         **metrics(g["y"].to_numpy(), g[f"pred_{run}"].to_numpy())})
    out = pd.DataFrame(rows, columns=["run", *by, *METRICS])
    if "landcover" in by:
        out.insert(out.columns.get_loc("landcover") + 1, "landcover_name",
                   out["landcover"].map(IGBP_NAMES).fillna("unknown"))
    return out


def beats_baselines(table: pd.DataFrame) -> dict[str, dict]:
    """For each non-baseline run: whether its RMSE is below every baseline's, and the best baseline."""
    base = table[table["baseline"]]
    out = {}
    for r in table[~table["baseline"]].itertuples(index=False):
        if base.empty or not np.isfinite(base["rmse"]).any():
            out[r.run] = {"beats": None, "best_baseline": None, "best_baseline_rmse": math.nan}
            continue
        best = base.loc[base["rmse"].idxmin()]
        out[r.run] = {"beats": bool(r.rmse < base["rmse"].min()), "best_baseline": best["run"],
                      "best_baseline_rmse": float(best["rmse"])}
    return out


def _fmt(v, digits=3) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "–" if not np.isfinite(v) else f"{v:.{digits}f}"


def _days(df: pd.DataFrame) -> str:
    n = pd.to_datetime(df["time"], unit="s").dt.date.nunique()
    return f"{n} UTC day" + ("" if n == 1 else "s")


def judge_scheme(table: pd.DataFrame) -> str:
    """The scheme "beats every baseline" is judged on: JUDGE_SCHEME when it has samples, else "all"."""
    sub = table[table["scheme"] == JUDGE_SCHEME]
    return JUDGE_SCHEME if len(sub) and (sub["n"] > 0).all() else SCHEME_ALL


def _floor_note(df: pd.DataFrame) -> str:
    if "ta_true_c" not in df:
        return ("floor: not available: no demo truth file (real data have no noise-free truth), so the floor and "
                "RMSE/floor columns are empty.")
    missing = int(df["ta_true_c"].isna().sum())
    return ("floor = sqrt(mean((observed − ta_true_c)²)) over exactly the samples of its column, from the demo's "
            "truth file: the lowest RMSE any model can reach on them (the label noise and rounding); "
            "÷ floor = RMSE / floor. floor_pixel in metrics.csv is the same against ta_pixel_c (TA at the station "
            "pixel)." + (f" {missing} samples have no truth row: floors of sets holding them are empty." if missing
                         else ""))


def _summary_lines(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> list[str]:
    """Notes under the tables; `table` is scheme_table's long table."""
    lines = [
        f"{len(df)} test samples, the same for every run ({df['stn'].nunique()} stations, "
        f"{_days(df)})."
    ]
    if len(df) < n_all:
        lines.append(f"{n_all - len(df)} of {n_all} samples were left out: some run predicted no finite value.")
    if noise_sigma_k is not None:
        lines.append(f"The demo's station noise sigma (demo.noise_sigma_k): {noise_sigma_k:.3f} K; the floor row is "
                     "the best achievable RMSE on exactly each column's samples.")
    judge = judge_scheme(table)
    sub = table[table["scheme"] == judge]
    verdicts = beats_baselines(sub)
    for run, v in verdicts.items():
        rmse = float(sub.loc[sub["run"] == run, "rmse"].iloc[0])
        if v["beats"] is None:
            lines.append(f"{run}: no baseline run (kinds {', '.join(BASELINE_KINDS)}) to compare with.")
        else:
            word = "beats every baseline" if v["beats"] else "does NOT beat every baseline"
            lines.append(f"{run} {word} on {judge} ({SCHEME_TITLES[judge]}): RMSE {_fmt(rmse)} K vs "
                         f"{_fmt(v['best_baseline_rmse'])} K of the best baseline, {v['best_baseline']} "
                         "(on the same samples).")
    return lines


def _scheme_lines(df: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """What each column of the side-by-side table holds, and the floor."""
    lines = []
    if "scheme" not in df:
        lines.append("No split config given: only all test samples are scored (no validation schemes).")
    for s in _shown_schemes(table):
        lines.append(f"{SCHEME_TITLES[s]} ({s}): {SCHEME_NOTES[s]}.")
    lines.append(_floor_note(df))
    return lines


HEADERS = {"run": "run", "model": "model", "baseline": "baseline", "n": "n", "rmse": "RMSE (K)",
           "mae": "MAE (K)", "bias": "bias (K)", "r2": "R²"}


def _shown_schemes(table: pd.DataFrame) -> list[str]:
    """The schemes with samples, in SCHEME_ORDER, and always "all"."""
    n = table.groupby("scheme")["n"].max()
    return [s for s in SCHEME_ORDER if s == SCHEME_ALL or n.get(s, 0) > 0]


def side_by_side(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows (text) of the side-by-side table: one row per run with RMSE and RMSE/floor per scheme,
    then the floor, floor vs ta_pixel_c and n rows."""
    schemes = _shown_schemes(table)
    header = ["run", "model"]
    for s in schemes:
        header += [f"{SCHEME_TITLES[s]}: RMSE (K)", "÷ floor"]
    runs = list(dict.fromkeys(table["run"]))
    at = table.set_index(["run", "scheme"])
    rows = []
    for run in runs:
        row = [run, str(at.loc[(run, schemes[0]), "model"]) + (" (baseline)" if at.loc[(run, schemes[0]), "baseline"]
                                                              else "")]
        for s in schemes:
            row += [_fmt(at.loc[(run, s), "rmse"]), _fmt(at.loc[(run, s), "rmse_over_floor"], 2)]
        rows.append(row)
    if runs:
        first = runs[0]  # the floors and n depend on the samples only, the same for every run
        for label, col, digits in (("floor (K)", "floor", 3), ("floor vs ta_pixel_c (K)", "floor_pixel", 3),
                                   ("n samples", "n", 0)):
            row = [label, ""]
            for s in schemes:
                v = at.loc[(first, s), col]
                row += [_fmt(int(v)) if col == "n" else _fmt(v, digits), ""]
            rows.append(row)
    return header, rows


def markdown_report(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> str:
    """metrics.md; `table` is scheme_table's long table."""
    header, rows = side_by_side(table)
    out = ["# Test-split evaluation", "", "## RMSE by validation scheme", "",
           "| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out += [f"- {line}" for line in _scheme_lines(df, table)]
    cols = list(HEADERS)
    detail = table[table["scheme"] == SCHEME_ALL]
    out += ["", "## All test samples, per run", "", "| " + " | ".join(HEADERS[c] for c in cols) + " |",
            "|" + "|".join("---" if c in ("run", "model") else "---:" for c in cols) + "|"]
    for r in detail.itertuples(index=False):
        out.append("| " + " | ".join(_fmt(getattr(r, c)) if c not in ("run", "model") else getattr(r, c)
                                     for c in cols) + " |")
    out.append("")
    out += [f"- {line}" for line in _summary_lines(df, table, n_all, noise_sigma_k)]
    out.append("- bias = mean(predicted - observed); errors in K (a difference of °C); hours and months in KST "
               "(UTC+9); baselines are the runs of model kind " + " or ".join(BASELINE_KINDS) + "; per-scheme "
               "n, MAE, bias, R² and floors in metrics.csv.")
    return "\n".join(out) + "\n"


def html_report(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> str:
    """metrics.html (the Snakemake report); `table` is scheme_table's long table."""
    def html_table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    cols = list(HEADERS)
    detail = [[str(getattr(r, c)) if c in ("run", "model") else _fmt(getattr(r, c)) for c in cols]
              for r in table[table["scheme"] == SCHEME_ALL].itertuples(index=False)]
    schemes_notes = "".join(f"<li>{html.escape(s)}</li>" for s in _scheme_lines(df, table))
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in _summary_lines(df, table, n_all, noise_sigma_k))
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ta2d test evaluation</title>"
            f"<style>{style}</style></head><body><h2>Test-split evaluation</h2><h3>RMSE by validation scheme</h3>"
            f"{html_table(*side_by_side(table))}<ul>{schemes_notes}</ul><h3>All test samples, per run</h3>"
            f"{html_table([HEADERS[c] for c in cols], detail)}<ul>{notes}</ul>"
            f"<p>bias = mean(predicted &minus; observed); errors in K; hours and months "
            f"in KST (UTC+9).</p></body></html>\n")


# --- plots ----------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, width: float = 4.6, height: float = 4.4, sharey: bool = True, max_cols: int = 4):
    plt = _plt()
    ncols = min(max(n, 1), max_cols)
    nrows = -(-max(n, 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             sharey=sharey, constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)


def plot_scatter(df: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> None:
    """Predicted vs observed TA, one panel per run, 1:1 line, RMSE in the title."""
    runs = list(table["run"])
    fig, axes = _panels(len(runs), sharey=False)
    y = df["y"].to_numpy()
    vals = np.concatenate([y] + [df[f"pred_{r}"].to_numpy() for r in runs]) if len(df) else np.array([0.0, 1.0])
    lo, hi = np.floor(np.nanmin(vals)) - 1, np.ceil(np.nanmax(vals)) + 1
    for ax, r in zip(axes, table.itertuples(index=False), strict=False):
        p = df[f"pred_{r.run}"].to_numpy()
        ax.scatter(y, p, s=4, alpha=0.25, color="tab:blue", edgecolors="none", rasterized=True)
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="1:1")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", xlabel="Observed TA (°C)", ylabel="Predicted TA (°C)")
        ax.set_title(f"{r.run} ({r.model})\nRMSE {_fmt(r.rmse, 2)} K, bias {_fmt(r.bias, 2)} K, n = {r.n}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle("Test split: predicted vs observed air temperature")
    _save(fig, path)


def plot_residual_by_hour(df: pd.DataFrame, runs: Sequence[str], path: str | Path) -> None:
    """Box plot of the residual (predicted - observed) per KST hour, one panel per run."""
    fig, axes = _panels(len(runs), width=10.0, height=3.4, sharey=True, max_cols=1 if len(runs) <= 4 else 2)
    hours = np.arange(24)
    for ax, run in zip(axes, runs, strict=False):
        res = df[f"pred_{run}"] - df["y"]
        groups = [res[df["hour_kst"] == h].to_numpy() for h in hours]
        ax.boxplot([g if len(g) else [np.nan] for g in groups], positions=hours, widths=0.6, showfliers=False,
                   medianprops={"color": "tab:red"})
        mean = [g.mean() if len(g) else np.nan for g in groups]
        ax.plot(hours, mean, "o", ms=3, color="k", label="mean (bias)")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(hours[::3], [str(h) for h in hours[::3]])
        rmse = float(np.sqrt(np.mean(res**2))) if len(res) else math.nan
        ax.set(xlim=(-0.7, 23.7), xlabel="Hour of day (KST)", ylabel="Residual, predicted − observed (K)",
               title=f"{run}: residual by hour (RMSE {_fmt(rmse, 2)} K)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper right")
    fig.suptitle("Test split: residual by hour of day (boxes: quartiles, whiskers: 1.5 IQR)")
    _save(fig, path)


def plot_rmse_by_station(by_station: pd.DataFrame, runs: Sequence[str], path: str | Path,
                         noise_sigma_k: float | None = None) -> None:
    """Grouped bars: RMSE per station (sorted by the mean over runs), one colour per run."""
    plt = _plt()
    wide = by_station.pivot(index="stn", columns="run", values="rmse").reindex(columns=list(runs))
    wide = wide.loc[wide.mean(axis=1).sort_values().index] if len(wide) else wide
    n = max(len(wide), 1)
    fig, ax = plt.subplots(figsize=(min(max(8.0, 0.1 * n * max(len(runs), 1) + 2), 16.0), 5.0),
                           constrained_layout=True)
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(wide))
    for i, run in enumerate(runs):
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, wide[run].to_numpy() if len(wide) else [], width, label=run)
    if noise_sigma_k is not None:
        ax.axhline(noise_sigma_k, color="k", ls="--", lw=1, label=f"noise σ = {noise_sigma_k:g} K (best achievable)")
    ax.set_xticks(x, [str(s) for s in wide.index], rotation=90, fontsize=8)
    ax.set(xlim=(-0.6, len(wide) - 0.4), xlabel="Station id (sorted by mean RMSE over runs)", ylabel="RMSE (K)",
           title="Test split: RMSE per station")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", ncols=min(len(runs) + 1, 4))
    _save(fig, path)


# --- the whole evaluation --------------------------------------------------------------------------------

OUTPUTS = ("metrics.csv", "metrics.md", "metrics.html", "by_station.csv", "by_hour.csv", "by_month.csv",
           "by_landcover.csv", "predictions.csv", "scatter.png", "residual_by_hour.png", "rmse_by_station.png")


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", float_format="%.6g")


def evaluate_runs(checkpoints: Mapping[str, str | Path], test_chunks: Sequence[str | Path], out_dir: str | Path | None,
                  noise_sigma_k: float | None = None, batch_size: int = 4096, device: str | None = None,
                  outputs: Mapping[str, str | Path] | None = None, split_cfg: Mapping | None = None,
                  truth_path: str | Path | None = None) -> pd.DataFrame:
    """Evaluate every run on the test chunks and write the OUTPUTS into out_dir; returns metrics.csv's table.

    ``outputs`` may map a name of OUTPUTS to another path (out_dir may then be None if it maps all).
    ``noise_sigma_k`` (the demo's label noise) is stated in the report.
    ``split_cfg`` (the config's split section) gives each test sample its validation scheme
    (ta2d.splits); without it only "all" is scored. ``truth_path`` (the demo's truth/labels_truth.csv)
    gives the floors; without it (or when the file does not exist) the floor columns are empty.
    """
    outputs = dict(outputs or {})
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing and out_dir is None:
        raise ValueError(f"evaluate_runs: no out_dir and no paths for {missing}")
    paths = {name: Path(outputs[name]) if name in outputs else Path(out_dir) / name for name in OUTPUTS}
    runs = list(checkpoints)
    kinds = {run: run_kind(ck) for run, ck in checkpoints.items()}
    all_samples = predict_runs(checkpoints, list(test_chunks), batch_size=batch_size, device=device)
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
    table = scheme_table(df, kinds)
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
    for r in table.itertuples(index=False):
        log.info("%s (%s) %s: n=%d RMSE %.3f MAE %.3f bias %+.3f R2 %.3f floor %.3f", r.run, r.model, r.scheme, r.n,
                 r.rmse, r.mae, r.bias, r.r2, r.floor)
    return table
