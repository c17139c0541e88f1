"""Self-supervised pretraining: unlabelled tiles, Clay's masked autoencoder and teachers, the pretrain loop,
and the Lightning-shaped encoder.ckpt that a train run loads with encoder_from."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
import yaml
from fakes import Killed, kill_after

from ta2d.chunks.contract import CHECKSUM_KEY
from ta2d.chunks.unlabeled import UNLABELED_KEYS, build_unlabeled_chunk
from ta2d.config import ConfigError, validate_config
from ta2d.grid import Domain
from ta2d.models import ClayEncoder, build_model, load_clay_checkpoint
from ta2d.models.dinov2 import DinoV2ViT
from ta2d.models.mae import ClayDecoder, ClayMAE, ema_update, patchify, random_masking
from ta2d.models.ta_model import default_waves
from ta2d.static import read_static
from ta2d.training import resolve_run_config
from ta2d.training.pretrain import build_mae, pretrain_run, resolve_pretrain_config

DOMAIN = Domain(900, 939, 2700, 2739)  # 40 x 40
SLOTS = pd.date_range("2024-04-01", periods=5, freq="h", tz="UTC").tz_convert(None)
STATS = {
    "x_mean": [260.0] * 10 + [0.2] * 6 + [60.0, 300.0, 0.5],
    "x_std": [15.0] * 10 + [0.15] * 6 + [30.0, 300.0, 0.5],
    "y_mean": 10.0,
    "y_std": 8.0,
}
TINY = {"preset": "tiny", "epochs": 2, "batch_size": 32, "lr": 1e-3, "device": "cpu", "head_dim": 32}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny models run fastest on one thread (and do not fight other test processes for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_scene(path, times, rng):
    nl, nc = DOMAIN.shape
    n = len(times)
    yy, xx = np.meshgrid(np.arange(nl), np.arange(nc), indexing="ij")
    # smooth, learnable fields: a gradient plus a per-slot blob (a "cloud")
    blob = np.stack([np.exp(-((yy - 8 * k % nl) ** 2 + (xx - 5 * k % nc) ** 2) / 60.0) for k in range(n)])
    bt = (250 + 0.5 * xx[None, None] - 30 * blob[:, None] + np.arange(10)[None, :, None, None]
          + rng.normal(0, 0.3, (n, 10, nl, nc))).astype(np.float32)
    rf = (0.1 + 0.6 * blob[:, None] + 0.01 * np.arange(6)[None, :, None, None]
          + rng.normal(0, 0.01, (n, 6, nl, nc))).astype(np.float32)
    sza = np.broadcast_to(np.linspace(30, 80, nc)[None, None], (n, nl, nc)).astype(np.float32)
    bt[1, 2, 20, 20] = np.nan  # an error pixel: every tile of slot 1 that covers it is skipped
    status = np.array(["ok"] * n, dtype=object)
    status[3] = "missing_channel:ir105"  # a bad slot: no tiles
    bt[3] = np.nan
    xr.Dataset(
        {"bt": (("time", "bt_channel", "line", "column"), bt),
         "rf": (("time", "rf_channel", "line", "column"), rf),
         "sza": (("time", "line", "column"), sza),
         "lat": (("line", "column"), (38.0 - 0.02 * yy).astype(np.float32)),
         "lon": (("line", "column"), (126.0 + 0.02 * xx).astype(np.float32)),
         "status": (("time",), status.astype(str))},
        coords={"time": times, "line": DOMAIN.lines, "column": DOMAIN.columns},
    ).to_netcdf(path, engine="h5netcdf")


@pytest.fixture(scope="module")
def scene_static(tmp_path_factory):
    d = tmp_path_factory.mktemp("pretrain_scene")
    rng = np.random.default_rng(0)
    write_scene(d / "scene.nc", SLOTS, rng)
    with xr.open_dataset(d / "scene.nc", engine="h5netcdf") as ds:  # the same slots, fewer of them
        ds.isel(time=slice(2, None)).load().to_netcdf(d / "scene_later.nc", engine="h5netcdf")
    nl, nc = DOMAIN.shape
    lsm = np.ones((nl, nc), np.float32)
    lsm[:, : nc // 3] = 0.0  # the western third is sea
    lc = np.where(lsm > 0, 10, 17).astype(np.uint8)
    lc[30, 30] = 255  # fill at one land pixel: a tile centred there is skipped
    dem = np.where(lsm > 0, np.arange(nc)[None, :] * 20.0, 0.0).astype(np.float32)
    xr.Dataset({"dem": (("line", "column"), dem), "land_sea_mask": (("line", "column"), lsm),
                "landcover": (("line", "column"), lc)},
               coords={"line": DOMAIN.lines, "column": DOMAIN.columns}).to_netcdf(d / "static.nc", engine="h5netcdf")
    return d, read_static(d / "static.nc", DOMAIN)


@pytest.fixture(scope="module")
def tiles(scene_static):
    d, static = scene_static
    path = d / "tiles.pt"
    counts = build_unlabeled_chunk(d / "scene.nc", static, 17, 48, 3, path)
    return path, counts


def test_unlabeled_chunk_contract_reproducible_land_and_sea(scene_static, tiles, tmp_path):
    d, static = scene_static
    path, counts = tiles
    t = torch.load(path, weights_only=True, mmap=True)
    assert set(t) == {*UNLABELED_KEYS, CHECKSUM_KEY}  # the chunk contract minus the labels, with its CRCs
    assert set(t[CHECKSUM_KEY]) == set(UNLABELED_KEYS)
    n = len(t["x"])
    assert t["x"].shape == (n, 19, 17, 17) and t["x"].dtype == torch.float32
    assert t["time7"].shape == (n, 7) and t["loc"].shape == (n, 3) and t["landcover_onehot"].shape == (n, 17)
    assert t["elev"].shape == (n,) and t["time"].dtype == torch.int64 and t["pixel"].shape == (n, 2)
    # 4 good slots of 5; slot 1's tiles over the NaN pixel and any tile centred on the fill pixel are skipped
    assert counts["n_good_slots"] == 4 and counts["n_drawn"] == 4 * 48
    assert counts["n_skipped_nonfinite"] > 0
    assert n == counts["n_drawn"] - counts["n_skipped_nonfinite"] - counts["n_skipped_invalid_landcover"]
    assert torch.isfinite(t["x"]).all()
    bad_slot = int(pd.Timestamp(SLOTS[3], tz="UTC").timestamp())
    assert not (t["time"] == bad_slot).any()
    # centres lie where the whole tile is inside the domain; loc and elev are the centre's
    line, col = t["pixel"][:, 0].numpy(), t["pixel"][:, 1].numpy()
    assert line.min() >= DOMAIN.first_line + 8 and line.max() <= DOMAIN.last_line - 8
    assert col.min() >= DOMAIN.first_column + 8 and col.max() <= DOMAIN.last_column - 8
    assert np.allclose(t["loc"][:, 0].numpy(), 38.0 - 0.02 * (line - DOMAIN.first_line), atol=1e-4)
    assert (t["loc"][:, 2] == 2000).all()
    assert torch.equal(t["elev"], t["x"][:, 17, 8, 8])
    # land and sea both
    centre_land = t["x"][:, 18, 8, 8]
    assert (centre_land == 1).any() and (centre_land == 0).any()
    # reproducible: the same file again
    again = build_unlabeled_chunk(d / "scene.nc", static, 17, 48, 3, tmp_path / "again.pt")
    u = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again == counts and all(torch.equal(t[k], u[k]) for k in UNLABELED_KEYS)
    # a slot's tiles depend on (seed, slot time) only: the same in a scene that holds fewer slots
    build_unlabeled_chunk(d / "scene_later.nc", static, 17, 48, 3, tmp_path / "later.pt")
    v = torch.load(tmp_path / "later.pt", weights_only=True)
    for slot in SLOTS[4:]:
        s = int(pd.Timestamp(slot, tz="UTC").timestamp())
        assert torch.equal(t["pixel"][t["time"] == s], v["pixel"][v["time"] == s])
        assert torch.equal(t["x"][t["time"] == s], v["x"][v["time"] == s])
    # another seed draws other positions
    build_unlabeled_chunk(d / "scene.nc", static, 17, 48, 4, tmp_path / "seed4.pt")
    assert not torch.equal(torch.load(tmp_path / "seed4.pt", weights_only=True)["pixel"], t["pixel"])


def test_test_days_are_left_out_and_an_empty_chunk_is_valid(scene_static, tmp_path):
    d, static = scene_static
    split = {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 42, "block_days": 20,
             "time_block_start": "2024-04-01"}  # every day of the scene is in the time block
    counts = build_unlabeled_chunk(d / "scene.nc", static, 17, 8, 3, tmp_path / "none.pt", split_cfg=split)
    assert counts["n_test_day_slots_excluded"] == 4 and counts["n_tiles"] == 0
    t = torch.load(tmp_path / "none.pt", weights_only=True)
    assert t["x"].shape == (0, 19, 17, 17) and t["time7"].shape == (0, 7) and t["pixel"].shape == (0, 2)
    counts = build_unlabeled_chunk(d / "scene.nc", static, 17, 8, 3, tmp_path / "all.pt",
                                   split_cfg={**split, "time_block_start": None, "fractions":
                                              {"train": 1.0, "val": 0.0, "test": 0.0}})
    assert counts["n_test_day_slots_excluded"] == 0 and counts["n_drawn"] == 32


def encoder_args(b=2, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 16, side, side, generator=g), torch.randn(b, 4, generator=g),
            torch.randn(b, 4, generator=g), torch.tensor(2125.0), torch.tensor(default_waves()))


def test_masking_hides_the_masked_tokens_from_the_encoder():
    torch.manual_seed(0)
    enc = ClayEncoder.from_preset("tiny").eval()
    pixels, time_, latlon, gsd, waves = encoder_args(b=3, side=32)  # 16 tokens
    keep, masked, mask = random_masking(3, 16, 0.75, torch.Generator().manual_seed(1))
    assert keep.shape == (3, 4) and masked.shape == (3, 12) and mask.sum(1).eq(12).all()
    assert torch.equal(mask.gather(1, keep), torch.zeros(3, 4))
    with torch.no_grad():
        out = enc(pixels, time_, latlon, gsd, waves, keep=keep)
        assert out.shape == (3, 5, 192)
        # new pixels in every hidden patch: the encoder output does not move
        grid_mask = mask.reshape(3, 1, 4, 1, 4, 1).expand(-1, 16, -1, 8, -1, 8).reshape(3, 16, 32, 32)
        changed = torch.where(grid_mask.bool(), torch.randn_like(pixels) * 5, pixels)
        assert torch.equal(enc(changed, time_, latlon, gsd, waves, keep=keep), out)
        # ... while a visible patch does move it
        visible = torch.where(grid_mask.bool(), pixels, pixels + 1.0)
        assert not torch.allclose(enc(visible, time_, latlon, gsd, waves, keep=keep), out)
        # keeping every token is the plain forward
        all_idx = torch.arange(16).expand(3, -1)
        assert torch.equal(enc(pixels, time_, latlon, gsd, waves, keep=all_idx), enc(pixels, time_, latlon, gsd, waves))
    with pytest.raises(ValueError, match="at least one hidden and one visible"):
        random_masking(2, 1, 0.75)


def test_decoder_matches_upstream_layout():
    with torch.device("meta"):
        dec = ClayDecoder.from_preset("large")
    sd = {k: tuple(v.shape) for k, v in dec.state_dict().items()}
    assert len(sd) == 65  # notes 2.2: model.decoder.* holds 65 tensors
    assert sd["mask_patch"] == (512,) and sd["enc_to_dec.weight"] == (512, 1024)
    assert sd["transformer.layers.0.0.to_qkv.weight"] == (768, 512)
    assert sd["transformer.layers.0.0.to_out.weight"] == (512, 256)
    assert sd["embed_to_pixels.weight_generator.fc_weight.weight"] == (32768, 128)
    assert not [k for k in sd if "fc_bias" in k]
    assert sum(np.prod(s) for s in sd.values()) == pytest.approx(15.9e6, rel=0.01)
    # pixels come out per token as (band, row, column), the layout of patchify
    torch.manual_seed(0)
    dec = ClayDecoder.from_preset("tiny")
    pixels, time_, latlon, gsd, waves = encoder_args(b=2, side=16)
    keep, masked, _ = random_masking(2, 4, 0.75, torch.Generator().manual_seed(0))
    out = dec(torch.randn(2, 2, 192), keep, masked, time_, latlon, gsd, waves, grid=2)
    assert out.shape == patchify(pixels).shape == (2, 4, 16 * 64)
    assert torch.equal(patchify(pixels)[0, 1, :64].reshape(8, 8), pixels[0, 0, :8, 8:])


def test_ema_update_is_exact():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    t0 = copy.deepcopy(teacher)
    m = 0.9
    ema_update(teacher, student, m)
    for name, p in teacher.named_parameters():
        want = m * getattr(t0, name) + (1 - m) * getattr(student, name)
        torch.testing.assert_close(p, want, rtol=0, atol=1e-7)
    ema_update(teacher, student, 0.0)
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), student.parameters(), strict=True))
    before = copy.deepcopy(teacher.state_dict())
    ema_update(teacher, torch.nn.Linear(5, 3), 1.0)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    # ClayMAE.update_teacher moves the EMA encoder and head after a step
    mae = ClayMAE(ClayEncoder.from_preset("tiny"), ClayDecoder.from_preset("tiny"), head_dim=16)
    assert all(torch.equal(a, b) for a, b in zip(mae.teacher.encoder.parameters(), mae.encoder.parameters(),
                                                  strict=True))
    old = [p.clone() for p in mae.teacher.encoder.parameters()]
    with torch.no_grad():
        for p in mae.encoder.parameters():
            p.add_(0.01)
    mae.update_teacher(0.99)
    for o, t, s in zip(old, mae.teacher.encoder.parameters(), mae.encoder.parameters(), strict=True):
        torch.testing.assert_close(t, 0.99 * o + 0.01 * s, rtol=0, atol=1e-6)
    assert not any(p.requires_grad for p in mae.teacher.parameters())


def test_tiny_run_lowers_the_loss_and_round_trips_strictly(tiles, tmp_path):
    path, _ = tiles
    out = tmp_path / "run"
    res = pretrain_run({**TINY, "epochs": 5}, [path], STATS, out, progress=False, log=lambda s: None)
    rows = pd.read_csv(out / "metrics.csv")
    assert res["epochs"] == 5 and list(rows["epoch"]) == [1, 2, 3, 4, 5]
    assert rows["rec"].iloc[-1] < 0.8 * rows["rec"].iloc[0] and rows["loss"].iloc[-1] < rows["loss"].iloc[0]
    assert (rows["rep"] > 0).all()
    # encoder.ckpt: Lightning-shaped, weights_only, loads strictly into a fresh encoder through the real path
    ck = torch.load(out / "encoder.ckpt", weights_only=True)
    sd = ck["state_dict"]
    assert {k.split(".")[1] for k in sd} == {"encoder", "decoder"}
    assert {k[len("model.decoder."):] for k in sd if k.startswith("model.decoder.")} == set(
        ClayDecoder.from_preset("tiny").state_dict())
    assert ck["hyper_parameters"]["model_size"] == "tiny"
    fresh = load_clay_checkpoint(ClayEncoder.from_preset("tiny"), out / "encoder.ckpt")
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, sd["model.encoder." + k])
    # a train run names it with encoder_from (a path here; in the workflow the pretrain run's name)
    model = build_model(resolve_run_config({"encoder_from": str(out / "encoder.ckpt")}), STATS)
    assert all(torch.equal(v, sd["model.encoder." + k]) for k, v in model.encoder.state_dict().items())
    with pytest.raises(ValueError, match="not both"):
        resolve_run_config({"encoder_from": "mae", "clay_ckpt_path": "x.ckpt"})
    # and a pretrain run can continue from it: encoder and decoder load strictly
    mae = build_mae(resolve_pretrain_config({**TINY, "clay_ckpt_path": str(out / "encoder.ckpt")}))
    assert all(torch.equal(v, sd["model.decoder." + k]) for k, v in mae.decoder.state_dict().items())


def test_resume_after_a_kill_continues_to_the_same_weights(tiles, tmp_path):
    path, _ = tiles
    cfg = {**TINY, "epochs": 3, "batch_size": 64}
    pretrain_run(cfg, [path], STATS, tmp_path / "a", progress=False, log=lambda s: None)

    with pytest.raises(Killed):
        pretrain_run(cfg, [path], STATS, tmp_path / "b", progress=False, log=lambda s: None, on_epoch_end=kill_after(1))
    assert not (tmp_path / "b" / "encoder.ckpt").exists()
    logs = []
    res = pretrain_run(cfg, [path], STATS, tmp_path / "b", progress=False, log=logs.append)
    assert res["resumed_from"] == 1 and any("resuming" in s for s in logs)
    a = torch.load(tmp_path / "a" / "encoder.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "encoder.ckpt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert pd.read_csv(tmp_path / "a" / "metrics.csv").equals(pd.read_csv(tmp_path / "b" / "metrics.csv").assign(
        seconds=pd.read_csv(tmp_path / "a" / "metrics.csv")["seconds"]))
    # another config does not resume from it
    logs.clear()
    pretrain_run({**cfg, "mask_ratio": 0.5}, [path], STATS, tmp_path / "b", progress=False, log=logs.append)
    assert any("does not belong to this run" in s and "mask_ratio" in s for s in logs)


def fake_clay_ckpt(path, teacher_grid=4):
    """A Lightning-shaped checkpoint with the parts of clay-v1.5.ckpt, at tiny sizes: encoder, decoder, proj
    and a small DINOv2-layout teacher (timm names, 4 registers, no class-token position)."""
    torch.manual_seed(5)
    enc, dec = ClayEncoder.from_preset("tiny"), ClayDecoder.from_preset("tiny")
    teacher = DinoV2ViT(dim=128, depth=2, patch=14, grid=teacher_grid, reg_tokens=4, mlp_hidden=256)
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.05)
    proj = torch.nn.Linear(192, 128)
    sd = {}
    for name, mod in (("encoder", enc), ("decoder", dec), ("teacher", teacher), ("proj", proj)):
        sd.update({f"model.{name}.{k}": v for k, v in mod.state_dict().items()})
    torch.save({"state_dict": sd, "hyper_parameters": {"model_size": "tiny"}}, path)
    return sd


def test_clay_teacher_from_the_checkpoint(tiles, tmp_path):
    path, _ = tiles
    ckpt = tmp_path / "clay.ckpt"
    sd = fake_clay_ckpt(ckpt)
    cfg = resolve_pretrain_config({**TINY, "epochs": 1, "teacher": "clay", "clay_ckpt_path": str(ckpt),
                                   "teacher_size": 28})
    mae = build_mae(cfg)
    for name in ("encoder", "decoder", "teacher", "proj"):
        mod = getattr(mae, name)
        assert all(torch.equal(v, sd[f"model.{name}.{k}"]) for k, v in mod.state_dict().items()), name
    # the teacher takes vi006, vi005, vi004 (x planes 12, 11, 10) as RGB; a 28 px image -> 2x2 patches
    assert mae.rgb_indices == [12, 11, 10]
    with torch.no_grad():
        feats = mae.teacher(torch.randn(2, 3, 28, 28))
        assert feats.shape == (2, 128) and torch.isfinite(feats).all()
        assert mae.teacher.position_code(4).shape == (1, 16, 128)
        assert torch.equal(mae.teacher.position_code(4), mae.teacher.pos_embed)
    out = tmp_path / "run"
    pretrain_run(cfg, [path], STATS, out, progress=False, log=lambda s: None)
    rows = pd.read_csv(out / "metrics.csv")
    assert np.isfinite(rows[["loss", "rec", "rep"]].to_numpy()).all() and rows["rep"].iloc[0] > 0
    cur = torch.load(out / "current.pt", weights_only=True)
    assert not [k for k in cur["model"] if k.startswith("teacher.")]  # the frozen teacher stays in clay.ckpt
    saved = torch.load(out / "encoder.ckpt", weights_only=True)["state_dict"]
    assert {k.split(".")[1] for k in saved} == {"encoder", "decoder", "proj"}
    # an encoder-only file has no teacher: teacher clay says so
    torch.save({k: v for k, v in sd.items() if k.startswith("model.encoder.")}, tmp_path / "enc_only.pt")
    with pytest.raises(ValueError, match="no model.teacher"):
        build_mae(resolve_pretrain_config({**cfg, "clay_ckpt_path": str(tmp_path / "enc_only.pt")}))


def test_too_few_tokens_are_refused(tiles, tmp_path, scene_static):
    d, static = scene_static
    build_unlabeled_chunk(d / "scene.nc", static, 9, 4, 3, tmp_path / "t9.pt")
    with pytest.raises(ValueError, match="1 patch token"):
        pretrain_run(TINY, [tmp_path / "t9.pt"], STATS, tmp_path / "r", progress=False, log=lambda s: None)
    # ... and the same 9x9 tiles with a token per pixel of their central 5x5 (pixel5) pretrain: 25 tokens
    rows = []
    pretrain_run({**TINY, "patch_mode": "pixel5", "epochs": 2}, [tmp_path / "t9.pt"], STATS, tmp_path / "p5",
                 progress=False, log=rows.append)
    assert "25 tokens, 18 hidden" in rows[0]
    assert pd.read_csv(tmp_path / "p5" / "metrics.csv")["rec"].notna().all()


def base_config(**extra):
    from conftest import REPO

    from ta2d.config import deep_merge as deep_update

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return deep_update(config, extra)


def test_config_checks_encoder_from():
    ok = base_config(pretrain={"runs": {"mae": {"preset": "tiny"}}},
                     train={"runs": {"clay_mae": {"model": "clay_transfer", "encoder_from": "mae"}}})
    cfg = validate_config(ok, check_files=False)
    assert cfg["pretrain"]["runs"]["mae"]["mask_ratio"] == 0.75 and cfg["pretrain"]["patch_size"] == 17
    assert validate_config(base_config(), check_files=False)["pretrain"]["runs"] == {}
    for train_run, pretrain, msg in (
        ({"encoder_from": "nope"}, {"mae": {}}, "not a run of pretrain.runs"),
        ({"encoder_from": "mae", "preset": "small"}, {"mae": {}}, "preset"),
        ({"encoder_from": "mae", "clay_ckpt_path": "/x.ckpt"}, {"mae": {}}, "not both"),
        ({"model": "cnn", "encoder_from": "mae"}, {"mae": {}}, "only a clay_transfer"),
        ({}, {"mae": {"teacher": "clay"}}, "clay needs clay_ckpt_path"),
    ):
        bad = base_config(pretrain={"runs": pretrain}, train={"runs": {"r": {"model": "clay_transfer", **train_run}}})
        with pytest.raises(ConfigError, match=msg):
            validate_config(bad, check_files=False)
