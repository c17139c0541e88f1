"""Station tables: KMA station metadata -> one row per (station, location period).

Accepted layouts, detected from the file:
  (a) data-portal META CSV (CP949 or UTF-8), columns by name: 지점, 시작일, 종료일, 지점명, 위도, 경도,
      노장해발고도(m), ... (extra columns ignored). A station that moved has one row per location.
      시작일/종료일 are KST calendar days; the end day is included (empty 종료일 = still open).
  (b) API Hub `stn_inf.php` text: '#' comments, whitespace fields by position, e.g.
      "# STN_ID LON LAT STN_SP HT HT_PA HT_TA HT_WD HT_RN STN_AD STN_KO STN_EN FCT_ID LAW_ID BASIN".
      It describes one moment (its tm= argument), so validity is open at both ends.
  (c) plain CSV: stn, name, lat, lon, elev_m [, valid_from, valid_to] with validity as UTC instants
      in the same half-open convention as the output (so a written table reads back unchanged).

Output columns: stn int32, name str, lat, lon, elev_m float64, valid_from, valid_to (tz-aware UTC
Timestamps, half-open [valid_from, valid_to), NaT = open). A station table is small and must be
right, so a bad row raises LabelsError naming the file, the row and the value instead of being
skipped.
"""

from __future__ import annotations

import re
from io import StringIO

import numpy as np
import pandas as pd

from ta2d.index.labels import LabelsError, _column_key, find_columns, read_text

STATION_COLUMNS = ("stn", "name", "lat", "lon", "elev_m", "valid_from", "valid_to")
# KST as KMA uses it: a fixed UTC+9 (not the Asia/Seoul zone, whose history has LMT and +08:30 eras).
KST_OFFSET = pd.Timedelta(hours=9)

META_COLUMNS = {"stn": "지점", "lat": "위도", "lon": "경도", "elev_m": "노장해발고도(m)"}
META_OPTIONAL = {"name": "지점명", "valid_from": "시작일", "valid_to": "종료일"}
PLAIN_COLUMNS = {"stn": "stn", "lat": "lat", "lon": "lon", "elev_m": "elev_m"}
PLAIN_OPTIONAL = {"name": "name", "valid_from": "valid_from", "valid_to": "valid_to"}

# stn_inf.php?inf=SFC positions, used only when the file has no '#' column header line.
STN_INF_DEFAULT = [
    "STN_ID",
    "LON",
    "LAT",
    "STN_SP",
    "HT",
    "HT_PA",
    "HT_TA",
    "HT_WD",
    "HT_RN",
    "STN_AD",
    "STN_KO",
    "STN_EN",
    "FCT_ID",
    "LAW_ID",
    "BASIN",
]


def read_stations(path, encoding: str = "auto") -> pd.DataFrame:
    """Read a station table in any of the layouts above; sorted by stn, valid_from."""
    text = read_text(path, encoding)
    first = next((line.strip() for line in text.split("\n") if line.strip()), None)
    if first is None:
        raise LabelsError(f"{path}: empty file")
    if first.startswith("#") or "," not in first:
        table = _read_stn_inf(text, path)
    else:
        table = _read_csv_table(text, path)
    _check_periods(table, path)
    return table.sort_values(["stn", "valid_from"], kind="stable", na_position="first").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Layouts


def _read_csv_table(text: str, path) -> pd.DataFrame:
    raw = pd.read_csv(StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    header = list(raw.columns)
    keys = {_column_key(h) for h in header}
    if _column_key("지점") in keys:
        wanted, optional, utc_offset, whole_day = META_COLUMNS, META_OPTIONAL, KST_OFFSET, True
    elif "stn" in keys:
        wanted, optional, utc_offset, whole_day = PLAIN_COLUMNS, PLAIN_OPTIONAL, pd.Timedelta(0), False
    else:
        raise LabelsError(
            f"{path}: not a station table: missing required columns ['지점', '위도', '경도', "
            f"'노장해발고도(m)'] (KMA META) or ['stn', 'lat', 'lon', 'elev_m']; columns found: {header}"
        )
    cols = find_columns(header, wanted, path)
    cols.update({role: pos for role, pos in _find_optional(header, optional).items()})
    field = {role: raw.iloc[:, pos].str.strip() for role, pos in cols.items()}
    blank = pd.Series("", index=raw.index)
    return pd.DataFrame(
        {
            "stn": _station_ids(field["stn"], path),
            "name": field.get("name", blank).astype("str"),
            "lat": _numbers(field["lat"], "lat", path, lo=-90, hi=90),
            "lon": _numbers(field["lon"], "lon", path, lo=-180, hi=360),
            "elev_m": _numbers(field["elev_m"], "elev_m", path, allow_empty=True),
            "valid_from": _times(field.get("valid_from", blank), "valid_from", path, utc_offset, whole_day),
            "valid_to": _times(
                field.get("valid_to", blank), "valid_to", path, utc_offset, whole_day, end=True
            ),
        }
    )


def _read_stn_inf(text: str, path) -> pd.DataFrame:
    """API Hub station list. Numeric fields by position; STN_KO may contain spaces, so it takes
    every token between the fields before it and the (space-free) fields after it."""
    lines = [line for line in text.split("\n") if line.strip()]
    header = _stn_inf_header(lines) or STN_INF_DEFAULT
    stn_key = "STN_ID" if "STN_ID" in header else "STN"
    pos = find_columns(header, {"stn": stn_key, "lon": "LON", "lat": "LAT", "elev_m": "HT"}, path)
    name_at = header.index("STN_KO") if "STN_KO" in header else None
    rows = [line.split() for line in lines if not line.lstrip().startswith("#")]  # small table
    need = max(pos.values()) + 1
    for i, tokens in enumerate(rows, start=1):
        if len(tokens) < need:
            raise LabelsError(f"{path}: data row {i}: expected at least {need} fields, found {len(tokens)}")
    n_after = len(header) - name_at - 1 if name_at is not None else 0
    names = [
        " ".join(t[name_at : max(name_at + 1, len(t) - n_after)]) if name_at is not None else "" for t in rows
    ]
    field = {role: pd.Series([t[p] for t in rows], dtype="str") for role, p in pos.items()}
    return pd.DataFrame(
        {
            "stn": _station_ids(field["stn"], path),
            "name": pd.Series(names, dtype="str"),
            "lat": _numbers(field["lat"], "lat", path, lo=-90, hi=90),
            "lon": _numbers(field["lon"], "lon", path, lo=-180, hi=360),
            "elev_m": _numbers(field["elev_m"], "elev_m", path, allow_empty=True),
            "valid_from": pd.Series(pd.NaT, index=range(len(rows)), dtype="datetime64[s, UTC]"),
            "valid_to": pd.Series(pd.NaT, index=range(len(rows)), dtype="datetime64[s, UTC]"),
        }
    )


def _stn_inf_header(lines: list[str]) -> list[str] | None:
    """Tokens of the last '#' line before the data that names LON and LAT."""
    header = None
    for line in lines:
        if not line.lstrip().startswith("#"):
            break
        tokens = line.strip().lstrip("#").split()
        if "LON" in tokens and "LAT" in tokens:
            header = tokens
    return header


def _find_optional(header: list[str], optional: dict[str, str]) -> dict[str, int]:
    keys = [_column_key(h) for h in header]
    return {
        role: keys.index(_column_key(name)) for role, name in optional.items() if _column_key(name) in keys
    }


# ----------------------------------------------------------------------------------------------
# Field parsing: strict, the first bad value raises with its data row (1-based)


def _station_ids(text: pd.Series, path) -> pd.Series:
    num = pd.to_numeric(text, errors="coerce")
    bad = num.isna() | (num % 1 != 0) | (num < 0) | (num > np.iinfo(np.int32).max)
    _raise_first(bad, text, "stn", path, "is not a station id")
    return num.astype(np.int32)


def _numbers(text: pd.Series, what: str, path, lo=None, hi=None, allow_empty=False) -> pd.Series:
    """Float column; empty cells become NaN only where allowed (an unknown elevation is missing
    information, a bad latitude is a broken table)."""
    empty = text.str.strip() == ""
    num = pd.to_numeric(text, errors="coerce").astype(np.float64)
    bad = num.isna() & ~(empty & allow_empty)
    if lo is not None:
        bad |= (num < lo) | (num > hi)
    _raise_first(
        bad, text, what, path, "is not a number" if lo is None else f"is not a number in [{lo}, {hi}]"
    )
    return num


def _times(
    text: pd.Series, what: str, path, utc_offset: pd.Timedelta, whole_day: bool, end=False
) -> pd.Series:
    """Validity bound -> tz-aware UTC Timestamp (NaT when empty = open).

    A naive value is local time at `utc_offset`. whole_day (KMA META): the cell is a calendar day;
    a start is that day's 00:00, an end is the *next* day's 00:00 so that the end day itself is
    still valid (the output is half-open).
    """
    empty = text.str.strip() == ""
    parsed = pd.to_datetime(text.where(~empty, None), format="mixed", errors="coerce")
    _raise_first(parsed.isna() & ~empty, text, what, path, "is not a date")
    if whole_day:
        parsed = parsed.dt.normalize() + (pd.Timedelta(days=1) if end else pd.Timedelta(0))
    if parsed.dt.tz is None:
        parsed = parsed.dt.tz_localize("UTC") - utc_offset
    return parsed.dt.tz_convert("UTC").astype("datetime64[s, UTC]")


def _check_periods(table: pd.DataFrame, path):
    """One station's rows must have distinct starts and each period must end after it starts."""
    backwards = (table["valid_to"] <= table["valid_from"]).fillna(False)
    _raise_first(backwards, table["valid_to"].astype(str), "valid_to", path, "is not after valid_from")
    twice = table.duplicated(["stn", "valid_from"], keep="first")
    _raise_first(twice, table["stn"].astype(str), "stn", path, "appears twice with the same valid_from")


def _raise_first(bad: pd.Series, text: pd.Series, what: str, path, problem: str):
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        count = f" ({int(bad.sum())} bad rows in all)" if bad.sum() > 1 else ""
        value = re.sub(r"\s+", " ", str(text.iloc[i]))
        raise LabelsError(f"{path}: data row {i + 1}: {what} {value!r} {problem}{count}")
