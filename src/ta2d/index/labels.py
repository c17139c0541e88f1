"""Station air-temperature labels: KMA files -> canonical (row, stn, time, ta_c) + rejects.

Two source layouts (notes/gk2a_data.md section 5):
  kma_portal_csv   data.kma.go.kr hourly CSV, CP949, header by name: 지점, 일시, 기온(°C), [기온 QC플래그]
                   `일시` = "YYYY-MM-DD HH:MM" in KST.
  kma_apihub_text  apihub.kma.go.kr typ01 text, '#' comment header "# YYMMDDHHMI STN ... TA ...",
                   whitespace separated, data lines start with a 12-digit YYYYMMDDHHMI in KST.

Every data row ends up either in `labels` or in `rejects` with a reason (docs/results.md#rejects), and
both carry `row`, the 1-based number of the data row in the source file (header and '#' comment
lines and blank lines are not data rows), so `len(labels) + len(rejects) == data rows`.

QC convention of the data portal (docs/inputs.md#missing-values-and-qc-flags; a third-party source, to confirm
with the portal help):
the `기온 QC플래그` cell is empty or 0 for a normal value, 9 when the value is missing and 1 when it
was flagged as an error. Flags in `missing_qc_flags` give `missing_ta`, flags in `reject_qc_flags`
give `qc_flag`; any other flag value is kept.
"""

from __future__ import annotations

import csv
import gc
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from io import StringIO
from itertools import compress, repeat
from operator import itemgetter, not_
from pathlib import Path

import numpy as np
import pandas as pd

FORMATS = ("kma_portal_csv", "kma_apihub_text")
TIMEZONE_OFFSET_S = {"KST": 9 * 3600, "UTC": 0}  # Korea has had no DST since 1988

LABEL_COLUMNS = ("row", "stn", "time", "ta_c")
# the reasons this module gives; all reasons and their meaning: ta2d.rejects.REASONS
REJECT_REASONS = ("unparseable_row", "missing_ta", "qc_flag", "implausible_ta", "duplicate_row", "unknown_station")

# Portal CSV columns, matched after _column_key() normalisation (NFKC turns "℃" into "°C").
PORTAL_COLUMNS = {"stn": "지점", "time": "일시", "ta": "기온(°C)"}
PORTAL_QC_COLUMN = "기온 QC플래그"

# API Hub sentinels are -9 / -99.x / -999 (docs/inputs.md#missing-values-and-qc-flags); -9 is a real
# temperature, so only TA <= -90 is read as "missing". Applied to both layouts: no Korean surface reading is that cold.
TA_SENTINEL_MAX = -90.0

_PORTAL_TIME_FORMAT = "%Y-%m-%d %H:%M"
_APIHUB_TIME_FORMAT = "%Y%m%d%H%M"
# Slow-path patterns for what the fast strptime formats refuse: "24:00", a file re-saved by a
# spreadsheet ("2020-1-1 1:00", "2020/01/01 01:00:00").
_PORTAL_TIME_RE = r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$"
_APIHUB_TIME_RE = r"^\s*(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})()\s*$"


class LabelsError(ValueError):
    """A label or station file that cannot be read at all (missing, empty, wrong header)."""


# ----------------------------------------------------------------------------------------------
# Text decoding


def read_text(path, encoding: str = "auto") -> str:
    """Whole file as text with '\\n' line ends. encoding="auto": UTF-8 (BOM or not), else CP949.

    KMA files are CP949/EUC-KR (EUC-KR is a subset of CP949); files re-saved by other tools are
    usually UTF-8. Korean CP949 text is practically never valid UTF-8, so trying UTF-8 first is safe.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: file not found")
    data = path.read_bytes()
    candidates = ("utf-8-sig", "cp949") if encoding == "auto" else (encoding,)
    errors = []
    for enc in candidates:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as exc:
            errors.append(f"{enc}: {exc}")
            continue
        return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    raise LabelsError(f"{path}: cannot decode the file ({'; '.join(errors)})")


def _column_key(name: str) -> str:
    """Header name as compared: NFKC, no whitespace, lower case ("기온 QC플래그" == "기온qc플래그")."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", str(name))).lower()


def find_columns(found: list[str], wanted: dict[str, str], path, what: str = "columns") -> dict[str, int]:
    """Position of each wanted column in the header `found`; LabelsError naming all missing ones."""
    keys = [_column_key(f) for f in found]
    positions, missing = {}, []
    for role, name in wanted.items():
        key = _column_key(name)
        if key in keys:
            positions[role] = keys.index(key)
        else:
            missing.append(name)
    if missing:
        raise LabelsError(f"{path}: missing required {what} {missing}; columns found: {list(found)}")
    return positions


# ----------------------------------------------------------------------------------------------
# Public API


def read_labels(
    path,
    fmt: str = "auto",
    timezone: str = "KST",
    encoding: str = "auto",
    *,
    reject_qc_flags: Iterable[int] = (1,),
    missing_qc_flags: Iterable[int] = (9,),
    ta_range: tuple[float, float] = (-50.0, 50.0),
    ta_field: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a KMA station-temperature file.

    Returns (labels, rejects):
      labels  row int64 (1-based data row), stn int32, time int64 (Unix s UTC), ta_c float32
      rejects row int64, stn Int32 (nullable), time Int64 (nullable), reason str, detail str
    Reasons, first match wins: unparseable_row, missing_ta, qc_flag, implausible_ta (outside the
    closed `ta_range`, °C), duplicate_row (same stn+time as an earlier *accepted* row: the first
    one is kept, so a missing first copy does not hide a valid later one).
    timezone: the zone of the file's times ("KST" for every KMA surface product); "24:00" is
    00:00 of the next day. ta_field: 0-based TA field of an API Hub file without a column header.
    """
    # the whole file as one block, so a repeat is found wherever it stands
    ((labels, rejects),) = iter_labels(path, fmt, timezone, encoding, block_chars=sys.maxsize, ta_field=ta_field,
                                       reject_qc_flags=reject_qc_flags, missing_qc_flags=missing_qc_flags,
                                       ta_range=ta_range)
    return labels, rejects


def iter_labels(path, fmt: str = "auto", timezone: str = "KST", encoding: str = "auto", *,
                block_chars: int = 16_000_000, ta_field: int | None = None, **checks) -> Iterator[tuple]:
    """:func:`read_labels` in blocks of about `block_chars` characters of whole lines: yields (labels, rejects)
    per block, with the file's own row numbers. Memory holds the file's text and one block's parsed rows (a
    year of 600 stations parsed at once took 2.3 GB). A (stn, time) repeated in another block is not rejected
    here: whoever gathers the rows must (the chunk job does, ta2d.index.match); inside a block it is.
    """
    if timezone not in TIMEZONE_OFFSET_S:
        raise ValueError(f"timezone must be one of {list(TIMEZONE_OFFSET_S)}, got {timezone!r}")
    text = read_text(path, encoding)
    if not text.strip():
        raise LabelsError(f"{path}: empty file")
    start, preamble, rows_before = 0, None, 0
    while start < len(text):
        end = len(text) if start + block_chars >= len(text) else text.rfind("\n", start, start + block_chars) + 1
        if end <= start:  # one line longer than a block
            end = text.find("\n", start + block_chars)
            end = len(text) if end < 0 else end + 1
        lines = text[start:end].split("\n")
        start = end
        if preamble is None:
            fmt = detect_format(lines, path) if fmt == "auto" else fmt
            preamble = _preamble(lines, fmt)
            block = lines
        else:
            block = preamble + lines
        labels, rejects = _read_lines(block, path, fmt, ta_field, rows_before, timezone=timezone, **checks)
        rows_before += len(labels) + len(rejects)
        yield labels, rejects


def _preamble(lines: list[str], fmt: str) -> list[str]:
    """The lines every block needs before its data: the CSV header, or the '#' header lines of an API Hub file."""
    comment = "#" if fmt == "kma_apihub_text" else None
    first_data = next((i for i, line in enumerate(lines)
                       if line.strip() and not (comment and line.lstrip().startswith(comment))), len(lines))
    return lines[:first_data + 1] if fmt == "kma_portal_csv" else lines[:first_data]


def _read_lines(lines: list[str], path, fmt: str, ta_field, rows_before: int, *, timezone: str = "KST",
                reject_qc_flags: Iterable[int] = (1,), missing_qc_flags: Iterable[int] = (9,),
                ta_range: tuple[float, float] = (-50.0, 50.0)):
    if fmt == "kma_portal_csv":
        raw, time_format, time_re = _portal_rows(lines, path), _PORTAL_TIME_FORMAT, _PORTAL_TIME_RE
    elif fmt == "kma_apihub_text":
        raw, time_format, time_re = _apihub_rows(lines, path, ta_field), _APIHUB_TIME_FORMAT, _APIHUB_TIME_RE
    else:
        raise ValueError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    raw["row"] += rows_before
    return _classify(
        raw,
        time_format=time_format,
        time_re=time_re,
        offset_s=TIMEZONE_OFFSET_S[timezone],
        reject_qc_flags=set(reject_qc_flags),
        missing_qc_flags=set(missing_qc_flags),
        ta_range=ta_range,
    )


def detect_format(lines: list[str], path="<text>") -> str:
    """'kma_apihub_text' when the file opens with a '#' line or a 12-digit time, else the portal CSV."""
    first = next((line.strip() for line in lines if line.strip()), None)
    if first is None:
        raise LabelsError(f"{path}: empty file")
    if first.startswith("#") or ("," not in first and re.match(r"^\d{12}\s", first)):
        return "kma_apihub_text"
    return "kma_portal_csv"


def assign_station_metadata(
    labels: pd.DataFrame, stations: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add lat, lon, elev_m of the station row valid at each observation time.

    `stations` as returned by ta2d.index.stations.read_stations: a station that moved has one row per
    location with half-open UTC validity [valid_from, valid_to) (NaT = open). Overlapping periods
    resolve to the row that started last (the newer location). Labels whose station is unknown,
    or whose time is outside every period of the station, are rejected as `unknown_station`.
    Returns (labels with the three columns added, in input order; rejects, with the labels' `source` when
    they have one).
    """
    _require_frame_columns(labels, ("row", "stn", "time"), "labels")
    _require_frame_columns(stations, ("stn", "lat", "lon", "elev_m", "valid_from", "valid_to"), "stations")
    obs = labels.drop(columns=["lat", "lon", "elev_m"], errors="ignore").reset_index(drop=True)
    obs["_order"] = np.arange(len(obs))
    obs["_stn"] = obs["stn"].astype(np.int64)
    obs["_t"] = obs["time"].astype(np.int64)
    meta = pd.DataFrame(
        {
            "_stn": stations["stn"].astype(np.int64).to_numpy(),
            "_from": _to_unix_s(stations["valid_from"], open_value=np.iinfo(np.int64).min),
            "_to": _to_unix_s(stations["valid_to"], open_value=np.iinfo(np.int64).max),
            "lat": stations["lat"].astype(np.float64).to_numpy(),
            "lon": stations["lon"].astype(np.float64).to_numpy(),
            "elev_m": stations["elev_m"].astype(np.float64).to_numpy(),
        }
    ).sort_values("_from", kind="stable")
    # merge_asof takes, per station, the last period that started at or before the observation;
    # it then only has to be checked against that period's end.
    merged = pd.merge_asof(
        obs.sort_values("_t", kind="stable"),
        meta,
        left_on="_t",
        right_on="_from",
        by="_stn",
        direction="backward",
    ).sort_values("_order", kind="stable")
    ok = merged["_from"].notna().to_numpy() & (merged["_t"].to_numpy() < merged["_to"].fillna(0).to_numpy())
    out_cols = [c for c in obs.columns if not c.startswith("_")] + ["lat", "lon", "elev_m"]
    kept = merged.loc[ok, out_cols].reset_index(drop=True)
    bad = merged.loc[~ok]
    known = bad["_stn"].isin(meta["_stn"]).to_numpy()
    when = pd.to_datetime(bad["_t"], unit="s").dt.strftime("%Y-%m-%d %H:%M UTC")
    stn_txt = bad["_stn"].astype(str)
    detail = np.where(
        known,
        "time " + when + " is outside every validity period of station " + stn_txt,
        "station " + stn_txt + " is not in the station table",
    )
    rejects = _reject_frame(bad["row"], bad["_stn"], bad["_t"], "unknown_station", detail)
    if "source" in bad:  # rows from several label files: a row number alone does not name the row
        rejects.insert(0, "source", bad["source"].to_numpy())
    return kept, rejects


# ----------------------------------------------------------------------------------------------
# Layout readers: lines -> one string record per data row (nothing parsed yet)
#
# Records are a dict of equal-length numpy arrays: row (int64) and stn, time, ta, qc, fault
# (object arrays of str; "" when absent; fault says why a row's shape makes it unparseable).


def _portal_rows(lines: list[str], path) -> dict[str, np.ndarray]:
    """Records of a data-portal CSV; header columns are found by name, extra columns ignored."""
    header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_at is None:
        raise LabelsError(f"{path}: empty file")
    header = next(csv.reader([lines[header_at]]))
    want = dict(PORTAL_COLUMNS)
    if _column_key(PORTAL_QC_COLUMN) in {_column_key(h) for h in header}:
        want["qc"] = PORTAL_QC_COLUMN
    cols = find_columns(header, want, path)
    data = _nonblank(lines[header_at + 1 :])

    # The portal does not quote fields, so counting commas gives the field count. A row with a
    # different count has shifted columns (or is truncated) and cannot be trusted. One trailing
    # comma, on the header or on a row, is tolerated (spreadsheet exports add them).
    n_cols = len(header) - (header[-1].strip() == "")
    n_fields = np.fromiter(map(str.count, data, repeat(",")), np.int64, len(data)) + 1
    trailing_comma = np.fromiter(map(str.endswith, data, repeat(",")), bool, len(data))
    shape_ok = (n_fields == n_cols) | ((n_fields == n_cols + 1) & trailing_comma)
    header_again = np.fromiter(map(str.__eq__, data, repeat(lines[header_at])), bool, len(data))
    shape_ok &= ~header_again

    records = _empty_records(len(data))
    if shape_ok.any():
        good = np.array(data, dtype=object)
        extra = shape_ok & (n_fields == n_cols + 1)
        good[extra] = np.fromiter(map(itemgetter(slice(None, -1)), good[extra]), object, int(extra.sum()))
        good_text = "\n".join(good[shape_ok])
        parsed = pd.read_csv(
            StringIO(good_text),
            header=None,
            usecols=sorted(cols.values()),
            dtype=str,
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
            engine="c",
        )
        if len(parsed) != int(shape_ok.sum()):  # would break the row bookkeeping: fail loudly
            raise LabelsError(f"{path}: CSV parser returned {len(parsed)} rows for {shape_ok.sum()} lines")
        for role, pos in cols.items():
            records[role][shape_ok] = parsed[pos].to_numpy(dtype=object)
    records["fault"] = _faults(
        ~shape_ok,
        lambda bad: np.where(
            header_again[bad],
            "repeated header line",
            f"expected {n_cols} fields, found " + _ints(n_fields[bad]),
        ),
    )
    return records


def _apihub_rows(lines: list[str], path, ta_field: int | None) -> dict[str, np.ndarray]:
    """Records of an API Hub typ01 text file; fields by position, TA position from the header."""
    stn_at, ta_at = _apihub_positions(lines, path, ta_field)
    data = _nonblank(lines)
    data = list(compress(data, map(not_, map(str.startswith, map(str.lstrip, data), repeat("#")))))
    need = max(stn_at, ta_at) + 1
    # Only the leading fields are split off: later ones (present weather WW, ...) may contain
    # spaces, so a row is well formed when it has *at least* `need` fields.
    with _gc_paused():  # millions of short-lived lists: the cyclic GC would dominate the run time
        pieces = list(map(str.split, data, repeat(None), repeat(need)))
        n_fields = np.fromiter(map(len, pieces), np.int64, len(pieces))
        shape_ok = n_fields >= need
        good = list(compress(pieces, shape_ok))
        records = _empty_records(len(data))
        for role, pos in (("time", 0), ("stn", stn_at), ("ta", ta_at)):
            records[role][shape_ok] = np.fromiter(map(itemgetter(pos), good), object, len(good))
        del pieces, good  # freed before the collector is back, or it would walk them all once
    records["fault"] = _faults(
        ~shape_ok, lambda bad: f"expected at least {need} fields, found " + _ints(n_fields[bad])
    )
    # strptime would take "2026061013" as 10 June 01:03; the layout is exactly 12 digits.
    tm = records["time"]
    tm_ok = np.fromiter(map(str.isdigit, tm), bool, len(tm)) & (
        np.fromiter(map(len, tm), np.int64, len(tm)) == 12
    )
    bad_tm = shape_ok & ~tm_ok
    records["fault"][bad_tm] = "time " + _quoted(tm[bad_tm]) + " is not 12-digit YYYYMMDDHHMI"
    return records


def _apihub_positions(lines: list[str], path, ta_field: int | None) -> tuple[int, int]:
    """(STN, TA) field positions from the last '#' line naming both, e.g. '# YYMMDDHHMI STN ... TA'."""
    header = None
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break  # the column header precedes the data
        tokens = stripped.lstrip("#").split()
        if "STN" in tokens and "TA" in tokens:
            header = tokens
    if header is not None:
        return header.index("STN"), (ta_field if ta_field is not None else header.index("TA"))
    if ta_field is not None:
        return 1, ta_field
    raise LabelsError(
        f"{path}: missing required columns ['STN', 'TA']: no '#' header line names them "
        "(columns found: none); pass ta_field= for a headerless API Hub file"
    )


def _nonblank(lines: list[str]) -> list[str]:
    return list(compress(lines, map(str.strip, lines)))


def _faults(bad: np.ndarray, describe) -> np.ndarray:
    """Per-row fault text, "" for well-formed rows; `describe` only sees the (few) bad ones."""
    fault = np.full(len(bad), "", dtype=object)
    if bad.any():
        fault[bad] = describe(bad)
    return fault


def _empty_records(n: int) -> dict[str, np.ndarray]:
    records = {"row": np.arange(1, n + 1, dtype=np.int64)}
    for role in ("stn", "time", "ta", "qc", "fault"):
        records[role] = np.full(n, "", dtype=object)
    return records


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# ----------------------------------------------------------------------------------------------
# Records -> labels + rejects


class _Verdicts:
    """First reason wins: each check only marks rows that no earlier check rejected."""

    def __init__(self, n: int):
        self.reason = np.full(n, "", dtype=object)
        self.detail = np.full(n, "", dtype=object)

    def reject(self, mask: np.ndarray, reason: str, detail: str | Callable[[np.ndarray], Iterable[str]]):
        new = np.asarray(mask, dtype=bool) & (self.reason == "")
        if not new.any():
            return
        self.reason[new] = reason
        self.detail[new] = detail if isinstance(detail, str) else np.asarray(list(detail(new)), dtype=object)

    @property
    def accepted(self) -> np.ndarray:
        return self.reason == ""


def _classify(raw, *, time_format, time_re, offset_s, reject_qc_flags, missing_qc_flags, ta_range):
    v = _Verdicts(len(raw["row"]))
    v.reject(raw["fault"] != "", "unparseable_row", lambda m: raw["fault"][m])

    stn_num = np.asarray(pd.to_numeric(raw["stn"], errors="coerce"), dtype=np.float64)
    stn_ok = np.isfinite(stn_num) & (stn_num % 1 == 0) & (stn_num >= 0) & (stn_num <= np.iinfo(np.int32).max)
    v.reject(
        ~stn_ok, "unparseable_row", lambda m: "station id " + _quoted(raw["stn"][m]) + " is not an integer"
    )

    time_s, time_ok = parse_local_times(raw["time"], time_format, time_re)
    time_s = time_s - offset_s
    v.reject(
        ~time_ok, "unparseable_row", lambda m: "time " + _quoted(raw["time"][m]) + " is not a valid time"
    )

    ta_empty = _blank(raw["ta"])
    ta = np.asarray(pd.to_numeric(raw["ta"], errors="coerce"), dtype=np.float64)
    v.reject(
        ~ta_empty & np.isnan(ta),
        "unparseable_row",
        lambda m: "TA " + _quoted(raw["ta"][m]) + " is not a number",
    )

    qc = np.asarray(pd.to_numeric(raw["qc"], errors="coerce"), dtype=np.float64)
    qc_bad = ~_blank(raw["qc"]) & (~np.isfinite(qc) | (qc % 1 != 0))
    v.reject(qc_bad, "unparseable_row", lambda m: "QC flag " + _quoted(raw["qc"][m]) + " is not an integer")
    qc = np.where(np.isfinite(qc), qc, 0).astype(np.int64)  # blank = 0 = normal

    v.reject(ta_empty, "missing_ta", "TA is empty")
    v.reject(
        np.isin(qc, list(missing_qc_flags)),
        "missing_ta",
        lambda m: "QC flag " + qc[m].astype(str) + " (missing)",
    )
    v.reject(
        ta <= TA_SENTINEL_MAX, "missing_ta", lambda m: "TA " + _fmt(ta[m]) + " is a missing-value sentinel"
    )
    v.reject(np.isin(qc, list(reject_qc_flags)), "qc_flag", lambda m: "QC flag " + qc[m].astype(str))
    lo, hi = ta_range
    v.reject(
        (ta < lo) | (ta > hi),
        "implausible_ta",
        lambda m: "TA " + _fmt(ta[m]) + f" outside [{lo:g}, {hi:g}] °C",
    )
    stn = np.where(stn_ok, stn_num, 0).astype(np.int32)
    _reject_duplicates(v, raw["row"], stn, time_s, ta)

    keep = v.accepted
    labels = pd.DataFrame(
        {
            "row": raw["row"][keep],
            "stn": stn[keep],
            "time": time_s[keep],
            "ta_c": ta[keep].astype(np.float32),
        }
    )
    rej = ~keep
    rejects = _reject_frame(
        raw["row"][rej],
        pd.Series(stn, dtype="Int32").where(stn_ok)[rej],
        pd.Series(time_s, dtype="Int64").where(time_ok)[rej],
        v.reason[rej],
        v.detail[rej],
    )
    return labels, rejects


def _reject_duplicates(v: _Verdicts, row, stn, time_s, ta):
    """Among rows still accepted, a later (stn, time) repeat is rejected; the first is kept."""
    acc = np.flatnonzero(v.accepted)
    keys = pd.DataFrame({"stn": stn[acc], "time": time_s[acc]})
    dup = keys.duplicated(keep="first").to_numpy()
    if not dup.any():
        return
    first = keys.assign(row=row[acc], ta=ta[acc]).groupby(["stn", "time"], sort=False).transform("first")
    first_row, first_ta = first["row"].to_numpy()[dup], first["ta"].to_numpy()[dup]
    this_ta = ta[acc][dup]
    agree = np.where(
        this_ta == first_ta, "same TA", "TA " + _fmt(this_ta) + " differs from kept " + _fmt(first_ta)
    )
    mask = np.zeros(len(row), dtype=bool)
    mask[acc[dup]] = True
    v.reject(mask, "duplicate_row", lambda m: "duplicate of row " + first_row.astype(str) + ": " + agree)


def parse_local_times(text: np.ndarray, fmt: str, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock time strings -> (Unix seconds as if the wall clock were UTC, ok mask).

    Fast path: one strptime format for the whole column. Rows it refuses go through `pattern`
    (groups year, month, day, hour, minute, [second]) which also accepts hour 24 at minute 0,
    KMA's way of writing midnight at the end of a day.
    """
    text = np.asarray(text, dtype=object)
    parsed = pd.DatetimeIndex(pd.to_datetime(text, format=fmt, errors="coerce"))
    ok = np.array(parsed.notna())
    seconds = np.zeros(len(text), dtype=np.int64)
    seconds[ok] = parsed[ok].to_numpy().astype("datetime64[s]").astype(np.int64)
    retry = np.flatnonzero(~ok)
    if len(retry):
        s, good = _parse_by_parts(pd.Series(text[retry], dtype=object), pattern)
        seconds[retry[good]] = s[good]
        ok[retry[good]] = True
    return seconds, ok


def _parse_by_parts(text: pd.Series, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    parts = text.astype(str).str.extract(pattern).apply(pd.to_numeric, errors="coerce")
    parts.columns = ["year", "month", "day", "hour", "minute", "second"]
    parts["second"] = parts["second"].fillna(0)
    day = pd.to_datetime(parts[["year", "month", "day"]], errors="coerce")
    h, mi, sec = (parts[c].to_numpy() for c in ("hour", "minute", "second"))
    clock_ok = ((h <= 23) | ((h == 24) & (mi == 0) & (sec == 0))) & (mi <= 59) & (sec <= 59)
    ok = day.notna().to_numpy() & clock_ok
    seconds = np.zeros(len(text), dtype=np.int64)
    seconds[ok] = day[ok].to_numpy().astype("datetime64[s]").astype(np.int64) + (
        h[ok] * 3600 + mi[ok] * 60 + sec[ok]
    ).astype(np.int64)
    return seconds, ok


# ----------------------------------------------------------------------------------------------
# Small helpers


def _reject_frame(row, stn, time, reason, detail) -> pd.DataFrame:
    n = len(row)
    return pd.DataFrame(
        {
            "row": np.asarray(row, dtype=np.int64),
            "stn": pd.array(np.asarray(stn, dtype=object) if n else [], dtype="Int32"),
            "time": pd.array(np.asarray(time, dtype=object) if n else [], dtype="Int64"),
            "reason": pd.array(np.broadcast_to(np.asarray(reason, dtype=object), (n,)), dtype="str"),
            "detail": pd.array(np.broadcast_to(np.asarray(detail, dtype=object), (n,)), dtype="str"),
        }
    )


def empty_rejects() -> pd.DataFrame:
    return _reject_frame([], [], [], [], [])


def _quoted(values) -> np.ndarray:
    return np.array([repr(str(x)) for x in values], dtype=object)


def _blank(text: np.ndarray) -> np.ndarray:
    """Empty or whitespace-only cells."""
    return ~np.fromiter(map(bool, map(str.strip, text)), bool, len(text))


def _ints(values) -> np.ndarray:
    return np.asarray(values).astype(str).astype(object)


def _fmt(values) -> np.ndarray:
    return np.char.mod("%g", np.asarray(values, dtype=np.float64)).astype(object)


def _to_unix_s(values: pd.Series, open_value: int) -> np.ndarray:
    """Timestamps (naive = UTC, or tz-aware) -> Unix seconds; NaT -> open_value."""
    ts = pd.to_datetime(values, utc=True)
    out = np.full(len(ts), open_value, dtype=np.int64)
    ok = ts.notna().to_numpy()
    out[ok] = ts[ok].dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)
    return out


def _require_frame_columns(df: pd.DataFrame, names, what: str):
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise LabelsError(f"{what}: missing required columns {missing}; columns found: {list(df.columns)}")
