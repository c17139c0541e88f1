"""Label and station readers on small files in the real KMA layouts (notes/gk2a_data.md section 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ta2d.index.labels import LabelsError, assign_station_metadata, read_labels
from ta2d.index.stations import read_stations

PORTAL_HEADER = "지점,지점명,일시,기온(°C),기온 QC플래그,강수량(mm),강수량 QC플래그,습도(%)"


def utc(text: str) -> int:
    """Independent oracle: Unix seconds of a UTC wall-clock string."""
    return int(pd.Timestamp(text, tz="UTC").timestamp())


def write_portal(path, rows: list[str], header: str = PORTAL_HEADER, encoding: str = "cp949"):
    path.write_bytes(("\n".join([header, *rows]) + "\n").encode(encoding))
    return path


APIHUB_HEAD = [
    "#START7777",
    "#--------------------------------------------------------------------------------------------------",
    "#  기상청 지상관측 시간자료 [입력인수형태][예] ?tm=201007151200&stn=0&dtm=3&help=1",
    "#2345678901234567890123456789012345678901234567890123456789012345678901234567890",
    "# YYMMDDHHMI STN  WD   WS GST  GST  GST     PA     PS PT    PR    TA    TD    HM    PV     RN"
    "     RN     RN     RN     SD     SD     SD WC WP WW                      CA  CA",
    "#        KST  ID  16  m/s  WD   WS   TM    hPa    hPa  -   hPa     C     C     %   hPa     mm"
    "    DAY    JUN    INT    HR3    DAY    TOT -- -- ---------------------- TOT MID",
]


def apihub_line(tm: str, stn: int, ta: str) -> str:
    """A kma_sfctm3 data line: TA is 0-based field 11; WW ('HZ RA') holds a space on purpose."""
    return (
        f"{tm} {stn:3d}  18  2.2  -9 -9.0   -9  999.1 1009.0  1   0.3 {ta:>5}  15.6  72.0  17.7"
        "   -9.0    0.6    0.6   -9.0   -9.0   -9.0   -9.0 -9 62 HZ RA                  5   5"
    )


def write_apihub(path, rows: list[str]):
    path.write_bytes(("\n".join([*APIHUB_HEAD, *rows, "#7777END"]) + "\n").encode("cp949"))
    return path


META_HEADER = (
    "지점,시작일,종료일,지점명,지점주소,관리관서,위도,경도,노장해발고도(m),"
    "기압계(관측장비지상높이(m)),기온계(관측장비지상높이(m))"
)
META_ROWS = [
    "108,1907-10-01,2016-12-31,서울,서울특별시 종로구 송월동,서울청,37.5700,126.9600,85.80,86.8,1.5",
    "108,2017-01-01,,서울,서울특별시 종로구 송월길 52,서울청,37.5714,126.9658,85.67,86.7,1.5",
    "90,1968-01-01,,속초,강원도 속초시 영랑호반길 132,속초기상대,38.2509,128.5647,17.53,18.7,1.5",
]


@pytest.fixture
def meta_csv(tmp_path):
    path = tmp_path / "META_관측지점정보.csv"
    path.write_bytes(("\n".join([META_HEADER, *META_ROWS]) + "\n").encode("cp949"))
    return path


def assert_accounted(labels, rejects, n_rows):
    """The rejects invariant: every data row is a label or a reject, exactly once."""
    assert len(labels) + len(rejects) == n_rows
    assert sorted([*labels["row"], *rejects["row"]]) == list(range(1, n_rows + 1))


# ----------------------------------------------------------------------------------------------
# Time zone


def test_portal_kst_to_utc(tmp_path):
    path = write_portal(
        tmp_path / "OBS_ASOS_TIM.csv",
        [
            "108,서울,2020-01-01 09:00,-5.9,,,,60",  # 09:00 KST = 00:00 UTC, same date
            "108,서울,2020-01-01 00:30,-6.0,0,,,60",  # early morning KST -> previous UTC day
            "108,서울,2020-01-01 08:59,-6.1,,,,60",
            "108,서울,2020-01-01 24:00,-6.2,,,,60",  # 24:00 = next day 00:00 KST
            "108,서울,2020-12-31 24:00,-6.3,,,,60",  # ... across a year end
        ],
    )
    labels, rejects = read_labels(path)
    assert rejects.empty
    assert labels["time"].tolist() == [
        utc("2020-01-01 00:00"),
        utc("2019-12-31 15:30"),
        utc("2019-12-31 23:59"),
        utc("2020-01-01 15:00"),
        utc("2020-12-31 15:00"),
    ]
    assert labels.dtypes.to_dict() == {"row": np.int64, "stn": np.int32, "time": np.int64, "ta_c": np.float32}
    assert labels["ta_c"].tolist() == pytest.approx([-5.9, -6.0, -6.1, -6.2, -6.3])


def test_timezone_utc_leaves_times_alone(tmp_path):
    path = write_portal(tmp_path / "a.csv", ["108,서울,2020-01-01 09:00,-5.9,,,,60"])
    labels, _ = read_labels(path, timezone="UTC")
    assert labels["time"].tolist() == [utc("2020-01-01 09:00")]
    with pytest.raises(ValueError, match="timezone"):
        read_labels(path, timezone="JST")


def test_apihub_text_kst_to_utc(tmp_path):
    path = write_apihub(
        tmp_path / "kma_sfctm3.txt",
        [
            apihub_line("202606100900", 108, "20.9"),
            apihub_line("202606100030", 108, "18.0"),
            apihub_line("202606102400", 108, "17.5"),
        ],
    )
    labels, rejects = read_labels(path)  # fmt auto-detected from the '#' header
    assert rejects.empty
    assert labels["time"].tolist() == [
        utc("2026-06-10 00:00"),
        utc("2026-06-09 15:30"),
        utc("2026-06-10 15:00"),
    ]
    assert labels["ta_c"].tolist() == pytest.approx([20.9, 18.0, 17.5])
    assert labels["stn"].tolist() == [108, 108, 108]


# ----------------------------------------------------------------------------------------------
# Rejects


def test_portal_every_reason_on_planted_rows(tmp_path):
    rows = [
        "108,서울,2020-01-01 01:00,-5.9,,,,60",  # 1 kept
        "108,서울,2020-01-01 02:00,,9,,,60",  # 2 missing_ta (empty + flag 9)
        "108,서울,2020-01-01 03:00,-6.0,9,,,60",  # 3 missing_ta (flag 9 with a value)
        "108,서울,2020-01-01 04:00,-6.1,1,,,60",  # 4 qc_flag
        "108,서울,2020-01-01 05:00,63.0,,,,60",  # 5 implausible_ta
        "108,서울,2020-01-01 01:00,-5.9,,,,60",  # 6 duplicate of 1, same value
        "108,서울,2020-01-01 01:00,-4.0,,,,60",  # 7 duplicate of 1, disagrees
        "108,서울,2020-02-30 01:00,-5.0,,,,60",  # 8 unparseable: no such date
        "108,서울,2020-01-01 06:00,abc,,,,60",  # 9 unparseable: TA text
        "108,서울,2020-01-01 07:00,1.0,,,,60,extra",  # 10 unparseable: field count
        "XYZ,서울,2020-01-01 08:00,1.0,,,,60",  # 11 unparseable: station id
        "108,서울,2020-01-01 25:00,1.0,,,,60",  # 12 unparseable: hour 25
        "108,서울,2020-01-01 09:00,-50.0,0,,,60",  # 13 kept: range is closed
    ]
    path = write_portal(tmp_path / "OBS_ASOS_TIM.csv", rows)
    labels, rejects = read_labels(path)
    assert_accounted(labels, rejects, len(rows))
    assert labels["row"].tolist() == [1, 13]
    reasons = dict(zip(rejects["row"], rejects["reason"], strict=True))
    assert reasons == {
        2: "missing_ta",
        3: "missing_ta",
        4: "qc_flag",
        5: "implausible_ta",
        6: "duplicate_row",
        7: "duplicate_row",
        8: "unparseable_row",
        9: "unparseable_row",
        10: "unparseable_row",
        11: "unparseable_row",
        12: "unparseable_row",
    }
    detail = dict(zip(rejects["row"], rejects["detail"], strict=True))
    assert "row 1" in detail[6] and "same" in detail[6]
    assert "row 1" in detail[7] and "differs" in detail[7]
    assert "fields" in detail[10]
    # stn / time are filled where they could be parsed, and NA otherwise
    by_row = rejects.set_index("row")
    assert by_row.loc[4, "stn"] == 108 and by_row.loc[4, "time"] == utc("2019-12-31 19:00")
    assert pd.isna(by_row.loc[11, "stn"]) and pd.isna(by_row.loc[8, "time"])
    assert rejects.dtypes["stn"] == "Int32" and rejects.dtypes["time"] == "Int64"


def test_qc_flag_sets_are_parameters(tmp_path):
    path = write_portal(
        tmp_path / "a.csv",
        [
            "108,서울,2020-01-01 01:00,-5.9,1,,,60",
            "108,서울,2020-01-01 02:00,-5.8,2,,,60",
        ],
    )
    labels, rejects = read_labels(path, reject_qc_flags=(2,))
    assert labels["row"].tolist() == [1]
    assert rejects["reason"].tolist() == ["qc_flag"]


def test_duplicate_keeps_first_accepted_row(tmp_path):
    # the first copy is missing, so the later valid copy is the one kept (not a duplicate)
    path = write_portal(
        tmp_path / "a.csv",
        [
            "108,서울,2020-01-01 01:00,,,,,60",
            "108,서울,2020-01-01 01:00,-5.9,,,,60",
            "108,서울,2020-01-01 01:00,-5.7,,,,60",
            "119,수원,2020-01-01 01:00,-4.0,,,,60",  # same time, other station: not a duplicate
        ],
    )
    labels, rejects = read_labels(path)
    assert labels["row"].tolist() == [2, 4]
    assert rejects.set_index("row")["reason"].to_dict() == {1: "missing_ta", 3: "duplicate_row"}


def test_apihub_sentinel_and_short_rows(tmp_path):
    rows = [
        apihub_line("202606100900", 108, "20.9"),
        apihub_line("202606101000", 108, "-99.0"),  # sentinel -> missing
        apihub_line("202606101100", 108, "-9.0"),  # -9 is a real temperature
        "202606101200 108  18  2.2  -9",  # too few fields to reach TA
        apihub_line("2026061013", 108, "20.0"),  # 10-digit time
        apihub_line("202606101400", 108, "55.0"),  # implausible
    ]
    path = write_apihub(tmp_path / "a.txt", rows)
    labels, rejects = read_labels(path, fmt="kma_apihub_text")
    assert_accounted(labels, rejects, len(rows))
    assert labels["row"].tolist() == [1, 3]
    assert labels["ta_c"].tolist() == pytest.approx([20.9, -9.0])
    assert rejects.set_index("row")["reason"].to_dict() == {
        2: "missing_ta",
        4: "unparseable_row",
        5: "unparseable_row",
        6: "implausible_ta",
    }


def test_invariant_on_a_larger_messy_file(tmp_path):
    rng = np.random.default_rng(1)
    n = 2000
    times = pd.date_range("2021-03-01", periods=n // 4, freq="h").strftime("%Y-%m-%d %H:%M")
    rows = [
        f"{stn},이름,{times[i // 4]},{rng.normal(10, 8):.1f},,,,50"
        for i, stn in enumerate([90, 108, 119, 146] * (n // 4))
    ]
    for i in rng.choice(n, 300, replace=False):  # plant damage of every kind
        rows[i] = rng.choice(
            [
                rows[i].replace(",,,,", ",9,,,"),
                rows[i] + ",x",
                rows[i].replace("2021", "20x1"),
                rows[i - 1],
                rows[i].replace(",이름,", ",이름,,"),
            ]
        )
    path = write_portal(tmp_path / "big.csv", rows)
    labels, rejects = read_labels(path)
    assert_accounted(labels, rejects, n)
    assert not labels.duplicated(["stn", "time"]).any()
    assert set(rejects["reason"]) <= {"missing_ta", "unparseable_row", "duplicate_row", "implausible_ta"}


# ----------------------------------------------------------------------------------------------
# Encodings, header by name, errors


@pytest.mark.parametrize("encoding", ["cp949", "utf-8", "utf-8-sig"])
def test_encoding_auto_detection(tmp_path, encoding):
    path = write_portal(tmp_path / "a.csv", ["108,서울,2020-01-01 09:00,-5.9,,,,60"], encoding=encoding)
    labels, rejects = read_labels(path)
    assert len(labels) == 1 and rejects.empty
    assert len(read_labels(path, encoding=encoding.replace("-sig", ""))[0]) == 1


def test_wrong_explicit_encoding_is_a_labels_error(tmp_path):
    path = write_portal(tmp_path / "a.csv", ["108,서울,2020-01-01 09:00,-5.9,,,,60"], encoding="cp949")
    with pytest.raises(LabelsError, match="decode"):
        read_labels(path, encoding="utf-8")


def test_portal_columns_by_name_in_any_order_and_optional_qc(tmp_path):
    header = "일시,습도(%),기온(℃),지점"  # reordered, no 지점명, no QC column, ℃ sign variant
    path = write_portal(tmp_path / "a.csv", ["2020-01-01 09:00,50,-5.9,108"], header=header)
    labels, rejects = read_labels(path)
    assert labels[["stn", "time"]].values.tolist() == [[108, utc("2020-01-01 00:00")]]


def test_crlf_bom_and_trailing_commas(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(
        "\ufeff지점,일시,기온(°C),\r\n108,2020-01-01 09:00,-5.9,\r\n108,2020-01-01 10:00,-5.8\r\n".encode()
    )
    labels, rejects = read_labels(path)
    assert labels["ta_c"].tolist() == pytest.approx([-5.9, -5.8]) and rejects.empty


def test_missing_column_error_names_it(tmp_path):
    path = write_portal(
        tmp_path / "a.csv", ["108,서울,2020-01-01 09:00,60"], header="지점,지점명,일시,습도(%)"
    )
    with pytest.raises(LabelsError) as err:
        read_labels(path)
    message = str(err.value)
    assert "a.csv" in message and "기온(°C)" in message and "습도(%)" in message  # names missing + found


def test_apihub_without_ta_header_is_an_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("#START7777\n202606100900 108 18\n#7777END\n")
    with pytest.raises(LabelsError, match="TA"):
        read_labels(path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_bytes(b"\n  \n")
    with pytest.raises(LabelsError, match="empty"):
        read_labels(tmp_path / "empty.csv")
    assert issubclass(LabelsError, ValueError)


def test_header_only_file_gives_empty_frames(tmp_path):
    labels, rejects = read_labels(write_portal(tmp_path / "a.csv", []))
    assert labels.empty and rejects.empty
    assert list(labels.columns) == ["row", "stn", "time", "ta_c"]
    assert list(rejects.columns) == ["row", "stn", "time", "reason", "detail"]


# ----------------------------------------------------------------------------------------------
# Stations


def test_read_meta_csv_with_relocation(meta_csv):
    st = read_stations(meta_csv)
    assert st["stn"].tolist() == [90, 108, 108]
    assert st.dtypes["stn"] == np.int32 and st.dtypes["lat"] == np.float64
    seoul = st[st["stn"] == 108]
    # KST calendar days, end day included: [1907-10-01 00:00 KST, 2017-01-01 00:00 KST)
    assert seoul["valid_from"].iloc[0] == pd.Timestamp("1907-09-30 15:00", tz="UTC")
    assert seoul["valid_to"].iloc[0] == pd.Timestamp("2016-12-31 15:00", tz="UTC")
    assert pd.isna(seoul["valid_to"].iloc[1])
    assert st["name"].tolist() == ["속초", "서울", "서울"]


def test_relocation_picks_the_row_valid_at_the_observation(meta_csv):
    stations = read_stations(meta_csv)
    labels = pd.DataFrame(
        {
            "row": [1, 2, 3, 4, 5],
            "stn": np.array([108, 108, 90, 999, 90], dtype=np.int32),
            "time": [
                utc("2016-12-31 14:00"),  # 23:00 KST on the old site's last day
                utc("2016-12-31 15:00"),  # 00:00 KST 2017-01-01: new site
                utc("2020-01-01 00:00"),
                utc("2020-01-01 00:00"),  # unknown station
                utc("1967-12-31 14:00"),  # before station 90 opened
            ],
            "ta_c": np.float32([1, 2, 3, 4, 5]),
        }
    )
    kept, rejects = assign_station_metadata(labels, stations)
    assert kept["row"].tolist() == [1, 2, 3]
    assert kept["elev_m"].tolist() == [85.80, 85.67, 17.53]
    assert kept["lat"].tolist() == [37.5700, 37.5714, 38.2509]
    assert rejects["reason"].tolist() == ["unknown_station", "unknown_station"]
    assert rejects["row"].tolist() == [4, 5]
    assert "not in the station table" in rejects["detail"].iloc[0]
    assert "validity" in rejects["detail"].iloc[1]
    assert len(kept) + len(rejects) == len(labels)


def test_read_apihub_stn_inf(tmp_path):
    path = tmp_path / "stn_inf.txt"
    path.write_bytes(
        "\n".join(
            [
                "#START7777",
                "# STN_ID LON LAT STN_SP HT HT_PA HT_TA HT_WD HT_RN STN_AD STN_KO STN_EN FCT_ID LAW_ID BASIN",
                "   108 126.9658 37.5714 11 85.7 86.7 1.5 10.0 0.5 108 서울 Seoul 11B10101 1111000000 1",
                "   185 126.1628 33.2938 11 71.4 72.4 1.5 10.0 0.5 185 고산 기상대 Gosan 11G00501 50110 4",
                "#7777END",
            ]
        ).encode("cp949")
    )
    st = read_stations(path)
    assert st["stn"].tolist() == [108, 185]
    assert st["elev_m"].tolist() == [85.7, 71.4]
    assert st["lon"].tolist() == [126.9658, 126.1628]
    assert st["name"].tolist() == ["서울", "고산 기상대"]  # a Korean name with a space
    assert st["valid_from"].isna().all() and st["valid_to"].isna().all()


def test_read_plain_csv(tmp_path):
    path = tmp_path / "stations.csv"
    path.write_text(
        "stn,name,lat,lon,elev_m,extra\n108,Seoul,37.57,126.97,85.7,x\n90,Sokcho,38.25,128.56,17.5,y\n"
    )
    st = read_stations(path)
    assert st["stn"].tolist() == [90, 108] and st["name"].tolist() == ["Sokcho", "Seoul"]
    assert st["valid_from"].isna().all()


def test_broken_station_table_names_file_and_row(tmp_path, meta_csv):
    path = tmp_path / "stations.csv"
    path.write_text("stn,name,lat,lon,elev_m\n108,Seoul,37.57,126.97,85.7\n90,Sokcho,north,128.56,17.5\n")
    with pytest.raises(LabelsError, match=r"stations\.csv.*row 2.*lat 'north'"):
        read_stations(path)
    path.write_text("stn,lon,elev_m\n108,126.97,85.7\n")
    with pytest.raises(LabelsError, match="lat"):
        read_stations(path)
