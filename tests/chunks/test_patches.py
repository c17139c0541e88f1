"""build_patch_chunk against direct array slicing, on a scene and static file written here."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from fakes import chunk_from_manifest

from ta2d.chunks.inspect import contract_problems
from ta2d.chunks.stats import compute_stats
from ta2d.grid import Domain
from ta2d.static import read_static

DOMAIN = Domain(900, 929, 2700, 2739)  # 30 x 40


@pytest.fixture
def scene_and_static(tmp_path):
    rng = np.random.default_rng(0)
    nl, nc = DOMAIN.shape
    times = pd.date_range("2024-04-01", periods=4, freq="h", tz="UTC").tz_convert(None)
    bt = rng.uniform(200, 320, (4, 10, nl, nc)).astype(np.float32)
    rf = rng.uniform(0, 1, (4, 6, nl, nc)).astype(np.float32)
    sza = rng.uniform(0, 120, (4, nl, nc)).astype(np.float32)
    bt[2, 3, 10, 10] = np.nan  # a flagged pixel inside one station's patch at slot 2
    scene = xr.Dataset(
        {"bt": (("time", "bt_channel", "line", "column"), bt),
         "rf": (("time", "rf_channel", "line", "column"), rf),
         "sza": (("time", "line", "column"), sza),
         "status": (("time",), np.array(["ok"] * 4))},
        coords={"time": times, "line": DOMAIN.lines, "column": DOMAIN.columns},
    )
    scene_path = tmp_path / "scene.nc"
    scene.to_netcdf(scene_path, engine="h5netcdf")
    # static covers more than the domain, as a real file would
    lines = np.arange(890, 940, dtype=np.int32)
    cols = np.arange(2690, 2750, dtype=np.int32)
    dem = rng.uniform(0, 1500, (len(lines), len(cols))).astype(np.float32)
    lsm = (rng.uniform(size=dem.shape) > 0.2).astype(np.float32)
    lc = rng.integers(1, 18, dem.shape).astype(np.uint8)
    xr.Dataset({"dem": (("line", "column"), dem), "land_sea_mask": (("line", "column"), lsm),
                "landcover": (("line", "column"), lc)},
               coords={"line": lines, "column": cols}).to_netcdf(tmp_path / "static.nc", engine="h5netcdf")
    return scene_path, tmp_path / "static.nc", scene, (lines, cols, dem, lsm, lc)


def test_patches_equal_direct_slicing(scene_and_static, tmp_path):
    scene_path, static_path, scene, (s_lines, s_cols, dem, lsm, lc) = scene_and_static
    t0 = int(pd.Timestamp("2024-04-01", tz="UTC").timestamp())
    manifest = pd.DataFrame({
        "row": [5, 6, 7, 8],
        "stn": [108, 119, 143, 133],
        "time": [t0, t0 + 3600, t0 + 7200, t0 + 10800],
        "ta_c": [12.5, 3.25, -1.0, 20.0],
        "elev_m": [85.5, np.nan, 40.0, 412.0],  # unknown elevation -> the pixel's DEM
        "line": [915, 904, 910, 925],
        "column": [2710, 2704, 2710, 2735],
    })
    manifest.to_csv(tmp_path / "m.csv", index=False)
    static = read_static(static_path, DOMAIN)
    counts = chunk_from_manifest(tmp_path / "m.csv", scene_path, static, 9, tmp_path / "train_chunk_x.pt")

    # row 7 (slot 2, pixel (910, 2710)) has the NaN at domain index (10, 10) = pixel (910, 2710) inside its patch
    assert counts == {"n_rows": 4, "n_samples": 3, "n_rejected": 1}
    rejects = pd.read_csv(tmp_path / "train_chunk_x.rejects.csv")
    assert rejects["row"].tolist() == [7] and rejects["reason"].tolist() == ["nan_in_patch"]
    assert "wv073" in rejects["detail"][0]

    d = torch.load(tmp_path / "train_chunk_x.pt", weights_only=True, mmap=True)
    assert contract_problems(d) == []
    kept = manifest[manifest["row"] != 7].reset_index(drop=True)
    for i, r in enumerate(kept.astype({"line": int, "column": int, "time": int}).to_dict("records")):
        slot = (r["time"] - t0) // 3600
        li, ci = r["line"] - DOMAIN.first_line, r["column"] - DOMAIN.first_column
        want_bt = scene["bt"].values[slot, :, li - 4:li + 5, ci - 4:ci + 5]
        want_rf = scene["rf"].values[slot, :, li - 4:li + 5, ci - 4:ci + 5]
        want_sza = scene["sza"].values[slot, li - 4:li + 5, ci - 4:ci + 5]
        si, sj = r["line"] - s_lines[0], r["column"] - s_cols[0]
        np.testing.assert_array_equal(d["x"][i, :10].numpy(), want_bt)
        np.testing.assert_array_equal(d["x"][i, 10:16].numpy(), want_rf)
        np.testing.assert_array_equal(d["x"][i, 16].numpy(), want_sza)
        np.testing.assert_array_equal(d["x"][i, 17].numpy(), dem[si - 4:si + 5, sj - 4:sj + 5])
        np.testing.assert_array_equal(d["x"][i, 18].numpy(), lsm[si - 4:si + 5, sj - 4:sj + 5])
        assert int(d["landcover_onehot"][i].argmax()) + 1 == lc[si, sj]
        assert d["pixel"][i].tolist() == [r["line"], r["column"]]
        want_elev = r["elev_m"] if np.isfinite(r["elev_m"]) else dem[si, sj]
        assert float(d["elev"][i]) == pytest.approx(want_elev, rel=1e-6)
        assert float(d["y"][i]) == pytest.approx(r["ta_c"])
        hour = (r["time"] % 86400) / 3600
        assert float(d["time7"][i, 2]) == pytest.approx(np.cos(2 * np.pi * hour / 24), abs=1e-6)
        assert float(d["time7"][i, 6]) == pytest.approx(float(want_sza[4, 4]))
    assert d["loc"][:, 2].eq(2000).all()


def test_stats_match_numpy(scene_and_static, tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    xs, ys = [], []
    for k in range(3):
        x = rng.normal(size=(5 + k, 19, 9, 9)).astype(np.float32) * (np.arange(19)[None, :, None, None] + 1)
        y = rng.normal(10, 5, size=5 + k).astype(np.float32)
        torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y)}, tmp_path / f"train_chunk_{k}.pt")
        paths.append(tmp_path / f"train_chunk_{k}.pt")
        xs.append(x)
        ys.append(y)
    stats = compute_stats(paths)
    allx = np.concatenate(xs).astype(np.float64)
    np.testing.assert_allclose(stats["x_mean"], allx.mean(axis=(0, 2, 3)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["x_std"], allx.std(axis=(0, 2, 3)), rtol=1e-6)
    assert stats["y_std"] == pytest.approx(np.concatenate(ys).astype(np.float64).std(), rel=1e-6)
    assert stats["n_samples"] == sum(len(y) for y in ys)


def test_float16_chunk_holds_the_rounded_float32_patches(scene_and_static, tmp_path):
    scene_path, static_path, _, _ = scene_and_static
    t0 = int(pd.Timestamp("2024-04-01", tz="UTC").timestamp())
    pd.DataFrame({"row": [1, 2], "stn": [108, 119], "time": [t0, t0 + 3600], "ta_c": [1.0, 2.0],
                  "elev_m": [10.0, 20.0],
                  "line": [915, 904], "column": [2710, 2704]}).to_csv(tmp_path / "m.csv", index=False)
    static = read_static(static_path, DOMAIN)
    for dtype in ("float32", "float16"):
        chunk_from_manifest(tmp_path / "m.csv", scene_path, static, 9, tmp_path / f"train_chunk_{dtype}.pt",
                            x_dtype=dtype)
    full = torch.load(tmp_path / "train_chunk_float32.pt", weights_only=True)
    half = torch.load(tmp_path / "train_chunk_float16.pt", weights_only=True)
    assert half["x"].dtype == torch.float16 and contract_problems(half) == []
    assert torch.equal(half["x"], full["x"].half())
    assert half["x"].element_size() * half["x"].nelement() * 2 == full["x"].element_size() * full["x"].nelement()


def test_a_chunk_whose_rows_are_all_rejected_has_zero_rows_and_is_skipped(scene_and_static, tmp_path):
    """A planned chunk with no usable row is a valid file with N = 0: the loader, the statistics and the
    predictions read past it."""
    from ta2d.chunks.contract import open_chunk
    from ta2d.chunks.loader import ChunkBatches
    from ta2d.chunks.stats import write_stats
    from ta2d.demo.synthetic import write_chunks
    from ta2d.models import load_model
    from ta2d.training import train_run
    from ta2d.training.inference import predict_chunks

    scene_path, static_path, _, _ = scene_and_static
    t0 = int(pd.Timestamp("2024-04-01", tz="UTC").timestamp())
    pd.DataFrame({"row": [1], "stn": [108], "time": [t0 + 86400], "ta_c": [1.0],  # no slot of this scene
                  "line": [915], "column": [2710]}).to_csv(tmp_path / "m.csv", index=False)
    empty = tmp_path / "train_chunk_20240402.pt"
    counts = chunk_from_manifest(tmp_path / "m.csv", scene_path, read_static(static_path, DOMAIN), 9, empty)
    assert counts == {"n_rows": 1, "n_samples": 0, "n_rejected": 1}
    d = open_chunk(empty)
    assert contract_problems(d) == [] and d["y"].shape == (0,) and d["x"].shape == (0, 19, 9, 9)
    assert pd.read_csv(empty.with_suffix(".rejects.csv"))["reason"].tolist() == ["no_scene"]
    assert len(pd.read_csv(empty.with_suffix(".index.csv"))) == 0

    full = write_chunks(tmp_path / "full", "train", 2, 50)
    batches = ChunkBatches([empty, *full], batch_size=16, shuffle_files=True, shuffle_within_file=True)
    batches.set_epoch(0)
    assert sum(len(b["y"]) for b in batches) == sum(len(open_chunk(p)["y"]) for p in full)
    with_empty, without = compute_stats([empty, *full]), compute_stats(full)
    assert {**with_empty, "n_chunks": 0} == {**without, "n_chunks": 0}
    write_stats([empty, *full], tmp_path / "stats.json")
    train_run({"model": "cnn", "epochs": 1, "batch_size": 16, "cnn_channels": [4], "head_hidden": 8, "device": "cpu"},
              [empty, *full], [empty], tmp_path / "stats.json", tmp_path / "run", progress=False, log=lambda s: None)
    preds = predict_chunks(load_model(tmp_path / "run/best.pt"), [empty, full[0]], device="cpu")
    assert len(preds["y_pred"]) == len(open_chunk(full[0])["y"])
