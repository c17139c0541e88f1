"""The chunk field `background` (inputs.background): the reanalysis at each sample's pixel and slot, against an
independent bilinear / linear-in-time / lapse-rate computation on CDS-layout files written by tests/fakes.py; a
missing hour rejects exactly the samples that need it; the statistics gain its mean and std; which t2m files a
chunk job needs, from their names."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from fakes import chunk_from_manifest, write_cds_orography, write_cds_t2m

from ta2d.chunks.contract import open_chunk, save_tensors
from ta2d.chunks.inspect import contract_problems
from ta2d.chunks.stats import compute_stats
from ta2d.grid import Domain, linecol_to_lonlat
from ta2d.ingest.background import expand_paths, open_background_config
from ta2d.plan import background_t2m_files
from ta2d.static import read_static

DOMAIN = Domain(900, 929, 2700, 2739)  # 30 x 40 pixels, lat 36.7..37.5, lon 127.0..127.9
STEP = 0.1  # ERA5-Land's grid
LAT = np.round(np.arange(36.5, 37.71, STEP), 6)
LON = np.round(np.arange(126.8, 128.11, STEP), 6)
T0 = np.datetime64("2024-04-01T00:00", "ns")
HOURS = T0 + np.arange(-3, 6) * np.timedelta64(1, "h")  # 2024-03-31T21:00 .. 2024-04-01T05:00
SLOTS = ["2024-04-01T00:00", "2024-04-01T00:30", "2024-04-01T01:00", "2024-04-01T01:20", "2024-04-01T02:00"]
LAPSE_K_PER_KM = 5.0  # not the default: the config's value must reach the chunk


def unix(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").timestamp())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A scene with five slots (two between whole hours), its static file, and hourly t2m (one file per month, the
    March one holding the hours before 2024-04-01) with its orography: nonlinear fields, so bilinear weights are
    tested, not reproduced by a linear field."""
    d = tmp_path_factory.mktemp("background_chunks")
    rng = np.random.default_rng(11)
    nl, nc = DOMAIN.shape
    times = pd.DatetimeIndex(SLOTS)
    bt = rng.uniform(230, 300, (len(times), 10, nl, nc)).astype(np.float32)
    bt[3, 2, 12, 12] = np.nan  # slot 01:20, pixel (912, 2712): a NaN in the patch of the station at (914, 2714)
    rf = rng.uniform(0, 1, (len(times), 6, nl, nc)).astype(np.float32)
    xr.Dataset(
        {"bt": (("time", "bt_channel", "line", "column"), bt),
         "rf": (("time", "rf_channel", "line", "column"), rf),
         "sza": (("time", "line", "column"), rng.uniform(0, 120, (len(times), nl, nc)).astype(np.float32)),
         "status": (("time",), np.array(["ok"] * len(times)))},
        coords={"time": times, "line": DOMAIN.lines, "column": DOMAIN.columns},
    ).to_netcdf(d / "scene.nc", engine="h5netcdf")
    dem = rng.uniform(0, 1500, DOMAIN.shape).astype(np.float32)
    xr.Dataset({"dem": (("line", "column"), dem),
                "land_sea_mask": (("line", "column"), np.ones(DOMAIN.shape, np.float32)),
                "landcover": (("line", "column"), np.full(DOMAIN.shape, 5, np.uint8))},
               coords={"line": DOMAIN.lines, "column": DOMAIN.columns}).to_netcdf(d / "static.nc", engine="h5netcdf")
    t2m = (280 + rng.normal(0, 4, (len(HOURS), LAT.size, LON.size))).astype(np.float32)
    orography = rng.uniform(0, 900, (LAT.size, LON.size))
    march = HOURS < T0
    write_cds_t2m(d / "t2m_202403.nc", t2m[march], HOURS[march], LAT, LON)
    write_cds_t2m(d / "t2m_202404.nc", t2m[~march], HOURS[~march], LAT, LON)
    write_cds_orography(d / "orography.nc", orography, LAT, LON)
    # the same April without its 01:00 hour
    keep = ~march & (HOURS != np.datetime64("2024-04-01T01:00", "ns"))
    (d / "gap").mkdir()
    write_cds_t2m(d / "gap" / "t2m_202404.nc", t2m[keep], HOURS[keep], LAT, LON)
    return {"dir": d, "scene": d / "scene.nc", "static": read_static(d / "static.nc", DOMAIN), "dem": dem,
            "t2m": t2m, "orography": orography,
            "config": {"t2m": str(d / "t2m_*.nc"), "orography": str(d / "orography.nc"),
                       "lapse_rate_k_per_km": LAPSE_K_PER_KM},
            "gap": {"t2m": str(d / "gap" / "t2m_*.nc"), "orography": str(d / "orography.nc"),
                    "lapse_rate_k_per_km": LAPSE_K_PER_KM}}


PIXELS = [(905, 2705), (914, 2714), (920, 2733), (909, 2726)]


def manifest(path) -> pd.DataFrame:
    """One station at each of PIXELS, reporting at every slot."""
    rows = [{"row": len(SLOTS) * i + k + 1, "stn": 100 + i, "time": unix(slot), "ta_c": 10.0 + i, "line": line,
             "column": col, "elev_m": 50.0 * i}
            for i, (line, col) in enumerate(PIXELS) for k, slot in enumerate(SLOTS)]
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def expected_background(s, line: int, col: int, time: int) -> float:
    """The reanalysis at a pixel and time, computed here: the pixel centre's lat/lon, the four surrounding grid
    points' bilinear weights, each hour corrected from the interpolated orography to the pixel DEM, then linear in
    time between the two hours (°C)."""
    lon, lat = linecol_to_lonlat(line, col)
    fi, fj = (float(lat) - LAT[0]) / STEP, (float(lon) - LON[0]) / STEP
    i, j = math.floor(fi), math.floor(fj)
    wy, wx = fi - i, fj - j
    weights = {(i, j): (1 - wy) * (1 - wx), (i, j + 1): (1 - wy) * wx, (i + 1, j): wy * (1 - wx),
               (i + 1, j + 1): wy * wx}
    dem = float(s["dem"][line - DOMAIN.first_line, col - DOMAIN.first_column])
    hours = (time - unix("2024-03-31T21:00")) / 3600.0  # index into HOURS
    h0, w1 = math.floor(hours), hours - math.floor(hours)

    def corrected(h):
        t = sum(w * float(s["t2m"][h, a, b]) for (a, b), w in weights.items())
        z = sum(w * float(s["orography"][a, b]) for (a, b), w in weights.items())
        return t - LAPSE_K_PER_KM / 1000.0 * (dem - z)

    value = corrected(h0) if w1 == 0 else (1 - w1) * corrected(h0) + w1 * corrected(h0 + 1)
    return value - 273.15


def test_chunk_background_equals_an_independent_interpolation(inputs, tmp_path):
    s = inputs
    table = manifest(tmp_path / "m.csv")
    background = open_background_config(s["config"], "2024-04-01", "2024-04-01")
    assert [p.split("/")[-1] for p in background.files] == ["t2m_202404.nc"]  # the chunk's month only
    counts = chunk_from_manifest(tmp_path / "m.csv", s["scene"], s["static"], 9, tmp_path / "train_chunk_x.pt",
                                 background=background)
    assert counts == {"n_rows": len(table), "n_samples": len(table) - 1, "n_rejected": 1}  # the NaN patch
    d = open_chunk(tmp_path / "train_chunk_x.pt")
    assert contract_problems(d) == []
    assert d["background"].dtype == torch.float32 and d["background"].shape == d["y"].shape
    for k in range(len(d["y"])):
        line, col = (int(v) for v in d["pixel"][k])
        want = expected_background(s, line, col, int(d["time"][k]))
        assert float(d["background"][k]) == pytest.approx(want, abs=2e-4), (line, col, int(d["time"][k]))
    # at the pixel, not the station: a station's height above its pixel leaves its background alone
    offsets = d["elev"] - torch.from_numpy(s["dem"][d["pixel"][:, 0] - DOMAIN.first_line,
                                                     d["pixel"][:, 1] - DOMAIN.first_column])
    assert offsets.abs().max() > 10
    rejects = pd.read_csv(tmp_path / "train_chunk_x.rejects.csv")
    assert rejects["reason"].tolist() == ["nan_in_patch"]


def test_a_missing_hour_rejects_exactly_the_samples_that_need_it(inputs, tmp_path):
    s = inputs
    table = manifest(tmp_path / "m.csv")
    background = open_background_config(s["gap"], "2024-04-01", "2024-04-01")
    counts = chunk_from_manifest(tmp_path / "m.csv", s["scene"], s["static"], 9, tmp_path / "train_chunk_x.pt",
                                 background=background)
    # 00:30 needs 01:00 as its second hour, 01:00 and 01:20 their first: 3 slots x 4 stations, one of them the
    # NaN patch (a row gets one reason: the patch's)
    needs_gap = {unix(t) for t in ("2024-04-01T00:30", "2024-04-01T01:00", "2024-04-01T01:20")}
    nan_row = table[(table["stn"] == 101) & (table["time"] == unix("2024-04-01T01:20"))]["row"].item()
    rejects = pd.read_csv(tmp_path / "train_chunk_x.rejects.csv")
    no_bg = rejects[rejects["reason"] == "no_background"]
    want = table[table["time"].isin(needs_gap) & (table["row"] != nan_row)]
    assert sorted(no_bg["row"]) == sorted(want["row"])
    assert no_bg["detail"].str.startswith("background: no hour 2024-04-01T01:00 in ").all()
    assert rejects[rejects["reason"] != "no_background"]["row"].tolist() == [nan_row]
    assert counts == {"n_rows": len(table), "n_samples": len(table) - len(want) - 1, "n_rejected": len(want) + 1}
    d = open_chunk(tmp_path / "train_chunk_x.pt")
    assert contract_problems(d) == [] and torch.isfinite(d["background"]).all()
    assert set(d["time"].tolist()) == {unix("2024-04-01T00:00"), unix("2024-04-01T02:00")}
    index = pd.read_csv(tmp_path / "train_chunk_x.index.csv")
    assert len(index) == counts["n_samples"]
    full = open_background_config(s["config"], "2024-04-01", "2024-04-01")
    for k in range(len(d["y"])):  # the kept samples have the values of the complete files
        line, col = (int(v) for v in d["pixel"][k])
        assert float(d["background"][k]) == pytest.approx(
            float(full.at_pixels(s["static"], [line], [col], [int(d["time"][k])])[0][0]), abs=1e-5)


def test_without_a_background_the_chunk_has_no_field(inputs, tmp_path):
    s = inputs
    manifest(tmp_path / "m.csv")
    chunk_from_manifest(tmp_path / "m.csv", s["scene"], s["static"], 9, tmp_path / "train_chunk_x.pt")
    d = open_chunk(tmp_path / "train_chunk_x.pt")
    assert "background" not in d and contract_problems(d) == []
    assert "background_mean" not in compute_stats([tmp_path / "train_chunk_x.pt"])


def test_contract_checks_the_optional_field_only_when_present(inputs, tmp_path):
    s = inputs
    manifest(tmp_path / "m.csv")
    chunk_from_manifest(tmp_path / "m.csv", s["scene"], s["static"], 9, tmp_path / "train_chunk_x.pt",
                        background=open_background_config(s["config"]))
    d = dict(open_chunk(tmp_path / "train_chunk_x.pt"))
    assert contract_problems(d) == []
    assert contract_problems({**d, "background": d["background"].double()}) == [
        "key background: dtype torch.float64, want torch.float32"]
    assert contract_problems({**d, "background": d["background"][:-1]})[0].startswith("key background: shape")
    bad = d["background"].clone()
    bad[0] = float("nan")
    assert contract_problems({**d, "background": bad}) == ["key background: 1 non-finite values"]


def test_stats_gain_the_background_mean_and_std(inputs, tmp_path):
    s = inputs
    manifest(tmp_path / "m.csv")
    paths = []
    for k, days in enumerate((("2024-04-01", "2024-04-01"), (None, None))):
        paths.append(tmp_path / f"train_chunk_{k}.pt")
        chunk_from_manifest(tmp_path / "m.csv", s["scene"], s["static"], 9, paths[-1],
                            background=open_background_config(s["config"], *days))
    values = np.concatenate([open_chunk(p)["background"].numpy() for p in paths]).astype(np.float64)
    stats = compute_stats(paths)
    assert stats["background_mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert stats["background_std"] == pytest.approx(values.std(), rel=1e-6)
    without = tmp_path / "train_chunk_none.pt"
    save_tensors({k: v for k, v in open_chunk(paths[0]).items() if k != "background"}, without)
    with pytest.raises(ValueError, match="with and without inputs.background"):
        compute_stats([paths[0], without])


def test_which_t2m_files_a_chunk_needs(tmp_path):
    monthly = [str(tmp_path / f"era5land_t2m_2024{m:02d}.nc") for m in (3, 4, 5)]
    for p in monthly:
        open(p, "w").close()
    pattern = expand_paths(str(tmp_path / "era5land_t2m_*.nc"))
    assert background_t2m_files(pattern) == monthly  # no days: all, sorted by name
    assert background_t2m_files(pattern, "2024-04-01", "2024-04-07") == monthly[1:2]
    # the last day of a month needs the next month's first hour (a slot after 23:00 interpolates towards it)
    assert background_t2m_files(pattern, "2024-04-29", "2024-04-30") == monthly[1:]
    assert background_t2m_files(pattern, "20240331", "20240331") == monthly[:2]
    assert background_t2m_files([monthly[0], monthly[2]], "2024-04-10", "2024-04-12") == []
    daily = [f"t2m_2024-04-{d:02d}.nc" for d in (1, 2, 3)]
    assert background_t2m_files(daily, "2024-04-02", "2024-04-02") == daily[1:]
    # names that do not tell the hours inside (one without a date, one with two): every file
    assert background_t2m_files(["t2m.nc", "t2m_202404.nc"], "2024-04-02", "2024-04-02") == ["t2m.nc",
                                                                                             "t2m_202404.nc"]
    both = ["t2m_202401_202406.nc", "t2m_202407_202412.nc"]
    assert background_t2m_files(both, "2024-04-02", "2024-04-02") == both
