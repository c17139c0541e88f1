"""Evaluation (ta2d.evaluation.evaluate) against plain numpy (the maps: tests/maps/test_maps.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from fakes import SMALL_RUNS

from ta2d.demo.synthetic import make_chunk, write_chunks
from ta2d.evaluation.evaluate import OUTPUTS, evaluate_runs
from ta2d.evaluation.metrics import floor_rmse, metrics
from ta2d.evaluation.samples import common_samples
from ta2d.evaluation.tables import beats_baselines, metrics_table
from ta2d.models import load_model
from ta2d.splits import assign_split_by_day

RUNS = SMALL_RUNS


@pytest.fixture(scope="module")
def trained(small_runs, tmp_path_factory):
    """The session's three small runs (conftest.py: {"dir", "train", "ckpts"}) and two synthetic test chunks."""
    test = write_chunks(tmp_path_factory.mktemp("eval") / "patch_pt", "test", 2, 80, seed=3)
    return {**small_runs, "test": test}


# --- metrics ------------------------------------------------------------------------------------------

def test_metrics_on_known_values():
    m = metrics(np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0, 5.0]))
    assert m["n"] == 4
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 4))
    assert m["mae"] == pytest.approx(0.75) and m["bias"] == pytest.approx(0.75)
    assert m["r2"] == pytest.approx(0.0)  # SSE 5 = SST 5
    assert metrics(np.array([]), np.array([]))["n"] == 0
    assert math.isnan(metrics(np.array([1.0]), np.array([2.0]))["r2"])


def test_runs_are_compared_on_the_same_samples():
    df = pd.DataFrame({"stn": [1, 2, 3], "y": [1.0, 2.0, 3.0], "pred_a": [1.0, np.nan, 3.0],
                       "pred_b": [2.0, 2.0, 3.0]})
    common = common_samples(df, ["a", "b"])
    table = metrics_table(common, {"a": "clay_transfer", "b": "ridge"})
    assert list(table["n"]) == [2, 2]
    assert table.loc[1, "rmse"] == pytest.approx(math.sqrt(0.5))  # b on samples 1 and 3 only
    verdict = beats_baselines(table)
    assert verdict == {"a": {"beats": True, "best_baseline": "b", "best_baseline_rmse": pytest.approx(math.sqrt(0.5))}}


def _independent(ckpts, chunks) -> pd.DataFrame:
    """Predictions and groupings computed without ta2d.evaluation: the model on whole chunks, numpy times."""
    rows = []
    for path in chunks:
        d = torch.load(path, weights_only=True)
        t = d["time"].numpy()
        kst = (t + 9 * 3600).astype("datetime64[s]")
        part = {"stn": d["stn"].numpy(), "y": d["y"].numpy().astype(np.float64),
                "hour_kst": ((t + 9 * 3600) % 86400) // 3600,
                "month": kst.astype("datetime64[M]").astype(np.int64) % 12 + 1,
                "landcover": d["landcover_onehot"].numpy().argmax(1) + 1}
        for run, ck in ckpts.items():
            model = load_model(ck)
            with torch.no_grad():
                z = model({k: d[k] for k in ("x", "time7", "loc", "landcover_onehot", "elev")})
            part[run] = model.normalizer.denorm_y(z).numpy().astype(np.float64)
        rows.append(pd.DataFrame(part))
    return pd.concat(rows, ignore_index=True)


def _np_metrics(y, p):
    e = p - y
    return (len(y), np.sqrt(np.mean(e**2)), np.mean(np.abs(e)), np.mean(e),
            1 - np.sum(e**2) / np.sum((y - y.mean()) ** 2) if len(y) > 1 else np.nan)


def test_evaluate_runs_matches_numpy(trained, tmp_path):
    out = tmp_path / "eval"
    table = evaluate_runs(trained["ckpts"], trained["test"], out, noise_sigma_k=0.8, device="cpu")
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    ref = _independent(trained["ckpts"], trained["test"])
    got = pd.read_csv(out / "metrics.csv")
    assert list(got["run"]) == list(RUNS) and list(table["run"]) == list(RUNS)
    assert list(got["baseline"]) == [False, True, True] and list(got["model"]) == ["clay_transfer", "cnn", "ridge"]
    for r in got.itertuples():
        n, rmse, mae, bias, r2 = _np_metrics(ref["y"].to_numpy(), ref[r.run].to_numpy())
        assert r.n == n == 80 + 81
        np.testing.assert_allclose([r.rmse, r.mae, r.bias, r.r2], [rmse, mae, bias, r2], rtol=1e-4, atol=1e-5)
    for stem, col in (("by_station", "stn"), ("by_hour", "hour_kst"), ("by_month", "month"),
                      ("by_landcover", "landcover")):
        t = pd.read_csv(out / f"{stem}.csv")
        for run in RUNS:
            sub = t[t["run"] == run].set_index(col)
            assert sorted(sub.index) == sorted(ref[col].unique()), stem
            assert sub["n"].sum() == len(ref)
            for key, g in ref.groupby(col):
                n, rmse, mae, bias, _ = _np_metrics(g["y"].to_numpy(), g[run].to_numpy())
                assert sub.loc[key, "n"] == n
                np.testing.assert_allclose([sub.loc[key, "rmse"], sub.loc[key, "mae"], sub.loc[key, "bias"]],
                                           [rmse, mae, bias], rtol=1e-4, atol=1e-5)
    assert set(pd.read_csv(out / "by_landcover.csv")["landcover_name"]) != {"unknown"}
    md = (out / "metrics.md").read_text()
    assert "0.800 K" in md and "best achievable rmse" in md.lower()
    assert "clay" in md and ("beats every baseline" in md or "does NOT beat every baseline" in md)
    # side by side (header, one row per run, a floor row per input set and n), then the per-run table
    assert md.count("\n| ") == (1 + len(RUNS) + 4) + (1 + len(RUNS))
    assert "floor: not available" in md  # no truth file
    assert got["scheme"].eq("all").all() and got["floor"].isna().all()  # no split config, no truth
    assert (out / "scatter.png").read_bytes()[:4] == b"\x89PNG"


SPLIT = {"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "seed": 42, "block_days": 20,
         "holdout_stations": [500, 501], "holdout_station_fraction": 0.0, "time_block_start": "2024-04-18"}
SEEN, HELD = [100, 101, 102, 103, 104], [500, 501]


def _scheme_chunks(d):
    """Two test chunks holding exactly the test samples of SPLIT on 2024-04-01..21 (4 hours a day), each
    sample's scheme written out by hand, and a truth file with known offsets from y."""
    days = pd.date_range("2024-04-01", "2024-04-21")
    by_day = assign_split_by_day(pd.Series(days.strftime("%Y%m%d")), SPLIT["fractions"], 42, 20).tolist()
    stn, time, scheme = [], [], []
    for day, split in zip(days, by_day, strict=True):
        block = day >= pd.Timestamp("2024-04-18")
        for s in SEEN + HELD:
            held = s in HELD
            if not (held or block or split == "test"):
                continue  # a train/val sample
            name = ("held_out_both" if block or split == "test" else "held_out_stations") if held else (
                "time_block" if block else "held_out_days")
            for hour in (0, 6, 12, 18):
                stn.append(s)
                time.append(int((day - pd.Timestamp(0)) // pd.Timedelta(seconds=1)) + hour * 3600)
                scheme.append(name)
    n = len(stn)
    order = np.random.default_rng(0).permutation(n)  # chunks in any order
    paths = []
    for i, part in enumerate(np.array_split(order, 2)):
        c = make_chunk(len(part), seed=40 + i)
        c["stn"] = torch.tensor(np.asarray(stn)[part], dtype=torch.int32)
        c["time"] = torch.tensor(np.asarray(time)[part], dtype=torch.int64)
        path = d / f"test_chunk_{i}.pt"
        torch.save(c, path)
        paths.append(path)
    return paths, pd.DataFrame({"stn": stn, "time": time, "scheme": scheme})


def test_evaluate_per_scheme_with_floor_matches_numpy(trained, tmp_path):
    chunks, expected = _scheme_chunks(tmp_path)
    loaded = [torch.load(p, weights_only=True) for p in chunks]
    ref = pd.DataFrame({"stn": np.concatenate([c["stn"].numpy() for c in loaded]).astype(np.int64),
                        "time": np.concatenate([c["time"].numpy() for c in loaded]),
                        "y": np.concatenate([c["y"].numpy() for c in loaded]).astype(np.float64)})
    ref = ref.merge(expected, on=["stn", "time"], how="left", validate="one_to_one")
    assert set(ref["scheme"]) == {"held_out_days", "held_out_stations", "time_block", "held_out_both"}
    rng = np.random.default_rng(1)
    truth = ref[["stn", "time"]].rename(columns={"time": "time_utc"})
    truth["ta_true_c"] = ref["y"] + rng.normal(0, 0.5, len(ref))
    truth["ta_pixel_c"] = ref["y"] + rng.normal(0.3, 1.0, len(ref))
    truth["line"], truth["column"] = 900, 2700
    for k, name in enumerate(("satellite", "background", "corrected")):
        truth[f"oracle_{name}_c"] = ref["y"] + rng.normal(0.1, 1.5 - 0.4 * k, len(ref))
    truth["siting_c"] = rng.normal(0, 0.5, ref["stn"].max() + 1)[ref["stn"]]
    extra = pd.DataFrame({"stn": [999], "time_utc": [0], "ta_true_c": [1.0], "ta_pixel_c": [1.0], "line": [1],
                          "column": [1], "oracle_satellite_c": [1.0], "oracle_background_c": [1.0],
                          "oracle_corrected_c": [1.0], "siting_c": [0.0]})  # a truth row of no test sample
    truth_path = tmp_path / "truth/labels_truth.csv"
    truth_path.parent.mkdir()
    pd.concat([extra, truth.iloc[::-1]]).to_csv(truth_path, index=False, float_format="%.4f")
    truth = pd.read_csv(truth_path).rename(columns={"time_utc": "time"})  # as written (4 decimals)
    ref = ref.merge(truth, on=["stn", "time"], how="left")
    # a station the models trained on could have learnt its siting error: the floor takes it away there
    seen = ~ref["scheme"].isin(["held_out_stations", "held_out_both"]).to_numpy()

    out = tmp_path / "eval"
    evaluate_runs(trained["ckpts"], chunks, out, noise_sigma_k=0.5, device="cpu", split_cfg=SPLIT,
                  truth_path=truth_path)
    got = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=[""])
    # the predictions themselves are checked against the models in test_evaluate_runs_matches_numpy;
    # here: grouping by scheme, metrics and floors on exactly those predictions
    pred = pd.read_csv(out / "predictions.csv")
    assert np.array_equal(pred[["stn", "time"]].to_numpy(), ref[["stn", "time"]].to_numpy())
    np.testing.assert_allclose(pred["y"], ref["y"], atol=1e-4)
    for run in RUNS:
        ref[run] = pred[f"pred_{run}"].to_numpy()
    assert list(got.columns) == ["run", "model", "baseline", "scheme", "n", "rmse", "mae", "bias", "r2", "floor",
                                 "rmse_over_floor", "floor_satellite", "floor_background", "floor_corrected", "crps",
                                 "coverage_90"]
    assert got[["crps", "coverage_90"]].isna().all().all()  # no validation chunks: no standard errors
    assert len(got) == len(RUNS) * 5
    for r in got.itertuples():
        g = ref if r.scheme == "all" else ref[ref["scheme"] == r.scheme]
        y = g["y"].to_numpy()
        n, rmse, mae, bias, r2 = _np_metrics(y, g[r.run].to_numpy())
        siting = np.where(seen[g.index], g["siting_c"].to_numpy(), 0.0)
        floors = [np.sqrt(np.mean((y - g[f"oracle_{name}_c"].to_numpy() - siting) ** 2))
                  for name in ("satellite", "background", "corrected")]
        assert r.n == n > 0
        np.testing.assert_allclose(
            [r.rmse, r.mae, r.bias, r.r2, r.floor, r.floor_satellite, r.floor_background, r.floor_corrected,
             r.rmse_over_floor], [rmse, mae, bias, r2, floors[0], *floors, rmse / floors[0]], rtol=1e-4, atol=1e-5)
    assert pred["scheme"].tolist() == ref["scheme"].tolist()
    md = (out / "metrics.md").read_text()
    for title in ("held-out days", "held-out stations", "time block", "all test samples", "floor, satellite (K)",
                  "floor, + station correction (K)"):
        assert title in md
    assert "floor: not available" not in md
    assert "beats every baseline on held_out_days" in md or "does NOT beat every baseline on held_out_days" in md
    assert "time block" in (out / "metrics.html").read_text()
    # a test chunk sample that the split config does not put in test is an error
    with pytest.raises(ValueError, match="not test samples"):
        evaluate_runs(trained["ckpts"], chunks, tmp_path / "eval2", device="cpu",
                      split_cfg={**SPLIT, "holdout_stations": []})


def test_floor_is_nan_without_truth():
    assert math.isnan(floor_rmse(np.array([1.0, 2.0]), np.array([1.0, np.nan])))
    assert math.isnan(floor_rmse(np.array([]), np.array([])))
    assert floor_rmse(np.array([1.0, 2.0]), np.array([0.0, 2.0])) == pytest.approx(math.sqrt(0.5))


def test_background_baseline_is_the_reanalysis_at_each_pixel_and_hour(tmp_path):
    """background_predictions on a t2m field linear in latitude, longitude and time (which bilinear and linear
    interpolation reproduce exactly) over a flat orography: at each sample it must equal that plane at the
    pixel's navigated position and the sample's time, minus the lapse rate times the DEM's height above the
    orography."""
    import xarray as xr

    from ta2d.evaluation.samples import background_predictions
    from ta2d.grid import Domain, linecol_to_lonlat
    from ta2d.ingest.background import GRAVITY, open_background
    from ta2d.static import StaticFields

    lat = np.arange(34.0, 40.01, 0.1)
    lon = np.arange(124.0, 131.01, 0.1)
    hours = pd.date_range("2024-04-01", periods=6, freq="h")
    seconds = (hours - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)

    def plane(la, lo, hour_index):
        return 280.0 + 0.5 * (la - 37.0) - 0.3 * (lo - 127.0) + 0.7 * hour_index

    t2m = plane(lat[None, :, None], lon[None, None, :], np.arange(6)[:, None, None]).astype(np.float32)
    xr.Dataset({"t2m": (("valid_time", "latitude", "longitude"), t2m[:, ::-1], {"units": "K"})},
               coords={"valid_time": ("valid_time", seconds.to_numpy(np.int64), {"units": "seconds since 1970-01-01"}),
                       "latitude": lat[::-1], "longitude": lon}).to_netcdf(tmp_path / "t2m.nc", engine="h5netcdf")
    xr.Dataset({"z": (("latitude", "longitude"), np.full((len(lat), len(lon)), 100.0 * GRAVITY, np.float32))},
               coords={"latitude": lat, "longitude": lon}).to_netcdf(tmp_path / "z.nc", engine="h5netcdf")
    background = open_background(tmp_path / "t2m.nc", tmp_path / "z.nc")
    domain = Domain(880, 889, 2680, 2689)
    dem = np.arange(100, dtype=np.float32).reshape(10, 10) * 10.0  # 0 .. 990 m
    static = StaticFields(dem, np.ones_like(dem), np.full(dem.shape, 12, np.int16), domain)
    samples = pd.DataFrame({"line": [880, 884, 889], "column": [2680, 2687, 2689],
                            "time": (seconds.to_numpy()[[0, 2, 4]] + [0, 1800, 900]).astype(np.int64)})
    got = background_predictions(samples, background, static, lapse_rate_k_per_km=6.5)
    lon_px, lat_px = linecol_to_lonlat(samples["line"].to_numpy(), samples["column"].to_numpy())
    hour_index = (samples["time"].to_numpy() - seconds.to_numpy()[0]) / 3600.0
    height = dem[samples["line"] - 880, samples["column"] - 2680]
    want = plane(lat_px, lon_px, hour_index) - 0.0065 * (height - 100.0) - 273.15
    np.testing.assert_allclose(got, want, atol=2e-4)


# --- standard errors -----------------------------------------------------------------------------------------


def test_crps_and_coverage_against_their_definitions():
    """CRPS of N(mu, sigma²) against the integral of (F(x) - 1{x >= y})² (trapezoid on a fine grid), and the 90 %
    interval's coverage on residuals placed just inside and just outside 1.6449 sigma."""
    from statistics import NormalDist

    from ta2d.evaluation.metrics import interval_coverage, uncertainty_metrics

    y, mu, sigma = np.array([0.3, -1.0, 2.5]), np.array([0.0, 0.5, 2.0]), np.array([1.0, 0.7, 2.0])
    x = np.linspace(-30, 30, 600_001)
    integrals = []
    for yi, mi, si in zip(y, mu, sigma, strict=True):
        cdf = np.array([NormalDist(mi, si).cdf(v) for v in x[::1000]])
        cdf = np.interp(x, x[::1000], cdf)
        integrals.append(np.trapezoid((cdf - (x >= yi)) ** 2, x))
    assert uncertainty_metrics(y, mu, sigma)["crps"] == pytest.approx(np.mean(integrals), rel=2e-3)
    z = NormalDist().inv_cdf(0.95)
    inside, outside = np.full(9, 0.999 * z), np.full(1, 1.001 * z)
    residual = np.concatenate([inside, -outside])
    assert interval_coverage(residual, np.zeros(10), np.ones(10), 0.9) == pytest.approx(0.9)


def test_error_model_recovers_a_known_heteroscedastic_sigma():
    """Residuals drawn with log sigma = 0.2 - 0.5 * (a standardised feature): the fit returns that sigma, and a
    constant sigma where the residuals are homoscedastic."""
    from ta2d.evaluation.uncertainty import ErrorModel

    rng = np.random.default_rng(0)
    features = rng.normal(size=(20_000, 4)) * [1, 1, 10, 0.2] + [0, 0, 280, 0.3]
    true_log_sigma = 0.2 - 0.5 * (features[:, 2] - 280) / 10
    model = ErrorModel.fit(features, rng.normal(size=20_000) * np.exp(true_log_sigma))
    new = rng.normal(size=(500, 4)) * [1, 1, 10, 0.2] + [0, 0, 280, 0.3]
    np.testing.assert_allclose(np.log(model.sigma(new)), 0.2 - 0.5 * (new[:, 2] - 280) / 10, atol=0.05)
    flat = ErrorModel.fit(features, rng.normal(size=20_000) * 0.8)
    np.testing.assert_allclose(flat.sigma(new), 0.8, rtol=0.07)  # sampling noise of 20,000 residuals


def test_standard_errors_from_the_validation_chunks_cover_the_test_samples(trained, tmp_path):
    """With validation chunks every run gets a sigma per test sample, and on the synthetic chunks (homoscedastic
    noise) its 90 % interval covers about 90 % of the test observations; metrics.csv carries CRPS and coverage."""
    val = write_chunks(tmp_path / "val", "val", 3, 150, seed=5)
    out = tmp_path / "eval"
    evaluate_runs(trained["ckpts"], trained["test"], out, device="cpu", val_chunks=val)
    predictions = pd.read_csv(out / "predictions.csv")
    table = pd.read_csv(out / "metrics.csv")
    for run in RUNS:
        sigma = predictions[f"sigma_{run}"].to_numpy()
        assert (sigma > 0).all() and np.isfinite(sigma).all()
        inside = np.abs(predictions["y"] - predictions[f"pred_{run}"]) <= 1.6449 * sigma
        row = table[table["run"] == run].iloc[0]
        assert row["coverage_90"] == pytest.approx(inside.mean())
        assert 0.8 < row["coverage_90"] < 0.97, (run, row["coverage_90"])
        assert 0 < row["crps"] < row["rmse"]
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    # the report's "where the standard error rises" table: mean sigma and RMSE under thick cloud and elsewhere
    from ta2d.evaluation.report import THICK_CLOUD_BT_K, sigma_by_sky

    header, rows = sigma_by_sky(predictions)
    thick = predictions["bt_ir105"] < THICK_CLOUD_BT_K
    for run, row in zip(RUNS, rows, strict=True):
        clear = predictions[~thick]
        assert row[0] == run and int(row[4]) == len(clear)
        assert float(row[5]) == pytest.approx(clear[f"sigma_{run}"].mean(), abs=1e-3)
        assert float(row[6]) == pytest.approx(np.sqrt(np.mean((clear["y"] - clear[f"pred_{run}"]) ** 2)), abs=1e-3)
    assert "Where the standard error rises" in (out / "metrics.md").read_text()
    # every run's error model in error_models.json (for export_model): it gives predictions.csv's sigma again
    import json

    from ta2d.evaluation.uncertainty import ErrorModel, error_features

    models = json.loads((out / "error_models.json").read_text())
    assert set(models) == set(RUNS)
    for run in RUNS:
        np.testing.assert_allclose(ErrorModel.from_dict(models[run]).sigma(error_features(predictions)),
                                   predictions[f"sigma_{run}"], rtol=1e-5)


def test_a_truth_table_without_its_columns_is_refused_naming_the_file(tmp_path):
    from ta2d.evaluation.samples import read_truth

    path = tmp_path / "labels_truth.csv"
    pd.DataFrame({"stn": [1], "time_utc": [0], "ta_true_c": [1.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"{path}.*not a demo truth table.*ta_pixel_c"):
        read_truth(path)
