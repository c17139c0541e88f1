"""Clay v1.5 encoder: state-dict names/shapes (notes/clay_v15.md 2.1), loading, encodings, 9x9 adapter."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ta2d.models.clay import (
    ClayCheckpointError,
    ClayEncoder,
    load_clay_checkpoint,
    posemb_sincos_1d,
    posemb_sincos_2d_with_gsd,
)
from ta2d.models.ta_model import area_matrix, default_waves, to_clay_grid


def expected_large() -> dict[str, tuple]:
    """The table of notes section 2.1, written out independently of the implementation."""
    pe = "patch_embedding."
    wg = pe + "weight_generator."
    el = wg + "encoder.layers.0."
    t = {
        "cls_token": (1, 1, 1024),
        wg + "weight_tokens": (128, 128),
        wg + "bias_token": (1, 128),
        el + "self_attn.in_proj_weight": (384, 128),
        el + "self_attn.in_proj_bias": (384,),
        el + "self_attn.out_proj.weight": (128, 128),
        el + "self_attn.out_proj.bias": (128,),
        el + "linear1.weight": (2048, 128),
        el + "linear1.bias": (2048,),
        el + "linear2.weight": (128, 2048),
        el + "linear2.bias": (128,),
        el + "norm1.weight": (128,),
        el + "norm1.bias": (128,),
        el + "norm2.weight": (128,),
        el + "norm2.bias": (128,),
        wg + "fc_weight.weight": (65536, 128),
        wg + "fc_weight.bias": (65536,),
        wg + "fc_bias.weight": (1024, 128),
        wg + "fc_bias.bias": (1024,),
        pe + "fclayer.l1.weight": (128, 128),
        pe + "fclayer.l1.bias": (128,),
        pe + "fclayer.l2.weight": (128, 128),
        pe + "fclayer.l2.bias": (128,),
        "transformer.norm.weight": (1024,),
        "transformer.norm.bias": (1024,),
    }
    for i in range(24):
        p = f"transformer.layers.{i}."
        t.update(
            {
                p + "0.norm.weight": (1024,),
                p + "0.norm.bias": (1024,),
                p + "0.to_qkv.weight": (3072, 1024),
                p + "0.to_out.weight": (1024, 1024),
                p + "1.net.0.weight": (1024,),
                p + "1.net.0.bias": (1024,),
                p + "1.net.1.weight": (4096, 1024),
                p + "1.net.1.bias": (4096,),
                p + "1.net.3.weight": (1024, 4096),
                p + "1.net.3.bias": (1024,),
            }
        )
    return t


def meta_large() -> ClayEncoder:
    with torch.device("meta"):
        return ClayEncoder.from_preset("large")


def lightning_ckpt(enc: ClayEncoder, path, rename: dict | None = None):
    """A Lightning-style checkpoint: encoder under model.encoder., plus decoder/proj keys to be ignored."""
    sd = {"model.encoder." + (rename or {}).get(k, k): v for k, v in enc.state_dict().items()}
    dev = next(iter(sd.values())).device
    sd["model.decoder.mask_patch"] = torch.zeros(512, device=dev)
    sd["model.proj.weight"] = torch.zeros(4, 4, device=dev)
    torch.save({"state_dict": sd, "hyper_parameters": {"model_size": "large", "mask_ratio": 0.75}}, path)


def test_large_preset_names_shapes_and_size():
    enc = meta_large()
    got = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert len(got) == 265
    assert got == expected_large()
    assert sum(math.prod(s) for s in got.values()) == 311_442_944
    assert not list(enc.buffers())


def test_tiny_preset_parameter_count():
    assert sum(p.numel() for p in ClayEncoder.from_preset("tiny").parameters()) == 4_030_592


def test_large_lightning_checkpoint_loads_strictly_without_allocating(tmp_path):
    path = tmp_path / "clay-v1.5.ckpt"
    lightning_ckpt(meta_large(), path)  # meta tensors: the file holds names and shapes only
    assert path.stat().st_size < 1_000_000
    enc = load_clay_checkpoint(meta_large(), path)
    assert {k: tuple(v.shape) for k, v in enc.state_dict().items()} == expected_large()


def test_renamed_key_fails_with_clear_message(tmp_path):
    path = tmp_path / "bad.ckpt"
    old, new = "transformer.layers.3.0.to_qkv.weight", "transformer.layers.3.0.qkv.weight"
    lightning_ckpt(meta_large(), path, rename={old: new})
    with pytest.raises(ClayCheckpointError) as e:
        load_clay_checkpoint(meta_large(), path)
    msg = str(e.value)
    assert "1 missing: transformer.layers.3.0.to_qkv.weight" in msg
    assert "1 unexpected: transformer.layers.3.0.qkv.weight" in msg


def test_wrong_preset_names_shape_mismatches(tmp_path):
    path = tmp_path / "tiny.ckpt"
    lightning_ckpt(ClayEncoder.from_preset("tiny"), path)
    with pytest.raises(
        ClayCheckpointError,
        match=r"shape mismatch: cls_token: checkpoint \(1, 1, 192\) != encoder"
        r" \(1, 1, 1024\).*\(\+\d+ more\).*preset",
    ):
        load_clay_checkpoint(meta_large(), path)


def test_tiny_round_trip_gives_same_output(tmp_path):
    torch.manual_seed(0)
    a, b = ClayEncoder.from_preset("tiny").eval(), ClayEncoder.from_preset("tiny").eval()
    path = tmp_path / "tiny.ckpt"
    lightning_ckpt(a, path)
    load_clay_checkpoint(b, path)
    args = (
        torch.randn(2, 16, 8, 8),
        torch.randn(2, 4),
        torch.randn(2, 4),
        torch.tensor(2000.0),
        torch.tensor(default_waves()),
    )
    with torch.no_grad():
        assert torch.equal(a(*args), b(*args))


def test_posemb_1d_hand_computed():
    w = torch.tensor([0.47, 10.35])
    got = posemb_sincos_1d(w, 128)
    omega = [10000 ** (-i / 63) for i in range(64)]
    for r, wl in enumerate(w.tolist()):
        ref = [math.sin(wl * o) for o in omega] + [math.cos(wl * o) for o in omega]
        assert torch.allclose(got[r], torch.tensor(ref), atol=1e-5)


def test_posemb_2d_with_gsd_hand_computed_and_quirk():
    dim, gsd = 1016, 3.0
    got = posemb_sincos_2d_with_gsd(2, 2, dim, gsd)
    omega = [gsd * 10000 ** (-(2 / dim) * i / (dim / 4 - 1)) for i in range(dim // 4)]
    assert min(omega) / gsd > 0.98  # the extra 2/dim: all frequencies within [0.982, 1] * gsd
    for row, (yy, xx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):  # row-major, x = column
        ref = (
            [math.sin(xx * o) for o in omega]
            + [math.cos(xx * o) for o in omega]
            + [math.sin(yy * o) for o in omega]
            + [math.cos(yy * o) for o in omega]
        )
        assert torch.allclose(got[row], torch.tensor(ref), atol=1e-4)
    one = posemb_sincos_2d_with_gsd(1, 1, dim, 2000.0)[0]
    assert torch.equal(one, torch.tensor(([0.0] * 254 + [1.0] * 254) * 2))


def test_posemb_follows_upstreams_float32_operation_order():
    """Bit for bit the float32 steps of upstream Clay's claymodel/utils.py (1 / T**e, then * gsd), so a
    checkpoint gives upstream's tokens: T**-e or gsd / T**e differ by up to 1.3e-4 in the tokens at 16x16
    (benchmarks/compare_upstream_clay.py compares against an upstream checkout: 0 difference)."""
    dim, gsd = 184, torch.tensor(1125.0)
    omega = torch.arange(dim // 4) / (dim // 4 - 1)
    omega = 1.0 / (10000 ** (2 * omega / dim)) * (gsd / 1.0)
    y, x = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    xa, ya = x.flatten()[:, None] * omega[None, :], y.flatten()[:, None] * omega[None, :]
    want = torch.cat((xa.sin(), xa.cos(), ya.sin(), ya.cos()), 1)
    assert torch.equal(posemb_sincos_2d_with_gsd(4, 4, dim, gsd), want)
    waves = torch.tensor([0.47, 3.83, 10.35, 13.29])
    w = torch.arange(64) / (64 - 1)
    w = 1.0 / (10000**w)
    arg = waves[:, None] * w[None, :]
    assert torch.equal(posemb_sincos_1d(waves, 128), torch.cat((arg.sin(), arg.cos()), 1))


@pytest.mark.parametrize(("side", "tokens"), [(8, 2), (16, 5), (32, 17)])
def test_token_counts(side, tokens):
    enc = ClayEncoder.from_preset("tiny").eval()
    with torch.no_grad():
        out = enc(
            torch.randn(2, 16, side, side),
            torch.zeros(2, 4),
            torch.zeros(2, 4),
            torch.tensor(10.0),
            torch.tensor(default_waves()),
        )
    assert out.shape == (2, tokens, 192)


def test_non_multiple_of_8_is_refused():
    enc = ClayEncoder.from_preset("tiny")
    with pytest.raises(ValueError, match="multiple of 8"):
        enc(
            torch.randn(1, 16, 9, 9),
            torch.zeros(1, 4),
            torch.zeros(1, 4),
            2000.0,
            torch.tensor(default_waves()),
        )


def test_wavelengths_change_the_output():
    torch.manual_seed(1)
    enc = ClayEncoder.from_preset("tiny").eval()
    px, z = torch.randn(2, 16, 8, 8), torch.zeros(2, 4)
    waves = torch.tensor(default_waves())
    with torch.no_grad():
        a = enc(px, z, z, torch.tensor(2000.0), waves)
        b = enc(px, z, z, torch.tensor(2000.0), waves * 1000)  # nm instead of µm
        c = enc(px, z, z, torch.tensor(2000.0), waves.flip(0))
    assert not torch.allclose(a, b, atol=1e-3)
    assert not torch.allclose(a, c, atol=1e-3)


def test_area8_is_exact_area_resampling():
    x = torch.randn(3, 16, 9, 9, dtype=torch.float64)
    # reference: nearest-upsample 9 -> 72 (each pixel an 8x8 block), then average 9x9 blocks -> 8x8
    ref = F.avg_pool2d(x.repeat_interleave(8, -1).repeat_interleave(8, -2), 9)
    got = to_clay_grid(x.float(), "area8").double()
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(area_matrix(9, 8).sum(1), torch.ones(8))
    # the patch centre (the station pixel's centre, 4.5 of 9) maps to the 8x8 grid centre: a symmetric
    # patch stays symmetric
    sym = x + x.flip(-1)
    out = to_clay_grid(sym.float(), "area8")
    assert torch.allclose(out, out.flip(-1), atol=1e-5)


def test_patch_modes_shapes():
    x = torch.randn(2, 16, 9, 9)
    assert to_clay_grid(x, "area8").shape == (2, 16, 8, 8)
    assert torch.equal(to_clay_grid(x, "crop8"), x[..., :8, :8])
    up = to_clay_grid(x, "bilinear16")
    assert up.shape == (2, 16, 16, 16)
    const = torch.full((1, 1, 9, 9), 3.0)
    for mode in ("area8", "crop8", "bilinear16"):
        assert torch.allclose(to_clay_grid(const, mode), torch.tensor(3.0))
    with pytest.raises(ValueError, match="patch_mode"):
        to_clay_grid(x, "pad16")


@pytest.mark.parametrize(("mode", "window"), [("pixel5", 5), ("pixel7", 7), ("pixel", 9)])
def test_pixel_modes_give_each_pixel_its_own_token(mode, window):
    """A pixel mode's token is Clay's patch embedding of one pixel alone: the kernel summed over its 8x8
    taps applied to that pixel's 16 values (plus the bias), for every pixel of the central window."""
    from ta2d.models.ta_model import centre_tokens, clay_grid_gsd, clay_grid_side, pool_tokens

    torch.manual_seed(0)
    enc = ClayEncoder(dim=32, depth=1, heads=2, dim_head=16, mlp_ratio=2)
    waves = torch.tensor(default_waves())
    x = torch.randn(2, 16, 9, 9)
    grid = to_clay_grid(x, mode)
    assert grid.shape[-1] == clay_grid_side(9, mode) == 8 * window
    with torch.no_grad():
        tokens = enc.patch_embedding(grid, waves)  # (B, window^2, D), row-major
        weight, bias = enc.patch_embedding.kernel(waves)
    lo = (9 - window) // 2
    pixels = x[:, :, lo : lo + window, lo : lo + window].flatten(2)  # (B, 16, window^2)
    ref = torch.einsum("dc,bcl->bld", weight.sum((2, 3)), pixels) + bias
    assert torch.allclose(tokens, ref, atol=1e-5)
    # the station pixel's token sits at centre_tokens; the grid's pixel is an eighth of the native one
    assert centre_tokens(window) == [(window // 2) * window + window // 2]
    assert torch.allclose(tokens[:, centre_tokens(window)[0]], ref[:, (window * window) // 2])
    assert clay_grid_gsd(2000.0, 9, mode) == 250.0
    with pytest.raises(ValueError, match="at least 7"):
        clay_grid_side(5, "pixel7")
    # cls_mean_centre: [cls, mean patch token, the centre token]; an even grid averages its middle four
    toks = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)
    toks = torch.cat([toks[:, :1], torch.randn(2, 9, 3)], 1)
    pooled = pool_tokens(toks, "cls_mean_centre")
    assert torch.equal(pooled[:, :3], toks[:, 0]) and torch.equal(pooled[:, 6:], toks[:, 1 + 4])
    assert torch.allclose(pooled[:, 3:6], toks[:, 1:].mean(1))
    even = torch.randn(2, 17, 3)
    assert torch.allclose(pool_tokens(even, "cls_mean_centre")[:, 6:], even[:, [6, 7, 10, 11]].mean(1))
    assert centre_tokens(4) == [5, 6, 9, 10]


class _NotATensor:
    pass


def test_checkpoint_with_pickled_objects_gets_a_clear_message(tmp_path):
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {}, "callbacks": _NotATensor()}, path)
    with pytest.raises(
        ClayCheckpointError, match=r"weights_only=True\) refuses.*Unsupported global.*clay_ckpt_path"
    ):
        load_clay_checkpoint(ClayEncoder.from_preset("tiny"), path)


def test_encoder_only_state_dict_loads(tmp_path):
    enc = ClayEncoder.from_preset("tiny")
    torch.save(enc.state_dict(), tmp_path / "enc.pt")  # already stripped of the prefix
    other = load_clay_checkpoint(ClayEncoder.from_preset("tiny"), tmp_path / "enc.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(enc.state_dict().values(), other.state_dict().values(), strict=True)
    )
