"""The metrics tables, computed from the per-sample table (ta2d.evaluation.samples): per run overall, per
validation scheme with the floors (metrics.csv), per group (by_station, by_hour, by_month, by_landcover), and
whether each run beats every baseline.

floor_{satellite,background,corrected} = sqrt(mean((y - floor_target_{set})^2)) over exactly a table row's
samples, from the demo's truth: the best RMSE a model given the satellite inputs, those and the reanalysis
background, or those and the other stations' observations (station correction) can reach there (ta2d.demo.floors).
floor is the one of the input set the runs were given, rmse_over_floor the run's RMSE over it. Errors in K.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ta2d.evaluation.metrics import METRICS, UNCERTAINTY_METRICS, floor_rmse, metrics, uncertainty_metrics
from ta2d.evaluation.samples import INPUT_SETS
from ta2d.evaluation.schemes import scheme_subsets

BASELINE_KINDS = ("ridge", "cnn", "gbt", "background")
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
FLOOR_COLUMNS = [f"floor_{name}" for name in INPUT_SETS]
SCHEME_TABLE_COLUMNS = ["run", "model", "baseline", "scheme", *METRICS, "floor", "rmse_over_floor", *FLOOR_COLUMNS,
                        *UNCERTAINTY_METRICS]
BREAKDOWNS = {  # file stem -> grouping column(s) of the predictions table
    "by_station": ["stn"],
    "by_hour": ["hour_kst"],
    "by_month": ["month"],
    "by_landcover": ["landcover"],
}


def metrics_table(df: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Per run (kinds: run -> model kind): n, RMSE, MAE, bias, R² on all of df's samples."""
    rows = []
    for run, kind in kinds.items():
        rows.append({"run": run, "model": kind, "baseline": kind in BASELINE_KINDS,
                     **metrics(df["y"].to_numpy(), df[f"pred_{run}"].to_numpy())})
    return pd.DataFrame(rows, columns=["run", "model", "baseline", *METRICS])


def scheme_table(df: pd.DataFrame, kinds: Mapping[str, str], input_set: str = "satellite") -> pd.DataFrame:
    """metrics.csv: per run and per scheme (and "all") n, RMSE, MAE, bias, R², the floor of the runs' ``input_set``
    and RMSE/floor, the floor of every input set, and with a sigma_{run} column the CRPS and the 90 % interval's
    coverage (nan without one)."""
    subsets = scheme_subsets(df)
    rows = []
    for run, kind in kinds.items():
        for scheme, g in subsets.items():
            y = g["y"].to_numpy()
            m = metrics(y, g[f"pred_{run}"].to_numpy())
            floors = {f"floor_{name}": floor_rmse(y, g[f"floor_target_{name}"].to_numpy())
                      if f"floor_target_{name}" in g else math.nan for name in INPUT_SETS}
            floor = floors[f"floor_{input_set}"]
            ratio = m["rmse"] / floor if np.isfinite(floor) and floor > 0 else math.nan
            sigma = f"sigma_{run}"
            u = (uncertainty_metrics(y, g[f"pred_{run}"].to_numpy(), g[sigma].to_numpy()) if sigma in g
                 else dict.fromkeys(UNCERTAINTY_METRICS, math.nan))
            rows.append({"run": run, "model": kind, "baseline": kind in BASELINE_KINDS, "scheme": scheme, **m,
                         "floor": floor, "rmse_over_floor": ratio, **floors, **u})
    return pd.DataFrame(rows, columns=SCHEME_TABLE_COLUMNS)


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
