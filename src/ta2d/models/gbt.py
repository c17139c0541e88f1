"""Gradient-boosted trees (LightGBM) on hand features: the tree baseline, fitted like the ridge baseline.

``GBTModel.fit(batches, val_batches)`` computes ``hand_features`` of every training batch, keeps them in
memory and trains a LightGBM regressor on the normalised TA, with early stopping on the validation
batches when they hold samples. Memory: the features are float32, about 0.5 KB per sample
(``len(feature_names())`` columns), held twice while concatenating, plus LightGBM's binned copy (about
one byte per feature and sample): ~100 MB for the demo's ~50k samples, ~10 GB for 10 M samples; beyond
that, subsample the training chunks.

The trained booster travels inside the state dict as the uint8 buffer ``booster`` (LightGBM's model
text, best iteration only), so ``ta2d.models.load_model(best.pt)`` rebuilds it with
``load_state_dict(strict=True)`` from a ``weights_only`` checkpoint; a buffer of any length loads.
Fitting is deterministic for a seed and a thread count (``deterministic``, ``force_row_wise``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .hand_features import CATEGORICAL, feature_names, hand_features
from .ta_model import Normalizer, drop_inputs

DEFAULTS = {
    "num_leaves": 63,
    "learning_rate": 0.05,
    "max_rounds": 2000,
    "early_stopping": 100,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "num_threads": 2,
}


class GBTModel(nn.Module):
    """y_norm = LightGBM(hand_features(batch)); fitted by ``fit``; has no gradient parameters."""

    drop_features: tuple[str, ...] = ()  # FEATURE_GROUPS left out (set by build_model), in fit and forward

    def __init__(
        self,
        normalizer: Normalizer,
        num_leaves: int = DEFAULTS["num_leaves"],
        learning_rate: float = DEFAULTS["learning_rate"],
        max_rounds: int = DEFAULTS["max_rounds"],
        early_stopping: int = DEFAULTS["early_stopping"],
        min_data_in_leaf: int = DEFAULTS["min_data_in_leaf"],
        feature_fraction: float = DEFAULTS["feature_fraction"],
        bagging_fraction: float = DEFAULTS["bagging_fraction"],
        num_threads: int = DEFAULTS["num_threads"],
        seed: int = 42,
    ):
        super().__init__()
        self.normalizer = normalizer
        self.max_rounds, self.early_stopping = int(max_rounds), int(early_stopping)
        self.num_threads = int(num_threads)
        self.params = {
            "objective": "regression",
            "metric": "l2",
            "num_leaves": int(num_leaves),
            "learning_rate": float(learning_rate),
            "min_data_in_leaf": int(min_data_in_leaf),
            "feature_fraction": float(feature_fraction),
            "bagging_fraction": float(bagging_fraction),
            "bagging_freq": 1 if float(bagging_fraction) < 1.0 else 0,
            "num_threads": self.num_threads,
            "seed": int(seed),
            "deterministic": True,
            "force_row_wise": True,  # no timing-dependent row/col-wise choice: part of determinism
            "verbosity": -1,
        }
        self.register_buffer("booster", torch.zeros(0, dtype=torch.uint8))
        self._lgb = None  # the lightgbm.Booster of the buffer, built on first use
        self.fit_info: dict = {}

    # --- the booster inside the state dict ----------------------------------------------------------

    def _set_booster(self, model_str: str) -> None:
        data = torch.from_numpy(np.frombuffer(model_str.encode(), dtype=np.uint8).copy())
        self._buffers["booster"] = data.to(self.booster.device)
        self._lgb = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "booster"
        if key in state_dict:  # resize first: the model text has any length
            src = state_dict[key]
            self._buffers["booster"] = torch.zeros(src.shape, dtype=torch.uint8, device=self.booster.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self._lgb = None

    @property
    def fitted(self) -> bool:
        return self.booster.numel() > 0

    def lgb_booster(self):
        """The lightgbm.Booster held in the ``booster`` buffer."""
        import lightgbm as lgb

        if not self.fitted:
            raise RuntimeError("GBTModel is not fitted: call fit() or load a trained state dict")
        if self._lgb is None:
            text = bytes(self.booster.cpu().numpy()).decode()
            self._lgb = lgb.Booster(model_str=text)
        return self._lgb

    # --- fit / predict ------------------------------------------------------------------------------

    def features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """hand_features of the batch after leaving out the drop_features groups."""
        return hand_features(drop_inputs(batch, self.drop_features, self.normalizer),
                             self.normalizer.has_background)[1]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if batch["x"].shape[0] == 0:
            return torch.zeros(0, device=batch["x"].device)
        f = self.features(batch)
        booster = self.lgb_booster()
        if booster.num_feature() != f.shape[1]:
            raise RuntimeError(f"the booster was trained on {booster.num_feature()} features, "
                               f"hand_features gives {f.shape[1]}: retrain the run")
        pred = booster.predict(f.detach().cpu().numpy(), num_threads=self.num_threads)
        return torch.from_numpy(np.asarray(pred, dtype=np.float32)).to(f.device)

    @torch.no_grad()
    def _gather(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for batch in batches:
            f = self.features(batch)
            xs.append(f.cpu().numpy())
            ys.append(self.normalizer.norm_y(batch["y"].to(self.normalizer.y_mean.device)).float().cpu().numpy())
            del f
        n_feat = len(feature_names(self.normalizer.has_background))
        if not xs:
            return np.zeros((0, n_feat), np.float32), np.zeros(0, np.float32)
        return np.concatenate(xs), np.concatenate(ys)

    def fit(self, batches: Iterable[Mapping[str, torch.Tensor]],
            val_batches: Iterable[Mapping[str, torch.Tensor]] | None = None) -> GBTModel:
        """Train on the batches' normalised TA; early stopping on val_batches when they hold samples."""
        import lightgbm as lgb

        t0 = time.perf_counter()
        names = feature_names(self.normalizer.has_background)
        x, y = self._gather(batches)
        if len(y) == 0:
            raise ValueError("GBTModel.fit needs at least one training sample")
        xv, yv = self._gather(val_batches) if val_batches is not None else (x[:0], y[:0])
        dtrain = lgb.Dataset(x, label=y, feature_name=names, categorical_feature=list(CATEGORICAL),
                             params=self.params, free_raw_data=True)
        valid, callbacks = [], []
        if len(yv):
            valid = [lgb.Dataset(xv, label=yv, reference=dtrain, free_raw_data=True)]
            if self.early_stopping > 0:
                callbacks.append(lgb.early_stopping(self.early_stopping, first_metric_only=True, verbose=False))
        del x, xv
        booster = lgb.train(self.params, dtrain, num_boost_round=self.max_rounds, valid_sets=valid,
                            valid_names=["val"][: len(valid)], callbacks=callbacks)
        best = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        self._set_booster(booster.model_to_string(num_iteration=best))
        self.fit_info = {"rounds": best, "n_train": len(y), "n_val": len(yv),
                         "seconds": round(time.perf_counter() - t0, 3)}
        return self
