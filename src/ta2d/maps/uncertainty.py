"""The maps' standard errors: the model file's error model (ta2d.evaluation.uncertainty) at every pixel and slot.

A map pixel is a sample at its own pixel, so its sigma comes from the features a station there would have in the
evaluation: the slot's whole KST hour and the pixel's IR10.5 brightness temperature and VIS0.6 reflectance, read
from the scene as the pixel's own planes. The station-corrected field's standard error combines it with the
kriging variance (:func:`ta2d.maps.kriging.corrected_standard_error`).

A model file without an error model (exported before ta2d stored one, or from an evaluation without validation
chunks) maps as before, without standard errors, and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import xarray as xr

from ta2d.evaluation.uncertainty import ErrorModel, pixel_features

log = logging.getLogger(__name__)

BT_FEATURE, RF_FEATURE = "ir105", "vi006"  # the error model's cloud signs (ta2d.evaluation.uncertainty.FEATURES)


def map_error_model(info: Mapping, model_path) -> tuple[ErrorModel | None, str]:
    """(the model file's error model or None, what the map's ``standard_error`` attribute says about it)."""
    data = info.get("error_model")
    if not data:
        why = (f"none: the model file {model_path} holds no error model (exported before ta2d stored one, or "
               "evaluated without validation chunks): no TA_standard_error")
        log.warning("%s", why)
        return None, why
    try:
        model = ErrorModel.from_dict(dict(data))
    except (ValueError, KeyError, TypeError) as err:
        why = f"none: the error model in {model_path} cannot be used ({err}): no TA_standard_error"
        log.warning("%s", why)
        return None, why
    return model, (f"error model of run {info.get('run', '?')} (ta2d.evaluation.uncertainty): log sigma linear in "
                   f"the KST hour (cos, sin) and the pixel's IR10.5 BT and VIS0.6 reflectance, fit on "
                   f"{model.n_fit:,} validation residuals; TA_corrected_standard_error = sigma * sqrt(min(1, kriging "
                   "variance / sill))")


def _channel_index(slots: xr.Dataset, dim: str, name: str) -> int:
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in slots[dim].values]
    if name not in names:
        raise ValueError(f"scene has no channel {name!r} in {dim} ({names}): the error model needs it")
    return names.index(name)


def slot_standard_errors(model: ErrorModel, slots: xr.Dataset, ta: np.ndarray) -> np.ndarray:
    """sigma (T, H, W) float32, K, of every pixel where ``ta`` (T, H, W) is finite, NaN elsewhere; ``slots`` the
    scene's slots of ``ta`` (bt, rf, time), read one slot and two planes at a time."""
    sigma = np.full(ta.shape, np.nan, np.float32)
    ib, ir = _channel_index(slots, "bt_channel", BT_FEATURE), _channel_index(slots, "rf_channel", RF_FEATURE)
    unix = slots["time"].values.astype("datetime64[s]").astype(np.int64)
    for t in range(ta.shape[0]):
        ok = np.isfinite(ta[t])
        if not ok.any():
            continue
        bt = slots["bt"].isel(time=t, bt_channel=ib).values
        rf = slots["rf"].isel(time=t, rf_channel=ir).values
        sigma[t][ok] = model.sigma(pixel_features(int(unix[t]), bt[ok], rf[ok])).astype(np.float32)
    return sigma
