"""Station observations for the maps: the one place that turns label rows into observations at map pixels (the
parse-time routing writes each map unit's rows to ``results/labels/obs/{unit}.csv``; ta2d.index.route), and the
map values at the stations' pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.grid import Domain

OBS_COLUMNS = ("stn", "time", "lat", "lon", "line", "column", "ta_c")
_DTYPES = {"stn": "int64", "time": "int64", "lat": "float64", "lon": "float64", "line": "int64", "column": "int64",
           "ta_c": "float64"}


def unit_observations(labels: pd.DataFrame, stations, static, status: pd.DataFrame, patch_size: int
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(observations, rejects) of a map unit's label rows (``source, row, stn, time, ta_c``: its part of
    ``results/labels/obs/``, or rows read from a label file): matched to stations, pixels, land cover and the scene's
    slots by the chunk builder's own matching (ta2d.index.match), so a station corrects the map exactly where it
    would be a training sample. ``stations``: the station table or its path; ``status``: the scene's (time,
    status). Observations have the columns OBS_COLUMNS, sorted by time and station."""
    from ta2d.index.match import match_part

    if not isinstance(stations, pd.DataFrame):
        from ta2d.index.stations import read_stations

        stations = read_stations(stations)
    if not len(labels):
        return no_observations(), pd.DataFrame()
    matched, rejects = match_part(labels, stations, static, status, patch_size)
    out = matched.loc[np.isfinite(matched["ta_c"].to_numpy(np.float64)), list(OBS_COLUMNS)].astype(_DTYPES)
    return out.sort_values(["time", "stn"]).reset_index(drop=True), rejects


def label_rows_of_days(labels_cfg: dict, days) -> pd.DataFrame:
    """The label rows (source, row, stn, time, ta_c) of the UTC days (YYYYMMDD) in the label files of
    ``inputs.labels`` (for ``ta2d map``, which runs without the workflow's routed parts)."""
    from ta2d.index.labels import iter_labels
    from ta2d.index.route import PART_COLUMNS, label_files, source_name

    bounds = [(int(pd.Timestamp(d, tz="UTC").timestamp()), int(pd.Timestamp(d, tz="UTC").timestamp()) + 86400)
              for d in days]
    frames = []
    for path in label_files(labels_cfg):
        for rows, _ in iter_labels(path, fmt=labels_cfg.get("format", "auto"),
                                   timezone=labels_cfg.get("timezone", "KST"),
                                   encoding=labels_cfg.get("encoding", "auto")):
            keep = np.zeros(len(rows), bool)
            for lo, hi in bounds:
                keep |= ((rows["time"] >= lo) & (rows["time"] < hi)).to_numpy()
            frames.append(rows[keep].assign(source=source_name(path, labels_cfg)))
    if not frames:
        return pd.DataFrame(columns=PART_COLUMNS)
    return pd.concat(frames, ignore_index=True).reindex(columns=PART_COLUMNS)


def read_station_table(path: str | Path) -> pd.DataFrame:
    """The observations of a map_day station table (``{day}_stations.csv``, which holds them beside the map
    values): columns as :func:`unit_observations`. Raises ValueError naming the file when it lacks a column."""
    try:
        table = pd.read_csv(path, dtype=_DTYPES)
    except (OSError, ValueError) as err:
        raise ValueError(f"station table {path}: cannot be read as CSV ({err})") from err
    missing = [c for c in OBS_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"station table {path}: no column(s) {missing} (has {list(table.columns)})")
    return table.loc[:, list(OBS_COLUMNS)].drop_duplicates(["stn", "time"]).reset_index(drop=True)


def no_observations() -> pd.DataFrame:
    """An empty observation table (the columns of :func:`unit_observations`)."""
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
