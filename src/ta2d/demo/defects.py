"""Planted defects: each one must end as a known reject reason in the pipeline (docs/demo.md).

Defects are chosen so that every label row has at most ONE expected reason:
  * slot-level (a missing or a truncated channel file -> bad_scene for every label of that hour);
  * station-level (out_of_domain, invalid_landcover: every row of the station; these stations get
    no rows at the bad-scene hours, so the two kinds never compete);
  * row-level (missing_ta, duplicate_row, unparseable_row) and pixel-level (nan_in_patch) defects
    on distinct (normal station, good hour) pairs.
Background DQF flags and padding bits are also planted in every file, but outside every station
patch: a correct reader masks them and rejects nothing because of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from ta2d.channels import ALL_CHANNELS, CHANNELS
from ta2d.demo.l1b_writer import DQF_ERROR, DQF_OFF_DISK, PixelFlag
from ta2d.demo.static import FILL, StaticFields, Window, static_fields
from ta2d.demo.tables import Station, site_in_pixel, station_candidates
from ta2d.grid import Domain

CHANNELS_2KM = tuple(c for c in ALL_CHANNELS if CHANNELS[c].factor == 1)


@dataclass(frozen=True)
class DefectCounts:
    """How many of each defect to plant (config: demo.defects)."""

    missing_files: int = 1
    corrupt_files: int = 1
    out_of_domain_stations: int = 1
    relocated_stations: int = 1
    invalid_landcover_stations: int = 1
    missing_ta: int = 3
    duplicate_rows: int = 2
    unparseable_rows: int = 2
    error_pixels_in_patch: int = 2
    off_disk_pixels_in_patch: int = 1
    background_error_pixels: int = 3  # per file, outside every station patch
    background_conditional_pixels: int = 3
    padding_bit_fraction: float = 0.002

    @classmethod
    def from_config(cls, d: dict | None) -> DefectCounts:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"demo.defects: unknown keys {sorted(unknown)}")
        return cls(**d)


@dataclass
class DefectPlan:
    missing_files: list[tuple[int, str]] = field(default_factory=list)  # (slot unix s, channel)
    corrupt_files: list[tuple[int, str]] = field(default_factory=list)
    pixel_defects: list[tuple[int, int, PixelFlag]] = field(default_factory=list)  # (slot unix s, stn, flag)
    row_edits: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, stn, time_utc)

    @property
    def bad_hours(self) -> set[int]:
        return {t for t, _ in self.missing_files + self.corrupt_files}

    @property
    def pixel_flags(self) -> dict[int, list[PixelFlag]]:
        out: dict[int, list[PixelFlag]] = {}
        for t, _, flag in self.pixel_defects:
            out.setdefault(t, []).append(flag)
        return out

    @property
    def nan_in_patch(self) -> set[tuple[int, int]]:
        return {(stn, t) for t, stn, _ in self.pixel_defects}


def _normal(stations: list[Station]) -> list[Station]:
    return [s for s in stations if s.role == "normal" and s.periods]


def plant_station_defects(
    stations: list[Station],
    static: StaticFields,
    window: Window,
    domain: Domain,
    margin: int,
    counts: DefectCounts,
    days: pd.DatetimeIndex,
    seed: int,
    elev_sigma_m: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[dict]]:
    """Relocate, fill-landcover and out-of-domain stations (mutates `stations`); returns the landcover
    to write (with 255 under the invalid-landcover stations) and the defect records."""
    records: list[dict] = []
    landcover = static.landcover.copy()
    taken = {(p.line, p.column) for s in stations for p in s.periods}
    cands = station_candidates(static, window, domain, margin)

    moved_on = days[len(days) // 2].date()  # last KST day at the old site
    for s in _pick(_normal(stations), counts.relocated_stations, rng):
        old = s.periods[0]
        r0, c0 = window.index(old.line, old.column)
        near = [
            i
            for i in cands
            if 3 <= max(abs(i // window.n_columns - r0), abs(i % window.n_columns - c0)) <= 8
            and (int(static.line.flat[i]), int(static.column.flat[i])) not in taken
        ]
        if not near:
            continue
        i = int(rng.choice(near))
        r, c = divmod(i, window.n_columns)
        old.end = moved_on
        elev = max(0.0, float(static.dem[r, c]) + rng.normal(0.0, elev_sigma_m))
        s.periods.append(
            site_in_pixel(
                int(static.line[r, c]),
                int(static.column[r, c]),
                elev,
                moved_on + dt.timedelta(days=1),
                None,
                rng,
            )
        )
        taken.add((s.periods[1].line, s.periods[1].column))
        s.role = "relocated"
        records.append(
            {
                "kind": "relocated_station",
                "stn": s.stn,
                "new_row_starts_kst": str(moved_on + dt.timedelta(days=1)),
                "old_pixel": [old.line, old.column],
                "new_pixel": [s.periods[1].line, s.periods[1].column],
                "expected_reason": None,
                "note": "two META rows; labels on KST dates <= 종료일 of the first row use the old pixel",
            }
        )

    for s in _pick(_normal(stations), counts.invalid_landcover_stations, rng):
        p = s.periods[0]
        r, c = window.index(p.line, p.column)
        landcover[r, c] = FILL
        s.role = "invalid_landcover"
        records.append(
            {
                "kind": "invalid_landcover_station",
                "stn": s.stn,
                "pixel": [p.line, p.column],
                "expected_reason": "invalid_landcover",
                "note": "landcover 255 (fill) at the station pixel",
            }
        )

    spare = [s for s in stations if not s.periods]
    for k, s in enumerate(spare[: counts.out_of_domain_stations]):
        # North of the window: off the domain and off every demo file, still on the disk.
        line = window.first_line - 12 - 3 * k
        col = window.first_column + window.n_columns // 3 + 5 * k
        pt = static_fields(Window(line, col, 1, 1), seed)
        elev = max(0.0, float(pt.dem[0, 0]) + rng.normal(0.0, elev_sigma_m))
        s.periods.append(site_in_pixel(line, col, elev, dt.date(1990, 1, 1), None, rng))
        s.role = "out_of_domain"
        records.append(
            {
                "kind": "out_of_domain_station",
                "stn": s.stn,
                "pixel": [line, col],
                "expected_reason": "out_of_domain",
            }
        )
    stations[:] = [s for s in stations if s.periods]
    return landcover, records


def plan_defects(
    stations: list[Station],
    window: Window,
    hours: list[int],
    slot_times: set[int],
    counts: DefectCounts,
    half: int,
    rng: np.random.Generator,
) -> DefectPlan:
    """Choose the bad files, the defective label rows and the in-patch pixel flags (all disjoint)."""
    plan = DefectPlan()
    label_slots = [t for t in hours if t in slot_times]
    n_bad = min(counts.missing_files + counts.corrupt_files, len(label_slots))
    bad = [int(t) for t in rng.choice(label_slots, size=n_bad, replace=False)] if n_bad else []
    for k, t in enumerate(bad):
        channel = str(rng.choice(ALL_CHANNELS))
        (plan.missing_files if k < counts.missing_files else plan.corrupt_files).append((t, channel))

    normal = _normal(stations)
    good_hours = [t for t in hours if t not in plan.bad_hours]
    kinds = (
        ["missing_ta"] * counts.missing_ta
        + ["duplicate_row"] * counts.duplicate_rows
        + ["unparseable_row"] * counts.unparseable_rows
    )
    pixel_kinds = [DQF_ERROR] * counts.error_pixels_in_patch + [
        DQF_OFF_DISK
    ] * counts.off_disk_pixels_in_patch
    pairs = _distinct_pairs(normal, good_hours, len(kinds) + len(pixel_kinds), rng)
    for kind, (stn, t) in zip(kinds, pairs, strict=False):
        plan.row_edits.append((kind, stn, t))

    pixel_pairs = pairs[len(kinds) :]
    good_slots = set(label_slots) - plan.bad_hours
    owner = _patch_owners(stations, window, half)
    by_stn = {s.stn: s for s in normal}
    for dqf, (stn, t) in zip(pixel_kinds, pixel_pairs, strict=False):
        if t not in good_slots:
            continue  # labels at minutes without a slot cannot reach a patch
        p = by_stn[stn].periods[0]
        own = [
            (line, col)
            for line in range(p.line - half, p.line + half + 1)
            for col in range(p.column - half, p.column + half + 1)
            if owner.get((line, col)) == {stn}
        ]
        if not own:
            continue
        line, col = own[int(rng.integers(len(own)))]
        plan.pixel_defects.append((t, stn, PixelFlag(str(rng.choice(CHANNELS_2KM)), line, col, dqf)))
    return plan


def _pick(items: list, n: int, rng) -> list:
    if n <= 0 or not items:
        return []
    return [items[i] for i in sorted(rng.choice(len(items), size=min(n, len(items)), replace=False))]


def _distinct_pairs(stations: list[Station], hours: list[int], n: int, rng) -> list[tuple[int, int]]:
    total = len(stations) * len(hours)
    n = min(n, total)
    if n == 0:
        return []
    flat = rng.choice(total, size=n, replace=False)
    return [(stations[i // len(hours)].stn, int(hours[i % len(hours)])) for i in flat]


def _patch_owners(stations: list[Station], window: Window, half: int) -> dict[tuple[int, int], set[int]]:
    """(line, column) -> ids of the stations whose patch (any period) covers the pixel."""
    owner: dict[tuple[int, int], set[int]] = {}
    for s in stations:
        for p in s.periods:
            for line in range(p.line - half, p.line + half + 1):
                for col in range(p.column - half, p.column + half + 1):
                    owner.setdefault((line, col), set()).add(s.stn)
    return owner


def background_allowed(stations: list[Station], window: Window, half: int) -> np.ndarray:
    """Flat 2 km window indices where background flags may go: 1 px clear of every station patch."""
    ok = np.ones((window.n_lines, window.n_columns), dtype=bool)
    for s in stations:
        for p in s.periods:
            r, c = window.index(p.line, p.column)
            ok[max(r - half - 1, 0) : max(r + half + 2, 0), max(c - half - 1, 0) : max(c + half + 2, 0)] = (
                False
            )
    return np.flatnonzero(ok)


def apply_label_defects(
    truth: pd.DataFrame, plan: DefectPlan
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """Label rows as written (text columns) with the row defects applied, the expected rejects
    (csv_line, stn, time_utc, reason) and the row-level defect records."""
    station_level = truth["role"].isin(["out_of_domain", "invalid_landcover"])
    at_bad_hour = truth["time_utc"].isin(plan.bad_hours)
    rows = truth[~(station_level & at_bad_hour)].copy().reset_index(drop=True)
    rows["ta_text"] = rows["ta_obs_c"].map(lambda v: f"{v:.1f}")
    rows["qc_text"] = ""
    rows["reason"] = ""
    rows.loc[rows["time_utc"].isin(plan.bad_hours), "reason"] = "bad_scene"
    rows.loc[rows["role"] == "out_of_domain", "reason"] = "out_of_domain"
    rows.loc[rows["role"] == "invalid_landcover", "reason"] = "invalid_landcover"
    key = list(zip(rows["stn"], rows["time_utc"], strict=True))
    pos = {k: i for i, k in enumerate(key)}
    for stn, t in plan.nan_in_patch:
        rows.loc[pos[(stn, t)], "reason"] = "nan_in_patch"

    records: list[dict] = []
    duplicates = []
    n_unparseable = 0
    for kind, stn, t in plan.row_edits:
        i = pos[(stn, t)]
        rec = {"kind": kind, "stn": int(stn), "time_utc": int(t), "expected_reason": kind}
        if kind == "missing_ta":
            rows.loc[i, ["ta_text", "qc_text"]] = ["", "9"]
        elif kind == "unparseable_row":
            if n_unparseable % 2 == 0:  # an impossible hour: no parser accepts 25:00
                rows.loc[i, "kst"] = rows.loc[i, "kst"][:11] + "25:00"
                rec["subkind"] = "bad_time"
            else:  # text in the TA column (not empty: that would be missing_ta)
                rows.loc[i, "ta_text"] = "ERR"
                rec["subkind"] = "bad_ta"
            n_unparseable += 1
        elif kind == "duplicate_row":
            duplicates.append(i)
        rows.loc[i, "reason"] = kind if kind != "duplicate_row" else rows.loc[i, "reason"]
        records.append(rec)

    # Exact copies right after the original; the copy is the rejected one.
    if duplicates:
        copies = rows.loc[duplicates].copy()
        copies["reason"] = "duplicate_row"
        copies.index = copies.index + 0.5
        rows = pd.concat([rows, copies]).sort_index().reset_index(drop=True)
    rows["csv_line"] = np.arange(2, len(rows) + 2)  # line 1 is the header
    line_of = {}
    for r in rows.itertuples():
        line_of.setdefault((r.stn, r.time_utc, r.reason), r.csv_line)
    for rec in records:
        rec["csv_line"] = int(line_of[(rec["stn"], rec["time_utc"], rec["expected_reason"])])
    rejects = rows.loc[rows["reason"] != "", ["csv_line", "stn", "time_utc", "kst", "reason"]]
    return rows, rejects.reset_index(drop=True), records
