"""Matching one chunk's label rows to stations, pixels, land cover and scene slots (in build_patch_chunk).

Each check keeps the rows it can use and returns the others as rejects with a reason and a detail
(ta2d.rejects.REASONS), so every label row of the part ends as a sample or a counted reject.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ta2d.grid import Domain, lonlat_to_linecol
from ta2d.index.labels import assign_station_metadata
from ta2d.index.route import LABEL_REJECT_COLUMNS
from ta2d.static import StaticFields, valid_landcover

MATCHED_COLUMNS = ["source", "row", "stn", "time", "ta_c", "lat", "lon", "elev_m", "line", "column"]


def match_part(part: pd.DataFrame, stations: pd.DataFrame, static: StaticFields, status: pd.DataFrame,
               patch_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with station metadata and pixel, MATCHED_COLUMNS; rejects, LABEL_REJECT_COLUMNS).

    `status`: the scene's (time, status) per slot. Checks in order, first failing one wins: a (stn, time) repeated
    across label files or blocks of one, unknown_station, off_disk / out_of_domain, invalid_landcover,
    no_scene / bad_scene.
    """
    rejected = []
    part, r = _drop_repeats(part)
    rejected.append(r)
    part, r = assign_station_metadata(part, stations)
    rejected.append(r)
    part, r = locate_pixels(part, static.domain, patch_size // 2)
    rejected.append(r)
    part, r = check_landcover(part, static)
    rejected.append(r)
    part, r = match_scene_slots(part, status)
    rejected.append(r)
    rejects = pd.concat([as_rejects(x) for x in rejected], ignore_index=True).sort_values(["source", "row"])
    return part.reindex(columns=MATCHED_COLUMNS).reset_index(drop=True), rejects.reset_index(drop=True)


def reject(df: pd.DataFrame, mask, reason: str, detail) -> pd.DataFrame:
    """The rows of `df` under `mask` as rejects. detail: one text, one per row of df, or a function of the
    rejected rows (so that a chunk job formats texts only for the few rows it rejects)."""
    mask = np.asarray(mask)
    out = df.loc[mask, ["source", "row", "stn", "time"]].copy()
    out["reason"] = reason
    if callable(detail):
        out["detail"] = np.asarray(detail(df.loc[mask]), dtype=object) if mask.any() else []
    else:
        out["detail"] = detail if np.isscalar(detail) else np.asarray(detail, dtype=object)[mask]
    return out


def as_rejects(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reindex(columns=LABEL_REJECT_COLUMNS)
    out["source"] = out["source"].astype(str)
    out["row"] = out["row"].astype("int64")
    out["stn"] = out["stn"].astype("Int64")
    out["time"] = out["time"].astype("Int64")
    out["detail"] = out["detail"].fillna("").astype(str)
    return out


def _drop_repeats(part: pd.DataFrame):
    """A (stn, time) reported twice: the first row (by file name, then row) is kept, as the label reader keeps the
    first of a repeat inside the rows it parses together; this finds repeats across label files and across the
    reader's blocks of one large file."""
    ordered = part.sort_values(["source", "row"], kind="stable")
    dup = ordered.duplicated(["stn", "time"], keep="first").to_numpy()
    if not dup.any():
        return part, reject(part, np.zeros(len(part), bool), "duplicate_row", "")
    first = ordered.groupby(["stn", "time"], sort=False)[["source", "row", "ta_c"]].transform("first")
    same = ordered["ta_c"].to_numpy() == first["ta_c"].to_numpy()
    detail = np.where(same, "same TA", "TA " + ordered["ta_c"].map("{:g}".format) + " differs from kept "
                      + first["ta_c"].map("{:g}".format))
    where = np.where(first["source"].to_numpy() == ordered["source"].to_numpy(), "",
                     first["source"].to_numpy().astype(object) + " ")
    detail = "duplicate of " + where + "row " + first["row"].astype(str) + ": " + detail
    rejects = reject(ordered, dup, "duplicate_row", np.asarray(detail))
    return ordered[~dup].sort_values(["time", "stn", "source", "row"], kind="stable"), rejects


def locate_pixels(labels: pd.DataFrame, domain: Domain, margin: int):
    line_f, col_f = lonlat_to_linecol(labels["lon"].to_numpy(), labels["lat"].to_numpy())
    off_disk = ~np.isfinite(line_f) | ~np.isfinite(col_f)
    line = np.where(off_disk, -1, np.floor(np.nan_to_num(line_f) + 0.5)).astype(np.int32)
    column = np.where(off_disk, -1, np.floor(np.nan_to_num(col_f) + 0.5)).astype(np.int32)
    outside = ~off_disk & ~domain.contains(line, column, margin)
    labels = labels.assign(line=line, column=column)
    side = 2 * margin + 1
    rejects = pd.concat([
        reject(labels, off_disk, "off_disk", "station is not visible from GK-2A"),
        reject(labels, outside, "out_of_domain", lambda r: [
            f"pixel ({li}, {co}) with its {side}x{side} patch is outside the domain"
            for li, co in zip(r["line"], r["column"], strict=True)]),
    ])
    return labels[~off_disk & ~outside].copy(), rejects


def check_landcover(labels: pd.DataFrame, static: StaticFields):
    lc = static.landcover[labels["line"].to_numpy() - static.domain.first_line,
                          labels["column"].to_numpy() - static.domain.first_column]
    bad = ~valid_landcover(lc)
    detail = [f"land cover code {c} at the station pixel (valid: IGBP 1..17)" for c in lc[bad]]
    return labels[~bad].copy(), reject(labels, bad, "invalid_landcover", lambda _: detail)


def match_scene_slots(labels: pd.DataFrame, status: pd.DataFrame):
    merged = labels.merge(status, on="time", how="left")
    no_slot = merged["status"].isna().to_numpy()
    no_files = (merged["status"] == "no_files").fillna(False).to_numpy()
    bad = ~no_slot & ~no_files & (merged["status"] != "ok").fillna(False).to_numpy()

    def slot_text(rows):
        return pd.to_datetime(rows["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M UTC").to_numpy()

    rejects = pd.concat([
        reject(merged, no_slot, "no_scene", lambda r: "no scene slot at " + slot_text(r)),
        reject(merged, no_files, "no_scene", lambda r: "no satellite files for " + slot_text(r)),
        reject(merged, bad, "bad_scene", lambda r: r["status"].astype(str).to_numpy()),
    ])
    keep = ~(no_slot | no_files | bad)
    return merged[keep].drop(columns="status").copy(), rejects


INDEX_COLUMNS = [*MATCHED_COLUMNS, "split", "chunk"]
_FLOAT_FORMAT = {"ta_c": "{:.2f}", "lat": "{:.5f}", "lon": "{:.5f}", "elev_m": "{:.1f}"}


def index_text(rows: pd.DataFrame) -> str:
    """Index rows (INDEX_COLUMNS) as CSV with fixed float formats: the same samples give the same bytes."""
    rows = rows.reindex(columns=INDEX_COLUMNS).copy()
    for col, fmt in _FLOAT_FORMAT.items():
        rows[col] = rows[col].map(fmt.format)
    return rows.to_csv(index=False, lineterminator="\n")
