"""Station correction of a map: ordinary kriging (PyKrige) of the stations' residuals (observed − predicted), and
its honest evaluation by leave-stations-out.

* Residuals are taken at the station's pixel (the map value there) and placed at that pixel's centre, so the
  corrected field at a station's pixel is exactly what the evaluation scores. Coordinates are km on a local
  equirectangular plane around the domain's centre (a 2 km GEOS pixel over Korea is about 2 × 2.6 km).
* The variogram (exponential by default: psill, range, nugget) is fitted by weighted least squares to the
  experimental semivariogram pooled over the day's slots (pairs only within a slot; a slot alone has too few
  stations for a stable fit). The nugget is the stations' own noise: kriging runs with ``exact_values=False``,
  so the corrected field smooths through noisy stations instead of honouring each.
* A slot with fewer than ``min_stations`` residuals, or a day whose variogram cannot be fitted, is not
  corrected: the corrected field is the raw one there and ``correction_status`` says why.
* Leave-stations-out: the day's stations are cut into ``folds`` groups (ranked by a hash of seed and station
  id); for each fold, the variogram is fitted and the residuals are kriged from the *other* folds' stations
  only, and the held fold is scored. No station is ever scored by a correction that used it
  (:func:`leave_stations_out` asserts it and returns what each correction used).
* Uncertainty: ordinary kriging's variance at each pixel, relative to the variogram's total sill, scales the
  model's standard error down near stations (:func:`corrected_standard_error`); the leave-stations-out rows score
  both standard errors by the coverage of their 90 % intervals and by distance to the nearest station used.
"""

from __future__ import annotations

import hashlib
import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.atomic import atomic_path

log = logging.getLogger(__name__)

VARIOGRAM_MODELS = ("exponential", "spherical", "gaussian")
EARTH_RADIUS_KM = 6371.0


@dataclass(frozen=True)
class KrigingConfig:
    """maps.correction (the schema describes every key)."""

    method: str = "kriging"  # or "none"
    variogram: str = "exponential"
    folds: int = 5
    min_stations: int = 5
    n_lags: int = 10
    seed: int = 42

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> KrigingConfig:
        cfg = dict(cfg or {})
        out = cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})
        if out.variogram not in VARIOGRAM_MODELS:
            raise ValueError(f"key maps.correction.variogram: {out.variogram!r} is not one of {VARIOGRAM_MODELS}")
        return out


@dataclass(frozen=True)
class Variogram:
    model: str
    psill: float
    range_km: float
    nugget: float
    n_pairs: int

    @property
    def sill(self) -> float:
        """The total sill, psill + nugget (K²): the residuals' variance far from every station."""
        return self.psill + self.nugget

    @property
    def params(self) -> list[float]:
        """[psill, range, nugget]: the argument order of pykrige.variogram_models functions."""
        return [self.psill, self.range_km, self.nugget]

    @property
    def pykrige_parameters(self) -> dict:
        """For OrdinaryKriging(variogram_parameters=...): a dict, since PyKrige reads a list as [sill, ...]."""
        return {"psill": self.psill, "range": self.range_km, "nugget": self.nugget}

    def describe(self) -> str:
        return (f"{self.model}: partial sill {self.psill:.3f} K², range {self.range_km:.0f} km, "
                f"nugget {self.nugget:.3f} K² ({self.n_pairs} pairs)")


# --- geometry -------------------------------------------------------------------------------------------

def local_xy_km(lat, lon, lat0: float, lon0: float) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular km around (lat0, lon0): fine over a few hundred km."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    x = np.radians(lon - lon0) * EARTH_RADIUS_KM * math.cos(math.radians(lat0))
    y = np.radians(lat - lat0) * EARTH_RADIUS_KM
    return x, y


# --- variogram ------------------------------------------------------------------------------------------

def _model_fn(name: str):
    from pykrige import variogram_models as vm

    return {"exponential": vm.exponential_variogram_model, "spherical": vm.spherical_variogram_model,
            "gaussian": vm.gaussian_variogram_model}[name]


def fit_variogram(groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], model: str = "exponential",
                  n_lags: int = 10) -> Variogram | None:
    """Variogram fitted to the semivariogram pooled over groups (x_km, y_km, value): pairs only within a group.

    Lags: ``n_lags`` equal bins up to half the largest pair distance; weighted least squares (weight: pairs
    per bin). None when there are too few pairs (< 10) or non-empty bins (< 3) to fit three parameters.
    """
    from scipy.optimize import least_squares

    dist, semi = [], []
    for x, y, v in groups:
        if len(v) < 2:
            continue
        i, j = np.triu_indices(len(v), k=1)
        dist.append(np.hypot(x[i] - x[j], y[i] - y[j]))
        semi.append(0.5 * (v[i] - v[j]) ** 2)
    if not dist:
        return None
    dist, semi = np.concatenate(dist), np.concatenate(semi)
    if len(dist) < 10 or dist.max() <= 0:
        return None
    max_lag = 0.5 * dist.max()
    edges = np.linspace(0.0, max_lag, n_lags + 1)
    which = np.digitize(dist, edges) - 1
    keep = (which >= 0) & (which < n_lags)
    n = np.bincount(which[keep], minlength=n_lags)
    total = np.bincount(which[keep], weights=semi[keep], minlength=n_lags)
    full = n > 0
    if full.sum() < 3:
        return None
    lag = (0.5 * (edges[:-1] + edges[1:]))[full]
    gamma = total[full] / n[full]
    w = np.sqrt(n[full] / n[full].sum())
    fn = _model_fn(model)
    var = max(float(np.var(np.concatenate([g[2] for g in groups]))), 1e-6)

    def resid(m):
        return w * (fn(m, lag) - gamma)

    x0 = [0.5 * var, 0.5 * max_lag, 0.5 * var]
    lower, upper = [0.0, max(lag[0] * 0.5, 1e-3), 0.0], [10 * var, 8 * max_lag, 10 * var]
    try:
        fit = least_squares(resid, x0, bounds=(lower, upper))
    except ValueError as err:  # pragma: no cover - bounds are consistent by construction
        log.warning("variogram fit failed: %s", err)
        return None
    psill, range_km, nugget = (float(v) for v in fit.x)
    return Variogram(model, psill, range_km, nugget, int(n[full].sum()))


# --- kriging --------------------------------------------------------------------------------------------

def krige(x: np.ndarray, y: np.ndarray, values: np.ndarray, xt: np.ndarray, yt: np.ndarray,
          vario: Variogram, return_variance: bool = False):
    """Ordinary kriging of `values` at (x, y) onto the targets (xt, yt), km, with a fixed variogram; with
    ``return_variance`` (estimate, kriging variance in K²) at each target."""
    from pykrige.ok import OrdinaryKriging

    if len(values) == 0:
        raise ValueError("krige: no stations")
    if len(values) == 1 or vario.psill <= 1e-9 * max(vario.nugget, 1e-12):
        # no spatial structure (or one station): the kriged field is the stations' mean, and its error variance
        # that of ordinary kriging under a pure nugget, nugget (1 + 1/n)
        est = np.full(len(xt), float(np.mean(values)))
        var = np.full(len(xt), vario.sill * (1.0 + 1.0 / len(values)))
        return (est, var) if return_variance else est
    ok = OrdinaryKriging(np.asarray(x, float), np.asarray(y, float), np.asarray(values, float),
                         variogram_model=vario.model, variogram_parameters=vario.pykrige_parameters, exact_values=False,
                         pseudo_inv=True)
    est, var = ok.execute("points", np.asarray(xt, float), np.asarray(yt, float), backend="vectorized")
    est = np.asarray(est, np.float64)
    return (est, np.maximum(np.asarray(var, np.float64), 0.0)) if return_variance else est


def corrected_standard_error(sigma, kriging_variance, sill):
    """The standard error (K) of TA_corrected: sigma * sqrt(min(1, kriging_variance / sill)).

    Why this form: sigma is the model's error at a pixel (the error model), the sill the variance of the station
    residuals far from every station, and ordinary kriging's variance what of it remains after kriging the
    stations' residuals to the pixel. Their ratio is the share of the model's error variance the correction
    leaves, so near stations (with spatially correlated residuals) the standard error shrinks, far from them it
    tends to sigma; min(1, .) keeps it from exceeding sigma where kriging only extrapolates (there the corrected
    field is essentially the raw one). With residuals of pure noise (all nugget) the ratio stays near 1:
    kriging then corrects nothing, and claims nothing. Where no correction was made (kriging_variance or sill
    NaN) it is sigma.
    """
    sigma = np.asarray(sigma)
    kriging_variance, sill = np.asarray(kriging_variance, np.float64), np.asarray(sill, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.minimum(1.0, kriging_variance / sill)
    ratio = np.where(np.isfinite(ratio) & (sill > 0), np.maximum(ratio, 0.0), 1.0)
    return (sigma * np.sqrt(ratio)).astype(sigma.dtype if sigma.dtype.kind == "f" else np.float64)


# --- residuals of a day ---------------------------------------------------------------------------------

def residual_table(obs: pd.DataFrame, raw_at_station: np.ndarray, x_km: np.ndarray, y_km: np.ndarray) -> pd.DataFrame:
    """obs (stn, time, ..., ta_c) plus ta_raw (the map at the station's pixel and time), resid = ta_c − ta_raw
    and the pixel centre's x_km, y_km; rows without a map value are dropped."""
    t = obs.assign(ta_raw=np.asarray(raw_at_station, np.float64), x_km=x_km, y_km=y_km)
    t = t[np.isfinite(t["ta_raw"]) & np.isfinite(t["ta_c"])]
    return t.assign(resid=t["ta_c"] - t["ta_raw"]).reset_index(drop=True)


def _groups(table: pd.DataFrame):
    return [(g["x_km"].to_numpy(), g["y_km"].to_numpy(), g["resid"].to_numpy()) for _, g in table.groupby("time")]


def correct_fields(ta: np.ndarray, times: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray,
                   table: pd.DataFrame, cfg: KrigingConfig) -> dict:
    """The corrected fields of a day: ta (T, H, W) plus the residuals of all stations at each slot, kriged.

    ``times`` (T,) Unix s; ``table`` from :func:`residual_table`. Returns ``corrected`` (T, H, W), ``status``
    (T,) text, ``n_stations`` (T,), ``variogram`` (or None), ``kriging_variance`` (T, H, W; K², NaN where not
    kriged) and ``sill`` (T,; NaN at a slot not corrected), for :func:`corrected_standard_error`.
    """
    corrected = ta.copy()
    n_t = len(times)
    status = ["" for _ in range(n_t)]
    n_used = np.zeros(n_t, np.int32)
    kvar = np.full(ta.shape, np.nan, np.float32)
    sill = np.full(n_t, np.nan)
    if cfg.method == "none":
        return {"corrected": corrected, "status": ["none: maps.correction.method is none"] * n_t,
                "n_stations": n_used, "variogram": None, "kriging_variance": kvar, "sill": sill}
    vario = fit_variogram(_groups(table), cfg.variogram, cfg.n_lags)
    by_time = {int(k): g for k, g in table.groupby("time")}
    for t, unix in enumerate(np.asarray(times, np.int64)):
        g = by_time.get(int(unix))
        n = 0 if g is None else len(g)
        finite = np.isfinite(ta[t])
        if not finite.any():
            status[t] = "none: no map values at this slot"
        elif n < cfg.min_stations:
            status[t] = f"none: {n} station residuals, fewer than maps.correction.min_stations {cfg.min_stations}"
        elif vario is None:
            status[t] = "none: variogram not fitted (too few station pairs on this day)"
        else:
            est, var = krige(g["x_km"].to_numpy(), g["y_km"].to_numpy(), g["resid"].to_numpy(), grid_x[finite],
                             grid_y[finite], vario, return_variance=True)
            corrected[t][finite] = (ta[t][finite] + est).astype(corrected.dtype)
            kvar[t][finite] = var
            sill[t] = vario.sill
            status[t] = f"ok: {n} station residuals kriged"
            n_used[t] = n
    return {"corrected": corrected, "status": status, "n_stations": n_used, "variogram": vario,
            "kriging_variance": kvar, "sill": sill}


# --- leave-stations-out ---------------------------------------------------------------------------------

def station_folds(stn, folds: int, seed: int = 42) -> np.ndarray:
    """Fold (0..folds-1) of each station id: the day's stations ranked by a hash of (seed, id), dealt round
    robin, so folds are balanced and a station's fold depends only on which stations are there."""
    stn = np.asarray(stn, np.int64)
    unique = np.unique(stn)
    h = [hashlib.blake2b(f"{seed}:fold:{int(s)}".encode(), digest_size=8).digest() for s in unique]
    order = np.argsort(np.array([int.from_bytes(b, "big") for b in h], dtype=np.uint64), kind="stable")
    fold_of = dict(zip(unique[order].tolist(), (np.arange(len(unique)) % max(folds, 1)).tolist(), strict=True))
    return np.array([fold_of[int(s)] for s in stn], dtype=np.int64)


def leave_stations_out(table: pd.DataFrame, cfg: KrigingConfig) -> tuple[pd.DataFrame, dict]:
    """Each station's corrected value at its pixel with its own fold left out of the correction.

    Returns (table + fold, ta_lso, lso_n_stations, lso_status, lso_kriging_variance (K²), lso_sill (K²),
    lso_nearest_km (to the nearest station the correction used) and, when the table has the map's standard error
    ``sigma``, sigma_lso (:func:`corrected_standard_error`); ``used``): ``used[(time, fold)]`` = the station
    ids whose residuals made that correction. Where no correction is possible the corrected value is the raw
    one (as in the archive), its kriging columns NaN, sigma_lso = sigma, and lso_status says why.
    """
    out = table.assign(fold=station_folds(table["stn"], cfg.folds, cfg.seed) if len(table) else
                       np.empty(0, np.int64))
    ta_lso = out["ta_raw"].to_numpy(np.float64).copy()
    n_used = np.zeros(len(out), np.int64)
    status = np.array(["none: maps.correction.method is none" if cfg.method == "none" else ""] * len(out),
                      dtype=object)
    kvar, sill, nearest = (np.full(len(out), np.nan) for _ in range(3))
    used: dict[tuple[int, int], frozenset] = {}

    def result():
        res = out.assign(ta_lso=ta_lso, lso_n_stations=n_used, lso_status=status, lso_kriging_variance=kvar,
                         lso_sill=sill, lso_nearest_km=nearest)
        if "sigma" in out:
            res["sigma_lso"] = corrected_standard_error(out["sigma"].to_numpy(np.float64), kvar, sill)
        return res

    if cfg.method == "none" or not len(out):
        return result(), used
    times = out["time"].to_numpy(np.int64)
    fold = out["fold"].to_numpy()
    for f in np.unique(fold):
        train = out[fold != f]
        vario = fit_variogram(_groups(train), cfg.variogram, cfg.n_lags)
        by_time = {int(k): g for k, g in train.groupby("time")}
        for unix in np.unique(times[fold == f]):
            rows = np.flatnonzero((fold == f) & (times == unix))
            g = by_time.get(int(unix))
            n = 0 if g is None else len(g)
            if n < cfg.min_stations:
                status[rows] = f"none: {n} other-fold station residuals, fewer than {cfg.min_stations}"
                continue
            if vario is None:
                status[rows] = "none: variogram not fitted from the other folds"
                continue
            ids = frozenset(g["stn"].tolist())
            scored = set(out["stn"].to_numpy()[rows].tolist())
            assert not ids & scored, f"leave-stations-out: stations {sorted(ids & scored)} used and scored"
            used[(int(unix), int(f))] = ids
            xs, ys = out["x_km"].to_numpy()[rows], out["y_km"].to_numpy()[rows]
            est, kvar[rows] = krige(g["x_km"].to_numpy(), g["y_km"].to_numpy(), g["resid"].to_numpy(), xs, ys, vario,
                                    return_variance=True)
            ta_lso[rows] = ta_lso[rows] + est
            sill[rows] = vario.sill
            nearest[rows] = np.hypot(xs[:, None] - g["x_km"].to_numpy()[None],
                                     ys[:, None] - g["y_km"].to_numpy()[None]).min(axis=1)
            n_used[rows] = n
            status[rows] = "ok"
    return result(), used


# --- the evaluation table (rule map_correction) ---------------------------------------------------------

CORRECTION_COLUMNS = ["run", "model_run", "scheme", "fold", "n", "n_corrected", "rmse_raw", "rmse_corrected",
                      "rmse_gain", "mae_raw", "mae_corrected", "bias_raw", "bias_corrected", "coverage_90_raw",
                      "coverage_90_corrected", "sigma_raw", "sigma_corrected"]
# km: distance to the nearest station a leave-stations-out correction used (docs/maps.md#standard-errors)
DISTANCE_BINS_KM = (0.0, 10.0, 20.0, 40.0, 80.0, math.inf)
DISTANCE_COLUMNS = ["run", "model_run", "distance_km", "n", "sigma_raw", "sigma_corrected", "rmse_corrected",
                    "coverage_90_corrected"]


def _coverage(d: np.ndarray, sigma: np.ndarray) -> float:
    """90 % interval coverage over the rows with a standard error (NaN without one: a map without error model)."""
    from ta2d.evaluation.metrics import interval_coverage

    ok = np.isfinite(sigma) & np.isfinite(d)
    return interval_coverage(d[ok], np.zeros(int(ok.sum())), sigma[ok], 0.9) if ok.any() else math.nan


def _column(g: pd.DataFrame, name: str) -> np.ndarray:
    return g[name].to_numpy(np.float64) if name in g else np.full(len(g), np.nan)


def _mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan


def _scores(g: pd.DataFrame) -> dict:
    d_raw = (g["ta_raw"] - g["ta_c"]).to_numpy(np.float64)
    d_cor = (g["ta_lso"] - g["ta_c"]).to_numpy(np.float64)
    if not len(g):
        nan = math.nan
        return {"n": 0, "n_corrected": 0, "rmse_raw": nan, "rmse_corrected": nan, "rmse_gain": nan, "mae_raw": nan,
                "mae_corrected": nan, "bias_raw": nan, "bias_corrected": nan, "coverage_90_raw": nan,
                "coverage_90_corrected": nan, "sigma_raw": nan, "sigma_corrected": nan}
    sigma, sigma_lso = _column(g, "sigma"), _column(g, "sigma_lso")
    rmse_raw, rmse_cor = float(np.sqrt(np.mean(d_raw**2))), float(np.sqrt(np.mean(d_cor**2)))
    return {"n": len(g), "n_corrected": int((g["lso_status"] == "ok").sum()), "rmse_raw": rmse_raw,
            "rmse_corrected": rmse_cor, "rmse_gain": rmse_raw - rmse_cor, "mae_raw": float(np.mean(np.abs(d_raw))),
            "mae_corrected": float(np.mean(np.abs(d_cor))), "bias_raw": float(np.mean(d_raw)),
            "bias_corrected": float(np.mean(d_cor)), "coverage_90_raw": _coverage(d_raw, sigma),
            "coverage_90_corrected": _coverage(d_cor, sigma_lso), "sigma_raw": _mean(sigma),
            "sigma_corrected": _mean(sigma_lso)}


def scored_rows(stations: pd.DataFrame, split_cfg: Mapping | None) -> pd.DataFrame:
    """The station rows of test days, with their validation scheme (ta2d.splits); all rows, scheme "all", without
    a split config."""
    from ta2d.splits import NOT_TEST, scheme_of

    if len(stations) and split_cfg is not None:
        stations = stations.assign(scheme=scheme_of(stations["stn"].to_numpy(), stations["time"].to_numpy(),
                                                    dict(split_cfg)))
        return stations[stations["scheme"] != NOT_TEST]
    return stations.assign(scheme="all") if len(stations) else stations


def correction_table(stations: pd.DataFrame, split_cfg: Mapping | None) -> pd.DataFrame:
    """Raw vs leave-stations-out corrected scores per map run, validation scheme (test days only) and fold, with
    the 90 % interval coverage and mean of each one's standard error (raw: sigma, corrected: sigma_lso).

    ``stations``: the per-day station tables (:func:`leave_stations_out` plus run, model_run). Rows of days
    that are not test days (scheme "") are left out; fold "all" and scheme "all" are the totals.
    """
    stations = scored_rows(stations, split_cfg)
    rows = []
    for (run, model_run), g in stations.groupby(["run", "model_run"], sort=True):
        schemes = {**{s: gs for s, gs in g.groupby("scheme", sort=True)}, "all": g}
        for scheme, gs in schemes.items():
            rows.append({"run": run, "model_run": model_run, "scheme": scheme, "fold": "all", **_scores(gs)})
            if scheme == "all":
                for f, gf in gs.groupby("fold", sort=True):
                    rows.append({"run": run, "model_run": model_run, "scheme": "all", "fold": str(f), **_scores(gf)})
    table = pd.DataFrame(rows, columns=CORRECTION_COLUMNS)
    return table


def distance_table(stations: pd.DataFrame, split_cfg: Mapping | None) -> pd.DataFrame:
    """The standard errors of the test-day station rows by distance to the nearest station their leave-stations-out
    correction used (DISTANCE_BINS_KM; "not corrected": rows no correction reached), per map run: whether
    sigma_corrected rises away from stations, and whether its intervals still cover there."""
    stations = scored_rows(stations, split_cfg)
    rows = []
    for (run, model_run), g in stations.groupby(["run", "model_run"], sort=True):
        dist = _column(g, "lso_nearest_km")
        corrected = (g["lso_status"] == "ok").to_numpy() & np.isfinite(dist)
        bins = [(f"{lo:g}–{hi:g}" if math.isfinite(hi) else f"≥ {lo:g}", corrected & (dist >= lo) & (dist < hi))
                for lo, hi in zip(DISTANCE_BINS_KM[:-1], DISTANCE_BINS_KM[1:], strict=True)]
        for label, sel in [*bins, ("not corrected", ~corrected)]:
            gs = g[sel]
            if not len(gs):
                continue
            d_cor = (gs["ta_lso"] - gs["ta_c"]).to_numpy(np.float64)
            rows.append({"run": run, "model_run": model_run, "distance_km": label, "n": len(gs),
                         "sigma_raw": _mean(_column(gs, "sigma")), "sigma_corrected": _mean(_column(gs, "sigma_lso")),
                         "rmse_corrected": float(np.sqrt(np.mean(d_cor**2))),
                         "coverage_90_corrected": _coverage(d_cor, _column(gs, "sigma_lso"))})
    return pd.DataFrame(rows, columns=DISTANCE_COLUMNS)


def _fmt(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _text_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["map", "run", "scheme", "fold", "n", "RMSE raw", "RMSE corrected", "gain (K)", "MAE raw",
              "MAE corrected", "bias raw", "bias corrected", "90 % cov. raw", "90 % cov. corrected", "σ raw",
              "σ corrected"]
    rows = [[r.run, r.model_run, r.scheme, r.fold, f"{int(r.n):,}", _fmt(r.rmse_raw), _fmt(r.rmse_corrected),
             _fmt(r.rmse_gain), _fmt(r.mae_raw), _fmt(r.mae_corrected), _fmt(r.bias_raw, 3),
             _fmt(r.bias_corrected, 3), _fmt(r.coverage_90_raw), _fmt(r.coverage_90_corrected), _fmt(r.sigma_raw),
             _fmt(r.sigma_corrected)] for r in table.itertuples(index=False)]
    return header, rows


def _distance_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["map", "run", "nearest station used (km)", "n", "σ raw", "σ corrected", "RMSE corrected",
              "90 % cov. corrected"]
    rows = [[r.run, r.model_run, r.distance_km, f"{int(r.n):,}", _fmt(r.sigma_raw), _fmt(r.sigma_corrected),
             _fmt(r.rmse_corrected), _fmt(r.coverage_90_corrected)] for r in table.itertuples(index=False)]
    return header, rows


NOTES = [
    "Leave-stations-out: the stations of each day are cut into folds; each fold is scored with the residuals of "
    "the other folds kriged onto its pixels (variogram fitted on the other folds too), so no station is scored by "
    "a correction that used it. 'raw' is the model's map at the station's pixel, 'corrected' the map + kriged "
    "residuals there; bias = mean(map − observed).",
    "Only mapped test days are scored (schemes of ta2d.splits: held_out_days, time_block, held_out_both).",
    "A slot or fold without enough other stations is scored uncorrected (n_corrected counts the corrected rows).",
    "Standard errors: σ raw is the map's TA_standard_error at the station's pixel (the model file's error model), "
    "σ corrected its leave-stations-out TA_corrected_standard_error, σ · sqrt(min(1, kriging variance / sill)); "
    "'90 % cov.' is the share of observations within ±1.645 σ of the map (calibrated: 0.90); – where the model "
    "file has no error model.",
]
DISTANCE_NOTE = ("Each test-day station scored with the correction of the other folds, by its distance to the nearest "
                 "station that correction used: σ corrected tends to σ raw away from stations.")


def correction_markdown(table: pd.DataFrame, cfg: KrigingConfig, days: Sequence[str],
                        distances: pd.DataFrame | None = None) -> str:
    header, rows = _text_rows(table)
    out = ["# Station correction of the maps: raw vs kriged, leave-stations-out", "",
           f"Method: ordinary kriging of residuals ({cfg.variogram} variogram, {cfg.folds} station folds, at least "
           f"{cfg.min_stations} stations per slot); mapped days: {', '.join(days) if days else 'none'}.", ""]
    if not rows:
        out += ["No test-day station observations on the mapped days: nothing to score.", ""]
    else:
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    out += [f"- {n}" for n in NOTES]
    if distances is not None and len(distances):
        d_header, d_rows = _distance_rows(distances)
        out += ["", "## Standard error by distance to the nearest station used", "", DISTANCE_NOTE, "",
                "| " + " | ".join(d_header) + " |", "|" + "---|" * len(d_header)]
        out += ["| " + " | ".join(r) + " |" for r in d_rows]
    return "\n".join(out) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>{body}</table>"


def correction_html(table: pd.DataFrame, cfg: KrigingConfig, days: Sequence[str],
                    distances: pd.DataFrame | None = None) -> str:
    header, rows = _text_rows(table)
    style = ("body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th{background:#eee}")
    table_html = (_html_table(header, rows) if rows
                  else "<p>No test-day station observations on the mapped days: nothing to score.</p>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in NOTES)
    if distances is not None and len(distances):
        notes += ("</ul><h3>Standard error by distance to the nearest station used</h3>"
                  f"<p>{html.escape(DISTANCE_NOTE)}</p>{_html_table(*_distance_rows(distances))}<ul>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"
            f"<h2>Station correction: raw vs kriged (leave-stations-out)</h2>"
            f"<p>Ordinary kriging of residuals, {html.escape(cfg.variogram)} variogram, {cfg.folds} station folds; "
            f"mapped days: {html.escape(', '.join(days) or 'none')}.</p>{table_html}<ul>{notes}</ul></body></html>")


def read_station_tables(paths: Sequence[str | Path]) -> pd.DataFrame:
    frames = []
    for p in paths:
        try:
            frames.append(pd.read_csv(p))
        except (OSError, ValueError) as err:
            raise ValueError(f"map station table {p}: cannot be read ({err})") from err
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "model_run", "stn"])


def correction_report_files(station_csvs: Sequence[str | Path], split_cfg: Mapping | None, correction: Mapping | None,
                            out_csv: str | Path, out_md: str | Path, out_html: str | Path) -> pd.DataFrame:
    """Rule map_correction: the day station tables -> results/eval/map_correction.{csv,md,html}."""
    cfg = KrigingConfig.from_config(correction)
    stations = read_station_tables(station_csvs)
    table = correction_table(stations, split_cfg)
    distances = distance_table(stations, split_cfg)
    days = sorted({str(d) for d in stations["day"]}) if "day" in stations else []
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
    with atomic_path(out_md) as tmp:
        Path(tmp).write_text(correction_markdown(table, cfg, days, distances), encoding="utf-8")
    with atomic_path(out_html) as tmp:
        Path(tmp).write_text(correction_html(table, cfg, days, distances), encoding="utf-8")
    overall = table[(table["scheme"] == "all") & (table["fold"] == "all")]
    for r in overall.itertuples(index=False):
        log.info("%s (%s): RMSE raw %.3f K, corrected %.3f K (gain %+.3f K, n=%d)", r.run, r.model_run, r.rmse_raw,
                 r.rmse_corrected, r.rmse_gain, r.n)
    return table
