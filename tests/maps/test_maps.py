"""TA maps as a product (ta2d.maps): the batched day pass against the chunks, the CF archive read back
independently (h5py, pyproj), missing slots with their reason, residual kriging and its leave-stations-out
evaluation, the standard errors (the model file's error model per pixel, combined with the kriging variance), a
year-like archive through open_mfdataset, the plots and the plan helpers."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from fakes import ERROR_MODEL, SMALL_RUNS, chunk_from_manifest, train_small_runs, write_error_models
from PIL import Image

from ta2d.cli import main as cli_main
from ta2d.evaluation.uncertainty import ErrorModel
from ta2d.grid import Domain, domain_lonlat
from ta2d.ingest.scene import SlotData, read_scene, write_scene
from ta2d.maps.archive import (
    GRID_MAPPING,
    assemble_day,
    day_dataset,
    day_slot_times,
    map_day,
    map_files,
    open_archive,
    write_day,
)
from ta2d.maps.kriging import (
    KrigingConfig,
    Variogram,
    correct_fields,
    corrected_standard_error,
    correction_report_files,
    correction_table,
    distance_table,
    fit_variogram,
    krige,
    leave_stations_out,
    local_xy_km,
    residual_table,
    station_folds,
)
from ta2d.maps.observations import read_station_table, unit_observations
from ta2d.maps.plan import BEST, best_run, map_sources, map_targets
from ta2d.maps.plots import plot_day, plot_day_files, plot_uncertainty, uncertainty_slot
from ta2d.maps.predict import MASK_EDGE, MASK_NAN_PATCH, MASK_NO_SCENE, MASK_NOT_LAND, MASK_PREDICTED
from ta2d.models import load_model
from ta2d.models.model_file import export_model
from ta2d.periods import period_slots
from ta2d.plan import map_days, split_test_days
from ta2d.static import read_static
from ta2d.training import predict_chunks

RUNS = SMALL_RUNS
# every model kind, and a cnn of each padding: the dense map pass treats each differently (ta2d.maps.dense)
MAP_RUNS = {**SMALL_RUNS, "gbt": {"model": "gbt", "gbt_max_rounds": 40, "gbt_num_leaves": 15},
            "cnn_same": {**SMALL_RUNS["cnn"], "cnn_padding": "same"},
            "cnn_two": {**SMALL_RUNS["cnn"], "cnn_channels": [6, 8]}}
DOMAIN = Domain(900, 919, 2700, 2723)  # 20 x 24 pixels near Seoul
KEY, DAY, TIME = "20240410", "20240410", "2024-04-10T03:00"
DATA_HOURS = (3, 18)  # the scene's slots with data; every other slot of the day has status "no_files"
NAN_PIXEL = (910, 2715)  # flagged in the 03:00 slot: its 9x9 neighbourhood gets no prediction


@pytest.fixture(scope="module")
def trained(small_runs, tmp_path_factory):
    """Every run of MAP_RUNS trained on the same synthetic chunks: {run: best.pt}. The session's SMALL_RUNS
    (conftest.py: small_runs) and the other runs, trained here."""
    more = {run: cfg for run, cfg in MAP_RUNS.items() if run not in small_runs["ckpts"]}
    return {**small_runs["ckpts"], **train_small_runs(tmp_path_factory.mktemp("maps_runs"), small_runs["train"], more)}


def fake_metrics(path, runs) -> str:
    """An evaluate metrics.csv with made-up scores, for model files of runs that were never evaluated."""
    rows = [{"run": r, "model": "x", "baseline": False, "scheme": sch, "n": 10, "rmse": 1.0 + i / 10, "mae": 0.8,
             "bias": 0.0, "r2": 0.9, "floor": 0.8, "rmse_over_floor": 1.25, "floor_pixel": 0.8}
            for i, r in enumerate(runs) for sch in ("held_out_days", "held_out_stations", "time_block", "all")]
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def model_files(trained, small_runs, tmp_path_factory):
    """A model file (results/models/{run}.pt) of every trained run."""
    d = tmp_path_factory.mktemp("model_files")
    train = small_runs["train"]
    metrics = fake_metrics(d / "metrics.csv", list(trained))
    period = {"start": "2024-04-01", "end": "2024-04-02"}
    for run, ck in trained.items():
        export_model(ck, d / f"{run}.pt", run, metrics, train, [], period, 9)
    return {run: d / f"{run}.pt" for run in trained}


@pytest.fixture(scope="module")
def se_model_file(small_runs, tmp_path_factory):
    """The session's cnn exported with an error model (fakes.ERROR_MODEL) in its model file, as export_model does
    with rule evaluate's error_models.json."""
    d = tmp_path_factory.mktemp("se_model_file")
    metrics = fake_metrics(d / "metrics.csv", ["cnn"])
    export_model(small_runs["ckpts"]["cnn"], d / "cnn.pt", "cnn", metrics, small_runs["train"], [],
                 {"start": "2024-04-01", "end": "2024-04-02"}, 9,
                 error_models=write_error_models(d / "em.json", ["cnn"]))
    return d / "cnn.pt"


@pytest.fixture(scope="module")
def scene_and_static(tmp_path_factory):
    d = tmp_path_factory.mktemp("maps_scene")
    rng = np.random.default_rng(5)
    nl, nc = DOMAIN.shape

    def read_slot(slot):
        if slot.hour not in DATA_HOURS:
            return SlotData("no_files")
        bt = (285 + rng.normal(0, 6, (1, 1, 1)) + rng.normal(0, 2, (10, nl, nc))).astype(np.float32)
        rf = rng.uniform(0, 0.6, (6, nl, nc)).astype(np.float32)
        if slot.hour == 3:
            bt[6, NAN_PIXEL[0] - DOMAIN.first_line, NAN_PIXEL[1] - DOMAIN.first_column] = np.nan
        return SlotData("ok", bt=bt, rf=rf)

    scene = d / f"{KEY}.nc"
    write_scene(scene, KEY, period_slots(KEY, "D", [0]), DOMAIN, read_slot, {"input_kind": "test"}, progress=False)
    # static: water in the west, land cover 17 on a land strip is still "valid", 255 is fill
    lsm = np.ones((nl, nc), np.float32)
    lsm[:, :6] = 0.0
    lc = np.full((nl, nc), 12, np.uint8)
    lc[:, :6] = 17
    lc[15, 15] = 255
    xr.Dataset(
        {"dem": (("line", "column"), rng.uniform(0, 800, (nl, nc)).astype(np.float32)),
         "land_sea_mask": (("line", "column"), lsm),
         "landcover": (("line", "column"), lc)},
        coords={"line": DOMAIN.lines, "column": DOMAIN.columns},
    ).to_netcdf(d / "static.nc", engine="h5netcdf")
    # station observations at the pixel centres of a few stations, at both data slots and a slot without data
    with read_scene(scene) as sc:
        lat, lon = sc["lat"].values, sc["lon"].values
    rows, stations = [], []
    pixels = [(905, 2710), (905, 2718), (904, 2707), (915, 2708), (912, 2719), (908, 2714)]
    for i, (li, co) in enumerate(pixels):
        r, c = li - DOMAIN.first_line, co - DOMAIN.first_column
        stations.append({"stn": 100 + i, "lat": float(lat[r, c]), "lon": float(lon[r, c]), "elev_m": np.nan,
                         "valid_from": pd.NaT, "valid_to": pd.NaT})
    for hour in (*DATA_HOURS, 5):
        for i in range(len(pixels)):
            rows.append({"source": "obs.csv", "row": len(rows) + 1, "stn": 100 + i,
                         "time": int(pd.Timestamp(f"2024-04-10T{hour:02d}:00", tz="UTC").timestamp()),
                         "ta_c": 10.0 + i})
    rows.append({**rows[0], "row": len(rows) + 1, "time": rows[0]["time"] + 86400})  # another day: not mapped
    rows.append({**rows[1], "row": len(rows) + 1, "stn": 999})  # a station the table does not know
    return {"dir": d, "scene": scene, "static": d / "static.nc", "labels": pd.DataFrame(rows),
            "stations": pd.DataFrame(stations), "pixels": pixels}


def _manifest(scene_path, pixels, time, path):
    with read_scene(scene_path) as sc:
        lat, lon = sc["lat"].values, sc["lon"].values
    rows = []
    for i, (line, col) in enumerate(pixels):
        r, c = line - DOMAIN.first_line, col - DOMAIN.first_column
        rows.append({"row": i + 1, "stn": 100 + i, "time": int(pd.Timestamp(time, tz="UTC").timestamp()),
                     "ta_c": 10.0 + i, "lat": repr(float(lat[r, c])), "lon": repr(float(lon[r, c])),
                     "line": line, "column": col})
    pd.DataFrame(rows).to_csv(path, index=False)


# --- the batched day pass ---------------------------------------------------------------------------------

def test_day_pass_equals_predict_chunks_on_the_same_pixels(trained, scene_and_static, tmp_path):
    """Chunks built by the chunk builder for a few pixels (stations at the pixel centres) and the day's maps agree,
    for each model kind, with batches that span slots."""
    s = scene_and_static
    static = read_static(s["static"], DOMAIN)
    pixels = [(905, 2710), (905, 2718), (904, 2707), (915, 2708)]  # interior land, patches clear of NAN_PIXEL
    chunks = {}
    for hour in DATA_HOURS:
        time = f"2024-04-10T{hour:02d}:00"
        _manifest(s["scene"], pixels, time, tmp_path / f"m{hour}.csv")
        chunks[hour] = tmp_path / f"test_chunk_{hour}.pt"
        res = chunk_from_manifest(tmp_path / f"m{hour}.csv", s["scene"], static, 9, chunks[hour])
        assert res["n_samples"] == len(pixels)
    times = day_slot_times(DAY, [0])
    for run in ("ridge", "cnn", "clay"):
        model = load_model(trained[run])
        with read_scene(s["scene"]) as sc:
            out = map_day(model, sc, static, times, batch_size=37, device="cpu")  # odd batches on purpose
        assert out["n_pixels"] == len(DATA_HOURS) * (12 * 14 - 1)  # one pass over the inner land pixels of 2 slots
        for hour in DATA_HOURS:
            want = predict_chunks(model, [chunks[hour]], device="cpu")["y_pred"].numpy()
            got = np.array([out["ta"][hour, li - DOMAIN.first_line, co - DOMAIN.first_column] for li, co in pixels])
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=f"{run} {hour}")


def test_dense_pass_equals_the_per_pixel_patches(trained, scene_and_static):
    """The dense map pass (ta2d.maps.dense) gives the per-pixel path's values, to 1e-3 K, and its masks, for every
    model kind: a valid cnn by one convolution over the tile, ridge from the pixels, the others from patches
    cut from the tile; tiles of 7 px so that several (and partial) tiles and a NaN across a tile edge occur."""
    s = scene_and_static
    static = read_static(s["static"], DOMAIN)
    times = day_slot_times(DAY, [0])
    assert load_model(trained["cnn"]).dense and not load_model(trained["cnn_same"]).dense
    for run in MAP_RUNS:
        model = load_model(trained[run])
        with read_scene(s["scene"]) as sc:
            ref = map_day(model, sc, static, times, batch_size=53, device="cpu", method="per_pixel")
        import ta2d.maps.dense as dense

        tile, dense.TILE = dense.TILE, 7
        try:
            with read_scene(s["scene"]) as sc:
                got = map_day(model, sc, static, times, batch_size=29, device="cpu")
        finally:
            dense.TILE = tile
        assert np.array_equal(got["mask"], ref["mask"]), run
        assert np.array_equal(np.isfinite(got["ta"]), np.isfinite(ref["ta"])), run
        assert np.isfinite(got["ta"]).sum() > 100
        diff = np.nanmax(np.abs(got["ta"] - ref["ta"]))
        assert diff <= 1e-3, (run, diff)
        assert got["n_pixels"] == ref["n_pixels"]


def test_day_pass_predicts_land_only_and_says_why(trained, scene_and_static):
    s = scene_and_static
    static = read_static(s["static"], DOMAIN)
    model = load_model(trained["ridge"])
    with read_scene(s["scene"]) as sc:
        out = map_day(model, sc, static, day_slot_times(DAY, [0]), device="cpu")
    ta, mask = out["ta"][3], out["mask"][3]
    nl, nc = DOMAIN.shape
    land = (static.land_sea_mask > 0.5) & (static.landcover >= 1) & (static.landcover <= 17)
    inner = np.zeros((nl, nc), bool)
    inner[4:-4, 4:-4] = True
    near_nan = np.zeros((nl, nc), bool)
    r0, c0 = NAN_PIXEL[0] - DOMAIN.first_line, NAN_PIXEL[1] - DOMAIN.first_column
    near_nan[r0 - 4:r0 + 5, c0 - 4:c0 + 5] = True
    expect = land & inner & ~near_nan
    assert np.array_equal(np.isfinite(ta), expect) and expect.sum() > 0
    assert (mask == MASK_PREDICTED).sum() == expect.sum()
    assert (mask[~land] == MASK_NOT_LAND).all()
    assert (mask[land & ~inner] == MASK_EDGE).all()
    assert (mask[land & inner & near_nan] == MASK_NAN_PATCH).all()
    assert np.isnan(ta[15, 15]) and np.isnan(ta[:, :6]).all()  # fill land cover, water
    # the 18:00 slot has no NaN pixel; the slots without data: nothing predicted, every land pixel says why
    assert np.array_equal(np.isfinite(out["ta"][18]), land & inner)
    assert np.isnan(out["ta"][5]).all() and (out["mask"][5][land] == MASK_NO_SCENE).all()
    assert out["slot_status"][3] == "ok" and out["slot_status"][5] == "bad_scene: no_files"


# --- the archive file ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def day_file(se_model_file, scene_and_static, tmp_path_factory):
    """One day mapped by the rule's library function from the cnn's model file (with its error model), with the
    station correction."""
    s = scene_and_static
    d = tmp_path_factory.mktemp("maps_day")
    summary = map_files("cnn", se_model_file, s["scene"], s["static"], day_slot_times(DAY, [0]),
                        d / f"{DAY}.nc", d / f"{DAY}_stations.csv", labels=s["labels"], stations=s["stations"],
                        correction={"min_stations": 3, "folds": 2}, device="cpu")
    return {"nc": d / f"{DAY}.nc", "stations": d / f"{DAY}_stations.csv", "summary": summary}


def test_archive_cf_attributes_read_back_independently(day_file):
    """CF-1.10 read with h5py (no xarray decoding): standard_name, units, grid_mapping with the GEOS projection,
    lat/lon auxiliary coordinates, packing, chunking and compression."""
    with h5py.File(day_file["nc"], "r") as f:
        def attr(obj, key):  # h5netcdf stores numbers as 1-element arrays
            v = obj.attrs[key]
            return v.decode() if isinstance(v, bytes) else (np.asarray(v).item() if np.size(v) == 1 else v)

        assert attr(f, "Conventions") == "CF-1.10"
        for name in ("TA", "TA_corrected"):
            v = f[name]
            assert attr(v, "standard_name") == "air_temperature" and attr(v, "units") == "degC"
            assert attr(v, "grid_mapping") == GRID_MAPPING
            assert set(attr(v, "coordinates").split()) >= {"lat", "lon", "height"}
            assert v.dtype == np.int16 and float(attr(v, "scale_factor")) == pytest.approx(0.01)
            assert int(attr(v, "_FillValue")) == -32768
            assert v.chunks == (24, *DOMAIN.shape) and v.compression == "gzip"  # a day x tiles of <= 96 px
            assert [d[0].name for d in v.dims] == ["/time", "/y", "/x"]
        gm = f[GRID_MAPPING]
        assert attr(gm, "grid_mapping_name") == "geostationary"
        assert attr(gm, "longitude_of_projection_origin") == pytest.approx(128.2)
        assert attr(gm, "perspective_point_height") == pytest.approx(35785863.0)
        assert attr(gm, "semi_major_axis") == pytest.approx(6378137.0)
        assert attr(gm, "semi_minor_axis") == pytest.approx(6356752.3, abs=0.1)
        assert attr(gm, "sweep_angle_axis") == "y"
        assert attr(f["lat"], "standard_name") == "latitude" and attr(f["lat"], "units") == "degrees_north"
        assert attr(f["lon"], "standard_name") == "longitude" and attr(f["lon"], "units") == "degrees_east"
        assert attr(f["x"], "standard_name") == "projection_x_angular_coordinate"
        assert attr(f["y"], "units") == "radian"
        assert attr(f["time"], "units").startswith("seconds since 1970-01-01")
        assert f["time"].shape == (24,)
        x, y, lat, lon = f["x"][:], f["y"][:], f["lat"][:], f["lon"][:]
    # the grid mapping means what it says: PROJ's geos with these parameters puts every pixel centre at
    # (x, y) * perspective_point_height
    from pyproj import Proj

    proj = Proj("+proj=geos +lon_0=128.2 +h=35785863 +a=6378137 +b=6356752.3 +sweep=y +units=m")
    px, py = proj(lon.astype(np.float64), lat.astype(np.float64))
    h = 35785863.0
    np.testing.assert_allclose(px / h, np.broadcast_to(x[None, :], px.shape), atol=2e-7)  # float32 lat/lon
    np.testing.assert_allclose(py / h, np.broadcast_to(y[:, None], py.shape), atol=2e-7)
    want_lon, want_lat = domain_lonlat(DOMAIN)
    np.testing.assert_allclose(lat, want_lat, atol=1e-4)
    np.testing.assert_allclose(lon, want_lon, atol=1e-4)


def test_archive_decodes_to_the_predictions(trained, scene_and_static, day_file):
    s = scene_and_static
    static = read_static(s["static"], DOMAIN)
    with read_scene(s["scene"]) as sc:
        out = map_day(load_model(trained["cnn"]), sc, static, day_slot_times(DAY, [0]), device="cpu")
    with xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        assert ds["TA"].dtype == np.float32
        np.testing.assert_allclose(ds["TA"].values, out["ta"], atol=0.0051, equal_nan=True)  # 0.01 K packing
        assert np.array_equal(np.isnan(ds["TA"].values), np.isnan(out["ta"]))
        assert ds["line"].dims == ("y",) and ds["lat"].dims == ("y", "x")
        assert pd.Timestamp(ds["time"].values[3]) == pd.Timestamp(TIME)
        assert ds.attrs["run"] == "cnn" and ds.attrs["model_kind"] == "cnn" and ds.attrs["day"] == "2024-04-10"
        assert ds.attrs["model_trained_on"] == "2024-04-01..2024-04-02"


def test_missing_slot_is_nan_with_its_reason(day_file, trained, scene_and_static):
    """A slot without a usable scene is in the file, all NaN, with its reason per slot and in the attributes."""
    with xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        status = [str(v) for v in ds["slot_status"].values]
        assert len(status) == 24 and ds.sizes["time"] == 24  # never skipped
        for hour in range(24):
            if hour in DATA_HOURS:
                assert status[hour] == "ok" and np.isfinite(ds["TA"].values[hour]).any()
            else:
                assert status[hour] == "bad_scene: no_files", (hour, status[hour])
                assert np.isnan(ds["TA"].values[hour]).all() and np.isnan(ds["TA_corrected"].values[hour]).all()
                assert (ds["mask"].values[hour][ds["mask"].values[3] != MASK_NOT_LAND] == MASK_NO_SCENE).all()
                assert (ds["n_predicted"].values[hour]) == 0
        assert ds.attrs["n_missing_slots"] == 22
        assert "2024-04-10T05:00Z bad_scene: no_files" in ds.attrs["missing_slots"]
        assert "2024-04-10T03:00Z" not in ds.attrs["missing_slots"]
    # a time that is not a slot of the scene at all: missing, with that reason
    static = read_static(scene_and_static["static"], DOMAIN)
    times = pd.DatetimeIndex([pd.Timestamp(TIME, tz="UTC"), pd.Timestamp("2024-04-10T03:30", tz="UTC")])
    with read_scene(scene_and_static["scene"]) as sc:
        out = map_day(load_model(trained["ridge"]), sc, static, times, scene_path="x.nc", device="cpu")
    assert out["slot_status"][0] == "ok"
    assert out["slot_status"][1].startswith("no_slot: 2024-04-10 03:30 UTC is not a slot of the scene x.nc")
    assert np.isnan(out["ta"][1]).all()


def test_correction_in_the_file_and_station_table(day_file):
    """Slots with >= min_stations observations and a variogram of their own are corrected; the others keep TA and
    say why; the station the table does not know and the other day's row are not used."""
    st = pd.read_csv(day_file["stations"])
    assert set(st["time"]) == {int(pd.Timestamp(f"2024-04-10T{h:02d}:00", tz="UTC").timestamp()) for h in DATA_HOURS}
    assert {"stn", "ta_c", "ta_raw", "fold", "ta_lso", "run", "model_run", "day"} <= set(st.columns)
    assert (st["run"] == "cnn").all() and (st["day"] == int(DAY)).all() and 999 not in set(st["stn"])
    with xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        cs = [str(v) for v in ds["correction_status"].values]
        assert cs[18] == "ok: 6 station residuals kriged" and ds["n_stations"].values[18] == 6
        # 2 stations are within 4 px of NAN_PIXEL: 4 residuals, 6 pairs, too few for the slot's own variogram
        assert cs[3].startswith("none: variogram not fitted")
        assert cs[5].startswith("none:") and ds["n_stations"].values[5] == 0
        ok = np.isfinite(ds["TA"].values[18])
        assert not np.allclose(ds["TA_corrected"].values[18][ok], ds["TA"].values[18][ok])
        np.testing.assert_array_equal(ds["TA_corrected"].values[3], ds["TA"].values[3])
        assert "kriging" in ds.attrs["correction_method"]
        assert ds.attrs["station_correction"].startswith("applied at 1 of 24 slots")


# --- standard errors -----------------------------------------------------------------------------------------

SE_FIELDS = {"TA_standard_error": "TA", "TA_corrected_standard_error": "TA_corrected"}


def test_standard_errors_cf_attributes_read_back_independently(day_file):
    """Both standard errors as CF variables (h5py): standard_name modifier, units K, TA's grid, packing, chunks and
    compression, each named in its field's ancillary_variables; NaN exactly where the field is."""
    with h5py.File(day_file["nc"], "r") as f:
        def attr(obj, key):
            v = obj.attrs[key]
            return v.decode() if isinstance(v, bytes) else (np.asarray(v).item() if np.size(v) == 1 else v)

        for name, field in SE_FIELDS.items():
            v, ta = f[name], f[field]
            assert attr(v, "standard_name") == "air_temperature standard_error" and attr(v, "units") == "K"
            assert attr(v, "long_name").startswith("standard error of")
            assert attr(v, "grid_mapping") == GRID_MAPPING
            assert set(attr(v, "coordinates").split()) >= {"lat", "lon", "height"}
            assert v.dtype == ta.dtype == np.int16 and float(attr(v, "scale_factor")) == pytest.approx(0.01)
            assert int(attr(v, "_FillValue")) == -32768
            assert v.chunks == ta.chunks and v.compression == ta.compression == "gzip"
            assert [d[0].name for d in v.dims] == [d[0].name for d in ta.dims] == ["/time", "/y", "/x"]
            assert name in attr(ta, "ancillary_variables").split()
            assert all(a in f for a in attr(ta, "ancillary_variables").split())  # every one names a variable
    with xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        for name, field in SE_FIELDS.items():
            assert np.array_equal(np.isnan(ds[name].values), np.isnan(ds[field].values)), name
            values = ds[name].values
            assert np.isfinite(values).sum() > 100 and (values[np.isfinite(values)] >= 0).all()
        assert (ds["TA_standard_error"].values[np.isfinite(ds["TA"].values)] > 0).all()
        assert "error model of run cnn" in ds.attrs["standard_error"] and "1,234" in ds.attrs["standard_error"]


def test_standard_error_at_a_pixel_is_the_error_model_of_its_features(day_file, scene_and_static):
    """sigma at a pixel and slot = ErrorModel.sigma of that pixel's own KST hour, IR10.5 BT and VIS0.6
    reflectance, computed here from the scene and the error model's numbers (not through ta2d's feature code)."""
    s = scene_and_static
    w, mean, scale = (np.array(ERROR_MODEL[k]) for k in ("weights", "mean", "scale"))
    model = ErrorModel(w, mean, scale)
    with read_scene(s["scene"]) as sc, xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        bt_names, rf_names = [str(c) for c in sc["bt_channel"].values], [str(c) for c in sc["rf_channel"].values]
        for hour, kst in ((3, 12), (18, 3)):  # UTC -> KST
            ta = ds["TA"].values[hour]
            rows, cols = np.nonzero(np.isfinite(ta))
            assert len(rows) > 50
            bt = sc["bt"].values[hour, bt_names.index("ir105")][rows, cols].astype(np.float64)
            rf = sc["rf"].values[hour, rf_names.index("vi006")][rows, cols].astype(np.float64)
            f = np.stack([np.full(len(rows), math.cos(2 * math.pi * kst / 24)),
                          np.full(len(rows), math.sin(2 * math.pi * kst / 24)), bt, rf], axis=1)
            want = model.sigma(f)
            by_hand = np.exp(w[0] + ((f - mean) / scale) @ w[1:])  # log sigma linear, as documented
            np.testing.assert_allclose(want, by_hand, rtol=1e-12)
            got = ds["TA_standard_error"].values[hour][rows, cols]
            np.testing.assert_allclose(got, want, atol=0.0051)  # 0.01 K packing
            assert np.ptp(want) > 0.05  # the pixels' BT and reflectance move sigma: a real test of the planes
        # with the correction's station table: the sigma of each station's pixel
        st = pd.read_csv(day_file["stations"])
        for r in st.itertuples():
            t = int(pd.Timestamp(r.time, unit="s").hour)
            want = ds["TA_standard_error"].values[t, r.line - DOMAIN.first_line, r.column - DOMAIN.first_column]
            assert r.sigma == pytest.approx(float(want), abs=0.0051)


def test_corrected_standard_error_is_at_most_sigma(day_file):
    """TA_corrected_standard_error <= TA_standard_error everywhere; equal at a slot without a correction, smaller
    near the stations of a corrected one."""
    with xr.open_dataset(day_file["nc"], engine="h5netcdf") as ds:
        se, sec = ds["TA_standard_error"].values, ds["TA_corrected_standard_error"].values
        ok = np.isfinite(se)
        assert (sec[ok] <= se[ok] + 1e-6).all()
        assert str(ds["correction_status"].values[3]).startswith("none")  # not corrected: sigma itself
        np.testing.assert_array_equal(sec[3], se[3])
        assert str(ds["correction_status"].values[18]).startswith("ok")
        st = pd.read_csv(day_file["stations"])
        at = st[st["time"] == int(pd.Timestamp("2024-04-10T18:00", tz="UTC").timestamp())]
        r, c = at["line"].to_numpy() - DOMAIN.first_line, at["column"].to_numpy() - DOMAIN.first_column
        assert (sec[18][r, c] < se[18][r, c]).all()
    # the station table scores the leave-stations-out standard error the same way
    assert {"sigma", "sigma_lso", "lso_kriging_variance", "lso_sill", "lso_nearest_km"} <= set(st.columns)
    assert (st["sigma_lso"] <= st["sigma"] + 1e-4).all()
    none = st["lso_status"] != "ok"
    np.testing.assert_allclose(st.loc[none, "sigma_lso"], st.loc[none, "sigma"], atol=1e-4)


def test_corrected_standard_error_tends_to_sigma_far_from_stations():
    """Ordinary kriging's variance over the sill: near a cluster of stations it shrinks sigma, far away (many
    ranges) and where nothing was kriged it is sigma exactly; a pure-nugget variogram claims nothing."""
    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 20, 15), rng.uniform(0, 20, 15)  # km: stations in one corner
    z = rng.normal(0, 1, 15)
    gx, gy = np.meshgrid(np.linspace(0, 400, 41), np.linspace(0, 300, 31))
    vario = Variogram("exponential", 0.8, 30.0, 0.2, 0)
    _, var = krige(x, y, z, gx.ravel(), gy.ravel(), vario, return_variance=True)
    sigma = np.full(gx.size, 1.3)
    sc = corrected_standard_error(sigma, var, vario.sill)
    dist = np.hypot(gx.ravel()[:, None] - x[None], gy.ravel()[:, None] - y[None]).min(axis=1)
    assert (sc <= sigma).all()
    far = dist > 5 * vario.range_km
    assert far.sum() > 100 and (var[far] >= vario.sill * (1 - 1e-9)).all()
    np.testing.assert_allclose(sc[far], sigma[far], rtol=1e-7)
    near = dist < 3.0
    assert near.any() and (sc[near] < 0.8 * sigma[near]).all()
    # it rises away from the stations
    bins = [sc[(dist >= lo) & (dist < hi)].mean() for lo, hi in ((0, 5), (5, 20), (20, 60), (60, 1e9))]
    assert bins == sorted(bins)
    # no correction: NaN kriging variance (or sill) -> sigma; a pure nugget: no reduction
    np.testing.assert_array_equal(corrected_standard_error(sigma, np.full(gx.size, np.nan), np.nan), sigma)
    flat = Variogram("exponential", 1e-12, 30.0, 0.5, 0)
    _, var = krige(x, y, z, gx.ravel(), gy.ravel(), flat, return_variance=True)
    np.testing.assert_array_equal(corrected_standard_error(sigma, var, flat.sill), sigma)
    # the fields of a day: the kriging variance where kriged, NaN at a slot left uncorrected
    c = _smooth_case(n_slots=2)
    out = correct_fields(c["raw"], c["times"], c["gx"], c["gy"], c["table"], KrigingConfig())
    assert np.isfinite(out["kriging_variance"]).all() and np.isfinite(out["sill"]).all()
    few = correct_fields(c["raw"], c["times"], c["gx"], c["gy"], c["table"], KrigingConfig(min_stations=41))
    assert np.isnan(few["kriging_variance"]).all() and np.isnan(few["sill"]).all()
    sig = np.full(c["raw"].shape, 0.9, np.float32)
    np.testing.assert_array_equal(corrected_standard_error(sig, few["kriging_variance"], few["sill"][:, None, None]),
                                  sig)


def test_leave_stations_out_scores_the_standard_errors_by_coverage_and_distance(tmp_path):
    """Beside RMSE, the 90 % coverage of raw (sigma) and corrected (sigma_lso) intervals and sigma_lso by distance
    to the nearest station the correction used, all recomputed here from the station rows."""
    c = _smooth_case(noise=0.2)
    table = c["table"].assign(sigma=0.3 + 0.1 * (c["table"]["stn"] % 3))
    lso, used = leave_stations_out(table, KrigingConfig(folds=5))
    xy = table.drop_duplicates("stn").set_index("stn")[["x_km", "y_km"]]
    for r in lso.sample(20, random_state=1).itertuples():
        ids = sorted(used[(int(r.time), int(r.fold))])
        d = np.hypot(xy.loc[ids, "x_km"] - r.x_km, xy.loc[ids, "y_km"] - r.y_km).min()
        assert r.lso_nearest_km == pytest.approx(d)
        assert r.sigma_lso == pytest.approx(corrected_standard_error(r.sigma, r.lso_kriging_variance, r.lso_sill))
    assert (lso["sigma_lso"] <= lso["sigma"]).all() and (lso["sigma_lso"] < lso["sigma"]).any()
    rows = lso.assign(run="r", model_run="r")
    t = correction_table(rows, None)
    total = t[(t["scheme"] == "all") & (t["fold"] == "all")].iloc[0]
    z = 1.6448536269514722
    assert total["coverage_90_raw"] == pytest.approx(np.mean(np.abs(lso["ta_raw"] - lso["ta_c"]) <= z * lso["sigma"]))
    assert total["coverage_90_corrected"] == pytest.approx(
        np.mean(np.abs(lso["ta_lso"] - lso["ta_c"]) <= z * lso["sigma_lso"]))
    assert total["sigma_corrected"] == pytest.approx(lso["sigma_lso"].mean())
    dist = distance_table(rows, None)
    assert dist["n"].sum() == len(lso) and set(dist["distance_km"]) <= {"0–10", "10–20", "20–40", "40–80", "≥ 80",
                                                                          "not corrected"}
    near = lso[lso["lso_nearest_km"] < 10]
    row = dist[dist["distance_km"] == "0–10"].iloc[0]
    assert row["n"] == len(near) and row["sigma_corrected"] == pytest.approx(near["sigma_lso"].mean())
    # the report has both tables; rows without a sigma (a model file without error model) score no coverage
    rows.to_csv(tmp_path / "a.csv", index=False)
    rows.drop(columns=["sigma", "sigma_lso"]).assign(run="plain").to_csv(tmp_path / "b.csv", index=False)
    out = correction_report_files([tmp_path / "a.csv", tmp_path / "b.csv"], None, {"folds": 5}, tmp_path / "c.csv",
                                  tmp_path / "c.md", tmp_path / "c.html")
    md = (tmp_path / "c.md").read_text(encoding="utf-8")
    assert "90 % cov. corrected" in md and "## Standard error by distance to the nearest station used" in md
    assert "Standard error by distance" in (tmp_path / "c.html").read_text(encoding="utf-8")
    plain = out[(out["run"] == "plain")]
    assert plain["coverage_90_raw"].isna().all() and plain["rmse_raw"].notna().all()


def test_a_model_file_without_an_error_model_still_maps(model_files, scene_and_static, tmp_path, caplog):
    """A model file exported before error models (or without one): the map has TA and TA_corrected, no standard
    error, and says why in the log and the file."""
    s = scene_and_static
    assert "error_model" not in torch.load(model_files["ridge"], weights_only=True)
    with caplog.at_level("WARNING"):
        map_files("ridge", model_files["ridge"], s["scene"], s["static"], day_slot_times(DAY, [0]), tmp_path / "d.nc",
                  tmp_path / "d_stations.csv", labels=s["labels"], stations=s["stations"],
                  correction={"min_stations": 3, "folds": 2}, device="cpu")
    assert "holds no error model" in caplog.text
    with xr.open_dataset(tmp_path / "d.nc", engine="h5netcdf") as ds:
        assert "TA_standard_error" not in ds and "TA_corrected_standard_error" not in ds
        assert np.isfinite(ds["TA"].values[18]).sum() > 100
        assert ds["TA"].attrs["ancillary_variables"] == "mask slot_status"
        assert ds["TA_corrected"].attrs["ancillary_variables"] == "mask correction_status n_stations"
        assert ds.attrs["standard_error"].startswith("none: the model file")
    st = pd.read_csv(tmp_path / "d_stations.csv")
    assert "sigma" not in st.columns and len(st)
    plot_uncertainty(xr.open_dataset(tmp_path / "d.nc", engine="h5netcdf").load(), None, tmp_path / "u.png", dpi=30)
    assert (tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"


def test_slot_maps_assemble_with_their_standard_errors(se_model_file, scene_and_static, day_file, tmp_path):
    """maps.unit slot: slot maps carry the standard errors and the assembled day equals the day mapped at once."""
    s = scene_and_static
    files, tables = {}, []
    for hour in DATA_HOURS:
        key = f"{DAY}T{hour:02d}00"
        files[key] = tmp_path / f"{key}.nc"
        tables.append(tmp_path / f"{key}_stations.csv")
        map_files("cnn", se_model_file, s["scene"], s["static"],
                  pd.DatetimeIndex([pd.Timestamp(f"2024-04-10T{hour:02d}:00", tz="UTC")]), files[key], tables[-1],
                  labels=s["labels"], stations=s["stations"], correction={"min_stations": 3, "folds": 2},
                  device="cpu")
    assemble_day(files, tables, DAY, [0], tmp_path / "day.nc", tmp_path / "day_stations.csv")
    with xr.open_dataset(tmp_path / "day.nc", engine="h5netcdf") as got, \
            xr.open_dataset(day_file["nc"], engine="h5netcdf") as want:
        for name in SE_FIELDS:
            np.testing.assert_array_equal(got[name].values, want[name].values)
            assert got[name].attrs["standard_name"] == "air_temperature standard_error"
        assert "TA_standard_error" in got["TA"].attrs["ancillary_variables"]


def test_unit_observations_match_as_chunk_samples(scene_and_static):
    """Label rows become observations at the station pixels by the chunk builder's matching: an unknown station
    and a slot without data are rejected with their reasons."""
    s = scene_and_static
    static = read_static(s["static"], DOMAIN)
    with read_scene(s["scene"]) as sc:
        status = pd.DataFrame({"time": sc["time"].values.astype("datetime64[s]").astype("int64"),
                               "status": sc["status"].values.astype(str)})
    obs, rejects = unit_observations(s["labels"], s["stations"], static, status, 9)
    assert list(obs.columns) == ["stn", "time", "lat", "lon", "line", "column", "ta_c"]
    assert len(obs) == len(DATA_HOURS) * 6 and set(zip(obs["line"], obs["column"], strict=True)) == set(s["pixels"])
    assert set(rejects["reason"]) == {"unknown_station", "no_scene"}
    assert (rejects["reason"] == "no_scene").sum() == 6 + 1  # 05:00 has no files; the next day no slot


# --- kriging ------------------------------------------------------------------------------------------------

def _smooth_case(n_stations=40, noise=0.2, seed=0, n_slots=6):
    """A raw field that misses a smooth residual field (a large-scale wave plus an offset per slot), stations
    observing truth + noise."""
    rng = np.random.default_rng(seed)
    ny, nx = 60, 70
    gy, gx = np.meshgrid(np.arange(ny) * 2.5, np.arange(nx) * 2.0, indexing="ij")  # km

    def resid_field(x, y, t):
        return 1.2 * np.sin(x / 40.0 + 0.3 * t) * np.cos(y / 50.0) + 0.3 * t / n_slots

    truth = 15 + 3 * np.sin(gx / 17.0)[None] + rng.normal(0, 1, (n_slots, 1, 1))
    raw = np.stack([truth[t] - resid_field(gx, gy, t) for t in range(n_slots)]).astype(np.float32)
    iy, ix = rng.integers(0, ny, n_stations), rng.integers(0, nx, n_stations)
    rows = []
    for t in range(n_slots):
        for s in range(n_stations):
            rows.append({"stn": 1000 + s, "time": 1_700_000_000 + 3600 * t, "line": iy[s], "column": ix[s],
                         "ta_c": truth[t, iy[s], ix[s]] + rng.normal(0, noise)})
    obs = pd.DataFrame(rows)
    t_idx = (obs["time"].to_numpy() - 1_700_000_000) // 3600
    table = residual_table(obs, raw[t_idx, obs["line"], obs["column"]], gx[obs["line"], obs["column"]],
                           gy[obs["line"], obs["column"]])
    times = 1_700_000_000 + 3600 * np.arange(n_slots)
    return {"raw": raw, "truth": truth, "gx": gx, "gy": gy, "table": table, "times": times}


def test_kriging_recovers_a_smooth_residual_field():
    c = _smooth_case()
    out = correct_fields(c["raw"], c["times"], c["gx"], c["gy"], c["table"], KrigingConfig())
    rmse_raw = float(np.sqrt(np.mean((c["raw"] - c["truth"]) ** 2)))
    rmse_cor = float(np.sqrt(np.mean((out["corrected"] - c["truth"]) ** 2)))
    assert rmse_cor < 0.35 * rmse_raw, (rmse_raw, rmse_cor)
    assert all(s == "ok: 40 station residuals kriged" for s in out["status"])
    v = out["variogram"]
    assert v.psill > v.nugget and v.range_km > 20  # structure, not noise
    # no correction below min_stations, and none with method none: the raw field
    few = correct_fields(c["raw"], c["times"], c["gx"], c["gy"], c["table"], KrigingConfig(min_stations=41))
    assert np.array_equal(few["corrected"], c["raw"]) and few["status"][0].startswith("none: 40 station residuals")
    off = correct_fields(c["raw"], c["times"], c["gx"], c["gy"], c["table"], KrigingConfig(method="none"))
    assert np.array_equal(off["corrected"], c["raw"])


def test_krige_solves_the_ordinary_kriging_system():
    """PyKrige with our variogram equals the ordinary-kriging system solved with numpy (partial sill, range and
    nugget mean what they say), and a variogram without structure gives the stations' mean."""
    rng = np.random.default_rng(4)
    x, y, z = rng.uniform(0, 100, 12), rng.uniform(0, 100, 12), rng.normal(0, 1, 12)
    xt, yt = rng.uniform(0, 100, 5), rng.uniform(0, 100, 5)

    def gamma(d, v):  # exponential, practical range
        return v.psill * (1 - np.exp(-3 * d / v.range_km)) + v.nugget

    for v in (Variogram("exponential", 0.8, 40.0, 0.3, 0), Variogram("exponential", 1e-7, 15.0, 0.65, 0)):
        d = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
        a = np.ones((13, 13))
        a[:12, :12] = gamma(d, v)
        np.fill_diagonal(a[:12, :12], 0.0)
        a[12, 12] = 0.0
        want = []
        for i in range(5):
            b = np.append(gamma(np.hypot(x - xt[i], y - yt[i]), v), 1.0)
            want.append(np.linalg.solve(a, b)[:12] @ z)
        np.testing.assert_allclose(krige(x, y, z, xt, yt, v), want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(krige(x, y, z, xt, yt, Variogram("exponential", 1e-7, 15.0, 0.65, 0)), z.mean(),
                               atol=1e-5)


def test_variogram_of_pure_noise_is_mostly_nugget():
    rng = np.random.default_rng(1)
    groups = [(rng.uniform(0, 200, 40), rng.uniform(0, 200, 40), rng.normal(0, 1, 40)) for _ in range(24)]
    v = fit_variogram(groups)
    assert v.nugget == pytest.approx(1.0, abs=0.25) and v.psill < 0.3
    assert fit_variogram([(np.zeros(3), np.zeros(3), np.zeros(3))]) is None  # too few pairs


def test_leave_stations_out_never_scores_a_station_used_in_its_correction():
    c = _smooth_case(noise=0.2)
    cfg = KrigingConfig(folds=5)
    lso, used = leave_stations_out(c["table"], cfg)
    assert used and (lso["lso_status"] == "ok").all()
    for (unix, fold), ids in used.items():
        scored = set(lso.loc[(lso["time"] == unix) & (lso["fold"] == fold), "stn"])
        assert scored and not scored & ids  # disjoint
        assert ids == set(lso.loc[(lso["time"] == unix) & (lso["fold"] != fold), "stn"])  # all the others
    # a station's value never reaches its own score: change every observation of fold 0, its scores stay
    fold0 = lso["fold"] == 0
    changed = c["table"].copy()
    changed.loc[fold0.to_numpy(), "ta_c"] += 25.0
    changed = changed.assign(resid=changed["ta_c"] - changed["ta_raw"])
    lso2, _ = leave_stations_out(changed, cfg)
    np.testing.assert_array_equal(lso2.loc[fold0, "ta_lso"], lso.loc[fold0, "ta_lso"])
    assert not np.allclose(lso2.loc[~fold0, "ta_lso"], lso.loc[~fold0, "ta_lso"])
    # and on a smooth residual field it helps, scored honestly
    t = correction_table(lso.assign(run="r", model_run="r"), None)
    all_row = t[(t["scheme"] == "all") & (t["fold"] == "all")].iloc[0]
    assert all_row["rmse_corrected"] < 0.6 * all_row["rmse_raw"]
    d = lso["ta_raw"] - lso["ta_c"]
    assert all_row["rmse_raw"] == pytest.approx(math.sqrt(float(np.mean(d**2))))
    assert all_row["n"] == len(lso) and len(t[t["fold"] != "all"]) == 5


def test_station_folds_are_balanced_and_stable():
    stn = np.arange(100, 141)
    f = station_folds(stn, 5, seed=1)
    assert sorted(np.bincount(f)) == [8, 8, 8, 8, 9]
    assert np.array_equal(station_folds(stn[::-1], 5, seed=1), f[::-1])  # order of rows does not matter
    assert not np.array_equal(station_folds(stn, 5, seed=2), f)


def test_correction_report_by_scheme(tmp_path):
    """Per validation scheme of the test days (ta2d.splits), per fold and in total; non-test days left out."""
    c = _smooth_case(n_stations=12, n_slots=3)
    lso, _ = leave_stations_out(c["table"], KrigingConfig(folds=3))
    day_test, day_train = pd.Timestamp("2024-04-10", tz="UTC"), pd.Timestamp("2024-04-11", tz="UTC")
    split = {"fractions": {"train": 0.0, "val": 0.0, "test": 1.0}, "block_days": 20, "seed": 1,
             "holdout_stations": [1000, 1001], "time_block_start": None}
    a = lso.assign(time=int(day_test.timestamp()) + (lso["time"] - lso["time"].min()), run="best", model_run="cnn",
                   day="20240410")
    a.to_csv(tmp_path / "a.csv", index=False)
    out = tmp_path / "eval"
    table = correction_report_files([tmp_path / "a.csv"], split, {"folds": 3}, out / "c.csv", out / "c.md",
                                    out / "c.html")
    assert set(table["scheme"]) == {"held_out_days", "held_out_both", "all"}
    both = table[(table["scheme"] == "held_out_both")].iloc[0]
    assert both["n"] == 2 * 3  # the two held-out stations, 3 slots
    assert "| best | cnn | all | all |" in (out / "c.md").read_text()
    assert "<table>" in (out / "c.html").read_text()
    # a non-test day scores nothing
    split_none = {**split, "fractions": {"train": 1.0, "val": 0.0, "test": 0.0}, "holdout_stations": []}
    b = a.assign(time=a["time"] + int((day_train - day_test).total_seconds()))
    assert correction_table(b, split_none).empty


# --- many days through open_mfdataset -------------------------------------------------------------------------

def test_open_mfdataset_over_day_files(tmp_path):
    lon, lat = domain_lonlat(DOMAIN)
    rng = np.random.default_rng(2)
    want = []
    for day in ("20240410", "20240411", "20240412"):
        times = day_slot_times(day, [0])
        ta = rng.normal(12, 4, (24, *DOMAIN.shape)).astype(np.float32)
        ta[:, :, :3] = np.nan
        status = ["ok"] * 24
        if day == "20240411":
            ta[7] = np.nan
            status[7] = "bad_scene: no_files"
        mask = np.where(np.isfinite(ta), MASK_PREDICTED, MASK_NOT_LAND).astype(np.uint8)
        ds = day_dataset(times, DOMAIN, lat, lon, ta, mask, status, ta + 0.5, ["ok: 3 station residuals kriged"] * 24,
                         np.full(24, 3), {"run": "cnn"})
        write_day(ds, tmp_path / f"{day}.nc")
        want.append(ta)
    with open_archive(sorted(tmp_path.glob("*.nc"))) as ds:
        assert ds.sizes["time"] == 72 and ds["TA"].chunks is not None  # lazy (dask)
        assert ds["lat"].dims == ("y", "x") and "time" not in ds["lat"].dims and "time" not in ds[GRID_MAPPING].dims
        assert pd.DatetimeIndex(ds["time"].values).is_monotonic_increasing
        np.testing.assert_allclose(ds["TA"].values, np.concatenate(want), atol=0.0051, equal_nan=True)
        assert [str(s) for s in ds["slot_status"].values].count("bad_scene: no_files") == 1
        mean = float(np.nanmean(np.concatenate(want)))
        assert float(ds["TA_corrected"].mean()) == pytest.approx(mean + 0.5, abs=0.01)


# --- plots ----------------------------------------------------------------------------------------------------

def test_plots_a_png_per_slot_and_an_animated_gif(tmp_path):
    lon, lat = domain_lonlat(DOMAIN)
    times = day_slot_times(DAY, [0])[:4]
    ta = np.random.default_rng(3).normal(12, 3, (4, *DOMAIN.shape)).astype(np.float32)
    ta[2] = np.nan
    mask = np.where(np.isfinite(ta), MASK_PREDICTED, MASK_NO_SCENE).astype(np.uint8)
    ds = day_dataset(times, DOMAIN, lat, lon, ta, mask, ["ok", "ok", "bad_scene: no_files", "ok"], ta + 1,
                     ["ok: 3 station residuals kriged"] * 4, np.full(4, 3), {"run": "cnn"})
    obs = pd.DataFrame({"time": [int(times[0].timestamp())] * 2, "lat": lat[[5, 10], [5, 10]],
                        "lon": lon[[5, 10], [5, 10]], "ta_c": [10.0, 14.0]})
    paths = plot_day(ds, obs, tmp_path / "png", tmp_path / "day.gif", dpi=40)
    assert [p.name for p in paths] == [f"ta_{t:%Y%m%dT%H%M}.png" for t in times]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    with Image.open(tmp_path / "day.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 4
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_uncertainty_map_of_one_slot_beside_ta(tmp_path):
    """The uncertainty figure: the usable slot with the most stations, TA beside both standard errors, stations
    marked; rule map_plots writes it and puts it in the report page below the animation."""
    lon, lat = domain_lonlat(DOMAIN)
    times = day_slot_times(DAY, [0])[:4]
    rng = np.random.default_rng(4)
    ta = rng.normal(12, 3, (4, *DOMAIN.shape)).astype(np.float32)
    ta[2] = np.nan
    se = np.where(np.isfinite(ta), rng.uniform(0.6, 1.2, ta.shape), np.nan).astype(np.float32)
    mask = np.where(np.isfinite(ta), MASK_PREDICTED, MASK_NO_SCENE).astype(np.uint8)
    ds = day_dataset(times, DOMAIN, lat, lon, ta, mask, ["ok", "ok", "bad_scene: no_files", "ok"], ta + 1,
                     ["none: 2", "ok: 5 station residuals kriged", "none: no map values at this slot", "ok: 3"],
                     np.array([0, 5, 0, 3]), {"run": "cnn"}, standard_error=se, corrected_standard_error=0.7 * se)
    assert uncertainty_slot(ds) == 1
    assert uncertainty_slot(ds.assign(n_stations=("time", np.array([0, 0, 9, 0])))) == 0  # slot 2 is not usable
    obs = pd.DataFrame({"time": [int(times[1].timestamp())] * 2, "lat": lat[[5, 10], [5, 10]],
                        "lon": lon[[5, 10], [5, 10]], "ta_c": [10.0, 14.0], "stn": [1, 2], "line": [905, 910],
                        "column": [2705, 2710]})
    assert plot_uncertainty(ds, obs, tmp_path / "u.png", dpi=30) == 1
    with Image.open(tmp_path / "u.png") as im:
        assert im.format == "PNG" and im.width > im.height  # three panels side by side
    write_day(ds, tmp_path / "day.nc")
    obs.to_csv(tmp_path / "day_stations.csv", index=False)
    plot_day_files(tmp_path / "day.nc", tmp_path / "day_stations.csv", tmp_path / "png", tmp_path / "day.gif",
                   tmp_path / "day.html", dpi=30, uncertainty_png=tmp_path / "day_uncertainty.png")
    page = (tmp_path / "day.html").read_text()
    assert (tmp_path / "day_uncertainty.png").is_file() and page.count("src='data:image/") == 2
    assert "Standard error of one slot" in page


# --- the plan (parse time) ------------------------------------------------------------------------------------

PERIOD = {"start": "2024-04-01", "end": "2024-04-21"}
SPLIT = {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}, "block_days": 20, "seed": 7,
         "time_block_start": "2024-04-20"}


def test_map_days_and_models_from_the_config():
    test = split_test_days(PERIOD, SPLIT)
    assert "20240420" in test and "20240421" in test and len(test) == 6  # 4 of the block's 20 days + the time block
    assert map_days("test", PERIOD, SPLIT) == test
    assert map_days("test", PERIOD, SPLIT, 2) == [test[0], test[-1]]  # spread: first and last
    assert map_days("test", PERIOD, SPLIT, 3) == [test[0], test[2], test[5]]
    assert map_days("all", PERIOD, SPLIT, 5) == ["20240401", "20240406", "20240411", "20240416", "20240421"]
    assert map_days("test", PERIOD, SPLIT, 1) == test[:1]
    assert len(map_days("all", PERIOD, SPLIT)) == 21
    assert map_days(["2024-04-05", "2024-04-03"], PERIOD, SPLIT) == ["20240403", "20240405"]
    assert map_days([], PERIOD, SPLIT) == []
    # days anywhere: a list outside the period, maps.period on top (max_days does not cut it), no training period
    assert map_days(["2024-05-01"], PERIOD, SPLIT) == ["20240501"]
    assert map_days("test", PERIOD, SPLIT, 1, {"start": "2023-12-31", "end": "2024-01-01"}) == [
        "20231231", "20240101", test[0]]
    assert map_days("test", None, SPLIT, None, {"start": "2025-01-01", "end": "2025-01-02"}) == ["20250101",
                                                                                                 "20250102"]
    with pytest.raises(ValueError, match="maps.days"):
        map_days("some", PERIOD, SPLIT)
    with pytest.raises(ValueError, match="maps.period: start"):
        map_days([], PERIOD, SPLIT, None, {"start": "2024-02-02", "end": "2024-02-01"})
    cfg = {"maps": {"model": ["best", "cnn", "elsewhere/old_cnn.pt"]}}
    assert map_sources(cfg) == {"best": "results/models/best.pt", "cnn": "results/models/cnn.pt",
                                "old_cnn": "elsewhere/old_cnn.pt"}
    with pytest.raises(ValueError, match="maps.model.*results/maps/cnn/"):
        map_sources({"maps": {"model": ["cnn", "other/cnn.pt"]}})
    assert map_targets([BEST], ["20240403"], True, True) == [
        "results/maps/best/20240403.nc", "results/maps/best/20240403.gif", "results/maps/best/20240403.html",
        "results/eval/map_correction.csv"]
    assert map_targets([BEST], ["20240403"], False, False) == ["results/maps/best/20240403.nc"]
    assert map_targets([BEST], [], True, True) == []


def test_best_run_from_the_metrics(tmp_path):
    rows = [("cnn", "held_out_days", 0.83, 100), ("ridge", "held_out_days", 1.18, 100), ("gbt", "all", 0.5, 300),
            ("cnn", "all", 0.9, 300)]
    pd.DataFrame(rows, columns=["run", "scheme", "rmse", "n"]).to_csv(tmp_path / "m.csv", index=False)
    run, why = best_run(tmp_path / "m.csv", ["cnn", "ridge", "gbt"])
    assert run == "cnn" and "held_out_days" in why  # the judged scheme first, "all" only without it
    assert best_run(tmp_path / "m.csv", ["gbt"])[0] == "gbt"
    with pytest.raises(ValueError, match="m.csv: no scores for any of the runs"):
        best_run(tmp_path / "m.csv", ["clay"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"bad.csv: no column\(s\)"):
        best_run(tmp_path / "bad.csv", ["cnn"])


def test_cli_map_day_and_model_info(model_files, se_model_file, scene_and_static, tmp_path, capsys):
    s = scene_and_static
    out, table = tmp_path / "day.nc", tmp_path / "day_stations.csv"
    rc = cli_main(["map-day", "--model", str(model_files["ridge"]), "--scene", str(s["scene"]), "--static",
                   str(s["static"]), "--day", "2024-04-10", "--out", str(out), "--station-table", str(table),
                   "--png-dir", str(tmp_path / "png"), "--gif", str(tmp_path / "day.gif"), "--device", "cpu"])
    assert rc == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.attrs["run"] == "ridge" and ds.sizes["time"] == 24
        assert np.isfinite(ds["TA"].values[3]).sum() == ds["n_predicted"].values[3] > 0
        assert ds.attrs["station_correction"].startswith("none: no station observations")
        np.testing.assert_array_equal(ds["TA_corrected"].values, ds["TA"].values)
    assert len(list((tmp_path / "png").glob("*.png"))) == 24 and (tmp_path / "day.gif").stat().st_size > 0
    assert (tmp_path / "day_uncertainty.png").read_bytes()[:4] == b"\x89PNG"  # says why there is no standard error
    assert read_station_table(table).empty
    assert cli_main(["map-day", "--model", str(model_files["ridge"]), "--scene", str(tmp_path / "no.nc"),
                     "--static", str(s["static"]), "--day", "2024-04-10", "--out", str(out)]) == 1
    capsys.readouterr()
    assert cli_main(["model-info", str(model_files["cnn"])]) == 0
    text = capsys.readouterr().out
    assert "run cnn: model cnn" in text and "ir105 (10.35 µm)" in text and "held_out_days" in text
    assert "trained on 2024-04-01..2024-04-02" in text
    assert "standard error: none (no error model in this file" in text
    assert cli_main(["model-info", str(se_model_file)]) == 0
    text = capsys.readouterr().out
    assert "standard error: log sigma linear in hour_cos, hour_sin, bt_ir105, rf_vi006 (fit on 1,234" in text
    assert "0.900 K at their mean" in text
    pd.DataFrame({"stn": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: no column\(s\) \['time'"):
        read_station_table(tmp_path / "bad.csv")


def test_local_xy_km():
    x, y = local_xy_km(np.array([37.0, 38.0]), np.array([127.0, 127.0]), 37.0, 127.0)
    assert x[0] == 0 and y[1] == pytest.approx(111.19, abs=0.01)
