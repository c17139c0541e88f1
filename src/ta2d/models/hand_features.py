"""Hand-made per-sample features of a chunk batch, for the tree baseline (gbt.py).

``hand_features(batch)`` is the one feature function of the gbt model: training, evaluation and maps all
call it through ``GBTModel.forward``, so a map pixel gets exactly the features of a training sample. It
reads the chunk tensors in physical units (x (B, 19, P, P) in ta2d.channels.X_CHANNELS order, time7,
loc, landcover_onehot and, when present, elev: the station elevation in m) and works for any odd patch
size P (centre P // 2). Pure torch, batched, on the batch's device, float32. Trees need no scaling, so
nothing is normalised.

Features (names in the returned list):
  c_{plane}                 centre pixel of all 19 planes (BT K, reflectance, SZA deg, DEM m, land-sea mask)
  {mean,std,min,max}_{ch}   patch statistics of the 16 spectral planes (std over pixels, ddof 0)
  c_{a}-{b}, mean_{a}-{b}   channel differences (split window, water vapour, 3.8 µm, ...) at the centre and
                            as patch means
  c_ndvi, mean_ndvi         (vi008 - vi006) / (vi008 + vi006 + 0.01)
  ir105_c-mean, dem_c-mean  centre minus patch mean (local anomaly; valley / ridge)
  coldfrac_{k}k             fraction of patch pixels with ir105 more than k K below the patch's warmest ir105
                            (cloud indicator), k in COLD_K
  t7_*                      the 7 time7 components (doy, UTC hour, month cos/sin; centre SZA)
  utc_hour, solar_hour, doy hour of day (UTC, and local mean solar time UTC + lon/15, mod 24) and day of
                            year (0-based, from time7's doy angle with a 365.25-day year) as plain numbers
  lat, lon
  landcover                 IGBP class index 0..16 (argmax of the one-hot), a categorical feature
  mean_dem, std_dem, land_frac   patch mean / std of the DEM, fraction of land pixels in the patch
  elev-dem_c                station elevation minus the centre DEM (m); 0 when the batch has no elev
                            (maps: the pixel itself is the target) or the elevation is unknown (nan)
  background                only with ``background=True`` (a gbt built with inputs.background): the reanalysis
                            at the pixel, °C, height-corrected to its DEM (the batch's ``background`` field)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from ta2d.channels import ALL_CHANNELS, BT_CHANNELS, X_CHANNELS

DIFFS: tuple[tuple[str, str], ...] = (
    ("ir105", "ir123"),  # split window: water vapour column, surface emissivity
    ("ir105", "ir087"),
    ("ir105", "ir112"),
    ("ir105", "ir133"),  # CO2 band: lower-troposphere temperature
    ("ir105", "wv073"),  # surface vs mid-troposphere; small under thick cloud
    ("wv063", "wv069"),
    ("wv069", "wv073"),
    ("sw038", "ir105"),  # day: reflected 3.8 µm; night: low cloud / fog
    ("ir096", "ir105"),  # ozone band
)
COLD_K: tuple[float, ...] = (3.0, 10.0)
CATEGORICAL: tuple[str, ...] = ("landcover",)
_I = {c: i for i, c in enumerate(X_CHANNELS)}
N_SPEC = len(ALL_CHANNELS)


def feature_names(background: bool = False) -> list[str]:
    """The names of hand_features' columns, in order (independent of the batch; ``background``: the model's
    flag, see :func:`hand_features`)."""
    names = [f"c_{p}" for p in X_CHANNELS]
    for stat in ("mean", "std", "min", "max"):
        names += [f"{stat}_{c}" for c in ALL_CHANNELS]
    names += [f"c_{a}-{b}" for a, b in DIFFS] + [f"mean_{a}-{b}" for a, b in DIFFS]
    names += ["c_ndvi", "mean_ndvi", "ir105_c-mean", "dem_c-mean"]
    names += [f"coldfrac_{k:g}k" for k in COLD_K]
    names += ["t7_doy_cos", "t7_doy_sin", "t7_hour_cos", "t7_hour_sin", "t7_month_cos", "t7_month_sin", "t7_sza"]
    names += ["utc_hour", "solar_hour", "doy", "lat", "lon", "landcover"]
    names += ["mean_dem", "std_dem", "land_frac", "elev-dem_c"]
    if background:
        names.append("background")
    return names


def _hours(cos: torch.Tensor, sin: torch.Tensor, period: float) -> torch.Tensor:
    """The position in [0, period) of the angle with this cos/sin."""
    return torch.remainder(torch.atan2(sin, cos) * (period / (2 * math.pi)), period)


def hand_features(batch: Mapping[str, torch.Tensor], background: bool = False) -> tuple[list[str], torch.Tensor]:
    """(names, (B, F) float32 features) of a batch of chunk tensors; see the module docstring. ``background`` is the
    model's flag, not the batch's: a chunk may carry the field for models that do not use it."""
    x = batch["x"].float()
    b, _, h, w = x.shape
    if h != w or h % 2 != 1:
        raise ValueError(f"hand_features needs square patches of odd size, got {h}x{w}")
    k = h // 2
    centre = x[:, :, k, k]  # (B, 19)
    spec = x[:, :N_SPEC].reshape(b, N_SPEC, h * w)  # (B, 16, P*P)
    mean = spec.mean(2)
    std = spec.std(2, correction=0)
    mn, mx = spec.amin(2), spec.amax(2)
    ia = [_I[a] for a, _ in DIFFS]
    ib = [_I[c] for _, c in DIFFS]
    c_diff = centre[:, ia] - centre[:, ib]
    m_diff = mean[:, ia] - mean[:, ib]
    i6, i8 = _I["vi006"], _I["vi008"]
    c_ndvi = (centre[:, i8] - centre[:, i6]) / (centre[:, i8] + centre[:, i6] + 0.01)
    m_ndvi = (mean[:, i8] - mean[:, i6]) / (mean[:, i8] + mean[:, i6] + 0.01)
    i105 = BT_CHANNELS.index("ir105")
    ir105 = spec[:, i105]  # (B, P*P)
    cold = torch.stack([(ir105 < mx[:, i105:i105 + 1] - kk).float().mean(1) for kk in COLD_K], 1)
    dem = x[:, _I["dem"]].reshape(b, h * w)
    lsm = x[:, _I["land_sea_mask"]].reshape(b, h * w)
    dem_c = centre[:, _I["dem"]]

    t7 = batch["time7"].float()
    loc = batch["loc"].float()
    utc = _hours(t7[:, 2], t7[:, 3], 24.0)
    solar = torch.remainder(utc + loc[:, 1] / 15.0, 24.0)
    doy = _hours(t7[:, 0], t7[:, 1], 365.25)
    landcover = batch["landcover_onehot"].argmax(1).float()
    elev = batch.get("elev")
    if elev is None:
        offset = torch.zeros_like(dem_c)
    else:
        elev = elev.float().to(dem_c.device)
        offset = torch.where(torch.isfinite(elev), elev - dem_c, torch.zeros_like(dem_c))

    cols = [
        centre, mean, std, mn, mx, c_diff, m_diff,
        torch.stack([c_ndvi, m_ndvi, centre[:, i105] - mean[:, i105], dem_c - dem.mean(1)], 1),
        cold, t7,
        torch.stack([utc, solar, doy, loc[:, 0], loc[:, 1], landcover,
                     dem.mean(1), dem.std(1, correction=0), lsm.mean(1), offset], 1),
    ]
    if background:
        cols.append(batch["background"].float().to(dem_c.device)[:, None])
    feats = torch.cat(cols, 1)
    names = feature_names(background)
    assert feats.shape[1] == len(names), (feats.shape, len(names))
    return names, feats
