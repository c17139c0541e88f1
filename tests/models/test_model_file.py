"""The model file (ta2d.models.model_file): what it holds, weights_only loading, its error model, and each refusal
by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from fakes import ERROR_MODEL, train_small_runs, write_error_models

from ta2d.channels import X_CHANNELS
from ta2d.demo.synthetic import write_chunks
from ta2d.evaluation.uncertainty import FEATURES, ErrorModel
from ta2d.models import load_model
from ta2d.models.model_file import (
    FORMAT_VERSION,
    ModelFileError,
    check_inputs,
    copy_as_best,
    describe,
    export_model,
    load_model_file,
    read_model_file,
)

RUNS = {"cnn": {"model": "cnn", "epochs": 1, "batch_size": 64, "head_hidden": 16, "cnn_channels": [4]},
        "ridge": {"model": "ridge"}}
PERIOD = {"start": "2024-04-01", "end": "2024-04-03"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("model_file")
    train = write_chunks(d / "patch_pt", "train", 2, 50, seed=4)
    val = write_chunks(d / "patch_pt", "val", 1, 30, seed=5)
    ckpts = train_small_runs(d, train, RUNS)
    rows = [{"run": run, "scheme": scheme, "n": 40 + i, "rmse": rmse, "mae": 0.7, "bias": 0.01, "floor": 0.8,
             "rmse_over_floor": rmse / 0.8}
            for run, base in (("cnn", 0.9), ("ridge", 1.2))
            for i, (scheme, rmse) in enumerate((("held_out_days", base), ("held_out_stations", base + 0.05),
                                                ("time_block", base + 0.1), ("all", base + 0.02)))]
    pd.DataFrame(rows).to_csv(d / "metrics.csv", index=False)
    files = {run: d / "models" / f"{run}.pt" for run in RUNS}
    for run, ck in ckpts.items():
        export_model(ck, files[run], run, d / "metrics.csv", train, val, PERIOD, 9)
    stations = sorted({int(s) for p in train + val for s in torch.load(p, weights_only=True)["stn"].tolist()})
    return {"dir": d, "files": files, "ckpts": ckpts, "train": train, "stations": stations}


def test_model_file_holds_what_serving_needs(exported):
    info = torch.load(exported["files"]["cnn"], weights_only=True)  # plain weights_only: nothing pickled
    assert info["format"] == "ta2d-model" and info["format_version"] == FORMAT_VERSION
    assert info["model_kind"] == "cnn" and info["run"] == "cnn" and info["run_config"]["cnn_channels"] == [4]
    assert [p["name"] for p in info["inputs"]["planes"]] == list(X_CHANNELS) and info["inputs"]["patch_size"] == 9
    ir105 = next(p for p in info["inputs"]["planes"] if p["name"] == "ir105")
    assert ir105["kind"] == "bt" and ir105["wavelength_um"] == pytest.approx(10.3503) and ir105["units"] == "K"
    assert info["training"]["period"] == PERIOD and info["training"]["stations"] == exported["stations"]
    assert info["training"]["n_train_samples"] == sum(torch.load(p, weights_only=True)["y"].shape[0]
                                                      for p in exported["train"])
    best = torch.load(exported["ckpts"]["cnn"], weights_only=True)
    assert info["training"]["data_fingerprint"] == best["data_fingerprint"]
    assert info["scores"]["held_out_stations"] == {"n": 41, "rmse": pytest.approx(0.95), "mae": 0.7, "bias": 0.01,
                                                   "floor": 0.8, "rmse_over_floor": pytest.approx(0.95 / 0.8)}
    assert set(info["stats"]) >= {"x_mean", "x_std", "y_mean", "y_std"}
    # the model it rebuilds predicts what the run's best.pt predicts
    batch = torch.load(exported["train"][0], weights_only=True)
    batch = {k: v[:20] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    model, data = load_model_file(exported["files"]["cnn"])
    torch.testing.assert_close(model(batch), load_model(exported["ckpts"]["cnn"])(batch))
    text = describe(data, "cnn.pt")
    assert "held_out_days" in text and f"{len(exported['stations'])} stations" in text


def test_the_error_model_round_trips_through_the_model_file(exported, tmp_path, caplog):
    """An error model fit like evaluate's, through error_models.json (JSON), export_model and the model file
    (weights_only), gives the same sigma; copy_as_best keeps it; describe names it. A file without one (and an
    error_models.json without the run) still loads, and says so."""
    import json

    rng = np.random.default_rng(3)
    f = rng.normal(size=(2000, 4)) * [0.7, 0.7, 6, 0.15] + [0, 0, 285, 0.3]
    fitted = ErrorModel.fit(f, rng.normal(size=2000) * np.exp(0.1 - 0.3 * (f[:, 2] - 285) / 6))
    (tmp_path / "em.json").write_text(json.dumps({"cnn": fitted.to_dict()}))
    exported_ck = exported["ckpts"]["cnn"]
    d = exported["dir"]
    export_model(exported_ck, tmp_path / "cnn.pt", "cnn", d / "metrics.csv", exported["train"], [], PERIOD, 9,
                 error_models=tmp_path / "em.json")
    info = torch.load(tmp_path / "cnn.pt", weights_only=True)  # plain weights_only: still nothing pickled
    assert info["error_model"]["features"] == list(FEATURES) and info["error_model"]["n_fit"] == 2000
    json.dumps(info["error_model"])  # JSON-safe as stored
    back = ErrorModel.from_dict(read_model_file(tmp_path / "cnn.pt")["error_model"])
    new = rng.normal(size=(50, 4)) * [0.7, 0.7, 6, 0.15] + [0, 0, 285, 0.3]
    np.testing.assert_array_equal(back.sigma(new), fitted.sigma(new))
    best = copy_as_best(tmp_path / "cnn.pt", tmp_path / "best.pt", "lowest RMSE on held_out_days")
    assert best["error_model"] == info["error_model"]
    text = describe(read_model_file(tmp_path / "best.pt"), "best.pt")
    assert "standard error: log sigma linear in hour_cos, hour_sin, bt_ir105, rf_vi006 (fit on 2,000" in text
    # the fixture's ERROR_MODEL as rule evaluate would write it
    export_model(exported_ck, tmp_path / "fixed.pt", "cnn", d / "metrics.csv", exported["train"], [], PERIOD, 9,
                 error_models=write_error_models(tmp_path / "fixed.json", ["cnn", "ridge"]))
    assert read_model_file(tmp_path / "fixed.pt")["error_model"]["weights"] == ERROR_MODEL["weights"]
    # without: no key, and the reasons
    plain = read_model_file(exported["files"]["cnn"])
    assert "error_model" not in plain and "standard error: none" in describe(plain, "cnn.pt")
    (tmp_path / "other.json").write_text(json.dumps({"ridge": fitted.to_dict()}))
    with caplog.at_level("WARNING"):
        export_model(exported_ck, tmp_path / "no.pt", "cnn", d / "metrics.csv", exported["train"], [], PERIOD, 9,
                     error_models=tmp_path / "other.json")
    assert "no error model of run 'cnn'" in caplog.text and "error_model" not in read_model_file(tmp_path / "no.pt")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad.json: not an evaluate error_models.json"):
        export_model(exported_ck, tmp_path / "x.pt", "cnn", d / "metrics.csv", exported["train"], [], PERIOD, 9,
                     error_models=tmp_path / "bad.json")
    # from_dict refuses what it cannot evaluate correctly
    for broken, match in (({**fitted.to_dict(), "features": ["hour_cos", "bt_ir105"]}, "features"),
                          ({**fitted.to_dict(), "version": 99}, "newer"), ({"weights": [1.0]}, "not a ta2d error"),
                          ({**fitted.to_dict(), "weights": [1.0, 2.0]}, "shapes")):
        with pytest.raises(ValueError, match=match):
            ErrorModel.from_dict(broken)


def test_refusals_name_the_file_and_the_reason(exported, tmp_path):
    d = exported["dir"]
    with pytest.raises(ModelFileError, match=r"best.pt: not a ta2d model file.*training checkpoint"):
        read_model_file(exported["ckpts"]["cnn"])
    (tmp_path / "notes.pt").write_text("not a torch file")
    with pytest.raises(ModelFileError, match=r"notes.pt: not a ta2d model file \(torch cannot read it"):
        read_model_file(tmp_path / "notes.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match=r"other.pt: not a ta2d model file, no format 'ta2d-model'"):
        read_model_file(tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match=r"missing.pt: does not exist"):
        read_model_file(tmp_path / "missing.pt")
    newer = dict(torch.load(exported["files"]["ridge"], weights_only=True))
    newer["format_version"] = FORMAT_VERSION + 1
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(ModelFileError, match=rf"newer.pt: format version {FORMAT_VERSION + 1} is newer than this"):
        read_model_file(tmp_path / "newer.pt")
    info = read_model_file(exported["files"]["cnn"])
    bt = ["sw038", "wv063", "wv069", "wv073", "ir087", "ir096", "ir105", "ir112", "ir123", "ir133"]
    rf = ["vi004", "vi005", "vi006", "vi008", "nr013", "nr016"]
    check_inputs(info, "cnn.pt", "scene.nc", bt, rf, 9)  # fits
    with pytest.raises(ModelFileError, match=r"cnn.pt: needs channel\(s\) \['ir105'\], which the scene s.nc lacks"):
        check_inputs(info, "cnn.pt", "s.nc", [c for c in bt if c != "ir105"], rf, 9)
    with pytest.raises(ModelFileError, match=r"cnn.pt: trained on 9x9 patches, but patch.size is 17"):
        check_inputs(info, "cnn.pt", "s.nc", bt, rf, 17)
    best = copy_as_best(exported["files"]["cnn"], d / "best.pt", "lowest RMSE on held_out_days")
    assert best["run"] == "cnn" and read_model_file(d / "best.pt")["selected"] == "lowest RMSE on held_out_days"


def test_a_scene_without_a_channel_is_refused_before_any_map(exported, tmp_path):
    """map_files checks the model file against the scene first: no output is written."""
    from ta2d.grid import Domain
    from ta2d.ingest.scene import SlotData, write_scene
    from ta2d.maps.archive import day_slot_times, map_files
    from ta2d.periods import period_slots

    domain = Domain(900, 915, 2700, 2715)
    nl, nc = domain.shape
    write_scene(tmp_path / "s.nc", "20240410", period_slots("20240410", "D", [0]), domain,
                lambda slot: SlotData("ok", bt=np.full((10, nl, nc), 280, np.float32),
                                      rf=np.full((6, nl, nc), 0.2, np.float32)), {}, progress=False)
    with xr.open_dataset(tmp_path / "s.nc", engine="h5netcdf") as ds:
        ds.isel(bt_channel=[i for i in range(10) if i != 6]).to_netcdf(tmp_path / "lacking.nc", engine="h5netcdf")
    xr.Dataset({"dem": (("line", "column"), np.zeros((nl, nc), np.float32)),
                "land_sea_mask": (("line", "column"), np.ones((nl, nc), np.float32)),
                "landcover": (("line", "column"), np.full((nl, nc), 12, np.uint8))},
               coords={"line": domain.lines, "column": domain.columns}).to_netcdf(tmp_path / "st.nc", engine="h5netcdf")
    with pytest.raises(ModelFileError, match=r"cnn.pt: needs channel\(s\) \['ir105'\], which the scene .*lacking.nc"):
        map_files("cnn", exported["files"]["cnn"], tmp_path / "lacking.nc", tmp_path / "st.nc",
                  day_slot_times("20240410", [0]), tmp_path / "out.nc", None)
    assert not (tmp_path / "out.nc").exists()
    out = map_files("cnn", exported["files"]["cnn"], tmp_path / "s.nc", tmp_path / "st.nc",
                    day_slot_times("20240410", [0]), tmp_path / "out.nc", None, device="cpu")
    assert out["slots_ok"] == 24 and (tmp_path / "out.nc").is_file()
