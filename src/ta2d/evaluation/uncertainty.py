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

Each run's error model travels on as a JSON-safe dict (:meth:`ErrorModel.to_dict`): rule evaluate writes them all to
``results/eval/error_models.json``, export_model puts the run's into its model file, and the map jobs evaluate it
at every pixel and slot (:func:`pixel_features`, ta2d.maps.archive) for the maps' ``TA_standard_error``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURES = ("hour_cos", "hour_sin", "bt_ir105", "rf_vi006")
_MIN_LOG_SIGMA, _MAX_LOG_SIGMA = np.log(1e-3), np.log(50.0)  # K: keeps a degenerate fit finite
ERROR_MODEL_FORMAT = "ta2d-error-model"
ERROR_MODEL_VERSION = 1
KST_OFFSET_S = 9 * 3600


def features_of(hour_kst, bt_ir105, rf_vi006) -> np.ndarray:
    """The raw error-model features (n, 4) of n samples or pixels: the whole KST hour (0..23), the IR10.5
    brightness temperature (K) and the VIS0.6 reflectance (albedo fraction) of the pixel."""
    angle = 2 * np.pi * np.asarray(hour_kst, np.float64).ravel() / 24.0
    return np.stack([np.cos(angle), np.sin(angle), np.asarray(bt_ir105, np.float64).ravel(),
                     np.asarray(rf_vi006, np.float64).ravel()], axis=1)


def error_features(df: pd.DataFrame) -> np.ndarray:
    """The raw error-model features of a sample table (hour_kst, bt_ir105, rf_vi006 columns), (n, 4)."""
    return features_of(df["hour_kst"], df["bt_ir105"], df["rf_vi006"])


def hour_kst(unix_s) -> np.ndarray:
    """The whole KST hour (0..23) of Unix times, as the sample table counts it (ta2d.evaluation.samples)."""
    return ((np.asarray(unix_s, np.int64) + KST_OFFSET_S) // 3600) % 24


def pixel_features(unix_s: int, bt_ir105: np.ndarray, rf_vi006: np.ndarray) -> np.ndarray:
    """The features (H*W, 4) of every pixel of one slot: a map pixel is a sample at its own pixel, so its sigma is
    the one a station there would get in the evaluation."""
    n = np.asarray(bt_ir105).size
    return features_of(np.full(n, hour_kst(unix_s)), bt_ir105, rf_vi006)


@dataclass(frozen=True)
class ErrorModel:
    """log sigma = weights . (1, standardised features); ``n_fit``: the residuals it was fit on (0: unknown)."""

    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    n_fit: int = 0

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
        return cls(w, mean, scale, int(ok.sum()))

    def sigma(self, features: np.ndarray) -> np.ndarray:
        """sigma (K) of each row of raw features (n, 4); NaN where a feature is not finite."""
        x = np.column_stack([np.ones(len(features)), (features - self.mean) / self.scale])
        return np.exp(np.clip(x @ self.weights, _MIN_LOG_SIGMA, _MAX_LOG_SIGMA))

    @property
    def typical_sigma(self) -> float:
        """sigma (K) at the mean features of the fit: a one-number summary for the model card."""
        return float(np.exp(np.clip(self.weights[0], _MIN_LOG_SIGMA, _MAX_LOG_SIGMA)))

    def to_dict(self) -> dict:
        """Plain floats, ints, strings and lists only: JSON-safe and ``torch.load(weights_only=True)``-safe."""
        return {"format": ERROR_MODEL_FORMAT, "version": ERROR_MODEL_VERSION, "features": list(FEATURES),
                "log_sigma": "weights . (1, (features - mean) / scale)", "fit_on": "validation residuals",
                "weights": [float(v) for v in self.weights], "mean": [float(v) for v in self.mean],
                "scale": [float(v) for v in self.scale], "n_fit": int(self.n_fit),
                "typical_sigma_k": self.typical_sigma}

    @classmethod
    def from_dict(cls, data) -> ErrorModel:
        """The inverse of :meth:`to_dict`; ValueError when it is not one, is newer than this code, or was fit on
        other features (a sigma from features in another order would be silently wrong)."""
        if not isinstance(data, dict) or data.get("format") != ERROR_MODEL_FORMAT:
            raise ValueError(f"not a ta2d error model (no format {ERROR_MODEL_FORMAT!r})")
        if not isinstance(data.get("version"), int) or data["version"] > ERROR_MODEL_VERSION:
            raise ValueError(f"error model version {data.get('version')} is newer than this ta2d reads "
                             f"({ERROR_MODEL_VERSION})")
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"error model of features {data.get('features')}, this ta2d computes {list(FEATURES)}")
        weights, mean, scale = (np.asarray(data[k], np.float64) for k in ("weights", "mean", "scale"))
        if weights.shape != (len(FEATURES) + 1,) or mean.shape != (len(FEATURES),) or scale.shape != mean.shape:
            raise ValueError(f"error model arrays of shapes {weights.shape}, {mean.shape}, {scale.shape}")
        return cls(weights, mean, scale, int(data.get("n_fit", 0)))


def fit_error_models(val: pd.DataFrame, runs) -> dict[str, ErrorModel]:
    """{run: its error model}, each fit on the validation sample table ``val`` (y and pred_{run} columns)."""
    features = error_features(val)
    y = val["y"].to_numpy(np.float64)
    return {run: ErrorModel.fit(features, y - val[f"pred_{run}"].to_numpy(np.float64)) for run in runs}


def add_sigmas(test: pd.DataFrame, val: pd.DataFrame | None, runs,
               models: dict[str, ErrorModel] | None = None) -> pd.DataFrame:
    """``test`` with a sigma_{run} column (K) per run, from each run's error model fit on ``val`` (a sample table
    with the same pred_{run} columns), or from ``models`` when given."""
    models = fit_error_models(val, runs) if models is None else models
    test = test.copy()
    test_features = error_features(test)
    for run in runs:
        test[f"sigma_{run}"] = models[run].sigma(test_features)
    return test
