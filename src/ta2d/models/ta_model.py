"""TA regression models: the in-model normaliser, the 9x9 -> Clay patch adapter, clay_transfer and the CNN.

Every model takes a batch dict of chunk tensors in physical units (x, time7, loc, landcover_onehot, elev and,
for a model built with the reanalysis background, background; or the embedding-cache fields emb and x_center)
and returns the TA prediction in normalised units (z-score); ``Normalizer.denorm_y`` turns it into °C. The
normalisation statistics are buffers, so they travel in every state dict and checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ta2d.channels import ALL_CHANNELS, CHANNELS, X_CHANNELS
from ta2d.config import FINETUNE_MODES  # run key finetune: what of the encoder trains

from .clay import ClayEncoder, clay_time_latlon

N_SPECTRAL = len(ALL_CHANNELS)  # x[:, 0:16] go to the encoder
I_SZA, I_DEM, I_LSM = (X_CHANNELS.index(c) for c in ("sza", "dem", "land_sea_mask"))
N_SIDE = 7 + 2 + 17 + 3 + 1  # time7, lat/lon, land cover, centre SZA/DEM/land-sea mask, station height
BACKGROUND = "background"  # the chunk field (ta2d.chunks.contract.BACKGROUND_FIELD), a batch key like the others


def n_side(background: bool) -> int:
    """Width of ``side_features``: N_SIDE, + 1 for a model built with the reanalysis background."""
    return N_SIDE + int(background)
ELEV_SCALE_M = 100.0  # station height above its pixel, in units of 100 m (0.65 K of lapse rate)
# How a P x P patch meets Clay's patch size 8: the side of the grid the encoder gets (as a function of P).
PATCH_MODES = {
    "area8": lambda p: 8,  # exact area resample to 8x8: one token
    "crop8": lambda p: 8,  # the central 8x8 (P = 9: drop the last row and column): one token
    "bilinear16": lambda p: 16,  # bilinear upsample to 16x16: 4 tokens
    "area": lambda p: 8 * max(p // 8, 1),  # exact area resample to 8 * (P // 8): 9 -> 8, 17 -> 16, 33 -> 32
}
# pixel modes: one token per pixel (each an 8x8 block) of the central window they keep; None = the whole patch
PIXEL_WINDOW = {"pixel": None, "pixel5": 5, "pixel7": 7}
PATCH_MODES.update({m: (lambda p, w=w: 8 * (w or p)) for m, w in PIXEL_WINDOW.items()})


def clay_grid_side(patch_size: int, mode: str) -> int:
    """Side of the grid a patch of `patch_size` becomes for the encoder; (side / 8)^2 patch tokens."""
    if mode not in PATCH_MODES:
        raise ValueError(f"unknown patch_mode {mode!r}; choose one of {sorted(PATCH_MODES)}")
    window = PIXEL_WINDOW.get(mode)
    if window is not None and patch_size < window:
        raise ValueError(f"patch_mode {mode} needs a patch of at least {window} pixels, got {patch_size}")
    return PATCH_MODES[mode](patch_size)


def clay_grid_gsd(native_m, patch_size: int, mode: str):
    """Ground size (m) of one pixel of the grid ``to_clay_grid`` makes, which Clay's position code scales by:
    the native pixel for crop8, an eighth of it for the pixel modes (a pixel is 8x8 grid cells), else the
    patch's extent over the grid's side."""
    if mode == "crop8":
        return native_m
    if mode in PIXEL_WINDOW:
        return native_m / 8.0
    return native_m * (patch_size / clay_grid_side(patch_size, mode))


def centre_tokens(grid: int) -> list[int]:
    """Row-major indices of the patch tokens whose cells touch the patch centre (the station pixel): the middle
    one of an odd grid, the middle four of an even one."""
    mid = [grid // 2] if grid % 2 else [grid // 2 - 1, grid // 2]
    return [r * grid + c for r in mid for c in mid]


def centre_index(x: torch.Tensor) -> int:
    """Index of the station pixel in a (..., P, P) patch (P odd)."""
    return x.shape[-1] // 2


def default_waves() -> list[float]:
    """Effective centre wavelengths (µm) of the 16 spectral planes of x, in x's channel order."""
    return [CHANNELS[c].wavelength_um for c in ALL_CHANNELS]


class Normalizer(nn.Module):
    """z-score of x (19 planes), time7's SZA (with x's SZA stats), lat/lon, TA and, when given its statistics, the
    reanalysis background; stats are buffers.

    The background's statistics are also the flag that a model takes the background at all (``has_background``):
    they come from the train chunks' stats.json when the chunks carry the field, and travel in every checkpoint's
    ``stats`` and state dict, so a model rebuilt from best.pt or a model file has the inputs it was trained with.
    """

    def __init__(self, x_mean, x_std, y_mean, y_std, loc_mean=(0.0, 0.0), loc_std=(90.0, 180.0),
                 background_mean=None, background_std=None):
        super().__init__()

        def std(v):
            t = torch.as_tensor(v, dtype=torch.float32).clone()
            return torch.where(t > 0, t, torch.ones_like(t))  # a constant plane (e.g. all land) stays as is

        self.register_buffer("x_mean", torch.as_tensor(x_mean, dtype=torch.float32).clone())
        self.register_buffer("x_std", std(x_std))
        self.register_buffer("y_mean", torch.as_tensor(y_mean, dtype=torch.float32).clone())
        self.register_buffer("y_std", std(y_std))
        self.register_buffer("loc_mean", torch.as_tensor(loc_mean, dtype=torch.float32).clone())
        self.register_buffer("loc_std", std(loc_std))
        if (background_mean is None) != (background_std is None):
            raise ValueError("the background needs both background_mean and background_std")
        self.has_background = background_mean is not None
        if self.has_background:
            self.register_buffer("background_mean", torch.as_tensor(background_mean, dtype=torch.float32).clone())
            self.register_buffer("background_std", std(background_std))

    @classmethod
    def from_stats(cls, stats: Mapping) -> Normalizer:
        keys = ("x_mean", "x_std", "y_mean", "y_std")
        if any(k not in stats for k in keys) or len(stats["x_mean"]) != len(X_CHANNELS):
            raise ValueError(f"stats need {keys} with {len(X_CHANNELS)} x entries, got {sorted(stats)}")
        extra = {k: stats[k] for k in ("loc_mean", "loc_std", "background_mean", "background_std") if k in stats}
        return cls(stats["x_mean"], stats["x_std"], stats["y_mean"], stats["y_std"], **extra)

    def stats(self) -> dict:
        keys = ("x_mean", "x_std", "y_mean", "y_std", "loc_mean", "loc_std")
        if self.has_background:
            keys += ("background_mean", "background_std")
        return {k: getattr(self, k).tolist() for k in keys}

    def norm_x(self, x):  # (B, 19, H, W) or (B, 19); chunks may store x as float16
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x.float() - self.x_mean.view(shape)) / self.x_std.view(shape)

    def norm_time7(self, t7):
        sza = (t7[:, 6:7] - self.x_mean[I_SZA]) / self.x_std[I_SZA]
        return torch.cat([t7[:, :6], sza], dim=1)

    def norm_loc(self, loc):
        return (loc[:, :2] - self.loc_mean) / self.loc_std

    def norm_y(self, y):
        return (y - self.y_mean) / self.y_std

    def norm_background(self, b):  # (B,) °C -> (B, 1)
        return ((b.float() - self.background_mean) / self.background_std)[:, None]

    def denorm_y(self, z):
        return z * self.y_std + self.y_mean


# Input groups a run may leave out (run config drop_features): each is replaced by a constant, so the
# model gets no information from it, in training, evaluation and maps alike.
FEATURE_GROUPS = {
    "doy": "day-of-year cos/sin (time7[0:2]); on a short period it can act as a day identifier",
    "hour": "UTC hour cos/sin (time7[2:4])",
    "month": "month cos/sin (time7[4:6])",
    "latlon": "station latitude/longitude (loc[:, 0:2])",
    "landcover": "land-cover one-hot of the station pixel",
    "station_height": "station elevation (elev), i.e. its height above the pixel DEM",
    "background": "the reanalysis background at the pixel (a model built with inputs.background): its train mean",
    "embedding": "clay_transfer: the encoder's embedding (zeros): the head alone, the ablation Clay must beat",
}
_TIME7_COLUMNS = {"doy": (0, 2), "hour": (2, 4), "month": (4, 6)}


def drop_inputs(batch: Mapping[str, torch.Tensor], groups, norm: Normalizer) -> Mapping[str, torch.Tensor]:
    """The batch with the inputs of ``groups`` (FEATURE_GROUPS) replaced by constants; unchanged when empty."""
    if not groups:
        return batch
    out = dict(batch)
    if any(g in _TIME7_COLUMNS for g in groups) and "time7" in out:
        t7 = out["time7"].clone()
        for g in groups:
            if g in _TIME7_COLUMNS:
                lo, hi = _TIME7_COLUMNS[g]
                t7[:, lo:hi] = 0.0
        out["time7"] = t7
    if "latlon" in groups and "loc" in out:
        loc = out["loc"].clone()
        loc[:, :2] = norm.loc_mean.to(loc.dtype)
        out["loc"] = loc
    if "landcover" in groups and "landcover_onehot" in out:
        out["landcover_onehot"] = torch.zeros_like(out["landcover_onehot"])
    if "station_height" in groups:
        out.pop("elev", None)
    if BACKGROUND in groups and BACKGROUND in out and norm.has_background:
        out[BACKGROUND] = torch.full_like(out[BACKGROUND], float(norm.background_mean))
    return out


def uses_background(model: nn.Module) -> bool:
    """Whether a model takes the reanalysis background (its normaliser has the background's statistics)."""
    norm = getattr(model, "normalizer", None)
    return bool(getattr(norm, "has_background", False))


def input_fields(model: nn.Module, fields: Sequence[str]) -> tuple[str, ...]:
    """The chunk (or embedding-file) fields a model reads: ``fields`` plus those of the optional inputs it was built
    with, so that chunks without them still serve models that do not need them."""
    return tuple(fields) + ((BACKGROUND,) if uses_background(model) and BACKGROUND not in fields else ())


def center_pixels(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The 19 planes at the station pixel, (B, 19), from x or from the cache's x_center."""
    if "x_center" in batch:
        return batch["x_center"].float()
    c = centre_index(batch["x"])
    return batch["x"][:, :, c, c].float()


def station_height(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """(B, 1) station elevation minus its pixel's DEM, /100 m: the lapse-rate offset a station's label
    carries that no pixel shows (0 where the chunk has no `elev`)."""
    centre = center_pixels(batch)
    if "elev" not in batch:
        return torch.zeros(len(centre), 1, dtype=centre.dtype, device=centre.device)
    return ((batch["elev"] - centre[:, I_DEM]) / ELEV_SCALE_M)[:, None]


def side_features(batch: Mapping[str, torch.Tensor], norm: Normalizer) -> torch.Tensor:
    """Normalised covariates the heads see: time7, lat/lon, land cover, centre SZA/DEM/mask, the
    station height above its pixel (B, 30) and, for a model built with the background, the normalised
    reanalysis background at the pixel (B, 31).

    The background is a side feature, not a 20th plane: the 19-plane x of the chunk contract is fixed (the
    encoder's wavelengths, the CNN's input, the stored patches and the dense maps share it), and at 0.1° (~10 km)
    the reanalysis hardly varies across a 9x9 patch of 2 km pixels. One feature, at the pixel DEM: the station's
    height above its pixel, the rest of the lapse-rate correction, is a feature already."""
    c = norm.norm_x(center_pixels(batch))[:, [I_SZA, I_DEM, I_LSM]]
    parts = [norm.norm_time7(batch["time7"]), norm.norm_loc(batch["loc"]), batch["landcover_onehot"], c,
             station_height(batch)]
    if norm.has_background:
        parts.append(norm.norm_background(batch[BACKGROUND]))
    return torch.cat(parts, dim=1)


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) exact area-weighting matrix: row j averages input cells over [j, j+1) * n_in/n_out."""
    scale = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * scale
    cells = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(lo + scale, cells + 1) - torch.maximum(lo, cells)).clamp(min=0)
    return (overlap / scale).float()


def to_clay_grid(pixels: torch.Tensor, mode: str) -> torch.Tensor:
    """Map a P x P patch onto a grid the patch-8 encoder takes (see PATCH_MODES).

    area8 / area: exact area resample to 8x8 / 8*(P//8) (every pixel contributes, the station stays at
    the centre; area gives a 17x17 patch 4 tokens, 33x33 16); crop8: the central 8x8 (for P = 9 the
    last row and column dropped, the station pixel at index 4 of 0..7); bilinear16: bilinear upsample
    to 16x16 (4 tokens, ~2.5x the encoder cost of area8); pixel / pixel5 / pixel7: every pixel of the
    patch / of its central 5x5 / 7x7 repeated into an 8x8 block, so that each is a token of its own
    (Clay's patch embedding then maps a pixel's 16 values linearly to its token).
    """
    p = pixels.shape[-1]
    side = clay_grid_side(p, mode)
    if mode in ("area8", "area"):
        if side == p:
            return pixels
        a = area_matrix(p, side).to(pixels.device, pixels.dtype)
        return torch.einsum("jh,bchw,kw->bcjk", a, pixels, a)
    if mode == "crop8":
        lo = (p - 8) // 2
        return pixels[..., lo : lo + 8, lo : lo + 8]
    if mode in PIXEL_WINDOW:
        w = PIXEL_WINDOW[mode] or p
        lo = (p - w) // 2
        window = pixels[..., lo : lo + w, lo : lo + w]
        return window.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    return F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False)


# Encoder features the head sees (run key pool) and their width in encoder dims.
POOLS = {"cls": 1, "cls_mean": 2, "cls_mean_centre": 3}


def pool_tokens(tokens: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, 1+L, D) encoder tokens -> (B, POOLS[pool] * D): the cls token, the mean patch token and, for
    cls_mean_centre, the token(s) at the station pixel (``centre_tokens``): with a token per pixel
    (``pixel`` modes) that is the station pixel seen in its context, as the CNN's centre feature is."""
    parts = [tokens[:, 0]]
    if pool != "cls":
        parts.append(tokens[:, 1:].mean(dim=1))
    if pool == "cls_mean_centre":
        grid = math.isqrt(tokens.shape[1] - 1)
        parts.append(tokens[:, [1 + i for i in centre_tokens(grid)]].mean(dim=1))
    return torch.cat(parts, dim=1)


def mlp(n_in: int, hidden: int, n_hidden: int = 2) -> nn.Sequential:
    layers, d = [], n_in
    for _ in range(n_hidden):
        layers += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, 1))


class ClayTransfer(nn.Module):
    """Normaliser -> patch adapter (patch_mode) -> Clay encoder -> pooled tokens (pool) -> bottleneck + side
    features (+ station pixel) -> MLP head.

    ``head_pixel``: the head also sees the station pixel's 16 normalised spectral values, a skip around the encoder.
    The label is a property of that pixel, which the encoder sees only as a share of a token (area8: one token
    averages all 81 pixels); without the skip a frozen encoder must carry it through its projection. On the demo it
    takes a random frozen tiny encoder from 1.215 K to 0.910 K
    (docs/experiments/clay-on-the-demo.md#the-station-pixel-in-the-head).

    ``head_embed_dim``: the embedding is projected linearly to this many features before the MLP (0: not at
    all). Fed the whole embedding (384 features for tiny) the MLP fits the noise of the training days: on the
    demo a frozen random encoder's head then scores worse than the head alone (docs/experiments/clay-on-the-demo.md).

    ``head_decorrelate``: the head sees the embedding centred and rotated into its principal axes on the train
    split (``set_head_basis``, fitted by ta2d.training.head_basis before the first epoch), instead of
    LayerNormed. The features of a Clay embedding are strongly correlated (576 from 16 bands for pixel5), and
    the few directions the labels need (on the demo: one band's 5x5 mean to four nines) are ones AdamW's
    per-parameter steps cannot follow in correlated coordinates: the probe's head reached 0.881 K from the
    patch embedding, which holds those means exactly, against 0.827 from the means themselves; rotated, the
    frozen pixel5 encoder's head went from 0.883 to 0.862 K (docs/experiments/clay-on-the-demo.md). A rotation, not a
    whitening: scaling the weak axes up made the head fit their noise.

    ``finetune``: frozen (the head only; the encoder runs without autograd and in eval mode), last_k (the last
    ``finetune_blocks`` blocks + final norm train: autograd starts at the first trainable block, since nothing
    before it needs a gradient) or full.
    """

    drop_features: tuple[str, ...] = ()  # FEATURE_GROUPS this model does not see (set by build_model)

    def __init__(
        self,
        normalizer: Normalizer,
        preset: str = "tiny",
        waves: Sequence[float] | None = None,
        patch_mode: str = "area8",
        pool: str = "cls_mean",
        head_hidden: int = 256,
        finetune: str = "frozen",
        finetune_blocks: int = 1,
        encoder: ClayEncoder | None = None,
        head_pixel: bool = True,
        head_embed_dim: int = 0,
        head_decorrelate: bool = False,
    ):
        super().__init__()
        if patch_mode not in PATCH_MODES:
            raise ValueError(f"unknown patch_mode {patch_mode!r}; choose one of {sorted(PATCH_MODES)}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; choose one of {list(POOLS)}")
        waves = default_waves() if waves is None else list(waves)
        if len(waves) != N_SPECTRAL:
            raise ValueError(f"waves needs {N_SPECTRAL} wavelengths (µm, x channel order), got {len(waves)}")
        self.patch_mode, self.pool = patch_mode, pool
        self.normalizer = normalizer
        self.register_buffer("waves", torch.tensor(waves, dtype=torch.float32))
        self.encoder = ClayEncoder.from_preset(preset) if encoder is None else encoder
        self.embed_dim = self.encoder.dim * POOLS[pool]
        self.head_decorrelate = bool(head_decorrelate)
        if self.head_decorrelate:  # identity until set_head_basis; saved with the model
            self.register_buffer("emb_center", torch.zeros(self.embed_dim))
            self.register_buffer("emb_basis", torch.eye(self.embed_dim))
        else:
            self.emb_norm = nn.LayerNorm(self.embed_dim)
        # a linear bottleneck: the MLP fed the whole embedding fits the training days' noise
        # (docs/experiments/clay-on-the-demo.md#what-the-labels-need)
        self.emb_proj = nn.Linear(self.embed_dim, head_embed_dim) if head_embed_dim else nn.Identity()
        self.head_pixel = bool(head_pixel)
        n_emb = head_embed_dim or self.embed_dim
        self.head = mlp(n_emb + n_side(normalizer.has_background) + (N_SPECTRAL if self.head_pixel else 0),
                        head_hidden)
        self.set_finetune(finetune, finetune_blocks)

    def set_finetune(self, mode: str, blocks: int = 1) -> None:
        """What of the encoder trains (run key finetune): frozen, last_k (the last ``blocks`` transformer blocks
        and the final norm; earlier blocks, cls token and patch embedding stay frozen) or full."""
        depth = len(self.encoder.transformer.layers)
        if mode not in FINETUNE_MODES:
            raise ValueError(f"unknown finetune {mode!r}; choose one of {list(FINETUNE_MODES)}")
        if mode == "last_k" and not 1 <= blocks <= depth:
            raise ValueError(f"finetune_blocks={blocks}: the encoder has {depth} blocks")
        self.finetune, self.finetune_blocks = mode, blocks
        self.encoder.requires_grad_(mode == "full")
        if mode == "last_k":
            for block in self.encoder.transformer.layers[depth - blocks :]:
                block.requires_grad_(True)
            self.encoder.transformer.norm.requires_grad_(True)

    def set_head_basis(self, center: torch.Tensor, basis: torch.Tensor) -> None:
        """The embedding's mean (D,) and principal axes (D, D), columns by falling variance (head_decorrelate)."""
        if not self.head_decorrelate:
            raise ValueError("set_head_basis needs a model built with head_decorrelate")
        if center.shape != self.emb_center.shape or basis.shape != self.emb_basis.shape:
            raise ValueError(f"head basis: centre {tuple(center.shape)} and basis {tuple(basis.shape)} for an "
                             f"embedding of {self.embed_dim}")
        self.emb_center.copy_(center)
        self.emb_basis.copy_(basis)

    def head_view(self, emb: torch.Tensor) -> torch.Tensor:
        """The embedding as the head's bottleneck sees it: rotated (head_decorrelate) or LayerNormed."""
        emb = emb.float()
        if self.head_decorrelate:
            return (emb - self.emb_center) @ self.emb_basis
        return self.emb_norm(emb)

    @property
    def freeze_encoder(self) -> bool:
        """Whether no encoder weight trains (finetune: frozen): its features can then be cached."""
        return self.finetune == "frozen"

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def embed(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Encoder features (B, embed_dim) of a batch: what the embedding cache stores."""
        norm = self.normalizer
        batch = drop_inputs(batch, self.drop_features, norm)
        pixels = to_clay_grid(norm.norm_x(batch["x"])[:, :N_SPECTRAL], self.patch_mode)
        time, latlon = clay_time_latlon(batch["time7"], batch["loc"])
        gsd = clay_grid_gsd(batch["loc"][:, 2].mean(), batch["x"].shape[-1], self.patch_mode)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            tokens = self.encoder(pixels, time, latlon, gsd, self.waves)
        return pool_tokens(tokens, self.pool)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        batch = drop_inputs(batch, self.drop_features, self.normalizer)
        if "embedding" in self.drop_features:  # the ablation: the head without the encoder
            emb = torch.zeros(len(batch["time7"]), self.embed_dim, device=self.waves.device)
        else:
            emb = batch["emb"] if "emb" in batch else self.embed(batch)
        feats = [self.emb_proj(self.head_view(emb)), side_features(batch, self.normalizer)]
        if self.head_pixel:
            feats.append(self.normalizer.norm_x(center_pixels(batch))[:, :N_SPECTRAL])
        return self.head(torch.cat(feats, dim=1)).squeeze(1)


CNN_PADDINGS = ("valid", "same")


def box_mean(f: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H - k + 1, W - k + 1): the mean of every k x k window of f, as k + k shifted slices (separable; on the
    CPU several times faster than avg_pool2d with stride 1)."""
    h, w = f.shape[2] - k + 1, f.shape[3] - k + 1
    rows = f[:, :, :h]
    for i in range(1, k):
        rows = rows + f[:, :, i:i + h]
    out = rows[:, :, :, :w]
    for j in range(1, k):
        out = out + rows[:, :, :, j:j + w]
    return out / (k * k)


class PatchCNN(nn.Module):
    """Small CNN from scratch on all 19 normalised planes, plus the side features.

    The head sees the mean of the last conv layer's features over the patch and the feature at the station
    pixel. ``padding="valid"`` (the default since maps became dense) convolves without padding, so a 9x9 patch
    gives 5x5 features, each computed from real pixels only: the features of every pixel of a scene are then
    one dense convolution over the scene, equal to the per-patch ones (``dense_features``). With ``"same"``
    (zero padding, the older models) the features near a patch's border see zeros that a dense pass does not
    have, so such a model is mapped patch by patch.
    """

    drop_features: tuple[str, ...] = ()

    def __init__(self, normalizer: Normalizer, channels: Sequence[int] = (32, 64), head_hidden: int = 128,
                 padding: str = "valid"):
        super().__init__()
        if padding not in CNN_PADDINGS:
            raise ValueError(f"cnn padding {padding!r}; choose one of {CNN_PADDINGS}")
        self.normalizer = normalizer
        self.padding = padding
        convs, c_in = [], len(X_CHANNELS)
        for c in channels:
            convs += [nn.Conv2d(c_in, c, 3, padding=1 if padding == "same" else 0), nn.GELU()]
            c_in = c
        self.convs = nn.Sequential(*convs)
        self.n_convs = len(channels)
        self.head = mlp(2 * c_in + n_side(normalizer.has_background), head_hidden)

    @property
    def dense(self) -> bool:
        """Whether ``dense_features`` over a scene equals the per-patch features (valid padding)."""
        return self.padding == "valid"

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        f = self.convs(self.normalizer.norm_x(batch["x"]))
        c = centre_index(f)
        return self.predict_features(torch.cat([f.mean(dim=(2, 3)), f[:, :, c, c]], 1), batch)

    def predict_features(self, conv_features: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The head on (B, 2C) pooled conv features (patch mean, centre) and the batch's side features."""
        batch = drop_inputs(batch, self.drop_features, self.normalizer)
        feats = torch.cat([conv_features, side_features(batch, self.normalizer)], 1)
        return self.head(feats).squeeze(1)

    def dense_features(self, planes: torch.Tensor, patch_size: int) -> torch.Tensor:
        """(1, 2C, H - P + 1, W - P + 1): the pooled conv features of every P x P patch of ``planes`` (1, 19, H, W,
        physical units, finite), as ``forward`` computes them for that patch alone: the patch mean of the last
        layer is a (P - 2n)-wide box mean of the dense feature map, the centre feature that map itself."""
        if not self.dense:
            raise ValueError("dense_features needs a cnn with valid padding")
        f = self.convs(self.normalizer.norm_x(planes))  # (1, C, H - 2n, W - 2n)
        k = patch_size - 2 * self.n_convs
        if k < 1:
            raise ValueError(f"a {patch_size}x{patch_size} patch is too small for {self.n_convs} valid 3x3 convs")
        mean = box_mean(f, k)
        centre = f[:, :, k // 2: f.shape[2] - k // 2, k // 2: f.shape[3] - k // 2]
        return torch.cat([mean, centre], 1)
