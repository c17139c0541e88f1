"""The parse-time inventory refresh on a stub archive of real size: stat every file vs stat each slot directory.

    .venv/bin/python benchmarks/bench_inventory_refresh.py [--days 365] [--repeat 3] [--root DIR] [--keep]

Writes under --root (default /tmp/ta2d_bench_inventory, deleted at the end unless --keep) a stub L1B archive of
--days days ending 2023-12-31 (365: the year 2023; 2191: 2018..2023, ~841k files) in the NOAA layout
(inputs.l1b.subdir "%Y%m/%d/%H"): 24 hourly slots x 16 channels per day, every file validly named and empty.
Every daily inventory is then written by the real code (ta2d.ingest.archive.write_inventory, what rule
inventory runs), with its sidecar, and the refresh that each parse of the Snakefile runs is timed:

  old      the refresh before the sidecars: list every period's slot directories and stat every file
  full     refresh_inventories(full=True), what `ta2d refresh-inventories` runs (old + the sidecars)
  fast     refresh_inventories(), the parse-time refresh: one stat per slot directory, no listing

warm (--repeat runs each, min and median) and cold (once each, after `echo 3 > /proc/sys/vm/drop_caches`,
which needs root; without it the cold rows are skipped with a note). Each refresh must find nothing changed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
from bench_dag import SUBDIR, check_drop_caches, make_archive  # the same stub archive as the DAG benchmark

from ta2d.atomic import write_text_if_changed
from ta2d.ingest.archive import period_inventory_text, refresh_inventories, write_inventory
from ta2d.periods import period_keys
from ta2d.plan import Plan

END = pd.Timestamp("2023-12-31")


def old_refresh(inputs: dict, keys: list[str], freq: str, period: dict, inventory_dir: Path) -> int:
    """refresh_inventories as it was before the sidecars: every period listed, every file stat'ed."""
    changed = 0
    for key in keys:
        path = inventory_dir / f"{key}.tsv"
        if path.is_file():
            changed += write_text_if_changed(path, period_inventory_text(inputs, key, freq, period))
    return changed


def timed(fn) -> tuple[float, int]:
    t0 = time.perf_counter()
    changed = fn()
    return time.perf_counter() - t0, changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=365, help="archive length in days (2191: six years)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--root", type=Path, default=Path("/tmp/ta2d_bench_inventory"))
    ap.add_argument("--keep", action="store_true", help="keep the archive and inventories")
    args = ap.parse_args()

    days = pd.date_range(END - pd.Timedelta(days=args.days - 1), END, freq="D")
    period = {"start": f"{days[0]:%Y-%m-%d}", "end": f"{days[-1]:%Y-%m-%d}"}
    raw, inventory_dir = args.root / "raw", args.root / "results" / "inventory"
    inputs = {"kind": "l1b", "calibrated": {},
              "l1b": {"dir": str(raw), "subdir": SUBDIR, "area": "fd", "slot_minutes": [0]}}
    keys = period_keys(period["start"], period["end"], "D")
    plan = Plan(start=period["start"], end=period["end"], freq="D", split_cfg={})
    if args.root.exists():
        shutil.rmtree(args.root)
    try:
        t0 = time.perf_counter()
        n_files = make_archive(raw, period["start"], period["end"])
        print(f"archive: {len(days)} days {period['start']}..{period['end']}, {n_files:,} files, "
              f"{len(days) * 24:,} slot directories ({time.perf_counter() - t0:.0f} s to write)")
        time.sleep(2.5)  # past the sidecar's settle margin, as an archive is between two parses
        t, _ = timed(lambda: sum(write_inventory(inputs, k, "D", period, inventory_dir / f"{k}.tsv") for k in keys))
        print(f"inventories: {len(keys)} written by write_inventory in {t:.1f} s")

        runs = {
            "old": lambda: old_refresh(inputs, keys, "D", period, inventory_dir),
            "full": lambda: refresh_inventories(inputs, plan, inventory_dir, full=True),
            "fast": lambda: refresh_inventories(inputs, plan, inventory_dir),
        }
        results: dict[tuple[str, str], list[float]] = {}
        for name, fn in runs.items():
            for _ in range(args.repeat):
                t, changed = timed(fn)
                assert changed == 0, f"{name}: {changed} inventories changed on an unchanged archive"
                results.setdefault((name, "warm"), []).append(t)
        note = None
        for name, fn in runs.items():
            why = check_drop_caches()  # drops them when it can
            if why:
                note = f"cannot drop the page cache ({why}; needs root): cold rows skipped"
                break
            t, changed = timed(fn)
            assert changed == 0, f"{name} cold: {changed} inventories changed"
            results[(name, "cold")] = [t]

        print(f"\n{'refresh':<6} {'cache':<5} {'runs':>4} {'min s':>8} {'median s':>9} {'files/s':>12} {'vs fast':>8}")
        for cache in ("warm", "cold"):
            fast = results.get(("fast", cache))
            for name in runs:
                times = results.get((name, cache))
                if not times:
                    continue
                best = min(times)
                ratio = f"{best / min(fast):.0f}x" if fast else "-"
                print(f"{name:<6} {cache:<5} {len(times):>4} {best:>8.3f} {statistics.median(times):>9.3f} "
                      f"{n_files / best:>12,.0f} {ratio:>8}")
        if note:
            print(f"note: {note}")
        print("files/s: raw files covered per second (fast stats none of them, only the slot directories)")
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
