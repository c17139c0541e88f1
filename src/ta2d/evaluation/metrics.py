"""Error metrics of predictions against observations on one set of samples (numpy only).

Errors are in K (a difference of °C).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

METRICS = ("n", "rmse", "mae", "bias", "r2")
UNCERTAINTY_METRICS = ("crps", "coverage_90")  # of a prediction with a standard error (a Gaussian)


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


def floor_rmse(y: np.ndarray, truth: np.ndarray) -> float:
    """sqrt(mean((y - truth)^2)) over exactly these samples: the RMSE a model predicting the truth would get.
    nan when there are no samples or one of them has no truth."""
    y, truth = np.asarray(y, np.float64), np.asarray(truth, np.float64)
    if len(y) == 0 or not np.isfinite(truth).all():
        return math.nan
    return math.sqrt(float(np.mean((y - truth) ** 2)))


def interval_coverage(y: np.ndarray, pred: np.ndarray, sigma: np.ndarray, level: float = 0.9) -> float:
    """The share of observations inside the central ``level`` interval of N(pred, sigma²); nan without samples."""
    y, pred, sigma = (np.asarray(a, np.float64) for a in (y, pred, sigma))
    if len(y) == 0:
        return math.nan
    half_width = NormalDist().inv_cdf(0.5 + level / 2) * sigma
    return float(np.mean(np.abs(y - pred) <= half_width))


def uncertainty_metrics(y: np.ndarray, pred: np.ndarray, sigma: np.ndarray) -> dict:
    """Mean CRPS (K) of N(pred, sigma²) and the coverage of its 90 % interval; nan without samples."""
    import scoringrules

    y, pred, sigma = (np.asarray(a, np.float64) for a in (y, pred, sigma))
    crps = float(np.mean(scoringrules.crps_normal(y, pred, sigma))) if len(y) else math.nan
    return {"crps": crps, "coverage_90": interval_coverage(y, pred, sigma, 0.9)}

