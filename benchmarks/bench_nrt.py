"""Near-real-time mapping: the latency from a slot's files being complete to its corrected map, with the real
Snakefile and the documented command (docs/maps.md#near-real-time):

    snakemake --cores 2 --configfile config/nrt.yaml maps

    .venv/bin/python benchmarks/bench_nrt.py --demo .                  # a folder where `make demo` ran
    .venv/bin/python benchmarks/bench_nrt.py --demo . --six-years      # ... and with six years of archive planned

1. Demo domain. A scratch copy of the workflow maps with the built demo's model file (results/models/best.pt)
   over a hard-linked copy of the demo's L1B archive (its files are not touched), maps.unit slot, the day after
   the demo's last archive day. Each step writes the NEXT slot's 16 L1B files (ta2d.demo.write_slots: the
   generator's own files, under temporary names renamed into place, as archives deliver) and the stations'
   observations of that hour (one more label file of the inputs.labels glob, as an hourly feed delivers), then
   times `snakemake -n maps` (planning: the parse, its refreshes, the DAG) and `snakemake maps` (the latency:
   the files are complete when it starts, the corrected slot map exists when it returns), and prints the jobs
   that ran and the slot's correction status. The first step also makes the first build's label parts.
2. --six-years: the same with the training side of six years of archive planned: the stat-only stub archive and
   monthly label files of benchmarks/bench_dag.py (2018..2023, hourly, --stations stations), its inventories
   written and its labels routed by the real code (not timed), training period = those six years, weekly
   chunks; the NRT slots land on 2024-01-01. The parse then refreshes every inventory and label file of six
   years, as every invocation of the command does.

Every Snakemake call is a subprocess; wall seconds. Goals: <= 30 s per slot on 2 cores
for the demo domain, <= 10 s of it planning at six years.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from ta2d.demo.synthetic import job_counts, make_workdir

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snakemake(work: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, *args, "--cores", "2", "--configfile", "config/nrt_bench.yaml"], cwd=work,
                          capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc, seconds


def write_nrt_config(work: Path, base: dict, raw: Path, labels_glob: str, model: Path, day: str,
                     period: dict | None = None) -> None:
    """config/nrt.yaml with this bench's archive, model, label glob and day (and a training period, or none)."""
    cfg = yaml.safe_load((REPO / "config/nrt.yaml").read_text())
    cfg["period"] = period
    cfg["domain"] = base["domain"]
    cfg["inputs"]["l1b"] = {**base["inputs"]["l1b"], "dir": str(raw)}
    cfg["inputs"]["labels"] = {"path": labels_glob, "format": "kma_portal_csv"}
    cfg["inputs"]["stations"] = {"path": str(base["inputs"]["stations"]["path"])}
    cfg["inputs"]["static"] = {"path": str(base["inputs"]["static"]["path"])}
    (work / "models").mkdir(exist_ok=True)
    shutil.copy2(model, work / "models/demo.pt")  # the model file copied in, as config/nrt.yaml expects it
    cfg["maps"]["model"] = "models/demo.pt"
    cfg["maps"]["period"] = {"start": day, "end": day}
    if period is not None:
        cfg["chunking"] = {"period": "W"}
        cfg["train"] = {"runs": {"ridge": {"model": "ridge"}}}  # planned, never run: the target is `maps`
    (work / "config/nrt_bench.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def land_slots(demo_cfg: dict, raw: Path, labels: Path, slots: list[pd.Timestamp]) -> None:
    """The slots' L1B files, written elsewhere and renamed into the archive, and the label file of their hours."""
    from ta2d.demo import write_slots

    staging = raw.parent / ".incoming"
    shutil.rmtree(staging, ignore_errors=True)
    cfg = {**demo_cfg, "inputs": {**demo_cfg["inputs"], "l1b": {**demo_cfg["inputs"]["l1b"], "dir": str(staging)}}}
    write_slots(cfg, slots, labels_path=labels.with_suffix(".tmp"))
    for f in staging.rglob("*.nc"):
        dest = raw / f.relative_to(staging)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    os.replace(labels.with_suffix(".tmp"), labels)


def run_slots(title: str, work: Path, demo_cfg: dict, raw: Path, labels: Path, day: str, n: int) -> list[dict]:
    rows = []
    times = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=n + 1, freq="h")
    for i in range(n + 1):
        # the new slot only, and its hour's observations as a file of their own (an hourly feed)
        land_slots(demo_cfg, raw, labels.with_name(f"{labels.stem}_{times[i]:%Y%m%d%H}.csv"), [times[i]])
        dry, plan_s = snakemake(work, "-n", "maps")
        real, latency = snakemake(work, "maps")
        key = f"{times[i]:%Y%m%dT%H%M}"
        ran = job_counts(real.stdout + real.stderr)
        import xarray as xr

        with xr.open_dataset(work / f"results/maps/demo/slots/{key}.nc", engine="h5netcdf") as ds:
            status = str(ds["correction_status"].values[0])
        row = {"slot": key, "plan_s": plan_s, "latency_s": latency, "jobs": ran, "correction": status}
        rows.append(row)
        what = "first (+ first build of the label parts)" if i == 0 else "next"
        print(f"{title} {what} slot {key}: latency {latency:5.1f} s, planning {plan_s:4.1f} s "
              f"({plan_s / latency:.0%}); jobs {', '.join(f'{k} {v}' for k, v in ran.items() if k != 'maps')}; "
              f"{status}", flush=True)
    steady = rows[1:]
    if steady:
        lat = sorted(r["latency_s"] for r in steady)
        pl = sorted(r["plan_s"] for r in steady)
        print(f"{title}: {len(steady)} next slots: latency median {lat[len(lat) // 2]:.1f} s (max {lat[-1]:.1f}), "
              f"planning median {pl[len(pl) // 2]:.1f} s", flush=True)
    return rows


def demo_part(root: Path, demo: Path, n: int) -> None:
    from ta2d.config import load_config

    demo_cfg = load_config(demo / "config/config.yaml", check_files=False)
    for key in ("l1b",):
        demo_cfg["inputs"][key]["dir"] = str(demo / demo_cfg["inputs"][key]["dir"])
    for key in ("labels", "stations", "static"):
        demo_cfg["inputs"][key]["path"] = str(demo / demo_cfg["inputs"][key]["path"])
    demo_cfg["inputs"]["background"] = None  # the maps do not use it
    last = pd.Timestamp(demo_cfg["period"]["end"]) + pd.Timedelta(days=demo_cfg["demo"]["unlabelled_days"])
    day = f"{last + pd.Timedelta(days=1):%Y-%m-%d}"
    work = make_workdir(root / "wf")
    raw = root / "archive"
    subprocess.run(["cp", "-al", demo_cfg["inputs"]["l1b"]["dir"], str(raw)], check=True)
    labels_dir = root / "labels"
    labels_dir.mkdir()
    shutil.copy2(demo_cfg["inputs"]["labels"]["path"], labels_dir / "OBS_ASOS_TIM_demo.csv")
    model = demo / "results/models/best.pt"
    write_nrt_config(work, demo_cfg, raw, str(labels_dir / "OBS_ASOS_TIM_*.csv"), model, day)
    print(f"demo domain {demo_cfg['domain']}, model {model} ({model.stat().st_size / 1e6:.1f} MB), maps.unit slot, "
          f"day {day}; commit {code_version()}", flush=True)
    run_slots("demo", work, demo_cfg, raw, labels_dir / "OBS_ASOS_TIM_nrt.csv", day, n)


def six_year_part(root: Path, demo: Path, n: int, n_stations: int) -> None:
    import bench_dag  # benchmarks/, this script's folder (sys.path[0])

    from ta2d.config import load_config, validate_config
    from ta2d.ingest.archive import write_inventory
    from ta2d.plan import Plan

    demo_cfg = load_config(demo / "config/config.yaml", check_files=False)
    data = root / "six_years"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_files = bench_dag.make_archive(data / "raw", "2018-01-01", "2023-12-31")
    stations = bench_dag.make_tables(data, n_stations)
    glob_, _, n_rows, _ = bench_dag.make_labels(data / "labels", stations, "2018-01-01", "2023-12-31")
    print(f"six years: {n_files:,} stub L1B files, {n_rows:,} label rows of {n_stations} stations "
          f"({time.perf_counter() - t0:.0f} s to write)", flush=True)
    base = {"domain": demo_cfg["domain"], "inputs": {"l1b": {**demo_cfg["inputs"]["l1b"]},
                                                     "stations": {"path": str(data / "stations.csv")},
                                                     "static": {"path": str(data / "static.nc")}}}
    work = make_workdir(root / "wf6")
    write_nrt_config(work, base, data / "raw", glob_, demo / "results/models/best.pt", "2024-01-01",
                     period={"start": "2018-01-01", "end": "2023-12-31"})
    cfg = yaml.safe_load((work / "config/config.yaml").read_text())
    for k, v in yaml.safe_load((work / "config/nrt_bench.yaml").read_text()).items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    cfg = validate_config(cfg)
    plan = Plan.from_config(cfg)
    t0 = time.perf_counter()
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    for key in plan.keys:
        write_inventory(raw_inputs, key, plan.freq, plan.scene_bounds(key), work / f"results/inventory/{key}.tsv")
    routed = bench_dag.route_in_subprocess(work, cfg)
    print(f"six years planned: {len(plan.keys)} weekly scenes, {len(plan.chunks)} chunks; inventories written and "
          f"labels routed by the real code in {time.perf_counter() - t0:.0f} s ({routed})", flush=True)
    time.sleep(2.5)  # past the inventories' settle margin, as an archive is between two invocations
    demo_like = {**demo_cfg, "inputs": {**demo_cfg["inputs"], "l1b": {**demo_cfg["inputs"]["l1b"]}}}
    run_slots("six years", work, demo_like, data / "raw", data / "labels" / "OBS_ASOS_TIM_2024nrt.csv",
              "2024-01-01", n)


def code_version() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                             text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=REPO, help="a folder where `make demo` ran (results/models/best.pt)")
    ap.add_argument("--slots", type=int, default=3, help="next slots after the first one (default 3)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/ta2d_bench_nrt"))
    ap.add_argument("--six-years", action="store_true")
    ap.add_argument("--stations", type=int, default=60, help="stations of the six-year label archive (the parse "
                                                             "stats each label file: the row count hardly matters)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    demo = a.demo.resolve()
    if not (demo / "results/models/best.pt").is_file():
        sys.exit(f"{demo}/results/models/best.pt missing: run `make demo` there first")
    for sub in ("wf", "wf6", "archive", "labels", ".incoming"):
        shutil.rmtree(a.root / sub, ignore_errors=True)
    a.root.mkdir(parents=True, exist_ok=True)
    try:
        demo_part(a.root, demo, a.slots)
        if a.six_years:
            six_year_part(a.root, demo, a.slots, a.stations)
    finally:
        if not a.keep:
            for sub in ("wf", "wf6", "archive", "labels", ".incoming"):
                shutil.rmtree(a.root / sub, ignore_errors=True)


if __name__ == "__main__":
    main()
