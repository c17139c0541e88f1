"""The demo's observable floor per input set: the best RMSE any model given those inputs can reach.

The generator knows every term of a label (ta2d.demo.tables.label_truth), so it can write, for every
station-hour, the best prediction each input set allows (an *oracle*), and the floor of a set of samples is the
RMSE of the written label against it (docs/demo.md#the-observable-floor-per-input-set):

* ``oracle_satellite_c``: the satellite channels, the static fields, the time and the station elevation
  determine the visible TA at the station height (``ta_true_c - hidden_c``); the hidden boundary-layer
  anomaly, the siting error, the shared station error and the noise are left.
* ``oracle_background_c``: the reanalysis adds what it knows of the hidden anomaly. Its departure from the
  reanalysis of the visible truth, d (the cell mean of the hidden anomaly an hour late, plus the reanalysis'
  smooth error), interpolated to the pixel as the reader does, is used by the best linear predictor:
  ``oracle_satellite_c + beta(hour) * d``, beta by least squares per UTC hour of day.
* ``oracle_corrected_c``: station correction adds the other stations' residuals at the same hour. Their
  best linear unbiased combination (simple kriging with the covariance the generator knows: the empirical
  covariance of each pair's correlated residual terms over the period, plus the siting and white-noise
  variance on the diagonal) predicts each station's residual from all the others.

A persistent siting error is learnable, in principle, for a station the model trained on (a model sees its
position), so a floor subtracts ``siting_c`` on samples of training stations (:func:`floor_errors`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ta2d.grid import linecol_to_lonlat

INPUT_SETS = ("satellite", "background", "corrected")
ROUNDING_VAR = 0.1**2 / 12  # the portal prints one decimal


def bilinear_on_grid(field: np.ndarray, grid_lat: np.ndarray, grid_lon: np.ndarray, lat: np.ndarray,
                     lon: np.ndarray) -> np.ndarray:
    """``field[..., lat, lon]`` (ascending cell centres) at points, bilinear, renormalised over the finite corners
    (the background reader's rule, so a coastal pixel is interpolated as it is in the chunks). (..., n)."""
    fi = np.clip(np.interp(lat, grid_lat, np.arange(len(grid_lat))), 0, len(grid_lat) - 1)
    fj = np.clip(np.interp(lon, grid_lon, np.arange(len(grid_lon))), 0, len(grid_lon) - 1)
    i0 = np.minimum(np.floor(fi).astype(int), len(grid_lat) - 2)
    j0 = np.minimum(np.floor(fj).astype(int), len(grid_lon) - 2)
    wi, wj = fi - i0, fj - j0
    total = np.zeros(field.shape[:-2] + lat.shape)
    weights = np.zeros_like(total)
    for di, dj, w in ((0, 0, (1 - wi) * (1 - wj)), (0, 1, (1 - wi) * wj), (1, 0, wi * (1 - wj)), (1, 1, wi * wj)):
        corner = field[..., i0 + di, j0 + dj]
        ok = np.isfinite(corner)
        total += np.where(ok, corner, 0.0) * w
        weights += np.where(ok, w, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weights > 0, total / weights, np.nan)


def departure_at_stations(truth: pd.DataFrame, departure: np.ndarray, hours: pd.DatetimeIndex, grid_lat: np.ndarray,
                          grid_lon: np.ndarray) -> np.ndarray:
    """d for every truth row: the reanalysis departure (hour, lat, lon) at the row's pixel and hour."""
    lon, lat = linecol_to_lonlat(truth["line"].to_numpy(np.int64), truth["column"].to_numpy(np.int64))
    hour_index = pd.Index([int(h.timestamp()) for h in hours]).get_indexer(truth["time_utc"].to_numpy(np.int64))
    out = np.full(len(truth), np.nan)
    for k in np.unique(hour_index[hour_index >= 0]):
        rows = np.flatnonzero(hour_index == k)
        out[rows] = bilinear_on_grid(departure[k], grid_lat, grid_lon, np.asarray(lat)[rows], np.asarray(lon)[rows])
    return out


def add_oracles(truth: pd.DataFrame, observed: pd.Series, departure: np.ndarray | None, noise_var: float,
                siting_var: float, stations_for_kriging: np.ndarray) -> pd.DataFrame:
    """``truth`` plus the oracle columns (module docstring). ``observed``: the written label of every truth row
    (NaN where none is written); ``departure``: d per row, or None without a background (then the corrected
    oracle kriges the satellite oracle's residuals); ``stations_for_kriging``: the station ids whose labels are
    samples (they correct each other)."""
    out = truth.copy()
    out["oracle_satellite_c"] = out["ta_true_c"] - out["hidden_c"]
    base = "oracle_satellite_c"
    if departure is not None:
        hour = (out["time_utc"].to_numpy(np.int64) // 3600) % 24
        beta = np.zeros(len(out))
        hidden = out["hidden_c"].to_numpy()
        for h in np.unique(hour):
            sel = (hour == h) & np.isfinite(departure)
            d = departure[sel]
            beta[hour == h] = (hidden[sel] @ d) / (d @ d) if (d @ d) > 0 else 0.0
        out["oracle_background_c"] = out["oracle_satellite_c"] + np.where(np.isfinite(departure), beta * departure, 0)
        base = "oracle_background_c"
    correlated = out["hidden_c"] + out["shared_c"] - (out[base] - out["oracle_satellite_c"])
    out["oracle_corrected_c"] = out[base] + _kriged_residual(
        out, observed.to_numpy() - out[base].to_numpy(), correlated.to_numpy(),
        noise_var + siting_var + ROUNDING_VAR, stations_for_kriging)
    return out


def _kriged_residual(truth: pd.DataFrame, residual: np.ndarray, correlated: np.ndarray, nugget: float,
                     stations: np.ndarray) -> np.ndarray:
    """Each row's residual predicted from the other stations' residuals of its hour (simple kriging, leave one
    station out); 0 where its hour has no other station."""
    frame = pd.DataFrame({"stn": truth["stn"].to_numpy(), "time": truth["time_utc"].to_numpy(),
                          "r": residual, "g": correlated})
    frame = frame[frame["stn"].isin(stations)]
    r = frame.pivot_table(index="time", columns="stn", values="r", aggfunc="first")
    g = frame.pivot_table(index="time", columns="stn", values="g", aggfunc="first")
    ids = r.columns.to_numpy()
    g_values = g.to_numpy()
    both = np.isfinite(g_values)
    filled = np.where(both, g_values, 0.0)
    cov = (filled.T @ filled) / np.maximum(both.astype(float).T @ both.astype(float), 1)
    r_values = r.to_numpy()
    predicted = np.full(r_values.shape, np.nan)
    weights: dict[tuple[bytes, int], np.ndarray] = {}  # most hours have the same stations: solve once per set
    for t, row in enumerate(r_values):
        have = np.isfinite(row)
        for i in np.flatnonzero(have):
            others = np.flatnonzero(have & (np.arange(len(ids)) != i))
            if len(others) == 0:
                continue
            key = (have.tobytes(), int(i))
            if key not in weights:
                k = cov[np.ix_(others, others)] + nugget * np.eye(len(others))
                weights[key] = np.linalg.solve(k, cov[others, i])
            predicted[t, i] = weights[key] @ row[others]
    lookup = pd.DataFrame(predicted, index=r.index, columns=ids).stack().rename("p").reset_index()
    lookup.columns = ["time", "stn", "p"]
    merged = pd.DataFrame({"stn": truth["stn"].to_numpy(), "time": truth["time_utc"].to_numpy()}).merge(
        lookup, on=["stn", "time"], how="left")
    return np.nan_to_num(merged["p"].to_numpy(), nan=0.0)


def floor_errors(observed: np.ndarray, oracle: np.ndarray, siting: np.ndarray, trained_station: np.ndarray):
    """Label minus the best prediction, the siting error removed where the station was trained on."""
    return observed - oracle - np.where(trained_station, siting, 0.0)


def observable_floors(rows: pd.DataFrame, obs: pd.Series, split_cfg: dict) -> dict:
    """The observable floor per input set, split and validation scheme of the written clean rows (their truth
    columns, ``obs`` the written label): {input set: {all, by_split, by_scheme}} plus day and sample counts.

    Splits and schemes come from ta2d.splits, the rule build_index uses, on the config's split; a training
    station is one with training rows.
    """
    from ta2d.splits import assign_splits, utc_day

    cfg = {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 42, "block_days": 20, **split_cfg}
    day = utc_day(rows["time_utc"].to_numpy()).to_numpy()
    assigned = assign_splits(rows["stn"].to_numpy(), day, cfg)
    split, scheme = assigned["split"].to_numpy(), assigned["scheme"].to_numpy()
    trained = np.isin(rows["stn"].to_numpy(), rows["stn"].to_numpy()[split == "train"])
    err = pd.DataFrame({"split": split, "scheme": scheme, "day": day})
    for name in INPUT_SETS:
        column = f"oracle_{name}_c"
        if column in rows:
            err[name] = floor_errors(obs.to_numpy(), rows[column].to_numpy(), rows["siting_c"].to_numpy(), trained)

    def rmse(e: pd.Series) -> float:
        return round(float(np.sqrt(np.mean(e**2))), 4)

    schemes = err[err["scheme"] != ""]
    out = {name: {"all": rmse(err[name]), "by_split": {k: rmse(g[name]) for k, g in err.groupby("split")},
                  "by_scheme": {k: rmse(g[name]) for k, g in schemes.groupby("scheme")}}
           for name in INPUT_SETS if name in err}
    return {
        **out,
        "days_by_split": {k: int(g["day"].nunique()) for k, g in err[err["scheme"] == ""].groupby("split")},
        "days_by_scheme": {k: int(g["day"].nunique()) for k, g in schemes.groupby("scheme")},
        "samples_by_scheme": {k: len(g) for k, g in schemes.groupby("scheme")},
    }
