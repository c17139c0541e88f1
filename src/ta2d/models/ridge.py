"""Ridge regression baseline on centre-pixel features, fitted in closed form (one streaming pass)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ta2d.channels import X_CHANNELS

from .ta_model import BACKGROUND, Normalizer, center_pixels, drop_inputs, station_height

N_FEATURES = len(X_CHANNELS) + 7 + 2 + 17 + 1  # centre x, time7, lat/lon, land cover, station height


def n_features(background: bool) -> int:
    """Columns of ridge_features: N_FEATURES, + 1 for a model built with the reanalysis background."""
    return N_FEATURES + int(background)


def ridge_features(batch: Mapping[str, torch.Tensor], norm: Normalizer) -> torch.Tensor:
    """(B, 46) normalised centre-pixel planes, time7, lat/lon, land-cover one-hot, station height; (B, 47) with
    the normalised background at the pixel when the normaliser has its statistics."""
    parts = [norm.norm_x(center_pixels(batch)), norm.norm_time7(batch["time7"]), norm.norm_loc(batch["loc"]),
             batch["landcover_onehot"], station_height(batch)]
    if norm.has_background:
        parts.append(norm.norm_background(batch[BACKGROUND]))
    return torch.cat(parts, dim=1)


def solve_ridge(xtx: torch.Tensor, xty: torch.Tensor, alpha: float) -> torch.Tensor:
    """Solve (XtX + alpha P) w = Xty, X with a trailing intercept column that P leaves unpenalised.

    Minimum-norm (SVD) solve, so collinear features (the one-hot sums to the intercept) are fine.
    """
    pen = torch.full((xtx.shape[0],), float(alpha), dtype=xtx.dtype)
    pen[-1] = 0.0
    return torch.linalg.lstsq(xtx + torch.diag(pen), xty[:, None], driver="gelsd").solution[:, 0]


class RidgeModel(nn.Module):
    """y_norm = features @ weight + bias; fitted by ``fit``; has no gradient parameters."""

    drop_features: tuple[str, ...] = ()
    needs_patch = False  # the centre pixel (x_center) is all it reads: maps need no patches

    def __init__(self, normalizer: Normalizer, alpha: float = 1.0):
        super().__init__()
        self.normalizer, self.alpha = normalizer, float(alpha)
        self.register_buffer("weight", torch.zeros(n_features(normalizer.has_background)))
        self.register_buffer("bias", torch.zeros(()))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = drop_inputs(batch, self.drop_features, self.normalizer)
        return ridge_features(batch, self.normalizer) @ self.weight + self.bias

    @torch.no_grad()
    def fit(self, batches: Iterable[Mapping[str, torch.Tensor]]) -> RidgeModel:
        """Accumulate XtX and Xty in float64 over the batches, then solve in closed form."""
        n = len(self.weight) + 1
        xtx = torch.zeros(n, n, dtype=torch.float64)
        xty = torch.zeros(n, dtype=torch.float64)
        for batch in batches:
            batch = drop_inputs({k: v.to(self.weight.device) for k, v in batch.items()}, self.drop_features,
                                self.normalizer)
            f = ridge_features(batch, self.normalizer).double()
            f = torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype, device=f.device)], 1).cpu()
            y = self.normalizer.norm_y(batch["y"]).double().cpu()
            xtx += f.T @ f
            xty += f.T @ y
        w = solve_ridge(xtx, xty, self.alpha)
        self.weight.copy_(w[:-1].float())
        self.bias.copy_(w[-1].float())
        return self
