"""Inventory and scene building on a tiny archive of real-format L1B files (3 slots of one day)."""

from __future__ import annotations

import os

import h5netcdf
import numpy as np
import pandas as pd
import pytest
from fakes import L1B_DOMAIN, write_l1b

from ta2d.atomic import write_text_if_changed
from ta2d.channels import ALL_CHANNELS, BT_CHANNELS, RF_CHANNELS, l1b_filename
from ta2d.grid import Domain, domain_lonlat
from ta2d.ingest.inventory import (
    calibrated_period_inventory,
    inventory_text,
    l1b_inventory,
    l1b_period_inventory,
    read_inventory,
)
from ta2d.ingest.l1b import read_l1b
from ta2d.ingest.scene import SlotData, build_scene, build_scene_from_calibrated, read_scene, write_scene
from ta2d.periods import period_slots
from ta2d.solar import solar_zenith_deg

KEY, FREQ, MINUTES = "20240401", "D", [0]
SUBDIR = "%Y%m/%d/%H"
DOMAIN = L1B_DOMAIN
MISSING = ("vi004", "ir105")  # absent at 01:00
CORRUPT = "ir105"  # truncated at 02:00


def slot_field(hour):
    """A different field per slot, so slots cannot be mixed up unnoticed."""
    def field(channel, lines, cols):
        wave = np.sin(lines * 0.37 + hour) + np.cos(cols * 0.23)
        return 270.0 + 15.0 * wave if channel in BT_CHANNELS else 0.3 + 0.12 * wave
    return field


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    for hour in (0, 1, 2):
        stamp = f"2024040{1}{hour:02d}00"
        folder = raw / "202404" / "01" / f"{hour:02d}"
        folder.mkdir(parents=True)
        for channel in ALL_CHANNELS:
            if hour == 1 and channel in MISSING:
                continue
            path = folder / l1b_filename(channel, "ela", stamp)
            write_l1b(path, channel, field=slot_field(hour), stamp=stamp)
            if hour == 2 and channel == CORRUPT:
                path.write_bytes(path.read_bytes()[:300])
    # noise the inventory must ignore: another area, a non-L1B file, a slot of another day
    write_l1b(raw / "202404/01/00" / l1b_filename("ir105", "fd", "202404010000"), "ir105")
    (raw / "202404/01/00/README.txt").write_text("not data")
    other_day = raw / "202404/02/00"
    other_day.mkdir(parents=True)
    write_l1b(other_day / l1b_filename("ir105", "ela", "202404020000"), "ir105")
    return raw


@pytest.fixture(scope="module")
def l1b_cfg(archive):
    return {"dir": str(archive), "subdir": SUBDIR, "area": "ela", "slot_minutes": MINUTES}


@pytest.fixture(scope="module")
def scene(archive, l1b_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    inv = out / f"{KEY}.tsv"
    write_text_if_changed(inv, inventory_text(l1b_period_inventory(l1b_cfg, KEY, FREQ, "2024-04-01", "2024-04-01")))
    summary = build_scene(inv, archive, KEY, FREQ, MINUTES, "2024-04-01", "2024-04-01", DOMAIN,
                          out / f"{KEY}.nc", progress=False)
    return out / f"{KEY}.nc", summary


# --- inventory -----------------------------------------------------------------------------------------

def test_inventory_lists_only_the_period_slots(l1b_cfg):
    table = l1b_inventory(l1b_cfg, period_slots(KEY, FREQ, MINUTES))
    assert len(table) == 16 + 14 + 16
    assert set(table["slot"]) == {"202404010000", "202404010100", "202404010200"}
    assert table["path"].iloc[0].startswith("202404/01/00/gk2a_ami_le1b_")
    assert not table["path"].str.contains("_fd020ge_|README").any()
    assert (table["size"] > 0).all() and (table["mtime_ns"] > 0).all()
    assert len(l1b_inventory(l1b_cfg, period_slots("20240402", FREQ, MINUTES))) == 1
    assert len(l1b_inventory({**l1b_cfg, "dir": "/nonexistent"}, period_slots(KEY, FREQ, MINUTES))) == 0


def test_inventory_text_is_deterministic_and_round_trips(l1b_cfg, tmp_path):
    table = l1b_inventory(l1b_cfg, period_slots(KEY, FREQ, MINUTES))
    text = inventory_text(table)
    assert inventory_text(table.sample(frac=1.0, random_state=3)) == text
    assert text.splitlines()[0] == "slot\tchannel\tpath\tsize\tmtime_ns"
    path = tmp_path / "inv.tsv"
    path.write_text(text)
    back = read_inventory(path)
    assert inventory_text(back) == text


def test_write_if_changed_keeps_mtime(tmp_path):
    path = tmp_path / "sub" / "inv.tsv"
    assert write_text_if_changed(path, "a\tb\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # an old mtime, so a rewrite would show
    assert not write_text_if_changed(path, "a\tb\n")
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert write_text_if_changed(path, "a\tc\n")
    assert path.read_text() == "a\tc\n" and path.stat().st_mtime_ns != 1_000_000_000
    assert [p.name for p in path.parent.iterdir()] == ["inv.tsv"]  # no temp files left


# --- scene from L1B --------------------------------------------------------------------------------------

def test_scene_layout(scene):
    path, summary = scene
    with read_scene(path) as ds:
        assert dict(ds.sizes) == {"time": 24, "bt_channel": 10, "rf_channel": 6, "line": 4, "column": 5}
        assert list(ds.bt_channel.values) == list(BT_CHANNELS)
        assert list(ds.rf_channel.values) == list(RF_CHANNELS)
        assert ds.line.dtype == np.int32 and ds.line.values.tolist() == DOMAIN.lines.tolist()
        assert ds.column.values.tolist() == DOMAIN.columns.tolist()
        assert (pd.DatetimeIndex(ds.time.values) == period_slots(KEY, FREQ, MINUTES).tz_localize(None)).all()
        for name in ("bt", "rf", "sza", "lat", "lon"):
            assert ds[name].dtype == np.float32
        assert ds.bt.encoding["chunksizes"] == (1, 10, 4, 5)
        assert ds.rf.encoding["chunksizes"] == (1, 6, 4, 5) and ds.rf.encoding["zlib"]
        lon, lat = domain_lonlat(DOMAIN)
        np.testing.assert_allclose(ds.lat.values, lat, atol=1e-4)
        np.testing.assert_allclose(ds.lon.values, lon, atol=1e-4)
        assert ds.attrs["projection"] == "GEOS" and ds.attrs["sub_lon"] == 128.2
        assert ds.attrs["first_line"] == DOMAIN.first_line and ds.attrs["input_kind"] == "l1b"
        assert len(ds.attrs["source_files"].splitlines()) == 16 + 14 + 16
        assert "ta2d_version" in ds.attrs
    assert summary["n_slots"] == 24 and summary["n_ok"] == 1
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_scene_status_and_values(scene, archive):
    path, summary = scene
    with read_scene(path) as ds:
        status = ds.status.values.tolist()
        assert status[0] == "ok"
        assert status[1] == "missing_channel:ir105,vi004"
        assert status[2].startswith("unreadable:ir105:not a readable")
        assert status[3:] == ["no_files"] * 21
        assert summary["bad_slots"]["202404010100"] == status[1]
        for i in range(1, 24):
            assert np.isnan(ds.bt[i].values).all() and np.isnan(ds.rf[i].values).all()
        for channel in ALL_CHANNELS:
            var, stack = ("bt", "bt_channel") if channel in BT_CHANNELS else ("rf", "rf_channel")
            direct = read_l1b(archive / "202404/01/00" / l1b_filename(channel, "ela", "202404010000"), DOMAIN)
            np.testing.assert_array_equal(ds[var].sel({stack: channel}).values[0], direct.values)
        # SZA is geometry: every slot has it, at the slot time + 120 s
        lon, lat = domain_lonlat(DOMAIN)
        for i, t in enumerate(period_slots(KEY, FREQ, MINUTES)):
            expected = solar_zenith_deg(t.timestamp() + 120, lat, lon)
            np.testing.assert_allclose(ds.sza[i].values, expected, atol=1e-4)


def test_scene_without_any_file(tmp_path):
    inv = tmp_path / "empty.tsv"
    inv.write_text(inventory_text(l1b_inventory({"dir": str(tmp_path / "none"), "subdir": SUBDIR,
                                                 "area": "fd"}, period_slots(KEY, FREQ, MINUTES))))
    summary = build_scene(inv, tmp_path, KEY, FREQ, MINUTES, None, None, DOMAIN, tmp_path / "s.nc",
                          progress=False)
    assert summary["n_ok"] == 0 and set(summary["bad_slots"].values()) == {"no_files"}


def test_failed_build_leaves_no_file(tmp_path):
    def exploding(slot):
        if slot.hour == 3:
            raise RuntimeError("killed")
        return SlotData("no_files")

    out = tmp_path / "s.nc"
    with pytest.raises(RuntimeError):
        write_scene(out, KEY, period_slots(KEY, FREQ, MINUTES), DOMAIN, exploding, {}, progress=False)
    assert list(tmp_path.iterdir()) == []


# --- scene from already-calibrated files -------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".npy", ".nc"])
def test_scene_from_calibrated(tmp_path, suffix):
    big = Domain(DOMAIN.first_line - 2, DOMAIN.last_line + 3, DOMAIN.first_column - 1, DOMAIN.last_column + 4)
    rng = np.random.default_rng(0)
    cfg = {"dir": str(tmp_path / "cal"), "bt_pattern": f"%Y%m%d/bt_%H%M{suffix}",
           "rf_pattern": f"%Y%m%d/rf_%H%M{suffix}", "first_line": big.first_line,
           "first_column": big.first_column, "rf_scale": 0.01,
           "rf_channels": list(reversed(RF_CHANNELS))}  # stored in another order, in percent
    folder = tmp_path / "cal" / "20240401"
    folder.mkdir(parents=True)
    arrays = {}
    for hour in (0, 5):
        bt = rng.uniform(200, 300, (10, *big.shape)).astype(np.float32)
        rf = rng.uniform(-1, 90, (6, *big.shape)).astype(np.float32)
        arrays[hour] = bt, rf
        for kind, arr in (("bt", bt), ("rf", rf)):
            path = folder / f"{kind}_{hour:02d}00{suffix}"
            if suffix == ".npy":
                np.save(path, arr)
            else:
                with h5netcdf.File(path, "w") as f:
                    f.dimensions = {"c": arr.shape[0], "y": arr.shape[1], "x": arr.shape[2]}
                    f.create_variable(kind, ("c", "y", "x"), np.float32, data=arr)
    (folder / f"rf_0500{suffix}").unlink()  # slot 05:00 lacks its reflectances

    inv = tmp_path / "inv.tsv"
    inv.write_text(inventory_text(calibrated_period_inventory(cfg, KEY, FREQ)))
    out = tmp_path / "scene.nc"
    summary = build_scene_from_calibrated(inv, cfg, KEY, FREQ, MINUTES, None, None, DOMAIN, out, progress=False)
    assert summary["n_ok"] == 1 and summary["bad_slots"]["202404010500"] == "missing_channel:rf"
    y0, x0 = DOMAIN.first_line - big.first_line, DOMAIN.first_column - big.first_column
    crop = (slice(None), slice(y0, y0 + DOMAIN.shape[0]), slice(x0, x0 + DOMAIN.shape[1]))
    with read_scene(out) as ds:
        assert ds.attrs["input_kind"] == "calibrated"
        np.testing.assert_array_equal(ds.bt[0].values, arrays[0][0][crop])
        expected_rf = np.maximum(arrays[0][1][::-1][crop] * np.float32(0.01), 0)
        np.testing.assert_allclose(ds.rf[0].values, expected_rf, rtol=1e-6)
        assert np.isnan(ds.bt[5].values).all() and np.isfinite(ds.sza[5].values).all()
