"""What the maps rules make, from the config alone (parse time: no torch, no result files).

``maps.model`` names runs of ``train.runs`` (their model files ``results/models/{run}.pt``), the pseudo-run
:data:`BEST` (``results/models/best.pt``, the run chosen from ``results/eval/metrics.csv`` by :func:`best_run`) or
model file paths; each is a *map* named by the run, ``best`` or the file's stem, written to
``results/maps/{name}/``. Which days and slots are mapped is ta2d.plan's (``Plan.map_days``, ``Plan.map_units``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ta2d.config import is_model_path, map_models

BEST = "best"
MODELS_DIR = "results/models"


def map_sources(config: Mapping) -> dict[str, str]:
    """{map name: model file} of ``maps.model``. Raises ValueError naming the key when two maps share a name."""
    out: dict[str, str] = {}
    for value in map_models(config):
        name = Path(value).stem if is_model_path(value) else value
        path = value if is_model_path(value) else f"{MODELS_DIR}/{value}.pt"
        if name in out:
            raise ValueError(f"key maps.model: {value!r} and {out[name]!r} would both map to results/maps/{name}/")
        out[name] = path
    return out


def best_run(metrics_csv: str | Path, runs: Sequence[str]) -> tuple[str, str]:
    """(run, why): the run of `runs` with the lowest RMSE on the held-out days in metrics.csv (the scheme evaluate
    judges on), else on all test samples. Raises ValueError naming the file when it has none of the runs."""
    from ta2d.evaluation.schemes import JUDGE_SCHEME, SCHEME_ALL

    path = Path(metrics_csv)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the evaluation table to choose the best run ({err})") from err
    missing = {"run", "scheme", "rmse", "n"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: no column(s) {sorted(missing)}: not an evaluate metrics.csv")
    table = table[table["run"].isin(list(runs)) & (table["n"] > 0) & table["rmse"].notna()]
    for scheme in (JUDGE_SCHEME, SCHEME_ALL):
        sub = table[table["scheme"] == scheme]
        if len(sub):
            row = sub.sort_values(["rmse", "run"]).iloc[0]
            return str(row["run"]), (f"lowest RMSE on the test split's {scheme} samples ({row['rmse']:.3f} K, "
                                     f"n={int(row['n'])}) in {path}, among {sorted(set(sub['run']))}")
    raise ValueError(f"{path}: no scores for any of the runs {sorted(runs)}: cannot choose the best run")


def map_targets(names: Sequence[str], days: Sequence[str], plots: bool, scored: bool) -> list[str]:
    """Every day file of the maps rules (for rules all and maps): per map and day the NetCDF (+ GIF and its
    report page), and the correction evaluation when test days are mapped (``scored``)."""
    if not days or not names:
        return []
    exts = ("nc", "gif", "html") if plots else ("nc",)
    out = [f"results/maps/{n}/{d}.{e}" for n in names for d in days for e in exts]
    return out + (["results/eval/map_correction.csv"] if scored else [])


def slots_to_map(plan, raw_inputs: Mapping) -> tuple[dict[str, list[str]], list[str]]:
    """maps.unit slot: ({day: its slot keys with at least one raw file now}, the days to assemble). The other
    slots wait for their files. A day is assembled once every slot of it has files, or a later map slot has (the
    satellite moved on: a slot still without files is missing in the day file, and a late file reruns its slot
    and the day). One listing per slot folder of the map days."""
    from ta2d.ingest.archive import slots_with_files

    slots = [s for d in plan.map_days for s in plan.slots_of_day(d)]
    present = slots_with_files(dict(raw_inputs), pd.DatetimeIndex(slots, tz="UTC")) if slots else set()
    have = {s for s in slots if s.replace("T", "") in present}
    last = max(have) if have else ""
    by_day = {d: [s for s in plan.slots_of_day(d) if s in have] for d in plan.map_days}
    done = [d for d in plan.map_days
            if by_day[d] and (len(by_day[d]) == len(plan.slots_of_day(d)) or last > f"{d}T2400")]
    return by_day, done
