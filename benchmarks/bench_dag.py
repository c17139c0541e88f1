"""Snakemake's planning cost at archive scale: the real Snakefile on a stub archive of real size.

    .venv/bin/python benchmarks/bench_dag.py [--sizes month,year] [--six-years] [--repeat 3]

For each archive size (month = 2023-06, 30 days; year = 2023, 365 days; --six-years = 2018..2023,
2,191 days, ~841k files) it writes, under --root (default /tmp/ta2d_bench_dag, deleted at the end
unless --keep):
* a stub L1B archive in the NOAA layout (inputs.l1b.subdir "%Y%m/%d/%H"): 24 hourly slots x 16
  channels per day, every file validly named and EMPTY (no pixels: only names, sizes and mtimes
  matter to planning);
* a station table of --stations (600) stations on the demo domain, a static file of that domain, and
  a labels CSV in the KMA portal layout with every station at --label-hours hours of every day
  (default 24: full size, so the chunk manifests have their real size and Snakemake checksums real
  bytes in phase b).

and runs the real workflow (a scratch copy made by tests/conftest.make_workdir) with demo disabled,
the default training runs and no maps:

(a) plan      `snakemake -n` with empty results/: the parse (with the parse-time inventory refresh,
              which finds no inventory yet) and the DAG up to the checkpoint.
Then "everything built", honestly where it matters to Snakemake and stubbed where it does not:
  - every inventory is written by the real code (ta2d.ingest.archive.write_inventory, what rule inventory
    runs), so the parse-time refresh of (b) and (c) lists the whole archive and compares real text;
  - every scene is an empty stub .nc and a real status table with every slot "ok" (what calibrate
    writes for a good day; calibrating empty files would mark every slot unreadable, so build_index
    would reject every label and make no chunk at all);
  - build_index is the real library call on the real labels: real manifests, one per day;
  - every other output (chunks, embeddings, stats, runs, evaluation) is an empty stub, and
    `snakemake --touch --forceall` then records Snakemake's metadata for every job (its checksums
    of the manifests included) in DAG order, as a real run would have left it.
(b) checkpoint `snakemake --forcerun build_index` (a real run, not dry): the real build_index job runs
              on the real labels and rewrites every manifest with the same bytes (new mtimes); then
              Snakemake re-evaluates every job behind the checkpoint, checksums every manifest
              against the recorded one and finds nothing else to run. Reported: the wall time, the
              build_index job's own time (its benchmark file) and the difference = Snakemake's cost.
(c) no-op     `snakemake` (a real run) when everything is built: parse + refresh + whole DAG
              (checkpoint output present, so every chunk job is in it) -> "Nothing to be done".
Also (a') `snakemake -n` in the built state, and the parse-time refresh alone (in-process).

--plan-only skips the built state (its --touch pass costs Snakemake ~0.1 s per job: ~15 min for six
years): (a), then every inventory written by the real code, the refresh alone, and (a2) `snakemake -n`
with the inventories present (the parse lists the whole archive, the DAG stops at the checkpoint).

Each phase runs --repeat times; min and median seconds are printed, with job counts per rule (the
dry run's job table) and the ratios between archive sizes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import make_workdir  # noqa: E402

from ta2d.channels import ALL_CHANNELS, l1b_filename  # noqa: E402
from ta2d.demo.tables import ENCODING, LABEL_HEADER, META_HEADER  # noqa: E402
from ta2d.grid import Domain, linecol_to_lonlat  # noqa: E402
from ta2d.index.build import build_index  # noqa: E402
from ta2d.ingest.archive import refresh_inventories, write_inventory  # noqa: E402
from ta2d.periods import period_keys  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SIZES = {"month": ("2023-06-01", "2023-06-30"), "year": ("2023-01-01", "2023-12-31"),
         "six_years": ("2018-01-01", "2023-12-31")}
DOMAIN = Domain(850, 1075, 2590, 2905)  # the demo domain: a static file of ~0.2 MB
SUBDIR = "%Y%m/%d/%H"


# --- inputs ------------------------------------------------------------------------------------
def make_archive(raw: Path, start: str, end: str) -> int:
    """Empty, validly named L1B files: 24 hourly slots x 16 channels per day. Existing days are kept."""
    n = 0
    for day in pd.date_range(start, end, freq="D"):
        day_dir = raw / day.strftime("%Y%m/%d")
        if (day_dir / "23").is_dir() and len(os.listdir(day_dir / "23")) == len(ALL_CHANNELS):
            n += 24 * len(ALL_CHANNELS)
            continue
        for h in range(24):
            slot = day + pd.Timedelta(hours=h)
            d = raw / slot.strftime(SUBDIR)
            d.mkdir(parents=True, exist_ok=True)
            stamp = slot.strftime("%Y%m%d%H%M")
            for ch in ALL_CHANNELS:
                os.close(os.open(d / l1b_filename(ch, "fd", stamp), os.O_CREAT | os.O_WRONLY, 0o644))
                n += 1
    return n


def make_tables(data: Path, n_stations: int, seed: int = 0) -> pd.DataFrame:
    """Station table (portal META layout) and static file on DOMAIN; returns the stations."""
    import xarray as xr

    rng = np.random.default_rng(seed)
    nl, nc = DOMAIN.shape
    flat = rng.choice((nl - 12) * (nc - 12), n_stations, replace=False)
    lines = DOMAIN.first_line + 6 + flat // (nc - 12)
    cols = DOMAIN.first_column + 6 + flat % (nc - 12)
    lon, lat = linecol_to_lonlat(lines, cols)
    st = pd.DataFrame({"stn": np.arange(n_stations) + 100, "lat": np.round(lat, 4), "lon": np.round(lon, 4)})
    with open(data / "stations.csv", "w", encoding=ENCODING, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(META_HEADER)
        for r in st.itertuples():
            w.writerow([r.stn, "2010-01-01", "", f"관측소{r.stn}", "주소", "서울기상청", f"{r.lat:.4f}",
                        f"{r.lon:.4f}", "50.0", "1.5"])
    xr.Dataset({"dem": (("line", "column"), rng.uniform(0, 1500, (nl, nc)).astype("f4")),
                "land_sea_mask": (("line", "column"), np.ones((nl, nc), "f4")),
                "landcover": (("line", "column"), rng.integers(1, 17, (nl, nc)).astype("u1"))},
               coords={"line": DOMAIN.lines, "column": DOMAIN.columns}).to_netcdf(data / "static.nc",
                                                                                 engine="h5netcdf")
    return st


def make_labels(path: Path, stations: pd.DataFrame, start: str, end: str, hours_per_day: int, seed: int = 0) -> int:
    """KMA portal hourly CSV (CP949, KST): every station at the first `hours_per_day` UTC hours of every day."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(start, end, freq="D", tz="UTC")
    hours = pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in range(hours_per_day)])
    kst = (hours + pd.Timedelta(hours=9)).strftime("%Y-%m-%d %H:%M")
    n_st = len(stations)
    df = pd.DataFrame({
        "stn": np.repeat(stations["stn"].to_numpy()[None, :], len(hours), 0).ravel(),
        "name": "관측소",
        "time": np.repeat(np.asarray(kst), n_st),
        "ta": np.round(rng.normal(12, 8, len(hours) * n_st), 1),
        "qc": "",
    })
    df.to_csv(path, index=False, header=LABEL_HEADER, encoding=ENCODING, float_format="%.1f")
    return len(df)


def write_config(work: Path, data: Path, start: str, end: str) -> Path:
    config = {
        "period": {"start": start, "end": end},
        "domain": {"first_line": DOMAIN.first_line, "last_line": DOMAIN.last_line,
                   "first_column": DOMAIN.first_column, "last_column": DOMAIN.last_column},
        "inputs": {"kind": "l1b",
                   "l1b": {"dir": str(data / "raw"), "subdir": SUBDIR, "area": "fd", "slot_minutes": [0]},
                   "labels": {"path": str(data / f"labels_{start}_{end}.csv"), "format": "kma_portal_csv"},
                   "stations": {"path": str(data / "stations.csv")},
                   "static": {"path": str(data / "static.nc")}},
        "maps": {"days": []},
        "demo": {"enabled": False},
    }
    path = work / "config" / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- the "everything built" state --------------------------------------------------------------
def load_config(work: Path) -> dict:
    from ta2d.config import validate_config

    config = yaml.safe_load((work / "config/config.yaml").read_text())
    for k, v in yaml.safe_load((work / "config/bench.yaml").read_text()).items():
        config[k] = {**config.get(k, {}), **v} if isinstance(v, dict) else v
    return validate_config(config)


def build_state(work: Path) -> dict:
    """Inventories (real), scene stubs with all-ok status, build_index (real), then the rest stubbed."""
    cfg = load_config(work)
    period, freq = cfg["period"], cfg["chunking"]["period"]
    keys = period_keys(period["start"], period["end"], freq)
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    t = {}
    t0 = time.perf_counter()
    (work / "results/inventory").mkdir(parents=True, exist_ok=True)
    (work / "results/scenes").mkdir(parents=True, exist_ok=True)
    for key in keys:
        write_inventory(raw_inputs, key, freq, {"start": period["start"], "end": period["end"]},
                        work / f"results/inventory/{key}.tsv")
    t["inventories (real code)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for key in keys:
        times = int(pd.Timestamp(key, tz="UTC").timestamp()) + 3600 * np.arange(24)
        (work / f"results/scenes/{key}.nc").touch()
        pd.DataFrame({"time": times, "status": "ok"}).to_csv(work / f"results/scenes/{key}.status.csv", index=False)
    t["scene stubs + ok status"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = build_index(labels_cfg=cfg["inputs"]["labels"], stations_path=cfg["inputs"]["stations"]["path"],
                          static_cfg=cfg["inputs"]["static"],
                          scene_status_paths=[str(work / f"results/scenes/{k}.status.csv") for k in keys],
                          domain=Domain.from_config(cfg["domain"]), period=period, freq=freq,
                          split_cfg=cfg["split"], patch_size=cfg["patch"]["size"], out_dir=work / "results/index")
    t["build_index (real code)"] = time.perf_counter() - t0
    # every output of the DAG, now that the checkpoint's output exists: stub the missing ones
    t0 = time.perf_counter()
    out = snakemake(work, "--summary", check=True)
    n_stub = 0
    for line in out.stdout.splitlines()[1:]:
        path = work / line.split("\t")[0]
        if line.strip() and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            n_stub += 1
    t["list + stub other outputs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    proc = snakemake(work, "--touch", "--forceall", check=True)
    t["snakemake --touch --forceall"] = time.perf_counter() - t0
    touched = finished_jobs(proc.stdout + proc.stderr)
    manifests = sorted((work / "results/index/chunks").iterdir())
    mb = sum(p.stat().st_size for p in manifests) / 1e6
    t0 = time.perf_counter()
    for p in manifests:  # what Snakemake does to compare a rewritten manifest with its recorded checksum
        hashlib.sha256(p.read_bytes()).hexdigest()
    t["sha256 of every manifest"] = time.perf_counter() - t0
    return {"seconds": t, "n_chunks": summary["n_chunks"], "n_stubbed": n_stub, "manifest_mb": mb,
            "n_indexed": summary["n_indexed"], "jobs": touched}


# --- running Snakemake -------------------------------------------------------------------------
def snakemake(work: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", "config/bench.yaml", *args]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(text: str) -> dict[str, int]:
    """The dry run's 'Job stats' table: rule -> count."""
    m = re.search(r"Job stats:\njob\s+count\n-+\s+-+\n(.*?)\n\s*total\s+(\d+)", text, re.S)
    if not m:
        return {}
    counts = {}
    for line in m.group(1).splitlines():
        name, n = line.split()
        counts[name] = int(n)
    counts["total"] = int(m.group(2))
    return counts


def finished_jobs(text: str) -> dict[str, int]:
    """Jobs a real (or --touch) run finished, per rule."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text):
        counts[rule] = counts.get(rule, 0) + 1
    counts["total"] = sum(counts.values())
    return counts


def timed(work: Path, *args: str, repeat: int, expect: str | None = None) -> tuple[list[float], str]:
    secs, text = [], ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = snakemake(work, *args, check=True)
        secs.append(time.perf_counter() - t0)
        text = proc.stdout + proc.stderr
        if expect and expect not in text:
            raise RuntimeError(f"snakemake {' '.join(args)}: expected {expect!r}:\n{text[-4000:]}")
    return secs, text


def fmt(secs: list[float]) -> str:
    return f"min {min(secs):7.2f} s  median {statistics.median(secs):7.2f} s  (n={len(secs)})"


def bench_size(name: str, root: Path, data: Path, stations: pd.DataFrame, args) -> dict:
    start, end = SIZES[name]
    print(f"\n=== {name}: {start} .. {end}", flush=True)
    t0 = time.perf_counter()
    n_files = make_archive(data / "raw", start, end)
    labels = data / f"labels_{start}_{end}.csv"
    n_labels = make_labels(labels, stations, start, end, args.label_hours)
    print(f"inputs: {n_files} stub L1B files, {n_labels} label rows ({labels.stat().st_size / 1e6:.0f} MB), "
          f"{len(stations)} stations  [{time.perf_counter() - t0:.0f} s]", flush=True)
    work = root / f"wf_{name}"
    shutil.rmtree(work, ignore_errors=True)
    make_workdir(work)
    write_config(work, data, start, end)
    res = {"name": name, "n_files": n_files, "n_days": len(pd.date_range(start, end))}

    secs, text = timed(work, "-n", repeat=args.repeat)
    res["plan"] = secs
    res["plan_jobs"] = job_counts(text)
    print(f"(a) plan from scratch (snakemake -n):      {fmt(secs)}", flush=True)
    print(f"    jobs: {res['plan_jobs']}", flush=True)

    cfg = load_config(work)
    keys = period_keys(start, end, "D")
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    if args.plan_only:  # the inventories only (real code), for the refresh figure
        (work / "results/inventory").mkdir(parents=True, exist_ok=True)
        for key in keys:
            write_inventory(raw_inputs, key, "D", cfg["period"], work / f"results/inventory/{key}.tsv")
    else:
        state = build_state(work)
        res["state"] = state
        print(f"    built state: {state['n_chunks']} chunks ({state['n_indexed']} samples), manifests "
              f"{state['manifest_mb']:.0f} MB, {state['n_stubbed']} stub outputs; " +
              ", ".join(f"{k} {v:.1f} s" for k, v in state["seconds"].items()), flush=True)
        print(f"    jobs in the built DAG (--touch --forceall): {state['jobs']}", flush=True)

    refresh = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        changed = refresh_inventories(raw_inputs, keys, "D", cfg["period"], work / "results/inventory")
        refresh.append(time.perf_counter() - t0)
        assert changed == 0
    res["refresh"] = refresh
    print(f"    parse-time refresh alone (in-process):  {fmt(refresh)}", flush=True)
    if args.plan_only:
        secs, _ = timed(work, "-n", repeat=args.repeat)
        res["plan_inventories"] = secs
        print(f"(a2) plan with every inventory present:    {fmt(secs)}  (the parse lists the whole archive)",
              flush=True)
        return res

    secs, text = timed(work, "-n", repeat=args.repeat, expect="Nothing to be done")
    res["plan_built"] = secs
    print(f"(a') plan, everything built (snakemake -n): {fmt(secs)}", flush=True)

    walls, jobs, own = [], [], []
    bench_tsv = work / "results/benchmarks/build_index.tsv"
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        proc = snakemake(work, "--forcerun", "build_index", check=True)
        walls.append(time.perf_counter() - t0)
        own.append(float(pd.read_csv(bench_tsv, sep="\t")["s"].iloc[-1]))
        jobs.append(finished_jobs(proc.stdout + proc.stderr))
    res["checkpoint"] = walls
    res["checkpoint_job"] = own
    res["checkpoint_overhead"] = [w - o for w, o in zip(walls, own, strict=True)]
    print(f"(b) checkpoint (--forcerun build_index):   {fmt(walls)}", flush=True)
    print(f"    of which the build_index job itself:   {fmt(own)}", flush=True)
    print(f"    Snakemake's own cost (wall - job):     {fmt(res['checkpoint_overhead'])}", flush=True)
    print(f"    jobs that ran: {jobs[-1]}", flush=True)

    secs, _ = timed(work, repeat=args.repeat, expect="Nothing to be done")
    res["noop"] = secs
    print(f"(c) no-op rerun (snakemake):               {fmt(secs)}", flush=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="month,year", help="comma-separated: month, year")
    ap.add_argument("--six-years", action="store_true", help="also 2018..2023 (~841k stub files, ~2 GB labels)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stations", type=int, default=600)
    ap.add_argument("--label-hours", type=int, default=24, help="label hours per station and day (<= 24)")
    ap.add_argument("--root", type=Path, default=Path("/tmp/ta2d_bench_dag"))
    ap.add_argument("--keep", action="store_true", help="keep --root (stub archive, workdirs) for another run")
    ap.add_argument("--plan-only", action="store_true",
                    help="only (a) and the parse-time refresh: no built state (the --touch pass costs ~0.1 s per job)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    sizes = [s for s in args.sizes.split(",") if s] + (["six_years"] if args.six_years else [])
    data = args.root / "data"
    (data / "raw").mkdir(parents=True, exist_ok=True)
    stations = make_tables(data, args.stations)
    results = []
    try:
        for name in sizes:
            results.append(bench_size(name, args.root, data, stations, args))
    finally:
        if not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))


def print_summary(results: list[dict]) -> None:
    phases = [("plan", "(a) plan from scratch"), ("plan_built", "(a') plan, all built"),
              ("checkpoint_overhead", "(b) checkpoint, Snakemake"), ("checkpoint_job", "(b) build_index job"),
              ("noop", "(c) no-op rerun"), ("plan_inventories", "(a2) plan, inventories exist"),
              ("refresh", "parse-time refresh")]
    print("\nSummary (median seconds; ratio to the previous size in brackets)")
    header = f"{'':30s}" + "".join(f"{r['name'] + ' (' + str(r['n_days']) + ' d)':>22s}" for r in results)
    print(header)
    for key, label in phases:
        if not all(key in r for r in results):
            continue
        cells, prev = [], None
        for r in results:
            v = statistics.median(r[key])
            cells.append(f"{v:8.2f}" + (f" [{v / prev:5.1f}x]" if prev else " " * 9))
            prev = v
        print(f"{label:30s}" + "".join(f"{c:>22s}" for c in cells))
    print(f"{'jobs planned from scratch':30s}" + "".join(f"{r['plan_jobs'].get('total', 0):>22d}" for r in results))
    if all("state" in r for r in results):
        print(f"{'jobs in the built DAG':30s}" + "".join(f"{r['state']['jobs']['total']:>22d}" for r in results))
        print(f"{'days / chunks':30s}" + "".join(f"{str(r['n_days']) + ' / ' + str(r['state']['n_chunks']):>22s}"
                                              for r in results))


if __name__ == "__main__":
    main()
