"""Clay v1.5 encoder, re-implemented from docs/clay-encoder.md (no dependency on ``claymodel``).

The module tree mirrors Clay's ``Encoder`` so that the ``model.encoder.`` slice of the real ``clay-v1.5.ckpt`` loads
with ``strict=True`` (265 tensors for the ``large`` preset). Masking is not built in: by default the encoder sees
every patch (``mask_ratio=0``, docs/clay-encoder.md#outputs-and-masking); masked pretraining (ta2d.models.mae) passes
``keep``, the indices of the patch tokens to encode. Quirks kept on purpose: wavelengths in µm, unscaled; the 0.02
kernel scale; the extra ``2/dim`` in the GSD position code; the cls token gets no encoding; one band set and one GSD
per batch.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# dim, depth, heads, dim_head, mlp_ratio (docs/clay-encoder.md#size-presets); patch size 8 for every preset.
PRESETS: dict[str, dict] = {
    "tiny": dict(dim=192, depth=6, heads=4, dim_head=48, mlp_ratio=2),
    "small": dict(dim=384, depth=6, heads=6, dim_head=64, mlp_ratio=2),
    "base": dict(dim=768, depth=12, heads=12, dim_head=64, mlp_ratio=4),
    "large": dict(dim=1024, depth=24, heads=16, dim_head=64, mlp_ratio=4),  # = clay v1.5
}
PATCH_SIZE = 8
WAVE_DIM = 128
CKPT_PREFIX = "model.encoder."


def posemb_sincos_1d(pos: torch.Tensor, dim: int, temperature: int = 10000) -> torch.Tensor:
    """[sin(p w_i)..., cos(p w_i)...] with w_i = temperature^(-i/(dim/2-1)), i < dim/2 -> (len(pos), dim)."""
    half = dim // 2
    # upstream Clay's operation order (1 / T**e, not T**-e), so a checkpoint's tokens match to fp32 rounding
    omega = torch.arange(half, device=pos.device) / (half - 1)
    omega = 1.0 / (temperature**omega)
    arg = pos.float()[:, None] * omega[None, :]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


def posemb_sincos_2d_with_gsd(h: int, w: int, dim: int, gsd, temperature: int = 10000) -> torch.Tensor:
    """Clay's GSD-scaled 2-D code (L=h*w, dim): [sin(x w), cos(x w), sin(y w), cos(y w)], x = column.

    w_i = gsd * temperature^(-(2/dim) * i/(dim/4-1)): the extra 2/dim is Clay's and is kept.
    """
    gsd = torch.as_tensor(gsd, dtype=torch.float32).reshape(())
    dev = gsd.device
    y, x = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
    q = dim // 4
    omega = torch.arange(q, device=dev) / (q - 1)
    omega = 1.0 / (temperature ** (2 * omega / dim)) * (gsd / 1.0)  # upstream's order, see posemb_sincos_1d
    xa = x.flatten().float()[:, None] * omega[None, :]
    ya = y.flatten().float()[:, None] * omega[None, :]
    return torch.cat([xa.sin(), xa.cos(), ya.sin(), ya.cos()], dim=1)


class FCBlock(nn.Module):
    """Residual MLP x + gelu(l2(gelu(l1(x))))."""

    def __init__(self, size: int):
        super().__init__()
        self.l1 = nn.Linear(size, size)
        self.l2 = nn.Linear(size, size)

    def forward(self, x):
        return x + F.gelu(self.l2(F.gelu(self.l1(x))))


class WavesTransformer(nn.Module):
    """Generates a conv kernel per band (and one bias) from the bands' wavelength codes."""

    def __init__(self, wave_dim: int, output_dim: int, num_latent_tokens: int, embed_dim: int,
                 num_heads: int = 4, num_layers: int = 1, bias: bool = True):
        super().__init__()
        self.num_latent_tokens = num_latent_tokens
        self.weight_tokens = nn.Parameter(torch.randn(num_latent_tokens, wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model=wave_dim, nhead=num_heads, activation="gelu", dropout=0.0,
                                           norm_first=False, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(wave_dim, output_dim)
        # Clay's decoder generates no bias (no fc_bias tensors in its state dict)
        self.fc_bias = nn.Linear(wave_dim, embed_dim) if bias else None

    def forward(self, codes: torch.Tensor):  # codes (C, wave_dim), unbatched
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)
        out = self.encoder(seq)
        bands = out[self.num_latent_tokens:-1] + codes  # residual from the layer's input
        return self.fc_weight(bands), None if self.fc_bias is None else self.fc_bias(out[-1])


class DynamicEmbedding(nn.Module):
    """DOFA-style patch embedding whose kernel is generated from the band wavelengths (µm)."""

    def __init__(self, wave_dim: int, num_latent_tokens: int, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size, self.embed_dim, self.wave_dim = patch_size, embed_dim, wave_dim
        self.weight_generator = WavesTransformer(wave_dim, patch_size * patch_size * embed_dim,
                                                 num_latent_tokens, embed_dim)
        self.fclayer = FCBlock(wave_dim)

    def kernel(self, waves: torch.Tensor):
        codes = self.fclayer(posemb_sincos_1d(waves, self.wave_dim))
        weight, bias = self.weight_generator(codes)
        k = self.patch_size
        weight = weight.reshape(len(waves), self.embed_dim, k, k).permute(1, 0, 2, 3)  # cout cin k k
        return weight * 0.02, bias

    def forward(self, pixels: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        weight, bias = self.kernel(waves)
        out = F.conv2d(pixels, weight.to(pixels.dtype), bias.to(pixels.dtype), stride=self.patch_size)
        return out.flatten(2).transpose(1, 2)  # (B, L, D), patches row-major


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).chunk(3, -1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in qkv)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        return self.net(x)


class Transformer(nn.Module):
    """Pre-norm ViT blocks and a final LayerNorm."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        )

    def forward(self, x):
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return self.norm(x)


class ClayEncoder(nn.Module):
    """Clay v1.5 ``Encoder`` without masking; forward returns all tokens (B, 1+L, dim), index 0 = cls."""

    def __init__(
        self, dim: int, depth: int, heads: int, dim_head: int, mlp_ratio: float, patch_size: int = PATCH_SIZE
    ):
        super().__init__()
        self.dim, self.patch_size = dim, patch_size
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.patch_embedding = DynamicEmbedding(WAVE_DIM, 128, patch_size, dim)
        self.transformer = Transformer(dim, depth, heads, dim_head, int(dim * mlp_ratio))

    @classmethod
    def from_preset(cls, name: str) -> ClayEncoder:
        if name not in PRESETS:
            raise ValueError(f"unknown Clay preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**PRESETS[name])

    def patch_tokens(self, pixels, time, latlon, gsd, waves) -> torch.Tensor:
        """The patch tokens with their position, time and lat/lon encodings, before the transformer (B, L, dim)."""
        b, _, h, w = pixels.shape
        if h != w or h % self.patch_size:
            raise ValueError(
                f"Clay needs a square input whose side is a multiple of {self.patch_size}, got {h}x{w}"
            )
        tokens = self.patch_embedding(pixels, waves)
        g = h // self.patch_size
        pos = posemb_sincos_2d_with_gsd(g, g, self.dim - 8, torch.as_tensor(gsd, device=pixels.device))
        meta = torch.cat([time, latlon], dim=1).to(tokens.dtype)  # (B, 8): channels dim-8..dim-1
        enc = torch.cat([pos.to(tokens.dtype).expand(b, -1, -1), meta[:, None, :].expand(-1, g * g, -1)], -1)
        return tokens + enc

    def forward(self, pixels, time, latlon, gsd, waves, keep: torch.Tensor | None = None) -> torch.Tensor:
        """pixels (B,C,H,W) normalised, H=W a multiple of 8; time, latlon (B,4); gsd (m); waves (C,) µm.

        ``keep`` (B, K) int64, optional: encode only these patch tokens (row-major indices), as Clay's
        masked Encoder does; the output is then (B, 1+K, dim) and the other patches never reach the
        transformer.
        """
        tokens = self.patch_tokens(pixels, time, latlon, gsd, waves)
        if keep is not None:
            tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[-1]))
        b = tokens.shape[0]
        tokens = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        return self.transformer(tokens)


class ClayCheckpointError(ValueError):
    """Raised when a checkpoint's encoder keys or shapes do not match the encoder."""


def extract_encoder_state(ckpt: Mapping, prefix: str = CKPT_PREFIX) -> dict[str, torch.Tensor]:
    """The encoder slice of a Lightning checkpoint ({"state_dict": ...}) or of a plain state dict.

    Keys under ``prefix`` are stripped of it; a dict without any such key is taken as already stripped.
    """
    sd = ckpt.get("state_dict", ckpt)
    sliced = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return sliced if sliced else dict(sd)


def check_encoder_state(
    encoder: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint", show: int = 5,
    what: str = "the Clay encoder",
) -> None:
    """Raise ClayCheckpointError naming the first few missing, unexpected or wrongly shaped keys."""
    own = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} != encoder {own[k]}"
        for k in own
        if k in state and tuple(state[k].shape) != own[k]
    ]
    if not (missing or unexpected or shapes):
        return
    parts = [f"{source} does not match {what} ({len(own)} tensors)"]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - show} more)" if len(items) > show else ""
            parts.append(f"{len(items)} {label}: " + ", ".join(items[:show]) + more)
    hint = " Is the preset right (large = clay v1.5)?" if shapes else ""
    raise ClayCheckpointError("; ".join(parts) + "." + hint)


def clay_encoder(preset: str, ckpt: str | Path | None = None, *, load_weights: bool = True) -> ClayEncoder:
    """The encoder of a preset: with ``ckpt`` its weights (built on the meta device, then loaded strictly, so no
    time goes into an initialisation that is overwritten); without one the preset's random initialisation
    (seeded by the caller). ``load_weights=False``: uninitialised memory, for a caller that restores every
    weight itself (a model file)."""
    if ckpt is None and load_weights:
        return ClayEncoder.from_preset(preset)
    with torch.device("meta"):
        encoder = ClayEncoder.from_preset(preset)
    if not load_weights:
        return encoder.to_empty(device="cpu")
    load_clay_checkpoint(encoder, ckpt)
    return encoder.float()


def load_clay_checkpoint(encoder: ClayEncoder, path: str | Path, prefix: str = CKPT_PREFIX) -> ClayEncoder:
    """Load the ``model.encoder.`` slice of a Clay checkpoint strictly (shapes and names checked first)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines() or [""]
        detail = next((ln.strip() for ln in lines if "Unsupported global" in ln), lines[0])
        raise ClayCheckpointError(
            f"{path} holds non-tensor objects that torch.load(weights_only=True) refuses ({detail}). "
            "Extract the encoder once from a file you trust: ck = torch.load(path, weights_only=False); "
            "torch.save({k: v for k, v in ck['state_dict'].items() if k.startswith('model.encoder.')}, "
            "'clay-v1.5-encoder.pt') and point clay_ckpt_path at the new file"
        ) from e
    state = extract_encoder_state(ckpt, prefix)
    check_encoder_state(encoder, state, source=str(path))
    on_meta = any(p.is_meta for p in encoder.parameters())
    encoder.load_state_dict(state, strict=True, assign=on_meta)
    return encoder


def clay_time_latlon(time7: torch.Tensor, loc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clay's time (sin w, cos w, sin h, cos h) and latlon (sin/cos of lat, lon in radians) from chunk fields.

    The week angle is taken from time7's day-of-year angle (doy*2pi/365 vs ISO week*2pi/52: the same
    angle to within a week's rounding); the hour angle is time7's (UTC, as Clay's STAC datetimes).
    """
    time = torch.stack([time7[:, 1], time7[:, 0], time7[:, 3], time7[:, 2]], dim=1)
    lat, lon = loc[:, 0] * (math.pi / 180), loc[:, 1] * (math.pi / 180)
    return time, torch.stack([lat.sin(), lat.cos(), lon.sin(), lon.cos()], dim=1)
