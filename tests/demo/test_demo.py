"""The demo generator: real-format files whose decoded values equal the known truth, and every
planted defect present where defects.json says it is.

Decoding here is a deliberately plain, independent reference (notes section 1.3), not ta2d's reader.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fakes import make_tiny_demo

from ta2d.channels import ALL_CHANNELS, CHANNELS
from ta2d.demo.l1b_writer import encode_counts
from ta2d.demo.static import Window, static_fields
from ta2d.demo.truth import TruthModel
from ta2d.grid import Domain, lonlat_to_linecol

J2000 = dt.datetime(2000, 1, 1, 12, tzinfo=dt.UTC)
# Effective wavenumbers (cm-1) from docs/gk2a-format.md#the-16-channels, typed in independently.
WAVENUMBER = {
    "sw038": 2612.677,
    "wv063": 1617.609,
    "wv069": 1441.575,
    "wv073": 1365.250,
    "ir087": 1164.949,
    "ir096": 1039.960,
    "ir105": 966.153,
    "ir112": 891.713,
    "ir123": 810.609,
    "ir133": 753.591,
}
VALID_BITS = {"vi004": 11, "vi005": 11, "nr016": 11, "vi006": 12, "nr013": 12, "wv063": 12, "sw038": 14}


@pytest.fixture(scope="module")
def demo(tiny_demo):
    """The session's tiny demo (conftest.py: config/test/tiny.yaml, 3 days, 6 stations) and its defects."""
    defects = json.loads((Path(tiny_demo["config"]["demo"]["out_dir"]) / "defects.json").read_text())["records"]
    return {**tiny_demo, "defects": defects}


def _window(config) -> Window:
    return Window.around(Domain.from_config(config["domain"]), config["demo"]["margin_px"])


def _num(v) -> float:
    return float(np.asarray(v).ravel()[0])


def _slots(config):
    period = config["period"]
    return pd.date_range(f"{period['start']} 00:00", f"{period['end']} 23:00", freq="h", tz="UTC")


def _path(config, slot, channel) -> Path:
    res = {0.5: "005", 1.0: "010", 2.0: "020"}[CHANNELS[channel].resolution_km]
    l1b = config["inputs"]["l1b"]
    return (
        Path(l1b["dir"])
        / slot.strftime("%Y%m/%d/%H")
        / (f"gk2a_ami_le1b_{channel}_fd{res}ge_{slot.strftime('%Y%m%d%H%M')}.nc")
    )


def reference_decode(path: Path, channel: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """raw file -> (physical value with NaN for flagged/invalid pixels, masked counts, global attrs)."""
    with h5py.File(path, "r") as f:
        var = f["image_pixel_values"]
        raw = var[...]
        bits = int(_num(var.attrs["number_of_valid_bits_per_pixel"]))
        a = {k: f.attrs[k] for k in f.attrs}
    count = (raw & (2**bits - 1)).astype(np.float64)
    value = calibrate(count, a, channel)
    value[(raw >> 14) != 0] = np.nan
    return value, count, a


def calibrate(count: np.ndarray, a: dict, channel: str) -> np.ndarray:
    radiance = _num(a["DN_to_Radiance_Gain"]) * count + _num(a["DN_to_Radiance_Offset"])
    if channel not in WAVENUMBER:
        return radiance * _num(a["Radiance_to_Albedo_c"])
    nu = 100.0 * WAVENUMBER[channel]
    c, h, k = _num(a["light_speed"]), _num(a["Plank_constant_h"]), _num(a["Boltzmann_constant_k"])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_eff = (h * c * nu / k) / np.log(2 * h * c**2 * nu**3 / (radiance * 1e-5) + 1)
    value = (
        _num(a["Teff_to_Tbb_c0"]) + _num(a["Teff_to_Tbb_c1"]) * t_eff + _num(a["Teff_to_Tbb_c2"]) * t_eff**2
    )
    return np.where(radiance > 0, value, np.nan)


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    n, m = a.shape
    return a.reshape(n // f, f, m // f, f).mean(axis=(1, 3))


def test_encoder_reproduces_worked_numbers():
    # notes 1.3: IR105 count 3508 <-> 291.54 K, 6198 <-> 246.95 K; VI005 146 <-> 0.072, 539 <-> 0.296
    assert encode_counts("ir105", np.array([291.54, 246.95])).tolist() == [3508, 6198]
    assert encode_counts("vi005", np.array([0.072, 0.296])).tolist() == [146, 539]


def test_every_file_exists_with_the_real_name(demo):
    config = demo["config"]
    missing = {r["file"] for r in demo["defects"] if r["kind"] == "missing_file"}
    assert missing
    # the labelled period's slots and those of the unlabelled days after it (demo.unlabelled_days)
    end = pd.Timestamp(config["period"]["end"]) + pd.Timedelta(days=config["demo"]["unlabelled_days"])
    slots = pd.date_range(f"{config['period']['start']} 00:00", f"{end:%Y-%m-%d} 23:00", freq="h", tz="UTC")
    assert config["demo"]["unlabelled_days"] == 1 and demo["summary"]["unlabelled_days"] == [f"{end:%Y-%m-%d}"]
    expected = [_path(config, s, c) for s in slots for c in ALL_CHANNELS]
    for p in expected:
        assert p.exists() == (str(p) not in missing), p
    written = sorted(Path(config["inputs"]["l1b"]["dir"]).rglob("*.nc"))
    assert len(written) == len(expected) - len(missing) == demo["summary"]["n_files"]
    assert _path(config, _slots(config)[3], "vi006").name == "gk2a_ami_le1b_vi006_fd005ge_202404010300.nc"


def test_write_slots_writes_the_generators_own_files(demo, tmp_path):
    """ta2d.demo.write_slots (new slots landing, benchmarks/bench_nrt.py) writes byte for byte what generate_demo
    wrote for the same slot, and the stations' observations of its hour."""
    from ta2d.demo import write_slots
    from ta2d.index.labels import read_labels

    config = demo["config"]
    end = pd.Timestamp(config["period"]["end"]) + pd.Timedelta(days=1)  # the unlabelled day: no defects planted
    slot = pd.Timestamp(f"{end:%Y-%m-%d} 05:00", tz="UTC")
    other = {**config, "inputs": {**config["inputs"], "l1b": {**config["inputs"]["l1b"], "dir": str(tmp_path / "raw")}}}
    assert write_slots(other, [slot], labels_path=tmp_path / "obs.csv") == len(ALL_CHANNELS)
    for ch in ALL_CHANNELS:
        assert _path(other, slot, ch).read_bytes() == _path(config, slot, ch).read_bytes(), ch
    labels, rejects = read_labels(tmp_path / "obs.csv")
    assert rejects.empty and set(labels["time"]) == {int(slot.timestamp())}
    assert len(labels) == config["demo"]["n_stations"]


def test_attributes_have_the_real_messy_types(demo):
    slot = _slots(demo["config"])[5]
    window = _window(demo["config"])
    with h5py.File(_path(demo["config"], slot, "ir105"), "r") as f:
        a = f.attrs
        assert a["channel_center_wavelength"] == b"10.5"  # rounded nominal name: a trap for readers
        assert a["projection_type"] == b"GEOS"
        assert a["number_of_columns"].shape == (1,) and int(a["number_of_columns"][0]) == window.n_columns
        assert np.ndim(a["number_of_lines"]) == 0 and int(a["number_of_lines"]) == window.n_lines
        assert a["lfac"] < 0 and a["cfac"][0] == pytest.approx(20425338.903339352)
        assert a["coff"] == 2750.5 - (window.first_column - 1)
        assert a["loff"][0] == 2750.5 - (window.first_line - 1)
        assert a["sub_longitude"] == pytest.approx(2.2375121, abs=1e-7)
        assert a["nominal_satellite_height"] == 42164000.0
        assert "Plank_constant_h" in a and "Teff_to_Tbb_c2" in a and "Radiance_to_Albedo_c" not in a
        assert a["DN_to_Radiance_Gain"][0] < 0
        start = J2000 + dt.timedelta(seconds=float(a["observation_start_time"]))
        assert 20 <= (start - slot.to_pydatetime()).total_seconds() <= 40
        v = f["image_pixel_values"]
        assert v.dtype == np.uint16 and v.compression == "gzip"
        assert int(v.attrs["number_of_total_bits_per_pixel"][()]) == 16
        assert v.attrs["channel_name"] == b"IR105"
    for ch in ALL_CHANNELS:
        with h5py.File(_path(demo["config"], slot, ch), "r") as f:
            assert int(f["image_pixel_values"].attrs["number_of_valid_bits_per_pixel"]) == VALID_BITS.get(
                ch, 13
            )
            f_ = CHANNELS[ch].factor
            assert f["image_pixel_values"].shape == (f_ * window.n_lines, f_ * window.n_columns)
            # nested grids: the file's loff/coff put its first fine pixel at FD fine line f*(L0-1)+1
            off = {1: 2750.5, 2: 5500.5, 4: 11000.5}[f_]
            assert _num(f.attrs["coff"]) == off - f_ * (window.first_column - 1)
    ds = xr.open_dataset(_path(demo["config"], slot, "vi006"), engine="h5netcdf", mask_and_scale=False)
    assert ds["image_pixel_values"].dims == ("dim_image_y", "dim_image_x")
    assert ds.attrs["channel_spatial_resolution"] == "0.5"


@pytest.mark.parametrize("hour", [3, 15])  # 12 KST (day) and 00 KST (night)
def test_reference_decoding_recovers_the_truth(demo, hour):
    config = demo["config"]
    slot = _slots(config)[24 + hour]
    window = _window(config)
    static = static_fields(window, config["demo"]["seed"])
    truth = TruthModel(config["demo"]["seed"], config["demo"]["cloud_fraction"]).observed(slot.timestamp(), static)
    for ch in ALL_CHANNELS:
        path = _path(config, slot, ch)
        if not path.exists():
            continue
        value, count, a = reference_decode(path, ch)
        f = CHANNELS[ch].factor
        # tolerance: what half a count is worth at this value (quantisation)
        half = np.maximum(
            np.abs(calibrate(count + 0.5, a, ch) - value), np.abs(calibrate(count - 0.5, a, ch) - value)
        )
        if CHANNELS[ch].kind == "emissive":
            gain, offset = _num(a["DN_to_Radiance_Gain"]), _num(a["DN_to_Radiance_Offset"])
            tol = half * 1.01 + 1e-4
            ok = np.isfinite(value) & (count > 0) & (count < np.ceil(-offset / gain) - 1)  # not clipped
        else:
            value, tol = block_mean(value, f), block_mean(half, f) * 1.01 + 1e-7
            ok = np.isfinite(value)
        assert ok.mean() > 0.97, ch
        err = np.abs(value - truth[ch])
        assert (err[ok] <= tol[ok]).all(), (ch, float(np.nanmax(err[ok] - tol[ok])))
    # The trap: inverting IR105 at the rounded 10.5 um makes it ~1.5 K too cold.
    value, _, _ = reference_decode(_path(config, slot, "ir105"), "ir105")
    WAVENUMBER["ir105"], saved = 1e4 / 10.5, WAVENUMBER["ir105"]
    try:
        wrong, _, _ = reference_decode(_path(config, slot, "ir105"), "ir105")
    finally:
        WAVENUMBER["ir105"] = saved
    assert 1.2 < np.nanmedian(value - wrong) < 1.9


def test_fine_channels_need_block_means(demo):
    """Sub-pixels differ (zero-mean texture): taking one sub-pixel instead of the mean is wrong."""
    slot = _slots(demo["config"])[27]
    value, _, _ = reference_decode(_path(demo["config"], slot, "vi006"), "vi006")
    first = value[::4, ::4]
    assert np.nanmax(np.abs(first - block_mean(value, 4))) > 0.003


def test_static_file(demo):
    ds = xr.open_dataset(demo["config"]["inputs"]["static"]["path"], engine="h5netcdf")
    window = _window(demo["config"])
    assert ds["line"].dtype == np.int32 and ds["line"].values[0] == window.first_line
    assert ds["column"].values[-1] == window.first_column + window.n_columns - 1
    assert ds["dem"].dtype == np.float32 and float(ds["dem"].min()) >= 0
    assert ds["land_sea_mask"].dtype == np.float32 and set(np.unique(ds["land_sea_mask"])) <= {0.0, 1.0}
    lc = ds["landcover"].values
    assert lc.dtype == np.uint8 and set(np.unique(lc)) <= set(range(1, 18)) | {255}
    water = lc == 17
    assert (ds["land_sea_mask"].values[water] == 0).all()


def test_station_table_is_cp949_and_consistent(demo):
    path = Path(demo["config"]["inputs"]["stations"]["path"])
    raw = path.read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    meta = pd.read_csv(path, encoding="cp949", dtype={"종료일": str})
    assert list(meta.columns) == [
        "지점",
        "시작일",
        "종료일",
        "지점명",
        "지점주소",
        "관리관서",
        "위도",
        "경도",
        "노장해발고도(m)",
        "기온계(관측장비지상높이(m))",
    ]
    domain = Domain.from_config(demo["config"]["domain"])
    line, col = lonlat_to_linecol(meta["경도"].to_numpy(), meta["위도"].to_numpy())
    line, col = np.rint(line).astype(int), np.rint(col).astype(int)
    inside = domain.contains(line, col, margin=4)
    out = {r["stn"] for r in demo["defects"] if r["kind"] == "out_of_domain_station"}
    assert set(meta.loc[~inside, "지점"]) == out and len(out) == 1
    relocated = [r for r in demo["defects"] if r["kind"] == "relocated_station"]
    assert len(relocated) == 1
    rows = meta[meta["지점"] == relocated[0]["stn"]].sort_values("시작일")
    assert len(rows) == 2
    end = dt.date.fromisoformat(rows["종료일"].iloc[0])
    assert dt.date.fromisoformat(rows["시작일"].iloc[1]) == end + dt.timedelta(days=1)
    assert pd.isna(rows["종료일"].iloc[1])
    # the station pixel's DEM is close to the station elevation (lapse-rate term stays small)
    static = xr.open_dataset(demo["config"]["inputs"]["static"]["path"], engine="h5netcdf")
    dem = static["dem"].sel(line=xr.DataArray(line[inside]), column=xr.DataArray(col[inside])).values
    assert np.abs(meta.loc[inside, "노장해발고도(m)"].to_numpy() - dem).max() < 80


def test_labels_are_kst_and_match_the_truth(demo):
    config = demo["config"]
    labels = pd.read_csv(
        config["inputs"]["labels"]["path"], encoding="cp949", dtype=str, keep_default_na=False
    )
    assert list(labels.columns) == ["지점", "지점명", "일시", "기온(°C)", "기온 QC플래그"]
    truth = pd.read_csv(Path(config["demo"]["out_dir"]) / "truth" / "labels_truth.csv")
    rejects = pd.read_csv(Path(config["demo"]["out_dir"]) / "truth" / "expected_rejects.csv")
    good = labels.drop(index=rejects["csv_line"] - 2)
    kst = pd.to_datetime(good["일시"], format="%Y-%m-%d %H:%M")
    first, last = (pd.Timestamp(config["period"][k]) for k in ("start", "end"))
    assert kst.min() == first + pd.Timedelta(hours=9) and kst.max() == last + pd.Timedelta(hours=24 + 8)
    time_utc = (kst - pd.Timestamp("1970-01-01 09:00")) // pd.Timedelta(seconds=1)  # KST = UTC + 9 h
    observed = pd.DataFrame(
        {
            "stn": good["지점"].astype(int).to_numpy(),
            "time_utc": time_utc.to_numpy(),
            "ta": good["기온(°C)"].astype(float).to_numpy(),
        }
    )
    merged = observed.merge(truth, on=["stn", "time_utc"])
    assert len(merged) == len(good)
    # label = true TA at the station + its siting error (one per station) + the shared error + white noise
    white = merged["ta"] - merged["ta_true_c"] - merged["siting_c"] - merged["shared_c"]
    sigma = config["demo"].get("noise_sigma_k", 0.5)
    assert abs(white.std() - sigma) < 0.1 and abs(white.mean()) < 0.1
    assert (merged.groupby("stn")["siting_c"].nunique() == 1).all()
    assert 0.2 < merged["siting_c"].drop_duplicates().std() < 1.0
    assert 0.2 < np.sqrt((merged["shared_c"] ** 2).mean()) < 1.0
    rmse = np.sqrt(np.mean((merged["ta"] - merged["ta_true_c"]) ** 2))
    assert demo["summary"]["station_error_rmse_k"] == pytest.approx(rmse, abs=0.02)
    # every expected reject is accounted for in demo.json
    assert demo["summary"]["n_label_rows"] == len(labels)
    assert demo["summary"]["expected_rejects"] == rejects["reason"].value_counts().to_dict()


def test_every_planted_defect_is_present(demo):
    config = demo["config"]
    labels = pd.read_csv(
        config["inputs"]["labels"]["path"], encoding="cp949", dtype=str, keep_default_na=False
    )
    static = xr.open_dataset(config["inputs"]["static"]["path"], engine="h5netcdf")
    domain = Domain.from_config(demo["config"]["domain"])
    kinds = {r["kind"] for r in demo["defects"]}
    assert {
        "missing_file",
        "corrupt_file",
        "out_of_domain_station",
        "invalid_landcover_station",
        "missing_ta",
        "duplicate_row",
        "unparseable_row",
        "error_pixel_in_patch",
        "off_disk_pixel_in_patch",
        "relocated_station",
        "background_flags",
    } <= kinds
    for r in demo["defects"]:
        kind = r["kind"]
        row = labels.iloc[r["csv_line"] - 2] if "csv_line" in r else None
        if kind == "missing_file":
            assert not Path(r["file"]).exists()
        elif kind == "corrupt_file":
            with pytest.raises(OSError):
                h5py.File(r["file"], "r")
        elif kind in ("error_pixel_in_patch", "off_disk_pixel_in_patch"):
            window = _window(config)
            with h5py.File(r["file"], "r") as f:
                raw = int(
                    f["image_pixel_values"][
                        r["pixel"][0] - window.first_line, r["pixel"][1] - window.first_column
                    ]
                )
            assert (raw >> 14 == 3) if kind == "error_pixel_in_patch" else raw == 0x8000
        elif kind == "missing_ta":
            assert row["기온(°C)"] == "" and row["기온 QC플래그"] == "9"
        elif kind == "duplicate_row":
            assert (labels.iloc[r["csv_line"] - 3] == row).all()
        elif kind == "unparseable_row":
            assert row["일시"].endswith("25:00") or row["기온(°C)"] == "ERR"
        elif kind == "invalid_landcover_station":
            assert int(static["landcover"].sel(line=r["pixel"][0], column=r["pixel"][1])) == 255
        elif kind == "out_of_domain_station":
            assert not domain.contains(*r["pixel"])
    # background flags and padding bits exist in an ordinary file
    slot = _slots(config)[30]
    with h5py.File(_path(config, slot, "ir112"), "r") as f:
        raw = f["image_pixel_values"][...]
    assert ((raw >> 14) == 1).sum() >= 1 and ((raw >> 14) == 3).sum() >= 1
    assert ((raw & 0x3FFF) >> 13).sum() >= 1  # a padding bit above the 13 valid bits


def test_generation_is_deterministic(demo, tmp_path):
    config = make_tiny_demo(tmp_path, demo={"workers": 1})["config"]  # the session's demo was written by several
    for key in ("labels", "stations"):
        assert (
            Path(config["inputs"][key]["path"]).read_bytes()
            == Path(demo["config"]["inputs"][key]["path"]).read_bytes()
        )
    slot = _slots(config)[10]
    for ch in ("ir105", "vi006"):
        with h5py.File(_path(config, slot, ch)) as a, h5py.File(_path(demo["config"], slot, ch)) as b:
            assert np.array_equal(a["image_pixel_values"][...], b["image_pixel_values"][...])


# --- the reanalysis background (ta2d.demo.reanalysis) ------------------------------------------------------


def test_reanalysis_cells_are_the_mean_land_truth_lagged_by_the_configured_hours(demo):
    """With no error and no elevation bias a cell is the plain mean of the truth TA over its land pixels (computed
    here cell by cell), an hour late; cells under half land are missing, as ERA5-Land's sea."""
    from ta2d.demo import _world
    from ta2d.demo.reanalysis import ReanalysisSettings, reanalysis_fields

    _, _, static, model, *_ = _world(demo["config"])
    hours = _slots(demo["config"])[5:7]
    settings = ReanalysisSettings(error_k=0.0, elevation_bias_k_per_km=0.0, lag_hours=1)
    fields = reanalysis_fields(model, static, hours, settings, seed=0)
    grid, t2m, orography = fields.grid, fields.t2m, fields.orography
    truth = model.air_temperature((hours[0] - pd.Timedelta(hours=1)).timestamp(), static)
    # ERA5-Land's cells: 0.1 degree, edges on multiples of 0.1 degree
    cell_i = np.floor((static.lat - np.floor(static.lat.min() * 10) / 10) * 10).astype(int)
    cell_j = np.floor((static.lon - np.floor(static.lon.min() * 10) / 10) * 10).astype(int)
    assert np.allclose(grid.lat[:2], np.floor(static.lat.min() * 10) / 10 + [0.05, 0.15])
    checked = 0
    for i in range(len(grid.lat)):
        for j in range(len(grid.lon)):
            in_cell = (np.clip(cell_i, 0, len(grid.lat) - 1) == i) & (np.clip(cell_j, 0, len(grid.lon) - 1) == j)
            land = in_cell & static.land
            if not in_cell.any() or 2 * land.sum() < in_cell.sum():
                assert np.isnan(t2m[0, i, j]) and np.isnan(orography[i, j])
                continue
            assert t2m[0, i, j] == pytest.approx(truth[land].mean() + 273.15, abs=1e-3)
            assert orography[i, j] == pytest.approx(static.dem[land].mean(), rel=1e-6)
            checked += 1
    assert checked > 20


def test_reanalysis_files_read_as_cds_downloads_and_err_like_a_reanalysis(demo):
    """The demo's files open with the reader of real CDS files; at the stations' pixels, height-corrected to the
    DEM, the background misses the truth by about what ERA5-Land misses station TA by (1-2 K)."""
    from ta2d.grid import linecol_to_lonlat
    from ta2d.ingest.background import open_background
    from ta2d.static import read_static

    config = demo["config"]
    background = open_background(config["inputs"]["background"]["t2m"], config["inputs"]["background"]["orography"])
    domain = Domain.from_config(config["domain"])
    static = read_static(config["inputs"]["static"]["path"], domain)
    truth = pd.read_csv(Path(config["demo"]["out_dir"]) / "truth" / "labels_truth.csv")
    truth = truth[truth["line"].between(domain.first_line, domain.last_line)
                  & truth["column"].between(domain.first_column, domain.last_column)]
    lon, lat = linecol_to_lonlat(truth["line"].to_numpy(), truth["column"].to_numpy())
    dem = static.dem[truth["line"] - domain.first_line, truth["column"] - domain.first_column]
    kelvin, reasons = background.at(lat, lon, pd.to_datetime(truth["time_utc"], unit="s", utc=True), dem)
    error = kelvin - 273.15 - truth["ta_pixel_c"].to_numpy()
    assert (reasons == "").mean() > 0.9
    rmse = np.sqrt(np.nanmean(error**2))
    assert 0.8 < rmse < 2.0, rmse


# --- the hidden boundary-layer anomaly and the floors per input set (ta2d.demo.truth, ta2d.demo.floors) ----------


def test_the_hidden_anomaly_changes_the_air_temperature_and_no_channel(demo):
    """Switching the hidden boundary-layer anomaly off changes TA by exactly it and leaves every channel, the skin
    temperature and the clouds as they were: no input can see it."""
    from ta2d.channels import BT_CHANNELS, RF_CHANNELS
    from ta2d.demo import _world
    from ta2d.demo.truth import TruthModel

    _, _, static, model, *_ = _world(demo["config"])
    quiet = TruthModel(model.seed, model.cloud_fraction, hidden_scale=0.0)
    for slot in _slots(demo["config"])[[3, 14]]:  # a night and a day hour
        t = slot.timestamp()
        loud, calm = model.fields(t, static), quiet.fields(t, static)
        hidden = model.boundary_layer_anomaly(t, static)
        assert np.sqrt(np.mean(hidden[static.land] ** 2)) > 0.3
        np.testing.assert_allclose(loud["ta"] - calm["ta"], hidden, atol=1e-4)
        for name in (*BT_CHANNELS, *RF_CHANNELS, "ts", "cloud"):
            np.testing.assert_array_equal(loud[name], calm[name])


def test_the_oracle_interpolates_the_background_as_the_reader_does(tmp_path):
    """ta2d.demo.floors.bilinear_on_grid (the background oracle's interpolation) equals the reader of CDS files on
    a field with missing (sea) cells, and is exact on a plane."""
    from ta2d.demo.floors import bilinear_on_grid
    from ta2d.demo.reanalysis import Grid, Reanalysis, write_reanalysis
    from ta2d.ingest.background import open_background

    lat, lon = np.round(np.arange(36.05, 37.0, 0.1), 6), np.round(np.arange(126.05, 127.5, 0.1), 6)
    plane = 280.0 + 3.0 * (lat[:, None] - 36.0) - 2.0 * (lon[None, :] - 126.0)
    field = plane.copy()
    field[2:4, 5:7] = np.nan  # sea
    hours = pd.date_range("2024-05-01", periods=1, freq="h", tz="UTC")
    fields = Reanalysis(Grid(lat, lon, np.zeros(1, int)), hours, field[None].astype(np.float32),
                        np.zeros_like(field), np.zeros((1, *field.shape), np.float32))
    write_reanalysis(str(tmp_path / "t2m_*.nc"), tmp_path / "orography.nc", fields)
    background = open_background(str(tmp_path / "t2m_*.nc"), tmp_path / "orography.nc")
    rng = np.random.default_rng(0)
    plat, plon = rng.uniform(36.06, 36.94, 400), rng.uniform(126.06, 127.44, 400)
    kelvin, _ = background.at(plat, plon, np.full(400, hours[0].to_datetime64()), np.zeros(400), 0.0)
    np.testing.assert_allclose(bilinear_on_grid(field, lat, lon, plat, plon), kelvin, atol=1e-3)
    exact = 280.0 + 3.0 * (plat - 36.0) - 2.0 * (plon - 126.0)
    np.testing.assert_allclose(bilinear_on_grid(plane, lat, lon, plat, plon), exact, atol=1e-9)


def test_the_station_correction_oracle_is_simple_kriging_on_a_known_case():
    """Two stations sharing one signal of variance s2, each with noise of variance n2: the oracle predicts a
    station's residual as s2 / (s2 + n2) times the other's (the simple-kriging weight)."""
    from ta2d.demo.floors import _kriged_residual

    rng = np.random.default_rng(1)
    n_hours, s2, n2 = 4000, 1.0, 0.25
    signal = rng.normal(0, np.sqrt(s2), n_hours)
    times = np.arange(n_hours) * 3600
    truth = pd.DataFrame({"stn": np.repeat([1, 2], n_hours), "time_utc": np.tile(times, 2)})
    residual = np.tile(signal, 2) + rng.normal(0, np.sqrt(n2), 2 * n_hours)
    predicted = _kriged_residual(truth, residual, np.tile(signal, 2), n2, np.array([1, 2]))
    weight = np.mean(signal**2) / (np.mean(signal**2) + n2)
    np.testing.assert_allclose(predicted[:n_hours], weight * residual[n_hours:], rtol=1e-9)
    np.testing.assert_allclose(predicted[n_hours:], weight * residual[:n_hours], rtol=1e-9)


def test_each_input_set_lowers_the_floor(demo):
    """demo.json's floors per input set: the satellite-only floor holds the hidden anomaly and every station error;
    the background takes part of the hidden anomaly away, the other stations' residuals more."""
    floors = demo["summary"]["observable_floor_k"]
    truth = pd.read_csv(Path(demo["config"]["demo"]["out_dir"]) / "truth" / "labels_truth.csv")
    for column in ("oracle_satellite_c", "oracle_background_c", "oracle_corrected_c"):
        assert truth[column].notna().all()
    np.testing.assert_allclose(truth["oracle_satellite_c"], truth["ta_true_c"] - truth["hidden_c"], atol=2e-4)
    for split in floors["satellite"]["by_split"]:
        sat, bg, corr = (floors[name]["by_split"][split] for name in ("satellite", "background", "corrected"))
        assert sat > bg > corr > 0.4, (split, sat, bg, corr)
