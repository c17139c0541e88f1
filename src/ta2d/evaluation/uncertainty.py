"""A standard error for every prediction of every run: a heteroscedastic error model fit on the validation split.

The models predict TA only; what they get wrong is measured where the truth is known and the model did not
train, the validation samples. There the residual r = y - pred of each run is modelled as N(0, sigma²) with

    log sigma = w . f(sample)

f = (1, cos and sin of the KST hour, the centre pixel's IR10.5 brightness temperature (cold: cloud tops) and its
VIS0.6 reflectance (bright: cloud by day), standardised on the validation samples). w maximises the Gaussian
likelihood of the validation residuals (Newton's method on a convex objective). The test samples' sigma then
follows from their own f, so it rises where a run errs more on the validation days: at night, under thick
cloud. Held-out stations are not seen by the fit either, so their coverage tests that sigma carries to stations
the models never saw.

It is a post-hoc model of each run's error, the same for every model kind (ridge and gbt have no predictive
distribution of their own); the station correction of the maps adds the kriging variance on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = ("hour_cos", "hour_sin", "bt_ir105", "rf_vi006")
_MIN_LOG_SIGMA, _MAX_LOG_SIGMA = np.log(1e-3), np.log(50.0)  # K: keeps a degenerate fit finite


def error_features(df: pd.DataFrame) -> np.ndarray:
    """The raw error-model features of a sample table (hour_kst, bt_ir105, rf_vi006 columns), (n, 4)."""
    angle = 2 * np.pi * df["hour_kst"].to_numpy(np.float64) / 24.0
    return np.stack([np.cos(angle), np.sin(angle), df["bt_ir105"].to_numpy(np.float64),
                     df["rf_vi006"].to_numpy(np.float64)], axis=1)


@dataclass(frozen=True)
class ErrorModel:
    """log sigma = weights . (1, standardised features)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray, residuals: np.ndarray, iterations: int = 100) -> ErrorModel:
        """Maximum-likelihood weights of N(0, sigma²) residuals (finite rows only; at least one is needed)."""
        ok = np.isfinite(residuals) & np.isfinite(features).all(axis=1)
        if not ok.any():
            raise ValueError("error model: no validation sample with a finite residual and features")
        f, r2 = features[ok], residuals[ok] ** 2
        mean, scale = f.mean(axis=0), f.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        x = np.column_stack([np.ones(len(f)), (f - mean) / scale])
        w = np.zeros(x.shape[1])
        w[0] = 0.5 * np.log(max(r2.mean(), 1e-12))
        for _ in range(iterations):
            # negative log-likelihood per sample: eta + r² exp(-2 eta) / 2, eta = x.w; convex in w
            e = r2 * np.exp(-2 * np.clip(x @ w, _MIN_LOG_SIGMA, _MAX_LOG_SIGMA))
            grad = x.T @ (1 - e) / len(x)
            hess = (x * (2 * e)[:, None]).T @ x / len(x) + 1e-9 * np.eye(x.shape[1])
            step = np.linalg.solve(hess, grad)
            w = w - step
            if np.max(np.abs(step)) < 1e-10:
                break
        return cls(w, mean, scale)

    def sigma(self, features: np.ndarray) -> np.ndarray:
        x = np.column_stack([np.ones(len(features)), (features - self.mean) / self.scale])
        return np.exp(np.clip(x @ self.weights, _MIN_LOG_SIGMA, _MAX_LOG_SIGMA))


def add_sigmas(test: pd.DataFrame, val: pd.DataFrame, runs) -> pd.DataFrame:
    """``test`` with a sigma_{run} column (K) per run, from each run's error model fit on ``val`` (a sample table
    with the same pred_{run} columns)."""
    test = test.copy()
    val_features, test_features = error_features(val), error_features(test)
    y = val["y"].to_numpy(np.float64)
    for run in runs:
        model = ErrorModel.fit(val_features, y - val[f"pred_{run}"].to_numpy(np.float64))
        test[f"sigma_{run}"] = model.sigma(test_features)
    return test
