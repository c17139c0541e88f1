"""Maps of models built with the reanalysis background: every pixel of a slot gets the background as a chunk sample
does (a map pixel equals the chunk sample at that pixel), the dense pass equals the per-pixel reference, a missing
hour masks its slot (no_background, with the slot's reason), and the map job refuses a config without
inputs.background."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fakes import chunk_from_manifest, with_background, write_cds_orography, write_cds_t2m

from ta2d.chunks.stats import write_stats
from ta2d.demo.synthetic import write_chunks
from ta2d.grid import Domain
from ta2d.ingest.background import open_background_config
from ta2d.ingest.scene import SlotData, read_scene, write_scene
from ta2d.maps.archive import day_slot_times, map_day, map_files
from ta2d.maps.predict import MASK_NO_BACKGROUND, MASK_PREDICTED, mappable_pixels
from ta2d.models import load_model
from ta2d.models.model_file import ModelFileError, export_model
from ta2d.periods import period_slots
from ta2d.static import read_static
from ta2d.training import predict_chunks, train_run

DOMAIN = Domain(900, 919, 2700, 2723)  # 20 x 24 pixels near Seoul, lat 36.97..37.46, lon 127.01..127.56
DAY = "20240410"
DATA_HOURS = (3, 18)  # slots with data; the t2m files lack 18:00
RUNS = {
    "ridge": {"model": "ridge"},
    "gbt": {"model": "gbt", "gbt_max_rounds": 30, "gbt_num_leaves": 15},
    "cnn": {"model": "cnn", "epochs": 1, "batch_size": 64, "head_hidden": 16, "cnn_channels": [6, 8]},
    "clay": {"model": "clay_transfer", "preset": "tiny", "epochs": 1, "batch_size": 64, "head_hidden": 16},
}
PIXELS = [(905, 2710), (905, 2718), (909, 2707), (915, 2712)]  # inner land pixels


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A day's scene (data at 03:00 and 18:00), its static file, ERA5-Land-like t2m of the day without 18:00, and
    every model kind trained on chunks with a background field."""
    d = tmp_path_factory.mktemp("background_maps")
    rng = np.random.default_rng(8)
    nl, nc = DOMAIN.shape

    def read_slot(slot):
        if slot.hour not in DATA_HOURS:
            return SlotData("no_files")
        bt = (285 + rng.normal(0, 2, (10, nl, nc))).astype(np.float32)
        return SlotData("ok", bt=bt, rf=rng.uniform(0, 0.6, (6, nl, nc)).astype(np.float32))

    scene = d / f"{DAY}.nc"
    write_scene(scene, DAY, period_slots(DAY, "D", [0]), DOMAIN, read_slot, {"input_kind": "test"}, progress=False)
    lsm = np.ones((nl, nc), np.float32)
    lsm[:, :5] = 0.0
    xr.Dataset({"dem": (("line", "column"), rng.uniform(0, 800, (nl, nc)).astype(np.float32)),
                "land_sea_mask": (("line", "column"), lsm),
                "landcover": (("line", "column"), np.where(lsm > 0, 12, 17).astype(np.uint8))},
               coords={"line": DOMAIN.lines, "column": DOMAIN.columns}).to_netcdf(d / "static.nc", engine="h5netcdf")
    lat, lon = np.round(np.arange(36.8, 37.61, 0.1), 6), np.round(np.arange(126.9, 127.71, 0.1), 6)
    hours = np.datetime64("2024-04-10T00:00", "ns") + np.arange(24) * np.timedelta64(1, "h")
    hours = hours[hours != np.datetime64("2024-04-10T18:00", "ns")]
    write_cds_t2m(d / "t2m_202404.nc", (283 + rng.normal(0, 3, (len(hours), lat.size, lon.size))).astype(np.float32),
                  hours, lat, lon)
    write_cds_orography(d / "orography.nc", rng.uniform(0, 600, (lat.size, lon.size)), lat, lon)
    background = {"t2m": str(d / "t2m_*.nc"), "orography": str(d / "orography.nc"), "lapse_rate_k_per_km": 6.5}
    train = with_background(write_chunks(d / "raw", "train", 2, 120, seed=1), d / "patch_pt", seed=2)
    write_stats(train, d / "stats.json")
    ckpts = {}
    for run, cfg in RUNS.items():
        train_run({**cfg, "seed": 3, "device": "cpu"}, train, [], d / "stats.json", d / "runs" / run,
                  progress=False, log=lambda s: None)
        ckpts[run] = d / "runs" / run / "best.pt"
    return {"dir": d, "scene": scene, "static_path": d / "static.nc", "static": read_static(d / "static.nc", DOMAIN),
            "background": background, "train": train, "ckpts": ckpts}


def n_inner_land(case) -> int:
    land, inner = mappable_pixels(case["static"], 9)
    return int((land & inner).sum())


def test_a_map_pixel_is_the_chunk_sample_at_that_pixel(case, tmp_path):
    reanalysis = open_background_config(case["background"], "2024-04-10", "2024-04-10")
    time = int(pd.Timestamp("2024-04-10T03:00", tz="UTC").timestamp())
    pd.DataFrame([{"row": i + 1, "stn": 100 + i, "time": time, "ta_c": 10.0, "line": line, "column": col}
                  for i, (line, col) in enumerate(PIXELS)]).to_csv(tmp_path / "m.csv", index=False)
    chunk = tmp_path / "test_chunk_x.pt"
    assert chunk_from_manifest(tmp_path / "m.csv", case["scene"], case["static"], 9, chunk,
                               background=reanalysis)["n_samples"] == len(PIXELS)
    times = day_slot_times(DAY, [0])
    for run, best in case["ckpts"].items():
        model = load_model(best)
        with read_scene(case["scene"]) as sc:
            out = map_day(model, sc, case["static"], times, batch_size=7, device="cpu", background=reanalysis)
        want = predict_chunks(model, [chunk], device="cpu")["y_pred"].numpy()
        got = np.array([out["ta"][3, line - DOMAIN.first_line, col - DOMAIN.first_column] for line, col in PIXELS])
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=run)


def test_dense_pass_equals_the_per_pixel_reference_and_masks_the_missing_hour(case):
    import ta2d.maps.dense as dense

    reanalysis = open_background_config(case["background"], "2024-04-10", "2024-04-10")
    times = day_slot_times(DAY, [0])
    for run, best in case["ckpts"].items():
        model = load_model(best)
        with read_scene(case["scene"]) as sc:
            ref = map_day(model, sc, case["static"], times, batch_size=31, device="cpu", method="per_pixel",
                          background=reanalysis)
        tile, dense.TILE = dense.TILE, 7
        try:
            with read_scene(case["scene"]) as sc:
                got = map_day(model, sc, case["static"], times, batch_size=29, device="cpu", background=reanalysis)
        finally:
            dense.TILE = tile
        assert np.array_equal(got["mask"], ref["mask"]), run
        assert np.nanmax(np.abs(got["ta"] - ref["ta"])) <= 1e-3, run
        assert (got["mask"][3] == MASK_PREDICTED).sum() == n_inner_land(case)
        # 18:00 has data but no hour in the t2m files: its land pixels say so, and so does the slot
        assert not (got["mask"][18] == MASK_PREDICTED).any()
        assert (got["mask"][18] == MASK_NO_BACKGROUND).sum() == n_inner_land(case)
        assert got["slot_status"][18].startswith("no_prediction: the reanalysis background (inputs.background)")
        assert got["slot_status"][3] == "ok"


def test_a_model_with_the_background_needs_it_to_map(case):
    model = load_model(case["ckpts"]["ridge"])
    with read_scene(case["scene"]) as sc, pytest.raises(ValueError, match="reanalysis background"):
        map_day(model, sc, case["static"], day_slot_times(DAY, [0]), device="cpu")


def test_map_files_reads_the_background_of_the_config(case, tmp_path):
    pd.DataFrame([{"run": "cnn", "scheme": s, "n": 10, "rmse": 1.0, "mae": 0.8, "bias": 0.0, "floor": 0.8,
                   "rmse_over_floor": 1.25} for s in ("held_out_days", "all")]).to_csv(tmp_path / "m.csv", index=False)
    model_file = tmp_path / "cnn.pt"
    export_model(case["ckpts"]["cnn"], model_file, "cnn", tmp_path / "m.csv", case["train"], [],
                 {"start": "2024-04-01", "end": "2024-04-02"}, 9)
    times = day_slot_times(DAY, [0])
    with pytest.raises(ModelFileError, match=f"{model_file}.*inputs.background"):
        map_files("cnn", model_file, case["scene"], case["static_path"], times, tmp_path / "a.nc", None)
    summary = map_files("cnn", model_file, case["scene"], case["static_path"], times, tmp_path / "b.nc",
                        tmp_path / "b_stations.csv", background=case["background"])
    assert summary["slots_ok"] == 1  # 03:00; 18:00 has no background, the others no files
    with xr.open_dataset(tmp_path / "b.nc", engine="h5netcdf") as ds:
        assert "no_background" in ds["mask"].attrs["flag_meanings"].split()
        assert int((ds["mask"].values[18] == MASK_NO_BACKGROUND).sum()) == n_inner_land(case)
        assert np.isfinite(ds["TA"].values[3]).sum() == n_inner_land(case) and np.isnan(ds["TA"].values[18]).all()


def test_the_station_table_scores_the_reanalysis_alone_beside_the_map(case):
    """background_station_rows: every station row again with the reanalysis at its pixel and slot as the raw value
    (the same value a chunk sample there carries), its residual, and the leave-stations-out correction of it,
    under model_run background: the map correction table's background row."""
    from ta2d.maps.archive import background_station_rows
    from ta2d.maps.kriging import KrigingConfig, residual_table

    reanalysis = open_background_config(case["background"], DAY, DAY)
    static = read_static(case["static_path"], DOMAIN)
    t3 = int(pd.Timestamp(f"{DAY} 03:00", tz="UTC").timestamp())
    rng = np.random.default_rng(3)
    lines, columns = rng.integers(902, 918, 12), rng.integers(2706, 2722, 12)
    obs = pd.DataFrame({"stn": np.arange(100, 112), "time": t3, "line": lines, "column": columns,
                        "ta_c": rng.normal(12, 2, 12)})
    table = residual_table(obs, rng.normal(12, 2, 12), rng.uniform(0, 40, 12), rng.uniform(0, 40, 12))
    rows = background_station_rows(reanalysis, static, table, KrigingConfig(min_stations=3, folds=3))
    assert (rows["model_run"] == "background").all() and len(rows) == len(table)
    rows = rows.sort_values("stn").reset_index(drop=True)
    # the reanalysis at each pixel, by the function a chunk sample's background field comes from
    expected, _ = reanalysis.at_pixels(static, lines, columns, np.full(12, t3))
    np.testing.assert_allclose(rows["ta_raw"], expected, atol=1e-9)
    np.testing.assert_allclose(rows["resid"], obs["ta_c"] - expected, atol=1e-9)
    assert (rows["lso_status"] == "ok").any()  # 12 stations in 3 folds: each fold corrected by the other two
