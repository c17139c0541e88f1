"""build_index: match label rows to scene slots and station pixels, split by whole days, and write
one small manifest per chunk.

Every label row ends here either in the index or in the rejects table with a reason; the chunk
builder accounts for the rest (DESIGN.md, "Rejects"). Manifests are written only when their bytes
change and hold compact, sorted, fixed-format rows, so Snakemake's checksum of a manifest changes
exactly when its chunk must be rebuilt.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.atomic import atomic_path, ensure_dir, write_text_if_changed
from ta2d.chunks.contract import REJECT_COLUMNS, chunk_name, parse_chunk_name
from ta2d.grid import Domain, lonlat_to_linecol
from ta2d.index.labels import assign_station_metadata, read_labels
from ta2d.index.schemes import SCHEMES, assign_split_by_day, assign_splits  # noqa: F401  (assign_split_by_day: re-export)
from ta2d.index.stations import read_stations
from ta2d.periods import period_key
from ta2d.static import read_static

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ["row", "stn", "time", "ta_c", "lat", "lon", "elev_m", "line", "column"]
_FLOAT_FORMAT = {"ta_c": "{:.2f}", "lat": "{:.5f}", "lon": "{:.5f}", "elev_m": "{:.1f}"}


def read_scene_status(status_paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate the per-scene status tables (time, status) written beside each scene."""
    frames = [pd.read_csv(p, dtype={"time": "int64", "status": "string"}) for p in status_paths]
    if not frames:
        return pd.DataFrame({"time": pd.Series(dtype="int64"), "status": pd.Series(dtype="string")})
    return pd.concat(frames, ignore_index=True)


def build_index(
    labels_cfg: dict,
    stations_path: str,
    static_cfg: dict,
    scene_status_paths: list[str],
    domain: Domain,
    period: dict,
    freq: str,
    split_cfg: dict,
    patch_size: int,
    out_dir: str | Path,
) -> dict:
    """Write index.csv, index_{split}.csv, rejects.csv, summary.json and chunks/{split}_chunk_{key}.csv."""
    out_dir = Path(out_dir)
    labels, rejects = read_labels(
        labels_cfg["path"], fmt=labels_cfg.get("format", "auto"),
        timezone=labels_cfg.get("timezone", "KST"), encoding=labels_cfg.get("encoding", "auto"),
    )
    n_label_rows = len(labels) + len(rejects)
    rejected = [rejects]

    stations = read_stations(stations_path)
    labels, r = assign_station_metadata(labels, stations)
    rejected.append(r)

    labels, r = _keep_in_period(labels, period)
    rejected.append(r)

    labels, r = _locate_pixels(labels, domain, patch_size // 2)
    rejected.append(r)

    static = read_static(static_cfg["path"], domain, static_cfg.get("dem_var", "dem"),
                         static_cfg.get("land_sea_mask_var", "land_sea_mask"),
                         static_cfg.get("landcover_var", "landcover"))
    labels, r = _check_landcover(labels, static)
    rejected.append(r)

    labels, r = _match_scene_slots(labels, read_scene_status(scene_status_paths))
    rejected.append(r)

    # split and validation scheme from (station, UTC day) and the config alone (ta2d.index.schemes)
    day = pd.to_datetime(labels["time"], unit="s", utc=True).dt.strftime("%Y%m%d")
    assigned = assign_splits(labels["stn"].to_numpy(), day.to_numpy(), split_cfg)
    labels["split"] = assigned["split"].to_numpy()
    labels["scheme"] = assigned["scheme"].to_numpy()
    labels["chunk"] = np.asarray(period_key(labels["time"].to_numpy(), freq))
    labels = labels.sort_values(["time", "stn", "row"], kind="stable").reset_index(drop=True)

    all_rejects = pd.concat([_as_rejects(x) for x in rejected], ignore_index=True).sort_values("row")
    _write_outputs(labels, all_rejects, out_dir)
    summary = _summary(labels, all_rejects, n_label_rows)
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("indexed %d of %d label rows into %d chunks; rejected %d (%s)", len(labels), n_label_rows,
             summary["n_chunks"], len(all_rejects), summary["rejected_by_reason"])
    return summary


def _reject(df: pd.DataFrame, mask, reason: str, detail) -> pd.DataFrame:
    out = df.loc[mask, ["row", "stn", "time"]].copy()
    out["reason"] = reason
    out["detail"] = detail if np.isscalar(detail) else np.asarray(detail)[np.asarray(mask)]
    return out


def _as_rejects(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reindex(columns=REJECT_COLUMNS)
    out["row"] = out["row"].astype("int64")
    out["stn"] = out["stn"].astype("Int64")
    out["time"] = out["time"].astype("Int64")
    out["detail"] = out["detail"].fillna("").astype(str)
    return out


def _keep_in_period(labels: pd.DataFrame, period: dict):
    start = pd.Timestamp(period["start"], tz="UTC").timestamp()
    end = (pd.Timestamp(period["end"], tz="UTC") + pd.Timedelta(days=1)).timestamp()
    inside = (labels["time"] >= start) & (labels["time"] < end)
    detail = f"outside period {period['start']}..{period['end']} (UTC)"
    return labels[inside].copy(), _reject(labels, ~inside, "outside_period", detail)


def _locate_pixels(labels: pd.DataFrame, domain: Domain, margin: int):
    line_f, col_f = lonlat_to_linecol(labels["lon"].to_numpy(), labels["lat"].to_numpy())
    off_disk = ~np.isfinite(line_f) | ~np.isfinite(col_f)
    line = np.where(off_disk, -1, np.floor(np.nan_to_num(line_f) + 0.5)).astype(np.int32)
    column = np.where(off_disk, -1, np.floor(np.nan_to_num(col_f) + 0.5)).astype(np.int32)
    outside = ~off_disk & ~domain.contains(line, column, margin)
    labels = labels.assign(line=line, column=column)
    detail = [f"pixel ({li}, {co}) with its {2 * margin + 1}x{2 * margin + 1} patch is outside the domain"
              for li, co in zip(line, column, strict=True)]
    rejects = pd.concat([
        _reject(labels, off_disk, "off_disk", "station is not visible from GK-2A"),
        _reject(labels, outside, "out_of_domain", detail),
    ])
    return labels[~off_disk & ~outside].copy(), rejects


def _check_landcover(labels: pd.DataFrame, static):
    lc = static.landcover[labels["line"].to_numpy() - static.domain.first_line,
                          labels["column"].to_numpy() - static.domain.first_column]
    bad = ~np.isin(lc, np.arange(1, 18))
    detail = [f"land cover code {c} at the station pixel (valid: IGBP 1..17)" for c in lc]
    return labels[~bad].copy(), _reject(labels, bad, "invalid_landcover", detail)


def _match_scene_slots(labels: pd.DataFrame, status: pd.DataFrame):
    merged = labels.merge(status, on="time", how="left")
    no_slot = merged["status"].isna().to_numpy()
    no_files = (merged["status"] == "no_files").fillna(False).to_numpy()
    bad = ~no_slot & ~no_files & (merged["status"] != "ok").fillna(False).to_numpy()
    slot_txt = pd.to_datetime(merged["time"], unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M UTC")
    rejects = pd.concat([
        _reject(merged, no_slot, "no_scene", "no scene slot at " + slot_txt),
        _reject(merged, no_files, "no_scene", "no satellite files for " + slot_txt),
        _reject(merged, bad, "bad_scene", merged["status"].astype(str)),
    ])
    keep = ~(no_slot | no_files | bad)
    return merged[keep].drop(columns="status").copy(), rejects


def _write_outputs(labels: pd.DataFrame, rejects: pd.DataFrame, out_dir: Path) -> None:
    chunk_dir = ensure_dir(out_dir / "chunks")
    wanted = set()
    for (split, key), rows in labels.groupby(["split", "chunk"], sort=True):
        name = chunk_name(split, key, ".csv")
        wanted.add(name)
        write_text_if_changed(chunk_dir / name, _csv(rows[MANIFEST_COLUMNS]))
    for stale in chunk_dir.glob("*.csv"):
        if parse_chunk_name(stale) and stale.name not in wanted:
            stale.unlink()
    full = labels[MANIFEST_COLUMNS + ["split", "chunk"]]
    write_text_if_changed(out_dir / "index.csv", _csv(full))
    for split in SPLITS:
        write_text_if_changed(out_dir / f"index_{split}.csv", _csv(full[full["split"] == split]))
    write_text_if_changed(out_dir / "rejects.csv", rejects.to_csv(index=False, lineterminator="\n"))


def _csv(df: pd.DataFrame) -> str:
    df = df.copy()
    for col, fmt in _FLOAT_FORMAT.items():
        df[col] = df[col].map(fmt.format)
    return df.to_csv(index=False, lineterminator="\n")


def _summary(labels: pd.DataFrame, rejects: pd.DataFrame, n_label_rows: int) -> dict:
    return {
        "n_label_rows": int(n_label_rows),
        "n_indexed": int(len(labels)),
        "n_rejected": int(len(rejects)),
        "rejected_by_reason": {k: int(v) for k, v in rejects["reason"].value_counts().sort_index().items()},
        "rows_by_split": {s: int((labels["split"] == s).sum()) for s in SPLITS},
        "days_by_split": {
            s: int(pd.to_datetime(labels.loc[labels["split"] == s, "time"], unit="s").dt.date.nunique())
            for s in SPLITS
        },
        "n_chunks": int(labels.groupby(["split", "chunk"]).ngroups),
        "n_stations": int(labels["stn"].nunique()),
        "test_rows_by_scheme": {s: int((labels["scheme"] == s).sum()) for s in SCHEMES},
        "n_held_out_stations": int(labels.loc[labels["scheme"].isin(["held_out_stations", "held_out_both"]),
                                              "stn"].nunique()),
    }
