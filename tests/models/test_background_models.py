"""Models with the reanalysis background as an input: built from statistics that hold the background's (the flag
travels in every checkpoint's stats), trained by every model kind on chunks with the field, reloaded from best.pt
and from a model file, and a model file that needs the background refused by a config without it."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from fakes import with_background

from ta2d.chunks.contract import open_chunk, save_tensors
from ta2d.chunks.stats import write_stats
from ta2d.demo.synthetic import make_chunk, write_chunks
from ta2d.models import Normalizer, build_model, load_model, uses_background
from ta2d.models.hand_features import feature_names, hand_features
from ta2d.models.model_file import (
    BACKGROUND_KEY,
    ModelFileError,
    check_background,
    describe,
    export_model,
    load_model_file,
    needs_background,
)
from ta2d.models.ta_model import N_SIDE, side_features
from ta2d.training import predict_chunks, train_run
from ta2d.training.run_config import resolve_run_config

RUNS = {
    "ridge": {"model": "ridge"},
    "gbt": {"model": "gbt", "gbt_max_rounds": 40, "gbt_num_leaves": 15},
    "cnn": {"model": "cnn", "epochs": 2, "batch_size": 64, "head_hidden": 32, "cnn_channels": [8]},
    "clay": {"model": "clay_transfer", "preset": "tiny", "epochs": 1, "batch_size": 64, "head_hidden": 32},
}
PERIOD = {"start": "2024-04-01", "end": "2024-04-02"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every kind trained on synthetic chunks given a background field, with the stats rule's statistics:
    {"dir", "train", "val", "stats", "ckpts": {run: best.pt}}."""
    d = tmp_path_factory.mktemp("background_runs")
    train = with_background(write_chunks(d / "raw", "train", 2, 120, seed=1), d / "patch_pt", seed=2)
    val = with_background(write_chunks(d / "raw", "val", 1, 60, seed=3), d / "patch_pt", seed=4)
    stats = d / "stats.json"
    write_stats(train, stats)
    ckpts = {}
    for run, cfg in RUNS.items():
        train_run({**cfg, "seed": 3, "device": "cpu"}, train, val, stats, d / "runs" / run, progress=False,
                  log=lambda s: None)
        ckpts[run] = d / "runs" / run / "best.pt"
    return {"dir": d, "train": train, "val": val, "stats": stats, "ckpts": ckpts}


def shifted(path, out, kelvin: float):
    """A copy of chunk `path` whose background is `kelvin` warmer."""
    d = dict(open_chunk(path))
    d["background"] = d["background"] + kelvin
    save_tensors(d, out)
    return out


def test_side_features_append_the_normalised_background():
    batch = make_chunk(16, seed=2)
    batch["background"] = torch.linspace(-5.0, 25.0, 16)
    stats = {"x_mean": [0.0] * 19, "x_std": [1.0] * 19, "y_mean": 10.0, "y_std": 5.0}
    plain = Normalizer.from_stats(stats)
    assert not plain.has_background and side_features(batch, plain).shape == (16, N_SIDE)  # the field is ignored
    norm = Normalizer.from_stats({**stats, "background_mean": 10.0, "background_std": 4.0})
    feats = side_features(batch, norm)
    assert feats.shape == (16, N_SIDE + 1)
    torch.testing.assert_close(feats[:, :N_SIDE], side_features(batch, plain))
    torch.testing.assert_close(feats[:, -1], (batch["background"] - 10.0) / 4.0)
    assert {"background_mean", "background_std"} <= set(norm.stats())
    names, f = hand_features(batch, background=True)
    assert names == feature_names(True) and names[-1] == "background"
    torch.testing.assert_close(f[:, -1], batch["background"])
    assert hand_features(batch)[1].shape[1] == f.shape[1] - 1
    for kind in RUNS:  # every kind is built one input wider, and only from statistics with the background's
        cfg = resolve_run_config({**RUNS[kind], "seed": 0, "device": "cpu"})
        with_bg = build_model(cfg, norm.stats())
        assert uses_background(with_bg) and not uses_background(build_model(cfg, plain.stats()))


def test_every_kind_trains_with_the_background_and_reloads(runs, tmp_path):
    warmer = shifted(runs["val"][0], tmp_path / runs["val"][0].name, 3.0)
    for run, best in runs["ckpts"].items():
        ck = torch.load(best, map_location="cpu", weights_only=True)
        assert {"background_mean", "background_std"} <= set(ck["stats"]), run
        model = load_model(best)  # rebuilt from the checkpoint alone, strictly
        assert uses_background(model), run
        pred = predict_chunks(model, runs["val"], device="cpu")["y_pred"]
        assert torch.isfinite(pred).all() and len(pred) == 60
        assert torch.equal(pred, predict_chunks(load_model(best), runs["val"], device="cpu")["y_pred"]), run
        # the model reads the field: a warmer background moves its predictions
        moved = predict_chunks(model, [warmer], device="cpu")["y_pred"]
        assert (moved - pred).abs().max() > 1e-3, run
    ridge = load_model(runs["ckpts"]["ridge"])
    assert ridge.weight.shape == (47,) and float(ridge.weight[-1]) > 0.1  # a warmer background, a warmer TA
    gbt = load_model(runs["ckpts"]["gbt"])
    assert gbt.lgb_booster().feature_name()[-1] == "background"


def test_a_chunk_without_the_field_cannot_serve_a_model_that_needs_it(runs, tmp_path):
    plain = tmp_path / runs["val"][0].name
    save_tensors({k: v for k, v in open_chunk(runs["val"][0]).items() if k != "background"}, plain)
    with pytest.raises(KeyError, match="background"):
        predict_chunks(load_model(runs["ckpts"]["ridge"]), [plain], device="cpu")


def test_frozen_clay_embeddings_carry_the_background(runs):
    embed_dir = runs["ckpts"]["clay"].parent / "embed"
    for chunk in [*runs["train"], *runs["val"]]:
        emb = open_chunk(embed_dir / chunk.name)
        assert torch.equal(emb["background"], open_chunk(chunk)["background"])


def test_drop_features_background_leaves_it_out(runs, tmp_path):
    cfg = {"model": "ridge", "drop_features": ["background"], "seed": 3, "device": "cpu"}
    train_run(cfg, runs["train"], runs["val"], runs["stats"], tmp_path / "run", progress=False, log=lambda s: None)
    model = load_model(tmp_path / "run" / "best.pt")
    warmer = shifted(runs["val"][0], tmp_path / runs["val"][0].name, 3.0)
    torch.testing.assert_close(predict_chunks(model, [warmer], device="cpu")["y_pred"],
                               predict_chunks(model, runs["val"], device="cpu")["y_pred"])


def fake_metrics(path, runs) -> str:
    rows = [{"run": r, "scheme": s, "n": 10, "rmse": 1.0, "mae": 0.8, "bias": 0.0, "floor": 0.8,
             "rmse_over_floor": 1.25} for r in runs for s in ("held_out_days", "all")]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_the_model_file_lists_the_background_and_a_config_without_it_is_refused(runs, small_runs, tmp_path):
    metrics = fake_metrics(tmp_path / "metrics.csv", ["cnn"])
    info = export_model(runs["ckpts"]["cnn"], tmp_path / "cnn.pt", "cnn", metrics, runs["train"], runs["val"],
                        PERIOD, 9)
    assert info["inputs"]["background"] is True and info["inputs"]["side_features"][-1].startswith("background")
    model, data = load_model_file(tmp_path / "cnn.pt")
    assert needs_background(data) and uses_background(model)
    assert "background: reanalysis" in describe(data, tmp_path / "cnn.pt")
    torch.testing.assert_close(predict_chunks(model, runs["val"], device="cpu")["y_pred"],
                               predict_chunks(load_model(runs["ckpts"]["cnn"]), runs["val"], device="cpu")["y_pred"])
    with pytest.raises(ModelFileError, match=f"{tmp_path / 'cnn.pt'}.*{BACKGROUND_KEY} is null"):
        check_background(data, tmp_path / "cnn.pt", None)
    check_background(data, tmp_path / "cnn.pt", {"t2m": "x", "orography": "y"})
    # the map job refuses it before it reads the scene
    from ta2d.maps.archive import day_slot_times, map_files

    with pytest.raises(ModelFileError, match="inputs.background"):
        map_files("cnn", tmp_path / "cnn.pt", tmp_path / "no_scene.nc", tmp_path / "no_static.nc",
                  day_slot_times("20240410", [0]), tmp_path / "map.nc", None, background=None)
    # a model without the background: no such input, and no key needed
    plain = export_model(small_runs["ckpts"]["ridge"], tmp_path / "ridge.pt", "cnn", metrics, small_runs["train"],
                         [], PERIOD, 9)
    assert plain["inputs"]["background"] is False and not needs_background(plain)
    check_background(plain, tmp_path / "ridge.pt", None)
    old = {**plain, "inputs": {k: v for k, v in plain["inputs"].items() if k != "background"}}
    assert not needs_background({**old, "stats": {}}) and needs_background({**old, "stats": {"background_mean": 1}})
