"""The DINOv2 ViT teacher that travels inside clay-v1.5.ckpt (``model.teacher.*``), in plain torch.

Clay v1.5 was pretrained with a frozen timm ``vit_large_patch14_reg4_dinov2.lvd142m`` as the teacher
of its representation loss (docs/clay-encoder.md#the-dinov2-teacher). Its weights are in the checkpoint, so the
loss can be reproduced offline without timm: this module rebuilds the network from the shapes of the
``model.teacher.`` slice and loads it strictly under timm's key names:

  cls_token (1,1,D), reg_token (1,R,D) (absent without registers), pos_embed (1,G*G,D) (patch
  positions only: timm's no_embed_class), patch_embed.proj (conv, kernel = stride = patch),
  blocks.{i}.{norm1, attn.qkv (bias), attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm.

Forward = timm's VisionTransformer with num_classes=0 and global_pool "token": patch embedding, +
position code (bicubically resampled when the image is not the trained G*14 pixels, as timm does),
[cls, registers, patches], pre-norm blocks with LayerScale, final LayerNorm (eps 1e-6), the cls
token -> (B, D). Heads = D / 64 (every DINOv2 size has 64-wide heads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

TEACHER_PREFIX = "model.teacher."
HEAD_DIM = 64
LN_EPS = 1e-6


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x):
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = _Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = _Mlp(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int, in_chans: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2ViT(nn.Module):
    """DINOv2 ViT (timm layout, registers optional); forward(images (B,3,H,W)) -> cls features (B, dim)."""

    def __init__(self, dim: int = 1024, depth: int = 24, patch: int = 14, grid: int = 37, reg_tokens: int = 4,
                 mlp_hidden: int = 4096):
        super().__init__()
        self.dim, self.patch, self.grid = dim, patch, grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if reg_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, dim))
        else:
            self.reg_token = None
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.patch_embed = _PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList(_Block(dim, dim // HEAD_DIM, mlp_hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    @classmethod
    def from_state_dict_shapes(cls, state: Mapping[str, torch.Tensor]) -> DinoV2ViT:
        """The network whose parameters have the shapes of ``state`` (timm names, prefix stripped), on meta."""
        try:
            dim = state["cls_token"].shape[-1]
            patch = state["patch_embed.proj.weight"].shape[-1]
            n_pos = state["pos_embed"].shape[1]
            mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
        except KeyError as e:
            raise ValueError(f"not a DINOv2 ViT state dict (timm names): no {e.args[0]}") from None
        reg = state["reg_token"].shape[1] if "reg_token" in state else 0
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        grid = math.isqrt(n_pos)
        if grid * grid != n_pos:
            raise ValueError(
                f"teacher pos_embed has {n_pos} positions, not a square grid: only DINOv2's layout without a "
                "class-token position (timm no_embed_class, the reg4 models) is supported"
            )
        with torch.device("meta"):
            return cls(dim, depth, patch, grid, reg, mlp_hidden)

    def position_code(self, grid: int) -> torch.Tensor:
        """pos_embed for a grid x grid image, bicubically resampled from the trained grid when it differs."""
        if grid == self.grid:
            return self.pos_embed
        pe = self.pos_embed.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2).float()
        pe = F.interpolate(pe, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
        return pe.permute(0, 2, 3, 1).reshape(1, grid * grid, self.dim).to(self.pos_embed.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        if h != w or h % self.patch:
            raise ValueError(f"the teacher needs a square image whose side is a multiple of {self.patch}, got {h}x{w}")
        x = self.patch_embed(images)
        x = x + self.position_code(h // self.patch).to(x.dtype)
        prefix = [self.cls_token.expand(b, -1, -1)]
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(b, -1, -1))
        x = torch.cat([p.to(x.dtype) for p in prefix] + [x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)[:, 0]
