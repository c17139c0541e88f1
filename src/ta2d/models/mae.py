"""Clay's self-supervised objective for ta2d's encoder: masked autoencoding plus a representation loss.

``ClayMAE`` holds the same parts as upstream Clay's ``ClayMAE`` under the same names, so its state dict
with a ``model.`` prefix is a Lightning-shaped checkpoint (``model.encoder.*``, ``model.decoder.*``,
``model.proj.*``, ``model.teacher.*``) and ``load_clay_checkpoint`` reads its encoder like the real file:

* **masking** (``random_masking``): per sample, ``int(mask_ratio * L)`` of the L patch tokens are
  hidden; the encoder (``ClayEncoder(..., keep=...)``) transforms only the cls token and the visible
  ones, so hidden pixels never reach it.
* **decoder** (``ClayDecoder``, upstream ``Decoder``): encoder tokens -> ``enc_to_dec`` -> the visible
  tokens at their places, ``mask_patch`` at the hidden ones, each + position/time/lat-lon code -> a
  small transformer -> ``embed_to_pixels``, a linear map to the 8x8 pixels of every band whose weights
  are generated from the bands' wavelengths (as the encoder's patch embedding, without a bias).
* **reconstruction loss**: MSE between the decoder's pixels and the normalised input pixels, on the
  hidden patches only (upstream uses L1; MSE here, as the MAE paper).
* **representation loss** ``1 - cos(student, teacher)``, weighted ``rep_weight`` (upstream 0.1 against
  0.9 for reconstruction), with one of three teachers:

  - ``clay``: the frozen DINOv2 ViT-L/14 inside clay-v1.5.ckpt (``model.teacher.*``, ta2d.models.dinov2)
    on the bands closest to red/green/blue (vi006, vi005, vi004), resized to ``teacher_size``; the
    student is ``proj`` (Linear dim -> teacher dim, ``model.proj.*`` of the file) of the cls token of
    the masked view, exactly as upstream.
  - ``ema``: a DINO/BYOL-style teacher, an exponential moving average of the student's encoder and
    projection head (``teacher.encoder``, ``teacher.proj``; ``ema_update``) that sees the full,
    unmasked view; the student adds a predictor MLP after its head (BYOL's asymmetry, which keeps
    the two from collapsing onto a constant).
  - ``none``: reconstruction only.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .clay import (
    PATCH_SIZE,
    PRESETS,
    WAVE_DIM,
    ClayCheckpointError,
    ClayEncoder,
    FCBlock,
    Transformer,
    WavesTransformer,
    check_encoder_state,
    posemb_sincos_1d,
    posemb_sincos_2d_with_gsd,
)
from .dinov2 import DinoV2ViT

# Upstream Clay's decoder per encoder preset: dim, depth, heads, dim_head, mlp_ratio (clay_mae_{preset}).
DECODER_PRESETS: dict[str, dict] = {
    "tiny": dict(dim=96, depth=3, heads=2, dim_head=48, mlp_ratio=2),
    "small": dict(dim=192, depth=4, heads=4, dim_head=64, mlp_ratio=2),
    "base": dict(dim=512, depth=4, heads=4, dim_head=64, mlp_ratio=4),
    "large": dict(dim=512, depth=4, heads=4, dim_head=64, mlp_ratio=4),
}
TEACHERS = ("ema", "clay", "none")
REP_POOLS = ("cls", "mean")


def random_masking(
    batch: int, n_tokens: int, mask_ratio: float, generator: torch.Generator | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random split of ``n_tokens`` patch tokens: (keep (B,K), masked (B,M), mask (B,L) 1 = hidden).

    M = int(mask_ratio * L) as upstream; K = L - M. Indices are sorted; the noise comes from ``generator``
    on the CPU, so a seeded generator gives the same masks on any device.
    """
    n_mask = int(mask_ratio * n_tokens)
    if n_mask < 1 or n_mask >= n_tokens:
        raise ValueError(
            f"mask_ratio {mask_ratio} on {n_tokens} patch tokens hides {n_mask}: masked pretraining needs at least "
            "one hidden and one visible token (>= 4 tokens: tiles of 17x17 or 33x33 with patch_mode area, or "
            "bilinear16)"
        )
    order = torch.rand(batch, n_tokens, generator=generator).argsort(dim=1)
    masked, keep = order[:, :n_mask].sort(dim=1).values, order[:, n_mask:].sort(dim=1).values
    mask = torch.zeros(batch, n_tokens).scatter_(1, masked, 1.0)
    return keep.to(device), masked.to(device), mask.to(device)


def patchify(pixels: torch.Tensor, patch: int = PATCH_SIZE) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, C*patch*patch), tokens row-major, values ordered (band, row, column) as upstream."""
    b, c, h, w = pixels.shape
    g, k = h // patch, w // patch
    x = pixels.reshape(b, c, g, patch, k, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, g * k, c * patch * patch)


class PixelProjection(nn.Module):
    """Upstream's decoder-side DynamicEmbedding: tokens (B, L, dim) -> pixels (B, L, C*p*p) by a linear map
    whose weights are generated from the C bands' wavelengths (any band set), without a bias."""

    def __init__(self, wave_dim: int, num_latent_tokens: int, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size, self.embed_dim, self.wave_dim = patch_size, embed_dim, wave_dim
        self.weight_generator = WavesTransformer(wave_dim, patch_size * patch_size * embed_dim, num_latent_tokens,
                                                 embed_dim, bias=False)
        self.fclayer = FCBlock(wave_dim)
        for m in self.modules():  # upstream's initialize_weights (the encoder keeps ta2d's init)
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        codes = self.fclayer(posemb_sincos_1d(waves, self.wave_dim))
        weight, _ = self.weight_generator(codes)  # (C, p*p*dim), laid out (p1, p2, dim)
        weight = weight.reshape(len(waves) * self.patch_size**2, self.embed_dim) * 0.02  # rows (band, p1, p2)
        return F.linear(tokens, weight.to(tokens.dtype))


class ClayDecoder(nn.Module):
    """Upstream Clay's ``Decoder`` (same module names, so ``model.decoder.*`` of clay-v1.5.ckpt loads strictly)."""

    def __init__(self, encoder_dim: int, dim: int, depth: int, heads: int, dim_head: int, mlp_ratio: float,
                 patch_size: int = PATCH_SIZE):
        super().__init__()
        self.dim, self.patch_size = dim, patch_size
        self.enc_to_dec = nn.Linear(encoder_dim, dim) if encoder_dim != dim else nn.Identity()
        self.mask_patch = nn.Parameter(torch.randn(dim))
        self.transformer = Transformer(dim, depth, heads, dim_head, int(dim * mlp_ratio))
        self.embed_to_pixels = PixelProjection(WAVE_DIM, 128, patch_size, dim)

    @classmethod
    def from_preset(cls, name: str, encoder_dim: int | None = None) -> ClayDecoder:
        if name not in DECODER_PRESETS:
            raise ValueError(f"unknown Clay preset {name!r}; choose one of {sorted(DECODER_PRESETS)}")
        return cls(encoder_dim or PRESETS[name]["dim"], **DECODER_PRESETS[name])

    def forward(self, encoded: torch.Tensor, keep: torch.Tensor, masked: torch.Tensor, time, latlon, gsd,
                waves: torch.Tensor, grid: int) -> torch.Tensor:
        """encoded (B, 1+K, encoder_dim): cls + visible tokens in ``keep`` order -> pixels (B, L, C*p*p), L = grid^2."""
        x = self.enc_to_dec(encoded)
        cls_tok, visible = x[:, :1], x[:, 1:]
        b, n = x.shape[0], grid * grid
        pos = posemb_sincos_2d_with_gsd(grid, grid, self.dim - 8, torch.as_tensor(gsd, device=x.device))
        meta = torch.cat([time, latlon], dim=1).to(x.dtype)
        enc = torch.cat([pos.to(x.dtype).expand(b, -1, -1), meta[:, None, :].expand(-1, n, -1)], -1)  # (B, L, dim)
        tokens = self.mask_patch.to(x.dtype).expand(b, n, -1) + enc  # every place hidden ...
        idx = keep[:, :, None].expand(-1, -1, self.dim)
        tokens = tokens.scatter(1, idx, visible + enc.gather(1, idx))  # ... then the visible ones put back
        out = self.transformer(torch.cat([cls_tok, tokens], dim=1))
        return self.embed_to_pixels(out[:, 1:], waves)


def mlp_head(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


class EMATeacher(nn.Module):
    """The EMA copy of the student's encoder and projection head (no gradients)."""

    def __init__(self, encoder: nn.Module, proj: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.proj = copy.deepcopy(proj).requires_grad_(False)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter (matched by name);
    buffers are copied."""
    t_params = dict(teacher.named_parameters())
    for name, s in student.named_parameters():
        t_params[name].mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
    t_buffers = dict(teacher.named_buffers())
    for name, s in student.named_buffers():
        t_buffers[name].copy_(s)


class ClayMAE(nn.Module):
    """Student encoder + decoder (+ projection / predictor) and the teacher; ``forward`` returns the losses."""

    def __init__(
        self,
        encoder: ClayEncoder,
        decoder: ClayDecoder,
        *,
        mask_ratio: float = 0.75,
        teacher: str = "ema",
        rep_weight: float = 0.1,
        rep_pool: str = "cls",
        head_dim: int = 256,
        clay_teacher: DinoV2ViT | None = None,
        rgb_indices: Sequence[int] = (),
        teacher_size: int = 224,
    ):
        super().__init__()
        if teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {teacher!r}; choose one of {TEACHERS}")
        if rep_pool not in REP_POOLS:
            raise ValueError(f"unknown rep_pool {rep_pool!r}; choose one of {REP_POOLS}")
        self.mask_ratio, self.teacher_kind, self.rep_weight, self.rep_pool = mask_ratio, teacher, rep_weight, rep_pool
        self.encoder, self.decoder = encoder, decoder
        self.predictor = None
        if teacher == "clay":
            if clay_teacher is None or len(rgb_indices) != 3:
                raise ValueError("teacher clay needs the DINOv2 teacher of clay-v1.5.ckpt and three rgb_indices")
            if teacher_size % clay_teacher.patch:
                raise ValueError(f"teacher_size {teacher_size} is not a multiple of the teacher's patch "
                                 f"{clay_teacher.patch}")
            self.proj = nn.Linear(encoder.dim, clay_teacher.dim)
            self.teacher = clay_teacher.requires_grad_(False).eval()
            self.rgb_indices, self.teacher_size = list(rgb_indices), int(teacher_size)
        elif teacher == "ema":
            self.proj = mlp_head(encoder.dim, head_dim, head_dim)
            self.predictor = mlp_head(head_dim, head_dim, head_dim)
            self.teacher = EMATeacher(encoder, self.proj)
        else:
            self.proj = self.teacher = None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def student_state(self) -> dict[str, torch.Tensor]:
        """The state dict without a frozen clay teacher (it is rebuilt from clay_ckpt_path); an EMA teacher stays."""
        sd = self.state_dict()
        if self.teacher_kind == "clay":
            sd = {k: v for k, v in sd.items() if not k.startswith("teacher.")}
        return sd

    def lightning_state_dict(self) -> dict[str, torch.Tensor]:
        """``model.encoder.*`` and ``model.decoder.*`` (+ ``model.proj.*`` with the clay teacher), detached on
        the CPU: what clay-v1.5.ckpt holds of these parts, under the same names."""
        parts = [("encoder", self.encoder), ("decoder", self.decoder)]
        if self.teacher_kind == "clay":
            parts.append(("proj", self.proj))
        return {
            f"model.{name}.{k}": v.detach().cpu().clone()
            for name, mod in parts
            for k, v in mod.state_dict().items()
        }

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        if self.teacher_kind == "ema":
            ema_update(self.teacher.encoder, self.encoder, momentum)
            ema_update(self.teacher.proj, self.proj, momentum)

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.rep_pool == "cls" else tokens[:, 1:].mean(dim=1)

    def forward(self, pixels: torch.Tensor, time, latlon, gsd, waves: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """pixels (B, C, S, S) normalised (S a multiple of 8, >= 4 tokens) -> {"loss", "rec", "rep"} (float32)."""
        b, _, side, _ = pixels.shape
        grid = side // self.encoder.patch_size
        keep, masked, mask = random_masking(b, grid * grid, self.mask_ratio, generator, pixels.device)
        encoded = self.encoder(pixels, time, latlon, gsd, waves, keep=keep)
        pred = self.decoder(encoded, keep, masked, time, latlon, gsd, waves, grid)
        err = (pred.float() - patchify(pixels, self.encoder.patch_size).float()).pow(2).mean(dim=-1)
        rec = (err * mask).sum() / mask.sum()
        rep = torch.zeros((), device=pixels.device)
        if self.teacher_kind == "clay":
            student = self.proj(encoded[:, 0])
            with torch.no_grad():
                rgb = pixels[:, self.rgb_indices]
                rgb = F.interpolate(rgb.float(), size=(self.teacher_size,) * 2, mode="bilinear", align_corners=False)
                target = self.teacher(rgb.to(pixels.dtype))
            rep = 1.0 - F.cosine_similarity(student.float(), target.float(), dim=-1).mean()
        elif self.teacher_kind == "ema":
            student = self.predictor(self.proj(self._pool(encoded)))
            with torch.no_grad():
                target = self.teacher.proj(self._pool(self.teacher.encoder(pixels, time, latlon, gsd, waves)))
            rep = 1.0 - F.cosine_similarity(student.float(), target.float(), dim=-1).mean()
        w = self.rep_weight if self.teacher_kind != "none" else 0.0
        return {"loss": (1.0 - w) * rec + w * rep, "rec": rec.detach(), "rep": rep.detach()}


def load_state_slice(module: nn.Module, ckpt: Mapping, prefix: str, source: str, what: str) -> bool:
    """Load the ``prefix`` slice of a Lightning state dict strictly into ``module``; False when it has none."""
    sd = ckpt.get("state_dict", ckpt)
    state = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not state:
        return False
    check_encoder_state(module, state, source=f"{source} ({prefix}*)", what=what)
    on_meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict(state, strict=True, assign=on_meta)
    return True


def load_clay_teacher(path: str | Path) -> DinoV2ViT:
    """The frozen DINOv2 teacher (``model.teacher.*``) of clay-v1.5.ckpt, loaded strictly (memory-mapped)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    sd = ckpt.get("state_dict", ckpt)
    state = {k[len("model.teacher."):]: v for k, v in sd.items() if k.startswith("model.teacher.")}
    if not state:
        raise ClayCheckpointError(
            f"{path} holds no model.teacher.* weights: teacher clay needs the full clay-v1.5.ckpt (with its "
            "DINOv2 teacher), not an encoder-only file; use teacher: ema instead"
        )
    teacher = DinoV2ViT.from_state_dict_shapes(state)
    check_encoder_state(teacher, state, source=f"{path} (model.teacher.*)", what="the DINOv2 teacher")
    teacher.load_state_dict(state, strict=True, assign=True)
    return teacher.float()
