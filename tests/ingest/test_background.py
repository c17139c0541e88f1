"""ta2d.ingest.background on small NetCDF files written here in the CDS layouts (current: `valid_time` int64
seconds since 1970, descending latitude, optional 0..360 longitude, scalar `number`/`expver`; old: `time`).
Values are checked against independent computations: analytic fields for which bilinear + linear-in-time
interpolation is exact, hand-computed averages, and the lapse-rate formula."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from fakes import write_cds_orography, write_cds_t2m

from ta2d.ingest.background import BackgroundError, BackgroundOverlapWarning, open_background

LAT = np.arange(33.0, 39.01, 0.25)  # ascending here; written descending like the CDS
LON = np.arange(124.0, 131.01, 0.25)
START = np.datetime64("2024-04-01T00:00", "ns")
HOURS = 12


def linear_t2m(lat, lon, hours_since_start):
    """Linear in lat, lon and time: bilinear + linear-in-time interpolation reproduces it exactly."""
    return 290.0 - 0.8 * (lat - 36.0) + 0.3 * (lon - 127.0) + 0.5 * hours_since_start


def orography_height(lat, lon):
    """Linear in lat and lon, so its bilinear interpolation is exact too."""
    return 100.0 + 40.0 * (lat - 33.0) + 25.0 * (lon - 124.0)


def field_on_grid(function, times):
    hours = (times - START) / np.timedelta64(1, "h")
    return function(LAT[None, :, None], LON[None, None, :], hours[:, None, None]).astype(np.float32)


def write_t2m(path, values, times, *, layout="current", lon_0_360=False, units="K", lat=LAT, lon=LON,
              variable="t2m"):
    """A CDS-like t2m file; `values` (time, lat, lon) on ascending `lat`/`lon`, written north to south."""
    return write_cds_t2m(path, values, times, lat, lon, layout=layout, lon_0_360=lon_0_360, units=units,
                         variable=variable)


def write_orography(path, height=None, *, time_dim="valid_time", lat=LAT, lon=LON, lon_0_360=False):
    height = orography_height(lat[:, None], lon[None, :]) if height is None else height
    return write_cds_orography(path, height, lat, lon, time_dim=time_dim, lon_0_360=lon_0_360)


def hourly(n=HOURS, start=START):
    return start + np.arange(n) * np.timedelta64(1, "h")


@pytest.fixture
def linear_files(tmp_path):
    times = hourly()
    t2m = write_t2m(tmp_path / "t2m.nc", field_on_grid(linear_t2m, times), times, lon_0_360=True)
    return t2m, write_orography(tmp_path / "orog.nc", lon_0_360=True)


# --- reading -------------------------------------------------------------------------------------------

def test_open_normalises_current_cds_layout(linear_files):
    background = open_background(*linear_files)
    assert background.t2m.dims == ("time", "lat", "lon")
    np.testing.assert_allclose(background.t2m["lat"].values, LAT)
    np.testing.assert_allclose(background.t2m["lon"].values, LON)
    np.testing.assert_array_equal(background.t2m["time"].values, hourly())
    np.testing.assert_allclose(background.t2m.values, field_on_grid(linear_t2m, hourly()), atol=1e-4)
    np.testing.assert_allclose(background.orography_m.values, orography_height(LAT[:, None], LON[None, :]),
                               rtol=1e-6, atol=1e-3)


def test_longitude_0_360_across_greenwich_is_normalised(tmp_path):
    lat, lon = np.arange(50.0, 52.01, 0.5), np.arange(-2.0, 2.01, 0.5)
    times = hourly(2)
    values = np.broadcast_to(280 + lon[None, None, :] + 0 * lat[None, :, None], (2, lat.size, lon.size))
    t2m = write_t2m(tmp_path / "t.nc", values, times, lon_0_360=True, lat=lat, lon=lon)
    orog = write_orography(tmp_path / "o.nc", np.zeros((lat.size, lon.size)), lat=lat, lon=lon, lon_0_360=True)
    background = open_background(t2m, orog)
    np.testing.assert_allclose(background.t2m["lon"].values, lon)
    value, reason = background.at(51.0, 359.75, START, 0.0)  # -0.25 east, either convention
    assert reason == "" and value == pytest.approx(279.75, abs=1e-4)


# --- interpolation against independent computations ----------------------------------------------------

def test_linear_field_is_reproduced_off_grid(linear_files):
    background = open_background(*linear_files)
    rng = np.random.default_rng(0)
    n = 2000
    lat = rng.uniform(LAT[0], LAT[-1], n)
    lon = rng.uniform(LON[0], LON[-1], n)
    offsets_s = rng.uniform(0, (HOURS - 1) * 3600, n).astype(np.int64)
    times = START + offsets_s.astype("timedelta64[s]")
    height = orography_height(lat, lon)  # target = reanalysis orography: no height correction
    values, reasons = background.at(lat, lon, times, height)
    assert (reasons == "").all()
    np.testing.assert_allclose(values, linear_t2m(lat, lon, offsets_s / 3600.0), atol=1e-4)


def test_pandas_timestamps_utc_and_grid_edges(linear_files):
    background = open_background(*linear_files)
    times = [pd.Timestamp("2024-04-01T09:30:00+09:00"), pd.Timestamp("2024-04-01T05:00:00Z")]  # 00:30, 05:00 UTC
    lat, lon = np.array([LAT[-1], LAT[0]]), np.array([LON[0], LON[-1]])
    values, reasons = background.at(lat, lon, times, orography_height(lat, lon))
    assert list(reasons) == ["", ""]
    np.testing.assert_allclose(values, linear_t2m(lat, lon, np.array([0.5, 5.0])), atol=1e-4)
    kst = pd.to_datetime(times, utc=True).tz_convert("Asia/Seoul")
    np.testing.assert_array_equal(background.at(lat, lon, kst, orography_height(lat, lon))[0], values)


def test_nonlinear_field_at_grid_points_and_midpoints(tmp_path):
    times = hourly(3)
    rng = np.random.default_rng(1)
    field = rng.uniform(250, 310, (3, LAT.size, LON.size)).astype(np.float32)
    background = open_background(write_t2m(tmp_path / "t.nc", field, times, layout="old"),
                                 write_orography(tmp_path / "o.nc", np.zeros((LAT.size, LON.size))))
    i, j = 5, 7
    lat = np.array([LAT[i], LAT[i] + 0.125, LAT[i] + 0.125, LAT[i], LAT[i]])
    lon = np.array([LON[j], LON[j], LON[j] + 0.125, LON[j], LON[j] + 0.125])
    when = np.array([times[1], times[1], times[1], times[1] + np.timedelta64(30, "m"), times[2]])
    values, reasons = background.at(lat, lon, when, 0.0)
    f = field.astype(np.float64)
    expected = [
        f[1, i, j],
        (f[1, i, j] + f[1, i + 1, j]) / 2,
        (f[1, i, j] + f[1, i + 1, j] + f[1, i, j + 1] + f[1, i + 1, j + 1]) / 4,
        (f[1, i, j] + f[2, i, j]) / 2,
        (f[2, i, j] + f[2, i, j + 1]) / 2,
    ]
    assert (reasons == "").all()
    np.testing.assert_allclose(values, expected, atol=1e-4)


def test_height_correction_follows_the_lapse_rate(linear_files):
    background = open_background(*linear_files)
    lat, lon = np.array([35.1, 37.33]), np.array([126.4, 128.9])
    target = np.array([0.0, 1500.0])
    hours = 3.25
    when = START + np.timedelta64(int(hours * 3600), "s")
    expected = linear_t2m(lat, lon, hours) - 0.0065 * (target - orography_height(lat, lon))
    values, _ = background.at(lat, lon, when, target)
    np.testing.assert_allclose(values, expected, atol=1e-4)
    steep, _ = background.at(lat, lon, when, target, lapse_rate_k_per_m=0.0098)
    np.testing.assert_allclose(steep, linear_t2m(lat, lon, hours) - 0.0098 * (target - orography_height(lat, lon)),
                               atol=1e-4)


def test_sea_points_are_renormalised_and_all_sea_is_nan(tmp_path):
    times = hourly(2)
    field = field_on_grid(linear_t2m, times)
    field[:, 0, 0] = np.nan  # one sea point in the corner of the grid (ERA5-Land is NaN over the sea)
    field[:, 10:12, 10:12] = np.nan  # a 2 x 2 sea block: a point inside it has no valid corner
    background = open_background(write_t2m(tmp_path / "t.nc", field, times),
                                 write_orography(tmp_path / "o.nc", np.zeros((LAT.size, LON.size))))
    lat = np.array([LAT[0] + 0.125, LAT[10] + 0.125])
    lon = np.array([LON[0] + 0.125, LON[10] + 0.125])
    values, reasons = background.at(lat, lon, START, 0.0)
    three = [(0, 1), (1, 0), (1, 1)]
    assert values[0] == pytest.approx(np.mean([field[0, a, b] for a, b in three]), abs=1e-4)
    assert reasons[0] == ""
    assert np.isnan(values[1]) and "no data at the 4 surrounding grid points" in reasons[1]


def test_vectorised_for_a_million_points(linear_files):
    background = open_background(*linear_files)
    n = 1_000_000
    rng = np.random.default_rng(2)
    lat, lon = rng.uniform(34, 38, n), rng.uniform(125, 130, n)
    values, reasons = background.at(lat, lon, START + np.timedelta64(90, "m"), 300.0)
    assert values.shape == (n,) and np.isfinite(values).all() and (reasons == "").all()


# --- several files -------------------------------------------------------------------------------------

def test_many_files_equal_one_file(tmp_path):
    times = hourly(9)
    field = field_on_grid(linear_t2m, times)
    field += np.sin(np.arange(field.size)).reshape(field.shape).astype(np.float32)  # not linear, not trivial
    orog = write_orography(tmp_path / "o.nc")
    one = open_background(write_t2m(tmp_path / "all.nc", field, times), orog)
    (tmp_path / "parts").mkdir()
    for k, part in enumerate((slice(0, 3), slice(3, 7), slice(7, 9))):
        layout = "old" if k == 1 else "current"  # a series mixing old and new downloads
        write_t2m(tmp_path / "parts" / f"t2m_{k}.nc", field[part], times[part], layout=layout, lon_0_360=k == 2)
    many = open_background(str(tmp_path / "parts" / "t2m_*.nc"), orog)
    assert len(many.files) == 3
    xr.testing.assert_equal(one.t2m, many.t2m)
    rng = np.random.default_rng(3)
    lat, lon = rng.uniform(34, 38, 500), rng.uniform(125, 130, 500)
    when = START + rng.uniform(0, 8 * 3600, 500).astype("timedelta64[s]")
    np.testing.assert_array_equal(one.at(lat, lon, when, 50.0)[0], many.at(lat, lon, when, 50.0)[0])


def test_overlapping_files_keep_the_first_and_warn(tmp_path):
    times = hourly(6)
    field = field_on_grid(linear_t2m, times)
    first = write_t2m(tmp_path / "a.nc", field[:4], times[:4])
    second = write_t2m(tmp_path / "b.nc", field[2:] + 100, times[2:])  # hours 2, 3 repeated, different values
    with pytest.warns(BackgroundOverlapWarning, match=r"2 duplicate hour.*b\.nc repeats hours of .*a\.nc"):
        background = open_background([first, second], write_orography(tmp_path / "o.nc"))
    np.testing.assert_array_equal(background.t2m["time"].values, times)
    np.testing.assert_allclose(background.t2m.values[:4], field[:4])
    np.testing.assert_allclose(background.t2m.values[4:], field[4:] + 100)


# --- bad inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("units", ["degC", "°C", "C"])
def test_celsius_units_name_the_file(tmp_path, units):
    times = hourly(2)
    path = write_t2m(tmp_path / "celsius.nc", field_on_grid(linear_t2m, times) - 273.15, times, units=units)
    with pytest.raises(BackgroundError, match=r"celsius\.nc: °C instead of K"):
        open_background(path, write_orography(tmp_path / "o.nc"))


def test_celsius_values_with_kelvin_units_name_the_file(tmp_path):
    times = hourly(2)
    path = write_t2m(tmp_path / "looks_c.nc", field_on_grid(linear_t2m, times) - 273.15, times)
    with pytest.raises(BackgroundError, match=r"looks_c\.nc: °C instead of K: t2m values look like °C \(median 1"):
        open_background(path, write_orography(tmp_path / "o.nc"))


def test_missing_variable_lists_what_the_file_has(tmp_path):
    times = hourly(2)
    path = write_t2m(tmp_path / "d2m.nc", field_on_grid(linear_t2m, times), times, variable="d2m")
    with pytest.raises(BackgroundError, match=r"d2m\.nc: no variable 't2m'; the file has \['d2m'\]"):
        open_background(path, write_orography(tmp_path / "o.nc"))


def test_missing_time_coordinate(tmp_path):
    path = tmp_path / "no_time.nc"
    xr.Dataset({"t2m": (("latitude", "longitude"), np.full((LAT.size, LON.size), 290.0, np.float32),
                        {"units": "K"})},
               coords={"latitude": LAT, "longitude": LON}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(BackgroundError, match=r"no_time\.nc: no time coordinate \(valid_time or time\)"):
        open_background(path, write_orography(tmp_path / "o.nc"))


def test_grid_that_misses_the_domain_names_file_and_extents(linear_files):
    background = open_background(*linear_files)
    background.check_covers(34.0, 38.0, 125.0, 130.0)
    background.check_covers(34.0, 38.0, 125.0 - 360, 130.0)  # the domain in the other longitude convention
    with pytest.raises(BackgroundError) as caught:
        background.check_covers(30.0, 38.0, 125.0, 132.0)
    message = str(caught.value)
    assert "t2m.nc" in message
    assert "grid lat 33..39, lon 124..131" in message and "domain lat 30..38, lon 125..132" in message


def test_orography_on_another_grid(tmp_path):
    times = hourly(2)
    t2m = write_t2m(tmp_path / "t.nc", field_on_grid(linear_t2m, times), times)
    coarse_lat, coarse_lon = np.arange(33.0, 39.01, 0.5), np.arange(124.0, 131.01, 0.5)
    orog = write_orography(tmp_path / "orog_coarse.nc", lat=coarse_lat, lon=coarse_lon)
    with pytest.raises(BackgroundError, match=r"orog_coarse\.nc: orography grid .* the t2m grid"):
        open_background(t2m, orog)


def test_orography_on_a_larger_grid_is_cropped(tmp_path):
    times = hourly(2)
    t2m = write_t2m(tmp_path / "t.nc", field_on_grid(linear_t2m, times), times)
    big_lat, big_lon = np.arange(30.0, 42.01, 0.25), np.arange(120.0, 135.01, 0.25)
    background = open_background(t2m, write_orography(tmp_path / "o.nc", lat=big_lat, lon=big_lon, lon_0_360=True))
    np.testing.assert_allclose(background.orography_m.values, orography_height(LAT[:, None], LON[None, :]),
                               rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("time_dim", ["valid_time", "time", None])
def test_orography_with_or_without_a_length_1_time_dim(tmp_path, time_dim):
    times = hourly(2)
    t2m = write_t2m(tmp_path / "t.nc", field_on_grid(linear_t2m, times), times)
    background = open_background(t2m, write_orography(tmp_path / "o.nc", time_dim=time_dim))
    assert background.orography_m.dims == ("lat", "lon")
    value, reason = background.at(36.1, 127.2, START, 500.0)
    expected = linear_t2m(36.1, 127.2, 0.0) - 0.0065 * (500.0 - orography_height(36.1, 127.2))
    assert reason == "" and value == pytest.approx(expected, abs=1e-4)


def test_orography_without_z_lists_its_variables(tmp_path):
    times = hourly(2)
    t2m = write_t2m(tmp_path / "t.nc", field_on_grid(linear_t2m, times), times)
    orog = tmp_path / "lsm.nc"
    xr.Dataset({"lsm": (("latitude", "longitude"), np.ones((LAT.size, LON.size)))},
               coords={"latitude": LAT, "longitude": LON}).to_netcdf(orog, engine="h5netcdf")
    with pytest.raises(BackgroundError, match=r"lsm\.nc: no geopotential variable 'z'.*\['lsm'\]"):
        open_background(t2m, orog)


def test_missing_hour_gives_nan_with_reason_only_where_needed(tmp_path):
    times = np.delete(hourly(6), 3)  # 03:00 missing
    field = field_on_grid(linear_t2m, times)
    background = open_background(write_t2m(tmp_path / "gap.nc", field, times), write_orography(tmp_path / "o.nc"))
    hours = np.array([2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 7.0])
    when = START + (hours * 3600).astype("timedelta64[s]")
    lat, lon = np.full(hours.size, 36.3), np.full(hours.size, 127.6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values, reasons = background.at(lat, lon, when, orography_height(lat, lon))
    needs_gap = np.array([False, True, True, True, False, False, True])
    assert np.isnan(values[needs_gap]).all()
    np.testing.assert_allclose(values[~needs_gap], linear_t2m(lat, lon, hours)[~needs_gap], atol=1e-4)
    assert list(reasons[~needs_gap]) == ["", "", ""]
    assert reasons[1] == reasons[2] == reasons[3] == f"background: no hour 2024-04-01T03:00 in {tmp_path / 'gap.nc'}"
    assert reasons[6] == f"background: no hour 2024-04-01T07:00 in {tmp_path / 'gap.nc'}"


def test_outside_the_grid_and_bad_samples(linear_files):
    background = open_background(*linear_files)
    lat = np.array([36.0, 32.0, 36.0, np.nan])
    lon = np.array([127.0, 127.0, 140.0, 127.0])
    values, reasons = background.at(lat, lon, START, 0.0)
    assert np.isfinite(values[0]) and reasons[0] == ""
    assert np.isnan(values[1:]).all()
    assert reasons[1].startswith("background: outside the grid (lat 33..39, lon 124..131)") and reasons[1] == reasons[2]
    assert "NaN lat" in reasons[3]
