"""The embedded demo: GK-2A-format inputs with KNOWN truth and planted defects (docs/demo.md).

    generate_demo(config) writes, for config["period"] and config["domain"] (+ demo.margin_px):
      raw AMI L1B files        inputs.l1b.dir / <slot strftime inputs.l1b.subdir> / gk2a_ami_le1b_*.nc
      static fields            inputs.static.path
      station META CSV         inputs.stations.path   (CP949)
      hourly TA labels         inputs.labels.path     (CP949, KST)
      truth and defects        demo.out_dir / truth/labels_truth.csv, truth/expected_rejects.csv,
                               defects.json, demo.json (written last: the completion manifest)
Deterministic for a seed: every random draw is keyed by the seed and by what it is for (a slot
time, a channel), never by the order of work, so worker count and scheduling do not matter.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ta2d.demo.defects import (
    DefectCounts,
    apply_label_defects,
    background_allowed,
    plan_defects,
    plant_station_defects,
)
from ta2d.demo.floors import add_oracles, departure_at_stations, observable_floors
from ta2d.demo.l1b_writer import DQF_ERROR, FileFlags, SlotWriter
from ta2d.demo.reanalysis import ReanalysisSettings, reanalysis_fields, write_reanalysis
from ta2d.demo.static import Window, static_fields, write_static
from ta2d.demo.tables import (
    label_truth,
    patch_half,
    place_stations,
    write_labels,
    write_stations,
    write_truth,
)
from ta2d.demo.truth import TruthModel
from ta2d.grid import Domain

__all__ = ["DemoSettings", "generate_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """config["demo"] with defaults (the keys are described in workflow/schemas/config.schema.yaml)."""

    out_dir: Path
    seed: int = 7
    n_stations: int = 40
    noise_sigma_k: float = 0.5
    siting_sigma_k: float = 0.5
    shared_error_k: float = 0.5
    hidden_scale: float = 1.0
    compression_level: int = 1
    margin_px: int = 8
    workers: int | None = None
    cloud_fraction: float = 0.3
    station_elev_sigma_m: float = 15.0
    unlabelled_days: int = 0
    defects: DefectCounts = DefectCounts()
    reanalysis: ReanalysisSettings = ReanalysisSettings()

    @classmethod
    def from_config(cls, demo: dict) -> DemoSettings:
        d = {k: v for k, v in demo.items() if k != "enabled"}
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"demo: unknown keys {sorted(unknown)}")
        d["out_dir"] = Path(d.get("out_dir", "resources/demo"))
        d["defects"] = DefectCounts.from_config(d.get("defects"))
        d["reanalysis"] = ReanalysisSettings(**(d.get("reanalysis") or {}))
        return cls(**d)


def _times(config: dict):
    """UTC days, label hours (every HH:00) and file slots (every HH:MM of inputs.l1b.slot_minutes)."""
    period = config["period"]
    days = pd.date_range(pd.Timestamp(period["start"]), pd.Timestamp(period["end"]), freq="D", tz="UTC")
    if len(days) == 0:
        raise ValueError(f"period: start {period['start']} is after end {period['end']}")
    hours = _slots_of(days, [0])
    return days, hours, _slots_of(days, config["inputs"]["l1b"].get("slot_minutes", [0]))


def _slots_of(days: pd.DatetimeIndex, slot_minutes) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([d + pd.Timedelta(hours=h, minutes=m) for d in days for h in range(24)
                             for m in sorted(slot_minutes)])


def _workers(requested: int | None, n_slots: int) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = requested if requested else min(available, 8)
    return max(1, min(n, n_slots))


_WRITER: SlotWriter | None = None


def _init_worker(writer: SlotWriter) -> None:
    global _WRITER
    _WRITER = writer


def _write_slot(t_unix: int) -> tuple[int, int]:
    return _WRITER(t_unix)


def _write_slots(writer: SlotWriter, slot_times: list[int], workers: int, progress: bool) -> tuple[int, int]:
    bar = tqdm(total=len(slot_times), desc="demo L1B slots", unit="slot", disable=not progress)
    n_files = n_bytes = 0
    if workers == 1:
        results = map(writer, slot_times)
        pool = None
    else:
        pool = multiprocessing.get_context().Pool(workers, initializer=_init_worker, initargs=(writer,))
        results = pool.imap_unordered(_write_slot, slot_times, chunksize=2)
    try:
        for files, size in results:
            n_files += files
            n_bytes += size
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    return n_files, n_bytes


def _world(config: dict):
    """Everything the demo draws before its files: settings, window, static fields, truth model, stations (with
    their planted defects) and the defect generator in the state the label defects continue from."""
    s = DemoSettings.from_config(config.get("demo", {}))
    domain = Domain.from_config(config["domain"])
    window = Window.around(domain, s.margin_px)
    days, _, _ = _times(config)
    half = patch_half(config)
    static = static_fields(window, s.seed)
    model = TruthModel(s.seed, s.cloud_fraction, s.hidden_scale)
    stations = place_stations(static, window, domain, s.n_stations, half, s.station_elev_sigma_m,
                              np.random.default_rng([s.seed, 6]), n_extra_ids=s.defects.out_of_domain_stations)
    defect_rng = np.random.default_rng([s.seed, 5])
    landcover, station_records = plant_station_defects(
        stations, static, window, domain, half, s.defects, days, s.seed, s.station_elev_sigma_m, defect_rng
    )
    return s, window, static, model, stations, landcover, station_records, defect_rng


def write_slots(config: dict, slot_times, labels_path: str | Path | None = None, progress: bool = False) -> int:
    """L1B files of more slots of the demo's archive (any UTC times, no planted defects), the same as generate_demo
    writes for its slots: what new slots landing in an archive look like (benchmarks/bench_nrt.py). With
    `labels_path`, also a KMA portal label file with every station's observation at those of the slots that are
    on the hour (truth + station noise, as the demo's labels). Returns the number of L1B files written."""
    s, window, static, model, stations, _, _, _ = _world(config)
    if labels_path is not None:
        hours = pd.DatetimeIndex([pd.Timestamp(t) for t in slot_times if pd.Timestamp(t).minute == 0])
        rows = label_truth([st for st in stations if st.role != "out_of_domain"], model, static, window, hours,
                           s.seed, s.noise_sigma_k, s.siting_sigma_k, s.shared_error_k)
        write_labels(Path(labels_path), rows.assign(ta_text=rows["ta_obs_c"].map(lambda v: f"{v:.1f}"), qc_text=""))
    l1b = config["inputs"]["l1b"]
    counts = s.defects
    writer = SlotWriter(window=window, static=static, model=model, raw_dir=Path(l1b["dir"]),
                        subdir=l1b.get("subdir", ""), area=l1b.get("area", "fd"), compression_level=s.compression_level,
                        flags=FileFlags(counts.background_error_pixels, counts.background_conditional_pixels,
                                        counts.padding_bit_fraction),
                        allowed_2km=background_allowed(stations, window, patch_half(config)), missing=set(),
                        corrupt=set(), planted={}, seed=s.seed)
    times = [int(pd.Timestamp(t).timestamp()) for t in slot_times]
    return _write_slots(writer, times, 1, progress)[0]


def generate_demo(config: dict, progress: bool = True, workers: int | None = None) -> dict:
    """Write the whole demo for `config` (the full ta2d config); returns a summary (also demo.json).

    `workers` (e.g. a Snakemake rule's threads) overrides demo.workers; the output does not depend on it.
    """
    t_start = time.perf_counter()
    s, window, static, model, stations, landcover, station_records, defect_rng = _world(config)
    counts = s.defects
    inputs = config["inputs"]
    l1b = inputs["l1b"]
    days, hours, slots = _times(config)
    half = patch_half(config)
    static_path = Path(inputs["static"]["path"])
    static_path.parent.mkdir(parents=True, exist_ok=True)
    write_static(static_path, static.with_landcover(landcover), window, s.compression_level)
    write_stations(Path(inputs["stations"]["path"]), stations)

    hour_times = [int(t.timestamp()) for t in hours]
    slot_times = [int(t.timestamp()) for t in slots]
    plan = plan_defects(stations, window, hour_times, set(slot_times), counts, half, defect_rng)
    truth = label_truth(stations, model, static, window, hours, s.seed, s.noise_sigma_k, s.siting_sigma_k,
                        s.shared_error_k)
    rows, rejects, row_records = apply_label_defects(truth, plan)
    labels_path = Path(inputs["labels"]["path"])
    write_labels(labels_path, rows)
    # extra days after the labelled period with L1B files only (no labels, no planted defects): what maps.period maps
    extra_days = pd.date_range(days[-1] + pd.Timedelta(days=1), periods=s.unlabelled_days, freq="D")
    reanalysis = None
    if inputs.get("background") is not None:  # the reanalysis of every hour with files, labelled or not
        reanalysis = reanalysis_fields(model, static, _slots_of(days.append(extra_days), [0]), s.reanalysis, s.seed)
    truth = _with_oracles(truth, rows, reanalysis, s)
    write_truth(s.out_dir / "truth" / "labels_truth.csv", truth)
    rejects.to_csv(s.out_dir / "truth" / "expected_rejects.csv", index=False)

    writer = SlotWriter(
        window=window,
        static=static,
        model=model,
        raw_dir=Path(l1b["dir"]),
        subdir=l1b.get("subdir", ""),
        area=l1b.get("area", "fd"),
        compression_level=s.compression_level,
        flags=FileFlags(
            counts.background_error_pixels, counts.background_conditional_pixels, counts.padding_bit_fraction
        ),
        allowed_2km=background_allowed(stations, window, half),
        missing=set(plan.missing_files),
        corrupt=set(plan.corrupt_files),
        planted=plan.pixel_flags,
        seed=s.seed,
    )
    extra_slots = [int(t.timestamp()) for t in _slots_of(extra_days, l1b.get("slot_minutes", [0]))]
    all_slots = slot_times + extra_slots
    n_files, n_bytes = _write_slots(
        writer, all_slots, _workers(workers or s.workers, len(all_slots)), progress
    )
    background_files = []
    if reanalysis is not None:
        background = inputs["background"]
        if not isinstance(background["t2m"], str):
            raise ValueError("inputs.background.t2m: the demo writes its reanalysis files by a pattern with one '*' "
                             "(e.g. resources/demo/background/era5land_t2m_*.nc), not a list")
        background_files = write_reanalysis(background["t2m"], background["orography"], reanalysis)

    records = (
        station_records
        + _scene_records(plan, writer, rows)
        + row_records
        + [
            {
                "kind": "background_flags",
                "expected_reason": None,
                "error_pixels_per_file": counts.background_error_pixels,
                "conditional_pixels_per_file": counts.background_conditional_pixels,
                "padding_bit_fraction": counts.padding_bit_fraction,
                "note": "in every file, >= 1 px outside every station patch: must not reject any label",
            }
        ]
    )
    (s.out_dir / "defects.json").write_text(json.dumps({"records": records}, indent=1, ensure_ascii=False))

    good = rows["reason"] == ""
    obs = rows.loc[good, "ta_text"].astype(float)
    summary = {
        "generator": "ta2d.demo",
        "seed": s.seed,
        "period": {"start": str(days[0].date()), "end": str(days[-1].date())},
        "window": {
            "first_line": window.first_line,
            "first_column": window.first_column,
            "n_lines": window.n_lines,
            "n_columns": window.n_columns,
        },
        "n_slots": len(all_slots),
        "unlabelled_days": [str(d.date()) for d in extra_days],
        "n_files": n_files,
        "n_stations": sum(st.role != "out_of_domain" for st in stations),
        "n_label_rows": len(rows),
        "expected_rejects": rejects["reason"].value_counts().sort_index().to_dict(),
        "n_expected_samples": int(good.sum()),
        # every station error: written label vs the true TA at the station (siting, shared, noise, rounding)
        "station_error_rmse_k": round(float(np.sqrt(np.mean((obs - rows.loc[good, "ta_true_c"]) ** 2))), 4),
        "hidden_rmse_k": round(float(np.sqrt(np.mean(rows.loc[good, "hidden_c"] ** 2))), 4),
        "observable_floor_k": observable_floors(truth_of(rows[good], truth), obs, config.get("split") or {}),
        "paths": {
            "raw_dir": str(l1b["dir"]),
            "labels": str(labels_path),
            "stations": inputs["stations"]["path"],
            "static": str(static_path),
            "truth": str(s.out_dir / "truth"),
            "defects": str(s.out_dir / "defects.json"),
            "background": [str(p) for p in background_files],
        },
    }
    (s.out_dir / "demo.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    summary["bytes_written"] = int(n_bytes)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary


def _with_oracles(truth: pd.DataFrame, rows: pd.DataFrame, reanalysis, s: DemoSettings) -> pd.DataFrame:
    """The truth table with the best prediction of every input set (ta2d.demo.floors); the stations whose labels
    are samples correct each other."""
    written = truth[["stn", "time_utc"]].merge(
        rows.loc[rows["reason"] == "", ["stn", "time_utc", "ta_text"]].drop_duplicates(["stn", "time_utc"]),
        on=["stn", "time_utc"], how="left")
    observed = pd.to_numeric(written["ta_text"], errors="coerce")
    departure = None
    if reanalysis is not None:
        departure = departure_at_stations(truth, reanalysis.departure, reanalysis.hours, reanalysis.grid.lat,
                                          reanalysis.grid.lon)
    sample_stations = truth.loc[truth["role"].isin(["normal", "relocated"]), "stn"].unique()
    return add_oracles(truth, observed, departure, s.noise_sigma_k**2, s.siting_sigma_k**2, sample_stations)


def truth_of(rows: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (label rows) with the truth columns their own table lacks (the oracles)."""
    extra = [c for c in truth.columns if c.startswith("oracle_")]
    return rows.merge(truth[["stn", "time_utc", *extra]], on=["stn", "time_utc"], how="left")


def _scene_records(plan, writer: SlotWriter, rows: pd.DataFrame) -> list[dict]:
    n_at = rows.groupby("time_utc").size()
    out = []
    for kind, items in (("missing_file", plan.missing_files), ("corrupt_file", plan.corrupt_files)):
        for t, channel in items:
            slot = dt.datetime.fromtimestamp(t, dt.UTC)
            out.append(
                {
                    "kind": kind,
                    "file": str(writer.path(slot, channel)),
                    "channel": channel,
                    "time_utc": t,
                    "slot_utc": slot.strftime("%Y-%m-%dT%H:%MZ"),
                    "expected_reason": "bad_scene",
                    "n_labels": int(n_at.get(t, 0)),
                    "note": "every label row of this hour",
                }
            )
    for t, stn, f in sorted(plan.pixel_defects, key=lambda d: (d[0], d[1])):
        slot = dt.datetime.fromtimestamp(t, dt.UTC)
        out.append(
            {
                "kind": "error_pixel_in_patch" if f.dqf == DQF_ERROR else "off_disk_pixel_in_patch",
                "file": str(writer.path(slot, f.channel)),
                "channel": f.channel,
                "pixel": [f.line, f.column],
                "stn": int(stn),
                "time_utc": t,
                "expected_reason": "nan_in_patch",
            }
        )
    return out
