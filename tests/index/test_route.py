"""Label routing (ta2d.index.route) and the plan (ta2d.plan): several label files, and what each kind of change
rereads and rewrites. Real KMA portal CSV files are written here; parts are checked against the rows written."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ta2d.grid import Domain, linecol_to_lonlat
from ta2d.index.match import match_part
from ta2d.index.route import read_part, route_labels
from ta2d.plan import Plan, chunk_name
from ta2d.splits import assign_splits
from ta2d.static import StaticFields

HEADER = "지점,지점명,일시,기온(°C),기온 QC플래그\n"
STATIONS = (108, 119, 133)
SPLIT = {"fractions": {"train": 0.5, "val": 0.25, "test": 0.25}, "block_days": 4, "seed": 3,
         "holdout_stations": [], "holdout_station_fraction": 0, "time_block_start": None}


def write_labels(path, days, ta=lambda stn, day, hour: 10.0 + stn / 100 + hour / 10, extra_lines=()):
    """A data-portal CSV (KST) of every station at every hour of the given UTC days."""
    lines = []
    for stn in STATIONS:
        for day in days:
            for hour in range(24):
                kst = pd.Timestamp(day) + pd.Timedelta(hours=hour + 9)
                lines.append(f"{stn},X,{kst:%Y-%m-%d %H:%M},{ta(stn, day, hour):.1f},\n")
    path.write_bytes((HEADER + "".join(lines) + "".join(extra_lines)).encode("cp949"))


def plan(end="2024-04-04", split=SPLIT, freq="D"):
    return Plan(start="2024-04-01", end=end, freq=freq, split_cfg=split)


@pytest.fixture
def archive(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    write_labels(folder / "OBS_a.csv", ["2024-04-01", "2024-04-02"])
    write_labels(folder / "OBS_b.csv", ["2024-04-03", "2024-04-04"])
    return {"cfg": {"path": str(folder / "OBS_*.csv"), "format": "kma_portal_csv", "timezone": "KST"},
            "folder": folder, "out": tmp_path / "parts"}


def parts(out):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("*_chunk_*.csv")}


def test_label_files_are_named_below_the_patterns_folder():
    from ta2d.index.route import source_name

    assert source_name("/data/kma/2019/OBS_201901.csv", {"path": "/data/kma/*/OBS_*.csv"}) == "2019/OBS_201901.csv"
    assert source_name("/data/kma/OBS.csv", {"path": "/data/kma/OBS.csv"}) == "OBS.csv"
    assert source_name("labels/OBS.csv", {"path": "labels/OBS*.csv"}) == "OBS.csv"


def test_plan_names_a_chunk_per_split_of_each_period():
    p = plan()
    days = pd.Series(pd.date_range("2024-04-01", "2024-04-04").strftime("%Y%m%d"))
    want = set(zip(assign_splits(np.zeros(4, int), days, SPLIT)["split"], days, strict=True))
    assert set(p.chunks) == want and len(p.chunks) == 4  # whole days, nothing held out: one split per day
    held = plan(split={**SPLIT, "holdout_station_fraction": 0.2})
    assert set(held.chunks) == want | {("test", d) for d in days}  # a test chunk on every day
    yearly = Plan(start="2023-12-25", end="2024-01-14", freq="W", split_cfg=SPLIT, index_freq="Y")
    assert yearly.index_keys == ["2023", "2024"] and yearly.index_key("2024W01") == "2024"
    weekly = plan(end="2024-05-31", freq="W")
    assert weekly.index_keys == ["202404", "202405"]
    # 2024W18 (Mon 2024-04-29 .. Sun 2024-05-05) belongs to the index period of its first day only
    assert "2024W18" in {k for s, k in weekly.chunks_of_index("202404")}
    assert min(k for s, k in weekly.chunks_of_index("202405")) == "2024W19"


def test_statistics_chunks_are_a_stable_hash_chosen_share():
    year = Plan(start="2023-01-01", end="2023-12-31", freq="W", split_cfg={**SPLIT, "block_days": 20})
    train = year.chunk_names(["train"])
    assert year.stats_chunk_names(1.0) == train
    tenth = year.stats_chunk_names(0.1, seed=3)
    assert set(tenth) < set(train) and 1 <= len(tenth) < len(train) / 4
    longer = Plan(start="2022-01-01", end="2024-06-30", freq="W", split_cfg={**SPLIT, "block_days": 20})
    assert set(tenth) <= set(longer.stats_chunk_names(0.1, seed=3))  # adding periods moves no chosen chunk
    short = Plan(start="2023-01-02", end="2023-01-08", freq="W", split_cfg={**SPLIT, "block_days": 20})
    assert short.stats_chunk_names(1e-9) == short.chunk_names(["train"])  # none chosen: all of them


def test_rows_go_to_the_part_of_their_split_and_day(archive):
    p = plan()
    route_labels(archive["cfg"], p, archive["out"], force=True)
    assert sorted(x.name for x in archive["out"].glob("*_chunk_*.csv")) == sorted(p.chunk_names(suffix=".csv"))
    rows = pd.concat([read_part(archive["out"] / n) for n in p.chunk_names(suffix=".csv")])
    assert len(rows) == 2 * 2 * 24 * len(STATIONS)
    assert set(rows["source"]) == {"OBS_a.csv", "OBS_b.csv"}  # below the pattern's folder
    for split, key in p.chunks:
        part = read_part(archive["out"] / chunk_name(split, key, ".csv"))
        day = pd.to_datetime(part["time"], unit="s", utc=True).dt.strftime("%Y%m%d")
        assert (day == key).all() and len(part) == 24 * len(STATIONS)
    # KST 09:00 of 2024-04-01 is 00:00 UTC; the row number is the data row in its file
    first = read_part(archive["out"] / chunk_name(*p.chunks[0], ".csv")).iloc[0]
    assert first["time"] == pd.Timestamp("2024-04-01", tz="UTC").timestamp() and first["row"] == 1


def test_a_changed_row_rereads_its_file_and_rewrites_one_part(archive):
    p = plan()
    route_labels(archive["cfg"], p, archive["out"], force=True)
    before = parts(archive["out"])
    assert route_labels(archive["cfg"], p, archive["out"]) == {"read": 0, "parts_written": 0}
    write_labels(archive["folder"] / "OBS_b.csv", ["2024-04-03", "2024-04-04"],
                 ta=lambda stn, day, hour: 10.0 + stn / 100 + hour / 10
                 + 5 * ((stn, day, hour) == (119, "2024-04-04", 7)))
    assert route_labels(archive["cfg"], p, archive["out"]) == {"read": 1, "parts_written": 1}
    after = parts(archive["out"])
    changed = [n for n in after if after[n] != before[n]]
    assert len(changed) == 1
    part = read_part(archive["out"] / changed[0])
    hit = part[(part["stn"] == 119) & (part["ta_c"] > 15)]
    assert len(hit) == 1 and pd.Timestamp(hit["time"].iloc[0], unit="s").hour == 7


def test_a_removed_file_takes_its_rows_with_it(archive):
    p = plan()
    route_labels(archive["cfg"], p, archive["out"], force=True)
    os.unlink(archive["folder"] / "OBS_b.csv")
    route_labels(archive["cfg"], p, archive["out"])
    for split, key in p.chunks:
        n = len(read_part(archive["out"] / chunk_name(split, key, ".csv")))
        assert n == (24 * len(STATIONS) if key < "20240403" else 0)


def test_extending_the_period_rereads_only_files_that_reach_the_new_days(archive):
    route_labels(archive["cfg"], plan(end="2024-04-03"), archive["out"], force=True)
    rejects = pd.read_csv(archive["out"] / "rejects.csv")
    assert set(rejects["reason"]) == {"outside_period"} and len(rejects) == 24 * len(STATIONS)
    before = parts(archive["out"])
    done = route_labels(archive["cfg"], plan(end="2024-04-04"), archive["out"])
    assert done["read"] == 1  # OBS_b.csv only: OBS_a.csv has no row on 2024-04-04
    after = parts(archive["out"])
    assert {n for n in before if after[n] != before[n]} == set()  # no existing part rewritten
    assert {n.split("_chunk_")[1] for n in set(after) - set(before)} == {"20240404.csv"}
    assert pd.read_csv(archive["out"] / "rejects.csv").empty


def test_map_units_get_observation_parts_and_more_map_days_reread_only_their_files(archive):
    """Rows on a map day (here outside the training period too) go to results/labels/obs/{unit}.csv, per day or
    per slot; they stay outside_period rejects of the training side; more map days reread only the files that
    reach them, and rewrite no chunk part."""
    def mapping(days, unit="day", end="2024-04-02"):
        return Plan(start="2024-04-01", end=end, freq="D", split_cfg=SPLIT, map_day_list=tuple(days), map_unit=unit)

    out = archive["out"]
    route_labels(archive["cfg"], mapping(["20240402", "20240403"]), out, force=True)
    obs = read_part(out / "obs/20240403.csv")
    assert len(obs) == 24 * len(STATIONS) and set(obs["stn"]) == set(STATIONS)
    assert len(read_part(out / "obs/20240402.csv")) == 24 * len(STATIONS)  # also a chunk's rows: both parts
    rejects = pd.read_csv(out / "rejects.csv")
    assert (rejects["reason"] == "outside_period").sum() == 2 * 24 * len(STATIONS)  # 04-03 and 04-04 still count
    before = parts(out)
    done = route_labels(archive["cfg"], mapping(["20240402", "20240403", "20240404"]), out)
    assert done["read"] == 1  # OBS_b.csv: the only file with rows on 2024-04-04
    assert parts(out) == before and len(read_part(out / "obs/20240404.csv")) == 24 * len(STATIONS)
    # per slot: one part per slot of the map days, each with that hour's rows
    route_labels(archive["cfg"], mapping(["20240403"], unit="slot"), out)
    slot = read_part(out / "obs/20240403T0500.csv")
    assert len(slot) == len(STATIONS) and set(slot["time"]) == {int(pd.Timestamp("2024-04-03T05:00Z").timestamp())}
    # no training period at all: every row is outside_period, the map days still get theirs
    route_labels(archive["cfg"], Plan(start=None, end=None, freq="D", split_cfg=SPLIT, map_day_list=("20240401",)),
                 out)
    assert len(read_part(out / "obs/20240401.csv")) == 24 * len(STATIONS)
    assert len(pd.read_csv(out / "rejects.csv")) == 4 * 24 * len(STATIONS)


def test_a_label_file_that_disappears_is_a_clear_error(tmp_path):
    from ta2d.index.route import RoutingError

    write_labels(tmp_path / "OBS.csv", ["2024-04-01"])
    cfg = {"path": str(tmp_path / "OBS.csv"), "format": "kma_portal_csv"}
    route_labels(cfg, plan(), tmp_path / "parts", force=True)
    os.unlink(tmp_path / "OBS.csv")
    with pytest.raises(RoutingError, match=f"inputs.labels.path: {tmp_path / 'OBS.csv'}: no such label file"):
        route_labels(cfg, plan(), tmp_path / "parts")
    with pytest.raises(RoutingError, match=r"inputs.labels.path: .*OBS_\*.csv: no such label file"):
        route_labels({**cfg, "path": str(tmp_path / "OBS_*.csv")}, plan(), tmp_path / "parts")


def test_a_split_change_reroutes_every_file(archive):
    route_labels(archive["cfg"], plan(), archive["out"], force=True)
    other = plan(split={**SPLIT, "seed": 4})
    assert route_labels(archive["cfg"], other, archive["out"])["read"] == 2
    for split, key in other.chunks:
        assert len(read_part(archive["out"] / chunk_name(split, key, ".csv"))) == 24 * len(STATIONS)


def test_unreadable_rows_and_rows_outside_the_period_are_counted_rejects(archive):
    write_labels(archive["folder"] / "OBS_b.csv", ["2024-04-03"],
                 extra_lines=["119,X,2024-04-03 12:00,,\n", "119,X,not a time,3.0,\n", "119,X,2030-01-01 09:00,1.0,\n"])
    route_labels(archive["cfg"], plan(), archive["out"], force=True)
    rejects = pd.read_csv(archive["out"] / "rejects.csv")
    n_data = 24 * len(STATIONS)
    assert sorted(zip(rejects["row"], rejects["reason"], strict=True)) == \
        [(n_data + 1, "missing_ta"), (n_data + 2, "unparseable_row"), (n_data + 3, "outside_period")]
    assert (rejects["source"] == "OBS_b.csv").all()
    summary = pd.read_json(archive["out"] / "summary.json", typ="series")
    assert summary["n_label_rows"] == 2 * n_data + n_data + 3 and summary["n_rejected"] == 3


def test_the_same_observation_in_two_files_is_kept_once(archive):
    write_labels(archive["folder"] / "OBS_c.csv", ["2024-04-01"], ta=lambda stn, day, hour: 30.0)
    p = plan()
    route_labels(archive["cfg"], p, archive["out"], force=True)
    name = chunk_name(*next(c for c in p.chunks if c[1] == "20240401"), ".csv")
    part = read_part(archive["out"] / name)
    assert len(part) == 2 * 24 * len(STATIONS)
    domain = Domain(880, 919, 2680, 2727)
    shape = domain.shape
    static = StaticFields(np.zeros(shape, np.float32), np.ones(shape, np.float32), np.full(shape, 5, np.int16), domain)
    lon, lat = linecol_to_lonlat(np.array([890.0, 900.0, 910.0]), np.array([2690.0, 2700.0, 2710.0]))
    stations = pd.DataFrame({"stn": STATIONS, "lat": lat, "lon": lon, "elev_m": 10.0,
                             "valid_from": pd.NaT, "valid_to": pd.NaT})
    status = pd.DataFrame({"time": part["time"].unique(), "status": "ok"})
    kept, rejects = match_part(part, stations, static, status, 9)
    assert len(kept) == 24 * len(STATIONS) and (kept["source"].str.endswith("OBS_a.csv")).all()
    assert set(rejects["reason"]) == {"duplicate_row"} and len(rejects) == 24 * len(STATIONS)
    assert rejects["detail"].str.match(r"^duplicate of OBS_a\.csv row \d+: TA 30 differs from kept").all()
    # a station missing from the table: its rows are rejected, named by file and row
    kept, rejects = match_part(part, stations[stations["stn"] != 133], static, status, 9)
    unknown = rejects[rejects["reason"] == "unknown_station"]  # OBS_c.csv's copies are repeats first
    assert len(unknown) == 24 and set(unknown["stn"]) == {133} and set(unknown["source"]) == {"OBS_a.csv"}
    assert len(rejects) == 24 * len(STATIONS) + 24 and not rejects.duplicated(["source", "row"]).any()


@pytest.mark.parametrize("layout", ["portal", "apihub"])
def test_labels_read_in_blocks_equal_the_whole_file_read(tmp_path, layout):
    """iter_labels (what routing uses, so memory holds one block) gives read_labels' rows with the file's row
    numbers; a repeat in another block is left to the chunk job, which keeps the first row."""
    from ta2d.index.labels import iter_labels, read_labels

    path = tmp_path / "labels.txt"
    if layout == "portal":
        write_labels(path, ["2024-04-01", "2024-04-02"], extra_lines=["119,X,2024-04-01 10:00,99.0,\n",
                                                                         "119,X,bad,1.0,\n"])
        kw = {"fmt": "kma_portal_csv"}
    else:
        lines = ["# YYMMDDHHMI STN  WD   WS GST  GST  GST     PA     PS PT    PR    TA\n", "#START7777\n"]
        for day in ("2024-04-01", "2024-04-02"):
            for hour in range(24):
                for stn in STATIONS:
                    t = pd.Timestamp(day) + pd.Timedelta(hours=hour + 9)
                    lines.append(f"{t:%Y%m%d%H%M} {stn} 1 2 3 4 5 6 7 8 9 {stn / 10 + hour / 10:.1f}\n")
        lines.append(f"202404011000 119 1 2 3 4 5 6 7 8 9 {119 / 10 + 1 / 10:.1f}\n")  # a repeat of a row
        path.write_text("".join(lines))
        kw = {"fmt": "kma_apihub_text"}
    whole, whole_rejects = read_labels(path, **kw)
    blocks = list(iter_labels(path, block_chars=500, **kw))
    assert len(blocks) > 5
    labels = pd.concat([b[0] for b in blocks], ignore_index=True)
    rejects = pd.concat([b[1] for b in blocks], ignore_index=True)
    assert len(labels) + len(rejects) == len(whole) + len(whole_rejects)
    # the reader's rejects, except a repeat that lies in another block than its first copy
    repeats = set(whole_rejects.loc[whole_rejects["reason"] == "duplicate_row", "row"])
    assert set(zip(rejects["row"], rejects["reason"], strict=True)) == \
        {(r, why) for r, why in zip(whole_rejects["row"], whole_rejects["reason"], strict=True) if r not in repeats}
    pd.testing.assert_frame_equal(labels[~labels["row"].isin(repeats)].reset_index(drop=True),
                                  whole.reset_index(drop=True), check_dtype=False)
    assert repeats <= set(labels["row"])


def test_week_keys_are_python_iso_weeks_at_every_row():
    """period_key 'W' looks the ISO week up once per day and maps it back to the rows: check every row of two
    years of hours (a year boundary where the ISO year differs) against datetime.isocalendar."""
    from ta2d.periods import period_key

    t = np.repeat(np.arange(1703462400, 1703462400 + 86400 * 400, 3600), 3)  # from 2023-12-25, shuffled below
    t = np.random.default_rng(0).permutation(t)
    got = period_key(t, "W")
    want = [f"{d.isocalendar()[0]:04d}W{d.isocalendar()[1]:02d}"
            for d in pd.to_datetime(t, unit="s", utc=True).to_pydatetime()]
    assert list(got) == want
    assert list(period_key(np.array([], dtype=np.int64), "W")) == []
