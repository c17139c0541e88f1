"""Error metrics of predictions against observations on one set of samples (numpy only).

Errors are in K (a difference of °C).
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("n", "rmse", "mae", "bias", "r2")


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
