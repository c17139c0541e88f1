"""The index (label routing, matching in the chunk jobs, the month index) and the fixed-grid navigation
against independent computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyproj import Proj

from ta2d.chunks.patches import build_patch_chunk
from ta2d.grid import FD_GRIDS, Domain, linecol_to_lonlat, lonlat_to_linecol
from ta2d.index.build import build_month_index, read_index
from ta2d.index.route import route_labels
from ta2d.index.stations import read_stations
from ta2d.ingest.archive import calibrate_period, write_inventory
from ta2d.periods import period_keys
from ta2d.plan import Plan, chunk_name
from ta2d.splits import SCHEMES, assign_split_by_day, assign_splits, held_out_station
from ta2d.static import read_static

GEOS = Proj("+proj=geos +lon_0=128.2 +h=35785863 +a=6378137 +b=6356752.3 +sweep=y +units=m")


def pyproj_linecol(lon, lat, res_km=2.0):
    """(line, column) via PROJ's geos projection: scan angle = metres / h, then CGMS scaling."""
    coff, cfac, _ = FD_GRIDS[res_km]
    x, y = GEOS(lon, lat)
    ang_x, ang_y = np.degrees(np.asarray(x) / 35785863.0), np.degrees(np.asarray(y) / 35785863.0)
    return coff - ang_y * cfac / 2**16, coff + ang_x * cfac / 2**16


@pytest.mark.parametrize("res_km", [2.0, 1.0, 0.5])
def test_navigation_matches_proj(res_km):
    rng = np.random.default_rng(0)
    lon = rng.uniform(120, 135, 500)
    lat = rng.uniform(28, 45, 500)
    line, col = lonlat_to_linecol(lon, lat, res_km)
    want_line, want_col = pyproj_linecol(lon, lat, res_km)
    np.testing.assert_allclose(line, want_line, atol=1e-6)
    np.testing.assert_allclose(col, want_col, atol=1e-6)
    back_lon, back_lat = linecol_to_lonlat(line, col, res_km)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)


def test_navigation_reference_points_and_space():
    # docs/gk2a-format.md#korea-on-the-2-km-grid (checked there against PROJ)
    line, col = lonlat_to_linecol([126.978, 126.53], [37.5665, 33.51])
    np.testing.assert_allclose(line, [895.88, 1058.59], atol=0.01)
    np.testing.assert_allclose(col, [2698.54, 2675.31], atol=0.01)
    assert np.isnan(lonlat_to_linecol(-60.0, 0.0)[0])  # the far side of the Earth
    assert np.isnan(linecol_to_lonlat(1, 1)[0])  # the full-disk corner is space


def test_split_holds_fractions_per_block_and_is_stable_when_days_are_added():
    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    # 2024-01-01 is day 19723 = 986 * 20 + 3: start at a block boundary to get 20 full blocks
    days = pd.Series(pd.date_range("2023-12-29", periods=400).strftime("%Y%m%d"))
    split = assign_split_by_day(days, fractions, seed=3, block_days=20)
    per_block = split.groupby(np.arange(400) // 20).value_counts().unstack()
    assert (per_block["train"] == 14).all() and (per_block["val"] == 3).all() and (per_block["test"] == 3).all()
    # a different data extent (more days before and after, a gap) never moves a day
    more = pd.Series(pd.date_range("2023-06-01", periods=800).strftime("%Y%m%d"))
    more = more[~more.between("20240301", "20240310")]
    split_more = dict(zip(more, assign_split_by_day(more, fractions, 3, 20), strict=True))
    assert all(split_more[d] == s for d, s in zip(days, split, strict=True) if d in split_more)
    assert assign_split_by_day(days, fractions, seed=4, block_days=20).ne(split).any()


@pytest.fixture(scope="module")
def tiny_index(tiny_demo, tmp_path_factory):
    """Scenes of the tiny demo, and `run(split)`: labels routed, chunks built, month index written, with the
    library functions the rules call; returns (summary of the month, the month's index)."""
    cfg = tiny_demo["config"]
    out = tmp_path_factory.mktemp("index")
    raw = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    for key in period_keys(cfg["period"]["start"], cfg["period"]["end"], "D"):
        inv = out / f"inventory/{key}.tsv"
        write_inventory(raw, key, "D", cfg["period"], inv)
        calibrate_period(raw, inv, key, "D", cfg["period"], cfg["domain"], cfg["scene"],
                         out / f"scenes/{key}.nc", out / f"scenes/{key}.status.csv", progress=False)
    st = cfg["inputs"]["static"]
    static = read_static(st["path"], Domain.from_config(cfg["domain"]), st["dem_var"], st["land_sea_mask_var"],
                         st["landcover_var"])
    stations = read_stations(cfg["inputs"]["stations"]["path"])

    def run(split=None):
        split_cfg = split or cfg["split"]
        plan = Plan.from_config({**cfg, "split": split_cfg, "chunking": {"period": "D"}})
        route_labels(cfg["inputs"]["labels"], plan, out / "labels")
        for old in (out / "patch_pt").glob("*"):
            old.unlink()
        for s, k in plan.chunks:
            chunk = out / "patch_pt" / chunk_name(s, k)
            build_patch_chunk(out / "labels" / chunk_name(s, k, ".csv"), stations, out / f"scenes/{k}.nc", static,
                              9, chunk, chunk.with_suffix(".rejects.csv"), chunk.with_suffix(".index.csv"))
        (ikey,) = plan.index_keys
        chunks = [out / "patch_pt" / chunk_name(s, k, "") for s, k in plan.chunks_of_index(ikey)]
        summary = build_month_index([f"{c}.index.csv" for c in chunks], [f"{c}.rejects.csv" for c in chunks],
                                    split_cfg, out / "index")
        return summary, read_index(out / "index/index.csv")

    return {"run": run, "dir": out, "config": cfg}


def test_index_accounts_for_every_row_and_uses_proj_pixels(tiny_index, tiny_demo):
    summary, idx = tiny_index["run"]()
    out = tiny_index["dir"]
    rejects = pd.concat([pd.read_csv(out / "labels/rejects.csv"), pd.read_csv(out / "index/rejects.csv")])
    n_rows = sum(1 for line in open(tiny_index["config"]["inputs"]["labels"]["path"], "rb").read().splitlines()[1:]
                 if line.strip())
    assert n_rows == len(idx) + len(rejects) == summary["n_samples"] + len(rejects)
    assert not set(idx["row"]) & set(rejects["row"])
    # each station's pixel is the nearest pixel centre by PROJ
    want_line, want_col = pyproj_linecol(idx["lon"].to_numpy(), idx["lat"].to_numpy())
    assert (idx["line"] == np.floor(want_line + 0.5)).all()
    assert (idx["column"] == np.floor(want_col + 0.5)).all()
    # whole days per split (held-out stations aside: all their rows are test), and one part per (split, day)
    # holding exactly those rows and the rejects of its chunk
    day = pd.to_datetime(idx["time"], unit="s").dt.strftime("%Y%m%d")
    held = held_out_station(idx["stn"], tiny_index["config"]["split"])
    assert (idx[~held].groupby(day[~held])["split"].nunique() == 1).all()
    assert (idx.loc[held, "split"] == "test").all()
    for (split, key), rows in idx.groupby(["split", "chunk"]):
        part = pd.read_csv(out / "labels" / chunk_name(split, key, ".csv"))
        chunk_rejects = pd.read_csv(out / "patch_pt" / chunk_name(split, key, ".rejects.csv"))
        assert sorted(part["row"]) == sorted([*rows["row"], *chunk_rejects["row"]])
    # KST 09:00 is 00:00 UTC of the same day
    truth = pd.read_csv(tiny_demo["root"] / "resources/demo/truth/labels_truth.csv")
    merged = idx.merge(truth, left_on=["stn", "time"], right_on=["stn", "time_utc"])
    assert len(merged) == len(idx)
    assert (np.abs(merged["ta_c"] - merged["ta_true_c"]) < 5 * 0.8).all()


def test_rerouting_keeps_parts_untouched(tiny_index):
    tiny_index["run"]()

    def parts():
        return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tiny_index["dir"] / "labels").glob("*.csv")}

    before = parts()
    route_labels(tiny_index["config"]["inputs"]["labels"], Plan.from_config(
        {**tiny_index["config"], "chunking": {"period": "D"}}), tiny_index["dir"] / "labels", force=True)
    assert parts() == before


def test_holdout_stations_go_to_test(tiny_index):
    cfg = tiny_index["config"]
    _, idx = tiny_index["run"]()
    stn = int(idx["stn"].iloc[0])
    _, held = tiny_index["run"]({**cfg["split"], "holdout_stations": [stn]})
    assert (held.loc[held["stn"] == stn, "split"] == "test").all()
    assert set(held.loc[held["stn"] != stn, "split"]) == set(idx.loc[idx["stn"] != stn, "split"])
    tiny_index["run"]()  # leave the shared index as the other tests expect


def test_time_block_and_held_out_stations_follow_the_scheme_rule(tiny_index):
    cfg = tiny_index["config"]
    _, idx = tiny_index["run"]()
    stn = int(idx["stn"].iloc[0])
    split_cfg = {**cfg["split"], "holdout_stations": [stn], "holdout_station_fraction": 0.3,
                 "time_block_start": "2024-04-03"}
    summary, idx = tiny_index["run"](split_cfg)
    day = pd.to_datetime(idx["time"], unit="s").dt.strftime("%Y%m%d")
    held = held_out_station(idx["stn"], split_cfg)
    assert (idx.loc[day >= "20240403", "split"] == "test").all()
    assert (idx.loc[held, "split"] == "test").all() and held.any() and not held.all()
    want = assign_splits(idx["stn"], day, split_cfg)
    assert idx["split"].tolist() == want["split"].tolist()
    by_scheme = want.loc[want["split"] == "test", "scheme"].value_counts()
    assert summary["test_samples_by_scheme"] == {s: int(by_scheme.get(s, 0)) for s in SCHEMES}
    assert sum(summary["test_samples_by_scheme"].values()) == summary["samples_by_split"]["test"]
    # every sample in exactly one chunk, the one of its split and day; a test chunk on every day (stations held out)
    plan = Plan.from_config({**cfg, "split": split_cfg, "chunking": {"period": "D"}})
    assert {k for s, k in plan.chunks if s == "test"} == set(plan.keys)
    assert set(zip(idx["split"], idx["chunk"].astype(str), strict=True)) <= set(plan.chunks)
    assert idx["row"].is_unique
    tiny_index["run"]()  # leave the shared index as the other tests expect


def test_slot_minutes_follow_the_input_kind():
    from ta2d.ingest.archive import slot_minutes

    assert slot_minutes({"kind": "l1b", "l1b": {"slot_minutes": [0, 30]}, "calibrated": {}}) == [0, 30]
    assert slot_minutes({"kind": "calibrated", "l1b": {"slot_minutes": [0, 30]}, "calibrated": {}}) == [0]
    assert slot_minutes({"kind": "calibrated", "l1b": {}, "calibrated": {"slot_minutes": [10]}}) == [10]
