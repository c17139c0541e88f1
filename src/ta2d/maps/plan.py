"""What the maps rules make, from the config alone (parse time: no torch, no result files).

``maps.runs`` names runs of ``train.runs`` or the pseudo-run :data:`BEST`, resolved inside the job from
``results/eval/metrics.csv`` (:func:`best_run`), so the DAG stays static: ``results/maps/best/{day}.nc`` holds
the best run's maps and names that run in its attributes. ``maps.days`` is ``test`` (every test day of the
split rule: the random test days and the time block), ``all`` (every day of the period) or a list of days;
``maps.max_days`` keeps N of them, spread evenly (the first and the last included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

BEST = "best"
DAY_FORMAT = "%Y%m%d"  # file names: results/maps/{run}/{YYYYMMDD}.nc


def map_runs(runs: Sequence[str] | None, all_runs: Sequence[str]) -> list[str]:
    """The map "runs" (directory names under results/maps/): every run when None, else the named ones;
    ``best`` may be among them. Raises ValueError naming ``maps.runs``."""
    if runs is None:
        return list(all_runs)
    if BEST in all_runs:
        raise ValueError(f"key maps.runs: a run of train.runs is called {BEST!r}, the name of the pseudo-run "
                         "'best run on the test days'; rename that run")
    unknown = sorted(set(runs) - set(all_runs) - {BEST})
    if unknown:
        raise ValueError(f"key maps.runs: {unknown} are neither runs of train.runs ({sorted(all_runs)}) nor {BEST!r}")
    if BEST in runs and not all_runs:
        raise ValueError("key maps.runs: 'best' needs at least one run in train.runs")
    return list(runs)


def split_test_days(period: Mapping, split_cfg: Mapping) -> list[str]:
    """The period's test days (YYYYMMDD): random test days of the day rule and the days of the time block."""
    from ta2d.index.schemes import assign_split_by_day, in_time_block

    days = pd.Series(pd.date_range(period["start"], period["end"], freq="D").strftime(DAY_FORMAT))
    by_day = assign_split_by_day(days, split_cfg["fractions"], split_cfg.get("seed", 42),
                                 split_cfg.get("block_days", 20)).to_numpy()
    test = (by_day == "test") | in_time_block(days.to_numpy(), dict(split_cfg))
    return list(days[test])


def map_days(days, period: Mapping, split_cfg: Mapping, max_days: int | None = None) -> list[str]:
    """The days to map (YYYYMMDD, sorted) from ``maps.days``: "test", "all" or a list of "YYYY-MM-DD" inside the
    period; at most ``max_days`` of them when given, spread evenly over the list (first and last included, so a
    sample of the test days reaches the time block at the end). Raises ValueError naming the key."""
    all_days = list(pd.date_range(period["start"], period["end"], freq="D").strftime(DAY_FORMAT))
    if days == "test":
        chosen = split_test_days(period, split_cfg)
    elif days == "all":
        chosen = all_days
    elif isinstance(days, str):
        raise ValueError(f"key maps.days: {days!r}: use 'test', 'all' or a list of YYYY-MM-DD days")
    else:
        chosen = []
        for text in days:
            try:
                day = pd.Timestamp(str(text)).strftime(DAY_FORMAT)
            except ValueError as err:
                raise ValueError(f"key maps.days: {text!r} is not a day ({err})") from err
            if day not in all_days:
                raise ValueError(f"key maps.days: {text} is outside the period {period['start']}..{period['end']}")
            chosen.append(day)
        chosen = sorted(set(chosen))
    if max_days is None or len(chosen) <= max_days:
        return chosen
    if max_days <= 1:
        return chosen[:max_days]
    picks = sorted({round(i * (len(chosen) - 1) / (max_days - 1)) for i in range(max_days)})
    return [chosen[i] for i in picks]


def day_period_key(day: str, freq: str) -> str:
    """The period key of the scene holding a day (YYYYMMDD)."""
    from ta2d.periods import period_key

    return str(period_key([pd.Timestamp(day, tz="UTC")], freq)[0])


def best_run(metrics_csv: str | Path, runs: Sequence[str]) -> tuple[str, str]:
    """(run, why): the run of `runs` with the lowest RMSE on the held-out days in metrics.csv (the scheme evaluate
    judges on), else on all test samples. Raises ValueError naming the file when it has none of the runs."""
    from ta2d.evaluation.evaluate import JUDGE_SCHEME, SCHEME_ALL

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


def model_runs(map_run: str, all_runs: Sequence[str]) -> list[str]:
    """The runs whose checkpoints a map job reads: every run for "best", else the run itself."""
    return list(all_runs) if map_run == BEST else [map_run]


def map_targets(map_runs: Sequence[str], days: Sequence[str], plots: bool) -> list[str]:
    """Every file of the maps rules (for rule all): per run and day the NetCDF (+ GIF and its report page), and the
    correction evaluation; nothing when no day or run is mapped."""
    if not days or not map_runs:
        return []
    exts = ("nc", "gif", "html") if plots else ("nc",)
    return [f"results/maps/{r}/{d}.{e}" for r in map_runs for d in days for e in exts] + [
        "results/eval/map_correction.csv"]
