"""TA models, normaliser, ridge closed form, chunk batch loader and the embedding cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import compute_stats

from ta2d.chunks.loader import ChunkBatches, make_loader, open_chunk
from ta2d.demo.synthetic import make_chunk, write_chunks
from ta2d.models import ClayTransfer, Normalizer, build_model
from ta2d.models.ridge import RidgeModel, ridge_features, solve_ridge
from ta2d.models.ta_model import N_SIDE, N_SPECTRAL
from ta2d.training import load_stats, resolve_run_config
from ta2d.training.embed import EMB_FIELDS, embed_chunk, embed_chunks, embedding_fingerprint


@pytest.fixture(scope="module")
def chunks(tmp_path_factory):
    d = tmp_path_factory.mktemp("chunks")
    paths = write_chunks(d, "train", 3, 40, seed=3)
    return paths, load_stats(compute_stats(paths), paths)


def batch_of(n=6, seed=0):
    return {k: v for k, v in make_chunk(n, seed).items() if k not in ("stn", "time", "pixel")}


def test_normalizer_round_trip_and_stats(chunks):
    paths, stats = chunks
    norm = Normalizer.from_stats(stats)
    x = torch.cat([open_chunk(p)["x"] for p in paths])
    z = norm.norm_x(x)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(19), atol=1e-3)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(19), atol=1e-3)
    y = torch.linspace(-20, 35, 11)
    assert torch.allclose(norm.denorm_y(norm.norm_y(y)), y, atol=1e-5)
    t7 = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, stats["x_mean"][16]]])
    assert torch.allclose(norm.norm_time7(t7), torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0]]))
    # stats live in the state dict: a fresh normaliser loading it reproduces them
    other = Normalizer([0.0] * 19, [1.0] * 19, 0.0, 1.0)
    other.load_state_dict(norm.state_dict())
    assert other.stats() == norm.stats()
    # a constant plane (std 0) is passed through instead of dividing by zero
    assert Normalizer([0.0] * 19, [0.0] * 19, 0.0, 0.0).x_std.eq(1).all()


@pytest.mark.parametrize("mode", ["area8", "crop8", "bilinear16"])
def test_clay_transfer_forward_on_9x9(chunks, mode):
    cfg = resolve_run_config({"patch_mode": mode})
    model = build_model(cfg, chunks[1]).eval()
    b = batch_of()
    with torch.no_grad():
        emb = model.embed(b)
        pred = model(b)
    assert emb.shape == (6, 2 * 192)
    assert pred.shape == (6,)
    assert torch.isfinite(pred).all()


def test_cnn_and_ridge_forward(chunks):
    for kind in ("cnn", "ridge"):
        model = build_model(resolve_run_config({"model": kind}), chunks[1]).eval()
        with torch.no_grad():
            assert model(batch_of()).shape == (6,)


def test_frozen_encoder_gets_no_gradient(chunks):
    model = build_model(resolve_run_config({}), chunks[1]).train()
    assert not model.encoder.training
    model(batch_of()).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.head[0].weight.grad is not None
    model = build_model(resolve_run_config({"finetune": "full"}), chunks[1]).train()
    model(batch_of()).sum().backward()
    assert model.encoder.transformer.norm.weight.grad is not None


def test_ridge_closed_form_equals_numpy_lstsq(chunks):
    paths, stats = chunks
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 6)), rng.normal(size=200)
    xa = np.hstack([x, np.ones((200, 1))])
    xtx, xty = torch.from_numpy(xa.T @ xa), torch.from_numpy(xa.T @ y)
    ref0 = np.linalg.lstsq(xa, y, rcond=None)[0]
    assert np.allclose(solve_ridge(xtx, xty, 0.0).numpy(), ref0, atol=1e-10)
    alpha = 3.0  # ridge = least squares on rows augmented with sqrt(alpha) * I (intercept unpenalised)
    aug = np.vstack([xa, np.hstack([np.sqrt(alpha) * np.eye(6), np.zeros((6, 1))])])
    ref = np.linalg.lstsq(aug, np.concatenate([y, np.zeros(6)]), rcond=None)[0]
    assert np.allclose(solve_ridge(xtx, xty, alpha).numpy(), ref, atol=1e-10)

    # the model's streaming fit over chunk batches equals lstsq on the stacked features
    model = RidgeModel(Normalizer.from_stats(stats), alpha=0.0)
    model.fit(ChunkBatches(paths, 17))
    allb = next(iter(ChunkBatches(paths, 10_000)))
    f = ridge_features(allb, model.normalizer).double().numpy()
    fa = np.hstack([f, np.ones((len(f), 1))])
    yn = model.normalizer.norm_y(allb["y"]).double().numpy()
    w = np.linalg.lstsq(fa, yn, rcond=None)[0]  # one-hot + intercept are collinear: compare predictions
    assert np.allclose(model(allb).double().numpy(), fa @ w, atol=1e-4)


def test_batches_cover_every_sample_once(chunks):
    paths, _ = chunks
    for sf, sw, mix in [
        (False, False, 1),
        (True, False, 1),
        (True, True, 1),
        (True, True, 0),
        (False, True, 2),
    ]:
        b = ChunkBatches(
            paths, 16, ("y", "time", "stn"), shuffle_files=sf, shuffle_within_file=sw, mix_files=mix
        )
        b.set_epoch(1)
        got = list(b)
        assert [len(x["y"]) for x in got[:-1]] == [16] * (len(got) - 1) and len(got) == len(b)
        times = torch.cat([x["time"] for x in got])
        ref = torch.cat([open_chunk(p)["time"] for p in paths])
        assert torch.equal(times.sort().values, ref.sort().values)
        if not (sf or sw):
            assert torch.equal(times, ref)  # sequential: file order, then sample order
    b = ChunkBatches(paths, 16, ("time",), shuffle_files=True, shuffle_within_file=True, seed=5)
    b.set_epoch(2)
    e2 = torch.cat([x["time"] for x in b])
    b.set_epoch(3)
    e3 = torch.cat([x["time"] for x in b])
    b.set_epoch(2)
    assert torch.equal(torch.cat([x["time"] for x in b]), e2) and not torch.equal(e2, e3)


def test_worker_loader_keeps_the_order(chunks):
    b = ChunkBatches(chunks[0], 16, ("time",), shuffle_files=True, shuffle_within_file=True, seed=1)
    ref = torch.cat([x["time"] for x in b])
    got = torch.cat([x["time"] for x in make_loader(b, num_workers=2)])
    assert torch.equal(got, ref)


def test_cache_gives_the_same_head_outputs(chunks, tmp_path):
    paths, stats = chunks
    model = build_model(resolve_run_config({}), stats).eval()
    files, n_new = embed_chunks(paths, tmp_path, model, batch_size=16)
    assert n_new == len(paths)
    direct = ChunkBatches(paths, 32, shuffle_files=True, shuffle_within_file=True, seed=2)
    cached = ChunkBatches(
        files,
        32,
        EMB_FIELDS,
        shuffle_files=True,
        shuffle_within_file=True,
        seed=2,
    )
    with torch.no_grad():
        for a, b in zip(direct, cached, strict=True):
            assert torch.equal(a["y"], b["y"])
            assert torch.allclose(model(a), model(b), atol=1e-5)


def test_embed_chunk_recomputes_only_when_the_encoder_changes(chunks, tmp_path):
    paths, stats = chunks
    cfg = resolve_run_config({})
    out = tmp_path / "e.pt"
    assert embed_chunk(paths[0], out, run_cfg=cfg, stats=stats, batch_size=64)
    first = out.stat().st_mtime_ns
    assert not embed_chunk(paths[0], out, run_cfg=cfg, stats=stats)  # same weights: reused
    assert out.stat().st_mtime_ns == first
    model = build_model(cfg, stats)
    fp = embedding_fingerprint(model)
    assert torch.load(out, weights_only=True)["fingerprint"] == fp
    assert not embed_chunk(paths[0], out, model)  # a model built by train_run's path matches too
    head_only = build_model({**cfg, "head_hidden": 64}, stats)
    assert embedding_fingerprint(head_only) == fp  # the head is not part of the key
    with torch.no_grad():
        model.encoder.transformer.norm.bias.add_(0.1)
    assert embed_chunk(paths[0], out, model)
    assert embed_chunk(paths[0], out, run_cfg={**cfg, "patch_mode": "crop8"}, stats=stats)
    assert embed_chunk(
        paths[0], out, run_cfg={**cfg, "waves_um": [w * 1.01 for w in cfg["waves_um"]]}, stats=stats
    )


def test_load_model_from_checkpoint_alone(chunks, tmp_path):
    from ta2d.models import load_model

    cfg = resolve_run_config({"model": "cnn"})
    model = build_model(cfg, chunks[1]).eval()
    torch.save(
        {"model": model.state_dict(), "run_config": cfg, "stats": model.normalizer.stats()}, tmp_path / "m.pt"
    )
    again = load_model(tmp_path / "m.pt")
    b = batch_of()
    with torch.no_grad():
        assert torch.equal(model(b), again(b))
    assert isinstance(build_model(resolve_run_config({}), chunks[1]), ClayTransfer)


@pytest.mark.parametrize(("size", "tokens"), [(9, 1), (17, 4), (33, 16)])
def test_any_odd_patch_size_reaches_every_model(size, tokens):
    """patch.size end to end in the models: Clay's `area` mode gives (size // 8)^2 patch tokens, the CNN
    and ridge take the station pixel at the centre of any size."""
    from ta2d.models.ta_model import clay_grid_side, to_clay_grid

    rng = np.random.default_rng(size)
    base = make_chunk(6, seed=size)
    x = torch.from_numpy(rng.normal(280.0, 5.0, (6, 19, size, size)).astype(np.float32))
    c = size // 2
    x[:, :, c, c] = base["x"][:, :, 4, 4]  # the station pixel, as in the 9x9 chunk
    batch = {**{k: base[k] for k in ("time7", "loc", "landcover_onehot", "elev", "y")}, "x": x}
    stats = {"x_mean": [280.0] * 19, "x_std": [5.0] * 19, "y_mean": 10.0, "y_std": 5.0}
    assert clay_grid_side(size, "area") ** 2 // 64 == tokens
    assert to_clay_grid(x, "area").shape[-1] == 8 * int(tokens**0.5)
    clay = build_model(resolve_run_config({"model": "clay_transfer", "patch_mode": "area"}), stats).eval()
    seen = {}
    clay.encoder.register_forward_hook(lambda m, i, o: seen.update(n=o.shape[1]))
    for kind in ("cnn", "ridge"):
        model = build_model(resolve_run_config({"model": kind}), stats).eval()
        with torch.no_grad():
            assert model(batch).shape == (6,)
    with torch.no_grad():
        assert clay(batch).shape == (6,)
    assert seen["n"] == tokens + 1  # + the cls token
    # the centre pixel the heads see is the station's, whatever the size
    from ta2d.models.ta_model import center_pixels

    assert torch.equal(center_pixels(batch), base["x"][:, :, 4, 4])


def test_float16_chunks_predict_as_their_float32_values(tmp_path):
    """patch.x_dtype float16: the models compute in float32 on the stored (rounded) values."""
    d = make_chunk(32, seed=3)
    half = {**d, "x": d["x"].half()}
    rounded = {**d, "x": d["x"].half().float()}
    stats = compute_stats(write_chunks(tmp_path, "train", 2, 40))
    for kind in ("cnn", "ridge", "clay_transfer"):
        model = build_model(resolve_run_config({"model": kind}), stats).eval()
        with torch.no_grad():
            assert torch.equal(model(half), model(rounded)), kind
    assert float((d["x"][:, :10] - rounded["x"][:, :10]).abs().max()) <= 0.125  # BT rounding (K), < 512 K


def cached_batch(model, n=8, seed=0):
    """A batch as the embedding cache serves it: emb + x_center instead of x."""
    b = batch_of(n, seed)
    with torch.no_grad():
        emb = model.embed(b)
    c = b["x"].shape[-1] // 2
    return {**{k: v for k, v in b.items() if k != "x"}, "emb": emb, "x_center": b["x"][:, :, c, c].clone()}


@pytest.mark.parametrize("head_pixel", [True, False])
def test_the_head_sees_the_station_pixel_only_with_head_pixel(chunks, head_pixel):
    model = build_model(resolve_run_config({"head_pixel": head_pixel}), chunks[1]).eval()
    assert model.head[0].in_features == 16 + N_SIDE + (N_SPECTRAL if head_pixel else 0)  # head_embed_dim 16
    b = cached_batch(model)
    spectral = {**b, "x_center": b["x_center"].clone()}
    spectral["x_center"][:, :16] += 5.0  # the encoder's embedding (emb) stays what it was
    geometry = {**b, "x_center": b["x_center"].clone()}
    geometry["x_center"][:, 16] += 5.0  # centre SZA: a side feature of every head
    with torch.no_grad():
        out = model(b)
        assert torch.equal(out, model(spectral)) != head_pixel
        assert not torch.equal(out, model(geometry))


def test_dropping_the_embedding_leaves_the_head_alone(chunks):
    model = build_model(resolve_run_config({"drop_features": ["embedding"]}), chunks[1]).eval()
    b = cached_batch(model)
    with torch.no_grad():
        assert torch.equal(model(b), model({**b, "emb": torch.randn_like(b["emb"])}))
        assert torch.equal(model(b), model(batch_of(8, 0)))  # without the cache: the encoder's output is unused
    with pytest.raises(ValueError, match="embedding is a clay_transfer input"):
        resolve_run_config({"model": "cnn", "drop_features": ["embedding"]})


@pytest.mark.parametrize("width", [0, 4])
def test_head_embed_dim_projects_the_embedding_linearly(chunks, width):
    model = build_model(resolve_run_config({"head_embed_dim": width}), chunks[1]).eval()
    assert model.head[0].in_features == (width or model.embed_dim) + N_SIDE + N_SPECTRAL
    b = cached_batch(model)
    with torch.no_grad():
        assert not torch.equal(model(b), model({**b, "emb": torch.randn_like(b["emb"])}))
        if width:  # the head sees the embedding only through the projection: one that maps to zero hides it
            model.emb_proj.weight.zero_()
            assert torch.equal(model(b), model({**b, "emb": torch.randn_like(b["emb"])}))


def test_a_checkpoint_from_before_head_pixel_loads_without_it(chunks, tmp_path):
    from ta2d.models import load_model

    cfg = resolve_run_config({"head_pixel": False, "head_embed_dim": 0, "head_decorrelate": False})
    model = build_model(cfg, chunks[1]).eval()
    # written before any of the three keys existed
    old_cfg = {k: v for k, v in cfg.items() if k not in ("head_pixel", "head_embed_dim", "head_decorrelate")}
    torch.save({"model": model.state_dict(), "run_config": old_cfg, "stats": model.normalizer.stats(),
                "model_kind": "clay_transfer"}, tmp_path / "old.pt")
    again = load_model(tmp_path / "old.pt")
    assert not again.head_pixel
    with torch.no_grad():
        assert torch.equal(model(batch_of()), again(batch_of()))


def test_head_decorrelate_feeds_the_bottleneck_the_rotated_embedding(chunks):
    model = build_model(resolve_run_config({"head_decorrelate": True}), chunks[1]).eval()
    b = cached_batch(model)
    gen = torch.Generator().manual_seed(3)
    center = torch.randn(model.embed_dim, generator=gen)
    basis, _ = torch.linalg.qr(torch.randn(model.embed_dim, model.embed_dim, generator=gen))
    model.set_head_basis(center, basis)
    with torch.no_grad():
        rotated = (b["emb"].double() - center.double()) @ basis.double()
        assert torch.allclose(model.head_view(b["emb"]).double(), rotated, atol=1e-4)
        seen = {}
        hook = model.emb_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("in", i[0]))
        model(b)
        hook.remove()
        assert torch.allclose(seen["in"].double(), rotated, atol=1e-4)
    state = model.state_dict()
    assert torch.equal(state["emb_basis"], basis) and torch.equal(state["emb_center"], center)
    with pytest.raises(ValueError, match="centre"):
        model.set_head_basis(center[:-1], basis)
    plain = build_model(resolve_run_config({"head_decorrelate": False}), chunks[1])
    assert "emb_basis" not in plain.state_dict()
    with pytest.raises(ValueError, match="head_decorrelate"):
        plain.set_head_basis(center, basis)
