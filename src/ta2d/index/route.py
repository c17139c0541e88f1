"""Label routing: label files -> one small part per planned chunk, rewritten only where rows changed.

Why this runs when the Snakefile is parsed: in a static DAG Snakemake reruns every consumer of a job
that reruns, whatever bytes that job then writes. So the step that decides *which* chunks a label
change touches cannot be a job upstream of the chunks (that is what the old checkpoint was for). It runs
in the main Snakemake process before the DAG is built, like the raw-file inventories: it stats the label
files, reads only those whose size or mtime changed since ``state.json``, and rewrites only the parts
whose rows changed (``write_text_if_changed``), so Snakemake sees exactly those parts as newer and
rebuilds exactly those chunks.

Files under ``results/labels/`` (``LABELS_DIR``):
  {split}_chunk_{key}.csv   the label rows of one planned chunk (PART_COLUMNS), sorted; header only when none
  obs/{unit}.csv            the label rows of one map unit (a map day YYYYMMDD, or a slot YYYYMMDDThhmm with
                            maps.unit slot), for the station correction of the maps: a row may be in a chunk
                            part too; outside the training period it is still counted as outside_period
  rejects.csv               rows no chunk can take: unreadable (ta2d.index.labels reasons) or outside_period
  summary.json              rows read per label file and the rejects by reason (the run summary's totals)
  state.json                size + mtime of every label file read, its chunks and time range (not a
                            workflow file: only this module reads it)

The first build has no parts yet (and the demo's labels do not exist before its rule ran), so rule
``label_parts`` makes them once, with :func:`route_labels` (force=True); after that every change is seen
at parse time. A change of the label config or of the split reroutes every file (parts still rewritten
only where bytes change); a changed period rereads only the files whose rows reach a day that entered or
left it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.atomic import atomic_path, ensure_dir, write_text_if_changed
from ta2d.plan import Plan, chunk_name
from ta2d.rejects import REJECT_COLUMNS

log = logging.getLogger(__name__)

LABELS_DIR = "results/labels"
OBS_DIR = "obs"  # below LABELS_DIR: one part per map unit
PART_COLUMNS = ["source", "row", "stn", "time", "ta_c"]
LABEL_REJECT_COLUMNS = ["source", *REJECT_COLUMNS]
STATE_VERSION = 3  # 2: `source` is the file's path relative to the pattern's folder; 3: map observation parts


class RoutingError(ValueError):
    """Label files that cannot be routed (none found, a row routed to no planned chunk)."""


def source_name(path: str, labels_cfg: dict) -> str:
    """How parts, rejects and index rows name a label file: its path below the last folder of inputs.labels.path
    that has no wildcard (a full path on every one of 31 M rows took 2.6 GB of parts for six years)."""
    parts = Path(str(labels_cfg["path"])).parts
    fixed = next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts) - 1)
    return os.path.relpath(path, os.path.join(*parts[:fixed]) if fixed else ".")


def label_files(labels_cfg: dict) -> list[str]:
    """The label files of inputs.labels.path: one file, or a glob pattern (e.g. one file per month), sorted."""
    pattern = str(labels_cfg["path"])
    if glob.has_magic(pattern):
        return sorted(glob.glob(pattern))
    return [pattern]


def route_labels(labels_cfg: dict, plan: Plan, out_dir: str | Path = LABELS_DIR, *, force: bool = False) -> dict:
    """Bring the parts under `out_dir` up to date with the label files; returns what was done.

    force: reread every file and rewrite every part (rule label_parts, the first build). Otherwise only the
    files changed since state.json are read, and nothing at all happens when none changed.
    """
    out_dir = Path(out_dir)
    files = label_files(labels_cfg)
    missing = [f for f in files if not os.path.isfile(f)]
    if missing or not files:
        raise RoutingError(f"inputs.labels.path: {missing[0] if missing else labels_cfg['path']}: no such label file")
    state = {} if force else _read_state(out_dir / "state.json")
    fingerprint = _fingerprint(labels_cfg, plan)
    stats = {f: _stat(f) for f in files}
    planned = planned_parts(plan)
    # a changed period alone rereads only the files that reach the changed days (below); anything else, all
    reroute_all = force or _without_period(state.get("fingerprint", {})) != _without_period(fingerprint)
    if reroute_all:
        to_read, gone = list(files), set(state.get("files", {})) - set(files)
    else:
        old = state["files"]
        to_read = [f for f in files if old.get(f, {}).get("stat") != stats[f]]
        to_read += _files_touching_changed_days(old, state["fingerprint"]["period"], fingerprint["period"],
                                                exclude=to_read)
        changed_map_days = sorted(set(state["fingerprint"]["map_days"]) ^ set(fingerprint["map_days"]))
        to_read += _files_touching(old, pd.DatetimeIndex(changed_map_days), exclude=to_read)
        gone = set(old) - set(files)
    absent = [p for p in planned if not (out_dir / p).is_file()]
    if not to_read and not gone and not absent and not reroute_all:
        return {"read": 0, "parts_written": 0}

    replaced = set(to_read) | gone
    replaced_sources = {source_name(f, labels_cfg) for f in replaced}
    old_files = state.get("files", {})
    old_parts = {p for f in replaced for p in old_files.get(f, {}).get("parts", [])}  # emptied of their rows
    affected = set(absent) | old_parts
    new_rejects, file_state = [], {f: v for f, v in old_files.items() if f not in replaced}
    ensure_dir(out_dir / OBS_DIR)
    # each file's rows are appended to per-part staging files, so memory holds one label file, never the archive
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".routing.") as staging:
        (Path(staging) / OBS_DIR).mkdir()
        staged = set()
        for path in to_read:
            parts, rejects, info = _route_file(path, labels_cfg, plan)
            for name, rows in parts.items():
                rows[PART_COLUMNS].to_csv(Path(staging) / name, mode="a", header=name not in staged, index=False)
                staged.add(name)
            new_rejects.append(rejects)
            file_state[path] = {"stat": stats[path], **info, "parts": sorted(parts)}
        affected |= staged
        if reroute_all:
            affected |= set(planned)
        unplanned = staged - set(planned)
        if unplanned:
            raise RoutingError(f"label rows routed to chunks the plan does not have: {sorted(unplanned)[:3]} "
                               "(a bug: ta2d.plan and ta2d.splits disagree)")
        written = 0
        for name in sorted(affected & set(planned)):
            kept = None if reroute_all else _read_part(out_dir / name, exclude_sources=replaced_sources)
            new = read_part(Path(staging) / name) if name in staged else None
            frames = [f for f in (kept, new) if f is not None]
            written += write_text_if_changed(out_dir / name, part_text(frames))
    kept_rejects = None if reroute_all else _read_table(out_dir / "rejects.csv", LABEL_REJECT_COLUMNS,
                                                        replaced_sources)
    rejects = pd.concat(([kept_rejects] if kept_rejects is not None else []) + new_rejects, ignore_index=True)
    write_text_if_changed(out_dir / "rejects.csv", _rejects_text(rejects))
    summary = _summary({source_name(f, labels_cfg): v for f, v in file_state.items()}, rejects)
    write_text_if_changed(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    with atomic_path(out_dir / "state.json") as tmp:
        tmp.write_text(json.dumps({"version": STATE_VERSION, "fingerprint": fingerprint, "files": file_state}))
    log.info("labels: read %d file(s), rewrote %d of %d chunk parts", len(to_read), written, len(planned))
    return {"read": len(to_read), "parts_written": written}


def obs_part_name(unit: str) -> str:
    """The part of a map unit's observations, relative to LABELS_DIR."""
    return f"{OBS_DIR}/{unit}.csv"


def planned_parts(plan: Plan) -> list[str]:
    """Every part the routing keeps, relative to LABELS_DIR: one per planned chunk, one per map unit."""
    return [chunk_name(s, k, ".csv") for s, k in plan.chunks] + [obs_part_name(u) for u in plan.map_units]


def refresh_label_parts(labels_cfg: dict, plan: Plan, out_dir: str | Path = LABELS_DIR) -> dict | None:
    """The parse-time refresh: :func:`route_labels` once rule label_parts has made the parts, else nothing
    (the first build, or the demo's labels that do not exist yet)."""
    if not (Path(out_dir) / "summary.json").is_file():
        return None
    return route_labels(labels_cfg, plan, out_dir)


def read_part(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"source": str, "row": "int64", "stn": "int32", "time": "int64",
                                    "ta_c": "float32"}, keep_default_na=False)


def part_text(frames: Iterable[pd.DataFrame]) -> str:
    """A part's bytes: the same rows always give the same text (sorted, fixed float format)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return ",".join(PART_COLUMNS) + "\n"
    rows = pd.concat(frames, ignore_index=True).sort_values(["time", "stn", "source", "row"], kind="stable")
    rows = rows.assign(ta_c=rows["ta_c"].map("{:.2f}".format))
    return rows[PART_COLUMNS].to_csv(index=False, lineterminator="\n")


# ----------------------------------------------------------------------------------------------


def _route_file(path: str, labels_cfg: dict, plan: Plan):
    from ta2d.index.labels import iter_labels

    parts: dict[str, list[pd.DataFrame]] = {}
    rejected, n_rows, tmin, tmax = [], 0, None, None
    for labels, rejects in iter_labels(path, fmt=labels_cfg.get("format", "auto"),
                                       timezone=labels_cfg.get("timezone", "KST"),
                                       encoding=labels_cfg.get("encoding", "auto")):
        n_rows += len(labels) + len(rejects)
        times = pd.concat([labels["time"], rejects["time"].dropna().astype("int64")])
        if len(times):
            tmin = min(int(times.min()), tmin if tmin is not None else int(times.min()))
            tmax = max(int(times.max()), tmax if tmax is not None else int(times.max()))
        block_parts, block_rejects = _route_rows(labels, rejects, source_name(path, labels_cfg), plan)
        for name, rows in block_parts.items():
            parts.setdefault(name, []).append(rows)
        rejected.append(block_rejects)
    parts = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    return parts, pd.concat(rejected, ignore_index=True), {"n_rows": int(n_rows), "tmin": tmin, "tmax": tmax}


def _route_rows(labels: pd.DataFrame, rejects: pd.DataFrame, source: str, plan: Plan):
    """One block of a label file: accepted rows by chunk part, and its rejects plus the rows outside the period."""
    from ta2d.periods import period_key
    from ta2d.splits import assign_splits

    obs = _map_unit_rows(labels, plan)
    if plan.trains:
        start = pd.Timestamp(plan.start, tz="UTC").timestamp()
        end = (pd.Timestamp(plan.end, tz="UTC") + pd.Timedelta(days=1)).timestamp()
        inside = ((labels["time"] >= start) & (labels["time"] < end)).to_numpy()
        detail = f"outside period {plan.start}..{plan.end} (UTC)"
    else:
        inside, detail = np.zeros(len(labels), bool), "no training period (period is null)"
    outside = labels.loc[~inside, ["row", "stn", "time"]].assign(reason="outside_period", detail=detail)
    labels = labels[inside]
    day = pd.to_datetime(labels["time"], unit="s", utc=True).dt.strftime("%Y%m%d")
    split = assign_splits(labels["stn"].to_numpy(), day.to_numpy(), dict(plan.split_cfg))["split"].to_numpy()
    key = np.asarray(period_key(labels["time"].to_numpy(), plan.freq), dtype=object)
    name = pd.Series(split, dtype=object) + "_chunk_" + pd.Series(key, dtype=object) + ".csv"
    labels = labels.assign(source=source)
    parts = {n: rows for n, rows in labels.groupby(name.to_numpy(), sort=True)}
    parts.update({n: rows.assign(source=source) for n, rows in obs.items()})
    rejects = pd.concat([rejects, outside], ignore_index=True).assign(source=source)
    return parts, rejects


def _map_unit_rows(labels: pd.DataFrame, plan: Plan) -> dict[str, pd.DataFrame]:
    """{obs part name: rows} of the rows on a map unit (its day, or its slot with maps.unit slot)."""
    from ta2d.periods import period_key

    units = plan.map_unit_set
    if not units or not len(labels):
        return {}
    unit = np.asarray(period_key(labels["time"].to_numpy(), "D" if plan.map_unit == "day" else "S"), dtype=object)
    on_unit = np.fromiter((u in units for u in unit), bool, len(unit))
    if not on_unit.any():
        return {}
    rows = labels[on_unit]
    return {obs_part_name(u): g for u, g in rows.groupby(unit[on_unit], sort=True)}


def _files_touching_changed_days(old_files: dict, old_period: dict, new_period: dict, exclude) -> list[str]:
    """Files whose rows reach a day that entered or left the configured period (their routing changed)."""
    if old_period == new_period:
        return []
    if old_period.get("start") is None or new_period.get("start") is None:  # a training period came or went
        return [f for f in old_files if f not in exclude and os.path.isfile(f)]
    old_days = pd.date_range(old_period["start"], old_period["end"], freq="D")
    new_days = pd.date_range(new_period["start"], new_period["end"], freq="D")
    return _files_touching(old_files, old_days.symmetric_difference(new_days), exclude)


def _files_touching(old_files: dict, changed: pd.DatetimeIndex, exclude) -> list[str]:
    """Files whose rows reach the span of the changed days (their routing may have changed)."""
    if changed.empty:
        return []
    lo = pd.Timestamp(changed.min(), tz="UTC").timestamp()
    hi = (pd.Timestamp(changed.max(), tz="UTC") + pd.Timedelta(days=1)).timestamp()
    return [f for f, v in old_files.items() if f not in exclude and os.path.isfile(f)
            and v.get("tmin") is not None and v["tmin"] < hi and v["tmax"] >= lo]


def _fingerprint(labels_cfg: dict, plan: Plan) -> dict:
    return {"labels": {k: labels_cfg.get(k) for k in ("path", "format", "timezone", "encoding")},
            "split": json.loads(json.dumps(dict(plan.split_cfg), sort_keys=True, default=str)),
            "freq": plan.freq, "period": {"start": plan.start, "end": plan.end}, "version": STATE_VERSION,
            "map_unit": plan.map_unit, "map_days": plan.map_days}


def _without_period(fingerprint: dict) -> dict:
    """What reroutes every file when it changes: all but the training period and the map days, whose changes
    reread only the files that reach the days that came or went."""
    return {k: v for k, v in fingerprint.items() if k not in ("period", "map_days")}


def _stat(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if state.get("version") == STATE_VERSION else {}


def _read_part(path: Path, exclude_sources) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    part = read_part(path)
    return part[~part["source"].isin(exclude_sources)]


def _read_table(path: Path, columns, exclude_sources) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"source": str, "detail": str}, keep_default_na=False)
    return table[~table["source"].isin(exclude_sources)].reindex(columns=columns)


def _rejects_text(rejects: pd.DataFrame) -> str:
    out = rejects.reindex(columns=LABEL_REJECT_COLUMNS).copy()
    out["stn"] = pd.to_numeric(out["stn"], errors="coerce").astype("Int64")
    out["time"] = pd.to_numeric(out["time"], errors="coerce").astype("Int64")
    out = out.sort_values(["source", "row"], kind="stable")
    return out.to_csv(index=False, lineterminator="\n")


def _summary(file_state: dict, rejects: pd.DataFrame) -> dict:
    return {
        "n_label_rows": int(sum(v["n_rows"] for v in file_state.values())),
        "rows_by_file": {f: int(v["n_rows"]) for f, v in sorted(file_state.items())},
        "n_rejected": int(len(rejects)),
        "rejected_by_reason": {k: int(v) for k, v in rejects["reason"].value_counts().sort_index().items()},
    }
