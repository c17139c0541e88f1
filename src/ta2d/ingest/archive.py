"""The raw archive as the workflow sees it: per-period inventories and the calibrate step.

Dispatches on inputs.kind (raw L1B or the seed's calibrated files) so that the rules and the
Snakefile stay the same for both.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ta2d.atomic import atomic_path, write_text_if_changed
from ta2d.grid import Domain
from ta2d.ingest.inventory import (
    calibrated_inventory,
    calibrated_period_inventory,
    inventory_text,
    l1b_inventory_current,
    l1b_inventory_rows,
    l1b_period_inventory_text,
    write_l1b_inventory,
    write_slot_inventory,
)
from ta2d.periods import key_freq, period_slots
from ta2d.plan import slot_minutes  # noqa: F401  (re-exported: the rules import it from here)

# ta2d.ingest.scene (xarray, h5netcdf, tqdm) is imported inside calibrate_period only: the Snakefile (parsed by
# every snakemake process, incl. each SLURM job's) and the inventory jobs import this module and need none
# of it (~0.15 CPU-s per process; benchmarks/bench_job_cost.py).


def period_inventory_text(inputs: dict, key: str, freq: str, period: dict) -> str:
    if inputs["kind"] == "calibrated":
        table = calibrated_period_inventory(inputs["calibrated"], key, freq, period["start"], period["end"])
        return inventory_text(table)
    return l1b_period_inventory_text(inputs["l1b"], key, freq, period["start"], period["end"])


def write_inventory(inputs: dict, key: str, freq: str, period: dict, out_path: str | Path) -> bool:
    """Write period `key`'s inventory when its bytes changed (returns whether); for L1B also its sidecar. A slot's
    (freq "S") records content hashes: the same bytes delivered again rerun nothing."""
    if freq == "S":
        slots = period_slots(key, freq, slot_minutes(inputs), period["start"], period["end"])
        if inputs["kind"] == "calibrated":
            table = calibrated_inventory(inputs["calibrated"], slots)
            return write_slot_inventory(table.itertuples(index=False, name=None), inputs["calibrated"]["dir"],
                                        out_path)
        return write_slot_inventory(l1b_inventory_rows(inputs["l1b"], slots), inputs["l1b"]["dir"], out_path)
    if inputs["kind"] == "calibrated":
        return write_text_if_changed(out_path, period_inventory_text(inputs, key, freq, period))
    return write_l1b_inventory(inputs["l1b"], key, freq, period["start"], period["end"], out_path)


def refresh_inventories(inputs: dict, plan, inventory_dir: str | Path, full: bool = False) -> int:
    """Rewrite the existing inventories of the plan's scenes (ta2d.plan.Plan.scene_keys) whose archive listing
    changed; returns how many changed.

    Missing inventories are left to rule `inventory` (the archive may not exist yet: the demo rule
    writes it during the run). An L1B period whose slot directories are as its sidecar recorded them is
    not listed at all (the parse-time cost); `full` lists and stats every file of every period, the only
    way to see a raw file rewritten in place (`ta2d refresh-inventories`). Calibrated inputs are
    per-timestamp files: one stat each, always.
    """
    changed = 0
    for key in plan.scene_keys:
        path = Path(inventory_dir) / f"{key}.tsv"
        if not path.is_file():
            continue
        freq, period = key_freq(key), plan.scene_bounds(key)
        # a slot's scene (maps.unit slot) is listed every time, its 16 files stat'ed: a file still being copied
        # grows without touching its folder's mtime, and the slot must be mapped again once it is complete
        if not full and freq != "S" and inputs["kind"] == "l1b" and l1b_inventory_current(
                inputs["l1b"], key, freq, period["start"], period["end"], path):
            continue
        changed += write_inventory(inputs, key, freq, period, path)
    return changed


def slots_with_files(inputs: dict, slots) -> set[str]:
    """The slots (stamps YYYYMMDDhhmm) of which the archive holds at least one file now: one listing per slot
    folder (what maps.unit slot maps at once; the others wait for their files)."""
    if inputs["kind"] == "calibrated":
        return set(calibrated_inventory(inputs["calibrated"], slots)["slot"])
    return {row[0] for row in l1b_inventory_rows(inputs["l1b"], slots)}


def calibrate_period(inputs: dict, inventory_path, key: str, freq: str, period: dict, domain: dict,
                     scene_cfg: dict, scene_path, status_path, progress: bool = True) -> dict:
    """Build the period's scene and the small (time, status) table that build_index reads."""
    from ta2d.ingest.scene import build_scene, build_scene_from_calibrated, read_scene

    common = dict(key=key, freq=freq, start=period["start"], end=period["end"], domain=Domain.from_config(domain),
                  out_path=scene_path, compression_level=scene_cfg.get("compression_level", 1), progress=progress)
    if inputs["kind"] == "calibrated":
        cal = inputs["calibrated"]
        summary = build_scene_from_calibrated(inventory_path, cal, slot_minutes=slot_minutes(inputs),
                                              **common)
    else:
        l1b = inputs["l1b"]
        summary = build_scene(inventory_path, l1b["dir"], slot_minutes=slot_minutes(inputs),
                              allow_conditional=l1b.get("allow_conditional_pixels", False), **common)
    with read_scene(scene_path) as scene:
        status = pd.DataFrame({
            "time": scene["time"].values.astype("datetime64[s]").astype("int64"),
            "status": scene["status"].values.astype(str),
        })
    with atomic_path(status_path) as tmp:
        status.to_csv(tmp, index=False, lineterminator="\n")
    return summary
