"""gbt baseline: hand features against numpy, the LightGBM fit, its checkpoint round trip, train_run and maps."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from fakes import chunk_from_manifest, compute_stats

from ta2d.channels import X_CHANNELS
from ta2d.demo.synthetic import I_IR105, make_chunk
from ta2d.grid import Domain
from ta2d.ingest.scene import SlotData, read_scene, write_scene
from ta2d.maps.archive import day_slot_times, map_day
from ta2d.models import GBTModel, Normalizer, RidgeModel, build_model, hand_features, load_model
from ta2d.models.hand_features import feature_names
from ta2d.periods import period_slots
from ta2d.static import read_static
from ta2d.training import predict_chunks, resolve_run_config, train_run

IX = {c: i for i, c in enumerate(X_CHANNELS)}
FAST = {"gbt_num_leaves": 15, "gbt_learning_rate": 0.1, "gbt_max_rounds": 300, "gbt_early_stopping": 30,
        "gbt_num_threads": 1, "gbt_min_data_in_leaf": 10}


def nonlinear_chunk(n: int, seed: int, noise: float = 0.3) -> dict[str, torch.Tensor]:
    """A factory chunk whose TA is a known nonlinear function of centre ir105, UTC hour and centre DEM."""
    d = make_chunk(n, seed=seed, noise=0.0)
    ir = d["x"][:, I_IR105, 4, 4].double()
    dem = d["x"][:, IX["dem"], 4, 4].double()
    hour = (d["time"] % 86400).double() / 3600.0
    y = 8 * torch.tanh((ir - 280) / 6) - 5.0 * (dem > 700) + 3 * torch.sin(2 * math.pi * hour / 24) * (ir > 280)
    y = y + noise * torch.from_numpy(np.random.default_rng(seed + 99).normal(size=n))
    d["y"] = y.float()
    return d


def batches(d: dict, bs: int = 256):
    for i in range(0, len(d["y"]), bs):
        yield {k: v[i:i + bs] for k, v in d.items()}


def stats_of(d: dict) -> dict:
    x = d["x"].double()
    return {"x_mean": x.mean((0, 2, 3)).tolist(), "x_std": x.std((0, 2, 3)).tolist(),
            "y_mean": float(d["y"].mean()), "y_std": float(d["y"].std())}


def rmse(model, d) -> float:
    with torch.no_grad():
        pred = model.normalizer.denorm_y(model(d))
    return float(((pred - d["y"]) ** 2).mean().sqrt())


@pytest.fixture(scope="module")
def data():
    return {"train": nonlinear_chunk(3000, 1), "val": nonlinear_chunk(800, 2), "test": nonlinear_chunk(1500, 3)}


@pytest.fixture(scope="module")
def fitted(data):
    model = GBTModel(Normalizer.from_stats(stats_of(data["train"])), seed=5,
                     **{k[4:]: v for k, v in FAST.items()})
    return model.fit(batches(data["train"]), batches(data["val"]))


# --- features -----------------------------------------------------------------------------------------

def test_hand_features_equal_numpy():
    d = make_chunk(12, seed=4)
    names, f = hand_features(d)
    assert names == feature_names() and len(set(names)) == len(names) and f.shape == (12, len(names))
    assert f.dtype == torch.float32 and torch.isfinite(f).all()
    col = {n: f[:, i].numpy().astype(np.float64) for i, n in enumerate(names)}
    x = d["x"].numpy().astype(np.float64)
    t = d["time"].numpy()
    lat, lon = d["loc"][:, 0].numpy().astype(np.float64), d["loc"][:, 1].numpy().astype(np.float64)
    for s in (0, 5, 11):
        ir105, ir123, wv063, wv069 = (x[s, IX[c]] for c in ("ir105", "ir123", "wv063", "wv069"))
        assert col["c_ir105"][s] == pytest.approx(ir105[4, 4], abs=1e-4)
        assert col["c_dem"][s] == pytest.approx(x[s, IX["dem"], 4, 4], abs=1e-3)
        assert col["mean_vi006"][s] == pytest.approx(x[s, IX["vi006"]].mean(), abs=1e-5)
        assert col["std_ir105"][s] == pytest.approx(ir105.std(), abs=1e-3)
        assert col["min_ir123"][s] == pytest.approx(ir123.min(), abs=1e-4)
        assert col["c_ir105-ir123"][s] == pytest.approx(ir105[4, 4] - ir123[4, 4], abs=1e-4)
        assert col["mean_wv063-wv069"][s] == pytest.approx((wv063 - wv069).mean(), abs=1e-3)
        assert col["coldfrac_3k"][s] == pytest.approx((ir105 < ir105.max() - 3).mean(), abs=1e-6)
        assert col["land_frac"][s] == pytest.approx(x[s, IX["land_sea_mask"]].mean(), abs=1e-6)
        utc = (t[s] % 86400) / 3600.0
        solar = (utc + lon[s] / 15.0) % 24.0
        assert abs((col["utc_hour"][s] - utc + 12) % 24 - 12) < 1e-3
        assert abs((col["solar_hour"][s] - solar + 12) % 24 - 12) < 1e-3
        assert col["lat"][s] == pytest.approx(lat[s], abs=1e-4) and col["lon"][s] == pytest.approx(lon[s], abs=1e-4)
        assert col["landcover"][s] == d["landcover_onehot"][s].argmax().item()
        assert col["elev-dem_c"][s] == pytest.approx(d["elev"][s].item() - x[s, IX["dem"], 4, 4], abs=1e-3)
    no_elev = {k: v for k, v in d.items() if k != "elev"}
    assert (hand_features(no_elev)[1][:, names.index("elev-dem_c")] == 0).all()  # maps: the pixel is the target


def test_elev_offset_when_the_batch_has_station_elevation():
    d = make_chunk(5, seed=6)
    dem_c = d["x"][:, IX["dem"], 4, 4]
    elev = dem_c + torch.tensor([10.0, -20.0, 0.0, float("nan"), 300.0])
    names, f = hand_features({**d, "elev": elev})
    got = f[:, names.index("elev-dem_c")]
    assert torch.allclose(got, torch.tensor([10.0, -20.0, 0.0, 0.0, 300.0]), atol=1e-3)
    assert f.shape == hand_features(d)[1].shape


@pytest.mark.parametrize("p", [1, 3, 5, 9, 15])
def test_any_odd_patch_size(p, fitted):
    rng = np.random.default_rng(p)
    d = make_chunk(7, seed=8)
    x = torch.from_numpy(rng.normal(280, 5, (7, 19, p, p)).astype(np.float32))
    k = p // 2
    x[:, :, k, k] = d["x"][:, :, 4, 4]  # same centre as the 9x9 chunk
    names, f = hand_features({**d, "x": x})
    assert f.shape == (7, len(names)) and torch.isfinite(f).all()
    n_centre = len(X_CHANNELS)
    assert torch.equal(f[:, :n_centre], hand_features(d)[1][:, :n_centre])
    assert fitted({**d, "x": x}).shape == (7,)


def test_even_patch_is_refused():
    d = make_chunk(3, seed=1)
    with pytest.raises(ValueError, match="odd"):
        hand_features({**d, "x": d["x"][:, :, :8, :8]})


# --- fit ----------------------------------------------------------------------------------------------

def test_gbt_learns_a_nonlinear_target_better_than_ridge(data, fitted):
    test = data["test"]
    ridge = RidgeModel(Normalizer.from_stats(stats_of(data["train"])), alpha=1.0).fit(batches(data["train"]))
    r_gbt, r_ridge, sd = rmse(fitted, test), rmse(ridge, test), float(test["y"].std())
    assert r_gbt < 0.15 * sd, (r_gbt, sd)
    assert r_gbt < 0.6 * r_ridge, (r_gbt, r_ridge)
    assert 0 < fitted.fit_info["rounds"] <= FAST["gbt_max_rounds"] and fitted.fit_info["n_val"] == 800
    pred = fitted(test)
    assert pred.dtype == torch.float32 and pred.shape == (1500,)
    assert fitted({k: v[:0] for k, v in test.items()}).shape == (0,)


def test_fit_is_deterministic_and_the_seed_matters(data):
    def fit(seed):
        m = GBTModel(Normalizer.from_stats(stats_of(data["train"])), seed=seed,
                     **{k[4:]: v for k, v in {**FAST, "gbt_max_rounds": 40}.items()})
        return m.fit(batches(data["train"]))

    a, b, c = fit(1), fit(1), fit(2)
    assert torch.equal(a.booster, b.booster) and torch.equal(a(data["test"]), b(data["test"]))
    assert not torch.equal(a(data["test"]), c(data["test"]))
    assert a.fit_info["rounds"] == 40  # no validation: no early stopping


def test_unfitted_model_raises_and_state_dict_of_any_length_loads(data, fitted):
    norm = Normalizer.from_stats(stats_of(data["train"]))
    fresh = GBTModel(norm)
    with pytest.raises(RuntimeError, match="not fitted"):
        fresh(data["test"])
    fresh.load_state_dict(fitted.state_dict(), strict=True)
    assert torch.equal(fresh(data["test"]), fitted(data["test"]))
    fresh.load_state_dict(GBTModel(norm).state_dict(), strict=True)  # back to empty
    assert not fresh.fitted


# --- train_run, checkpoints ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chunk_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gbt_chunks")
    paths = {}
    for split, seed0, n in (("train", 10, 3), ("val", 20, 1), ("test", 30, 2)):
        paths[split] = []
        for i in range(n):
            p = d / f"{split}_chunk_2024-04-{i + 1:02d}.pt"
            torch.save(nonlinear_chunk(700, seed0 + i), p)
            paths[split].append(p)
    stats = compute_stats(paths["train"], d / "stats.json")
    return paths, stats


def test_train_run_writes_a_one_epoch_run_that_round_trips(chunk_files, tmp_path):
    paths, stats = chunk_files
    out = tmp_path / "gbt"
    res = train_run({"model": "gbt", **FAST, "device": "cpu"}, paths["train"], paths["val"], stats, out,
                    progress=False, log=lambda s: None)
    assert res["epochs"] == 1 and {p.name for p in out.iterdir()} >= {"best.pt", "current.pt", "metrics.csv"}
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    assert float(rows[0]["val_mse"]) == pytest.approx(res["best_val"])
    ck = torch.load(out / "best.pt", weights_only=True)
    assert ck["model_kind"] == "gbt" and ck["model"]["booster"].dtype == torch.uint8
    model = load_model(out / "best.pt")
    pred = predict_chunks(model, paths["val"], device="cpu")
    assert float(((pred["y_pred"] - pred["y"]) ** 2).mean().sqrt()) == pytest.approx(
        float(rows[0]["val_rmse_k"]), rel=1e-4)
    test = predict_chunks(model, paths["test"], device="cpu")
    again = predict_chunks(load_model(out / "current.pt"), paths["test"], device="cpu")
    assert torch.equal(test["y_pred"], again["y_pred"])
    assert float(((test["y_pred"] - test["y"]) ** 2).mean().sqrt()) < 0.2 * float(test["y"].std())
    # a rerun refits to the same booster (deterministic)
    train_run({"model": "gbt", **FAST, "device": "cpu"}, paths["train"], paths["val"], stats, out,
              progress=False, log=lambda s: None)
    assert torch.equal(torch.load(out / "best.pt", weights_only=True)["model"]["booster"], ck["model"]["booster"])


def test_run_config_defaults_and_build():
    cfg = resolve_run_config({"model": "gbt"})
    model = build_model(cfg, stats_of(make_chunk(50, seed=1)))
    assert isinstance(model, GBTModel)
    assert model.params["num_leaves"] == cfg["gbt_num_leaves"] == 63 and model.max_rounds == cfg["gbt_max_rounds"]
    assert model.params["seed"] == cfg["seed"] and model.num_threads == cfg["gbt_num_threads"]


def test_schema_defaults_equal_run_defaults():
    import importlib.resources

    import yaml

    from ta2d.training import RUN_DEFAULTS

    schema = yaml.safe_load(importlib.resources.files("ta2d").joinpath("schemas/config.schema.yaml").read_text())
    props = schema["properties"]["train"]["properties"]["runs"]["additionalProperties"]["properties"]
    assert "gbt" in props["model"]["enum"]
    for key in (k for k in RUN_DEFAULTS if k.startswith("gbt_")):
        assert props[key]["default"] == RUN_DEFAULTS[key], key


# --- maps ---------------------------------------------------------------------------------------------

DOMAIN = Domain(900, 915, 2700, 2715)
KEY, TIME = "20240410", "2024-04-10T03:00"


def test_map_equals_predict_chunks_on_the_same_pixels(chunk_files, tmp_path):
    """A gbt run's map and its predictions on chunks built for the same pixels agree."""
    paths, stats = chunk_files
    run = tmp_path / "run"
    train_run({"model": "gbt", **FAST, "gbt_max_rounds": 30, "device": "cpu"}, paths["train"], [], stats, run,
              progress=False, log=lambda s: None)
    rng = np.random.default_rng(5)
    nl, nc = DOMAIN.shape

    def read_slot(slot):
        if slot.hour != 3:
            return SlotData("no_files")
        bt = (285 + rng.normal(0, 6, (10, nl, nc))).astype(np.float32)
        return SlotData("ok", bt=bt, rf=rng.uniform(0, 0.6, (6, nl, nc)).astype(np.float32))

    scene = tmp_path / f"{KEY}.nc"
    write_scene(scene, KEY, period_slots(KEY, "D", [0]), DOMAIN, read_slot, {"input_kind": "test"}, progress=False)
    xr.Dataset(
        {"dem": (("line", "column"), rng.uniform(0, 1400, (nl, nc)).astype(np.float32)),
         "land_sea_mask": (("line", "column"), np.ones((nl, nc), np.float32)),
         "landcover": (("line", "column"), rng.integers(1, 18, (nl, nc)).astype(np.uint8))},
        coords={"line": DOMAIN.lines, "column": DOMAIN.columns},
    ).to_netcdf(tmp_path / "static.nc", engine="h5netcdf")
    static = read_static(tmp_path / "static.nc", DOMAIN)
    pixels = [(905, 2705), (908, 2710), (910, 2707)]
    with read_scene(scene) as sc:
        lat, lon = sc["lat"].values, sc["lon"].values
    pd.DataFrame([
        {"row": i + 1, "stn": 100 + i, "time": int(pd.Timestamp(TIME, tz="UTC").timestamp()), "ta_c": 10.0,
         "lat": repr(float(lat[li - 900, co - 2700])), "lon": repr(float(lon[li - 900, co - 2700])),
         "elev_m": float("nan"), "line": li, "column": co}  # unknown elevation: the pixel's DEM, as on a map
        for i, (li, co) in enumerate(pixels)
    ]).to_csv(tmp_path / "m.csv", index=False)
    chunk = tmp_path / "test_chunk_x.pt"
    chunk_from_manifest(tmp_path / "m.csv", scene, static, 9, chunk)
    model = load_model(run / "best.pt")
    want = predict_chunks(model, [chunk], device="cpu")["y_pred"].numpy()
    with read_scene(scene) as sc:
        out = map_day(model, sc, static, day_slot_times(KEY, [0]), batch_size=17, device="cpu")
    ta = out["ta"][pd.Timestamp(TIME).hour]
    got = np.array([ta[li - DOMAIN.first_line, co - DOMAIN.first_column] for li, co in pixels])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.isfinite(ta).sum() == (nl - 8) * (nc - 8)
