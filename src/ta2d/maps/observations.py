"""Station observations for the maps: the one place that reads them (from the index of the day's month, written by
rule build_index), and the map values at the stations' pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.grid import Domain

OBS_COLUMNS = ("stn", "time", "lat", "lon", "line", "column", "ta_c")
_DTYPES = {"stn": "int64", "time": "int64", "lat": "float64", "lon": "float64", "line": "int64", "column": "int64",
           "ta_c": "float64"}


def day_observations(index_csv: str | Path, day: str) -> pd.DataFrame:
    """Observed TA of every station at the slots of one UTC day (YYYYMMDD), from ``results/index/{YYYYMM}/index.csv``
    (every accepted label row, all splits): columns stn, time (Unix s, UTC), lat, lon, line, column, ta_c.

    Raises ValueError naming the file when it lacks a column. Read in pieces, so memory stays at one day's
    rows whatever the index's length.
    """
    path = Path(index_csv)
    start = int(pd.Timestamp(day, tz="UTC").timestamp())
    end = start + 86400
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError) as err:
        raise ValueError(f"station observations {path}: cannot be read as CSV ({err})") from err
    missing = [c for c in OBS_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"station observations {path}: no column(s) {missing} (has {list(header)})")
    parts = [part[(part["time"] >= start) & (part["time"] < end)]
             for part in pd.read_csv(path, usecols=list(OBS_COLUMNS), dtype=_DTYPES, chunksize=500_000)]
    out = pd.concat(parts) if parts else no_observations()
    out = out[np.isfinite(out["ta_c"])]
    return out.loc[:, list(OBS_COLUMNS)].sort_values(["time", "stn"]).reset_index(drop=True)


def read_station_table(path: str | Path) -> pd.DataFrame:
    """The observations of a map_day station table (``{day}_stations.csv``, which holds them beside the map
    values): columns as :func:`day_observations`. Raises ValueError naming the file when it lacks a column."""
    try:
        table = pd.read_csv(path, dtype=_DTYPES)
    except (OSError, ValueError) as err:
        raise ValueError(f"station table {path}: cannot be read as CSV ({err})") from err
    missing = [c for c in OBS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"station table {path}: no column(s) {missing} (has {list(table.columns)})")
    return table.loc[:, list(OBS_COLUMNS)].drop_duplicates(["stn", "time"]).reset_index(drop=True)


def no_observations() -> pd.DataFrame:
    """An empty observation table (the columns of :func:`day_observations`)."""
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in OBS_COLUMNS})


def values_at(field: np.ndarray, domain: Domain, lines, columns) -> np.ndarray:
    """field (..., H, W) at the pixels (1-based FD line, column): (..., N), NaN outside the domain."""
    li = np.asarray(lines, np.int64) - domain.first_line
    ci = np.asarray(columns, np.int64) - domain.first_column
    nl, nc = field.shape[-2:]
    inside = (li >= 0) & (li < nl) & (ci >= 0) & (ci < nc)
    out = np.full((*field.shape[:-2], len(li)), np.nan, np.float64)
    out[..., inside] = field[..., li[inside], ci[inside]]
    return out
