"""Snakemake's planning cost at archive scale: the real Snakefile (static DAG) on a stub archive of real size.

    .venv/bin/python benchmarks/bench_dag.py [--sizes month,year] [--six-years] [--repeat 3] [--drop-caches]

For each archive size (month = 2023-06, 30 days; year = 2023, 365 days; --six-years = 2018..2023, 2,191
days, ~841k files, ~31.5 M label rows) it writes, under --root (default /tmp/ta2d_bench_dag, deleted at the
end unless --keep; with --keep a rerun reuses the archive days and label files already there):
* a stub L1B archive in the NOAA layout (inputs.l1b.subdir "%Y%m/%d/%H"): 24 hourly slots x 16 channels
  per day, every file validly named and EMPTY (only names, sizes and mtimes matter to planning);
* a station table of --stations (600) stations on the demo domain and a static file of that domain;
* a label archive in the KMA portal layout: one CSV per month, labels/OBS_ASOS_TIM_{YYYYMM}.csv (CP949,
  KST), every station at every UTC hour of the month's days; inputs.labels.path is a glob over the
  size's months (e.g. OBS_ASOS_TIM_2023*.csv).

and runs the real workflow (a scratch copy made by ta2d.demo.synthetic.make_workdir) with demo disabled, the
default training runs, no maps, and the chunking period of config/config.yaml (chunking.period; the keys
are computed with it, and it is printed). Every timed Snakemake call is a subprocess, wall time:

(a)  plan from scratch   `snakemake -n` with an empty results/: the parse (no inventory and no label part
                         exists yet, so the parse-time refreshes do nothing) and the whole static DAG.
Then "everything built", real where it matters to planning and stubbed where it does not (each step's
time is printed, not a phase):
  - every inventory written by the real code (ta2d.ingest.archive.write_inventory, what rule inventory
    runs: the inventory and its slot-directory sidecar);
  - every scene an empty stub .nc and a real {key}.status.csv with every slot "ok";
  - the label parts made by the real routing, route_labels(..., force=True) (what rule label_parts runs),
    in a subprocess importing the workdir's copy of src/ as the jobs do: its time and its peak RSS
    (ru_maxrss of that process, and its RSS after the imports);
  - every other output of the DAG (listed by `snakemake --summary`) an empty stub, then
    `snakemake --touch --forceall` records Snakemake's metadata for every job, as a real run leaves it.
  - the touch pass gives every inventory a new mtime, so the next parse-time refresh lists every period
    once (the sidecars name the old mtime): that first refresh is run and printed here, not timed below.
parse-time refreshes alone, in-process, nothing changed: refresh_inventories (ta2d.ingest.archive: one stat
                         per slot directory) and refresh_label_parts (ta2d.index.route: one stat per label
                         file), what every parse of the Snakefile runs in the main process.
(a') plan, all built     `snakemake -n` -> "Nothing to be done".
(c)  no-op rerun         `snakemake` (a real run) -> "Nothing to be done".
(d)  one label row       the TA value of ONE data row of one monthly label file is rewritten in place (a row
                         of the middle test chunk's part, so no training is downstream; a new value each
                         repeat), then `snakemake -n` (timed: the parse rereads that file and rewrites its
                         one part) -> exactly 1 build_patch_chunk and 1 build_index (asserted), plus what
                         reads the chunk. After each repeat, `snakemake --touch` (not timed) makes the state
                         clean again.
(e)  one raw file        a new stub written under a temporary name in one slot directory of the middle
                         period and os.replace'd over an existing file (a reprocessed file arrives so), then
                         `snakemake -n` (timed) -> 1 calibrate and that period's chunks (asserted), plus
                         downstream; then `snakemake --touch` (not timed).
--plan-only skips the built state (its --touch pass costs Snakemake ~0.1 s per job): (a), every inventory
written by the real code, the inventory refresh alone, and (a2) `snakemake -n` with the inventories present.

--drop-caches runs `sync; echo 3 > /proc/sys/vm/drop_caches` (root) before every timed repeat, so the figures
are those of a freshly started machine (cold page, dentry and inode caches); otherwise the caches are warm.
The output says which mode ran, and the commit of the code measured. Each phase runs --repeat times; min and
median seconds are printed, with the dry runs' job counts per rule, and a summary table across sizes (ratio
to the previous size). After (d) and (e) an untimed `snakemake -n` checks that the state is clean again.
"""

from __future__ import annotations

import argparse
import csv
import glob
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

from ta2d.channels import ALL_CHANNELS, l1b_filename
from ta2d.demo.synthetic import job_counts as rule_job_counts
from ta2d.demo.synthetic import make_workdir
from ta2d.demo.tables import ENCODING, LABEL_HEADER, META_HEADER
from ta2d.grid import Domain, linecol_to_lonlat
from ta2d.index.route import LABELS_DIR, refresh_label_parts
from ta2d.ingest.archive import refresh_inventories, write_inventory
from ta2d.plan import Plan, chunk_name

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SIZES = {"month": ("2023-06-01", "2023-06-30"), "year": ("2023-01-01", "2023-12-31"),
         "six_years": ("2018-01-01", "2023-12-31")}
DOMAIN = Domain(850, 1075, 2590, 2905)  # the demo domain: a static file of ~0.2 MB
SUBDIR = "%Y%m/%d/%H"
LABEL_FILE = "OBS_ASOS_TIM_{month}.csv"
DROP_CACHES = False  # set from --drop-caches


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


def months_of(start: str, end: str) -> list[str]:
    return list(pd.date_range(start, end, freq="D").strftime("%Y%m").unique())


def make_month_labels(path: Path, stations: pd.DataFrame, month: str) -> int:
    """One KMA portal hourly CSV (CP949, times in KST): every station at every UTC hour of the month's days.

    Written under a temporary name and renamed, so an existing file is complete (reused with --keep)."""
    rng = np.random.default_rng(int(month))
    first = pd.Timestamp(f"{month[:4]}-{month[4:]}-01", tz="UTC")
    hours = pd.date_range(first, first + pd.offsets.MonthBegin(1), freq="h", inclusive="left")
    kst = (hours + pd.Timedelta(hours=9)).strftime("%Y-%m-%d %H:%M")
    n_st = len(stations)
    df = pd.DataFrame({
        "stn": np.repeat(stations["stn"].to_numpy()[None, :], len(hours), 0).ravel(),
        "name": "관측소",
        "time": np.repeat(np.asarray(kst), n_st),
        "ta": np.round(rng.normal(12, 8, len(hours) * n_st), 1),
        "qc": "",
    })
    tmp = path.with_suffix(".tmp")
    df.to_csv(tmp, index=False, header=LABEL_HEADER, encoding=ENCODING, float_format="%.1f")
    os.replace(tmp, path)
    return len(df)


def make_labels(labels_dir: Path, stations: pd.DataFrame, start: str, end: str) -> tuple[str, int, int, int]:
    """The label files of the months of start..end (existing ones kept); returns (glob, files, rows, bytes).

    The glob is the months' common prefix + '*' and must match exactly those files."""
    labels_dir.mkdir(parents=True, exist_ok=True)
    months = months_of(start, end)
    n_rows, n_new = 0, 0
    for month in months:
        path = labels_dir / LABEL_FILE.format(month=month)
        if path.is_file():
            continue
        n_rows += make_month_labels(path, stations, month)
        n_new += 1
    prefix = os.path.commonprefix(months)
    pattern = str(labels_dir / LABEL_FILE.format(month=prefix + "*"))
    matched = sorted(Path(p).name for p in glob.glob(pattern))
    expected = sorted(LABEL_FILE.format(month=m) for m in months)
    if matched != expected:
        raise RuntimeError(f"{pattern} matches {len(matched)} files, the period has {len(expected)} months")
    size = sum((labels_dir / f).stat().st_size for f in expected)
    days = len(pd.date_range(start, end, freq="D"))
    return pattern, n_new, days * 24 * len(stations), size


def write_config(work: Path, data: Path, start: str, end: str, labels_glob: str) -> Path:
    config = {
        "period": {"start": start, "end": end},
        "domain": {"first_line": DOMAIN.first_line, "last_line": DOMAIN.last_line,
                   "first_column": DOMAIN.first_column, "last_column": DOMAIN.last_column},
        "inputs": {"kind": "l1b",
                   "l1b": {"dir": str(data / "raw"), "subdir": SUBDIR, "area": "fd", "slot_minutes": [0]},
                   "labels": {"path": labels_glob, "format": "kma_portal_csv"},
                   "stations": {"path": str(data / "stations.csv")},
                   "static": {"path": str(data / "static.nc")},
                   "background": None},
        "maps": {"days": [], "period": None},
        "demo": {"enabled": False},
    }
    path = work / "config" / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def load_config(work: Path) -> dict:
    from ta2d.config import validate_config

    config = yaml.safe_load((work / "config/config.yaml").read_text())
    for k, v in yaml.safe_load((work / "config/bench.yaml").read_text()).items():
        config[k] = {**config.get(k, {}), **v} if isinstance(v, dict) else v
    return validate_config(config)


# --- timing helpers ----------------------------------------------------------------------------
def drop_caches() -> None:
    """Before a timed repeat with --drop-caches: sync, then drop the page, dentry and inode caches."""
    if not DROP_CACHES:
        return
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as fh:
        fh.write("3\n")


def check_drop_caches() -> str | None:
    """Why --drop-caches cannot work here (None when it can)."""
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
    except (OSError, subprocess.CalledProcessError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def fmt(secs: list[float]) -> str:
    return f"min {min(secs):7.2f} s  median {statistics.median(secs):7.2f} s  (n={len(secs)})"


def step(label: str, seconds: float, extra: str = "") -> None:
    print(f"    {label + ':':44s}{seconds:8.1f} s{('  ' + extra) if extra else ''}", flush=True)


# --- running Snakemake -------------------------------------------------------------------------
def snakemake(work: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, *args, "--cores", "2", "--configfile", "config/bench.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def job_counts(text: str) -> dict[str, int]:
    """The dry run's 'Job stats' table: rule -> count, and total ({} when nothing is to be done)."""
    counts = rule_job_counts(text)
    return {**counts, "total": sum(counts.values())} if counts else {}


def is_clean(work: Path) -> bool:
    proc = snakemake(work, "-n", check=True)
    return "Nothing to be done" in proc.stdout + proc.stderr


def finished_jobs(text: str) -> dict[str, int]:
    """Jobs a real (or --touch) run finished, per rule."""
    counts: dict[str, int] = {}
    for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", text):
        counts[rule] = counts.get(rule, 0) + 1
    counts["total"] = sum(counts.values())
    return counts


def timed(work: Path, *args: str, repeat: int, expect: str | None = None, before=None, after=None
          ) -> tuple[list[float], list[str]]:
    """Run `snakemake *args` `repeat` times: before(i) (not timed), drop the caches, the timed call, after(i)."""
    secs, texts = [], []
    for i in range(repeat):
        if before:
            before(i)
        drop_caches()
        t0 = time.perf_counter()
        proc = snakemake(work, *args, check=True)
        secs.append(time.perf_counter() - t0)
        text = proc.stdout + proc.stderr
        texts.append(text)
        if expect and expect not in text:
            raise RuntimeError(f"snakemake {' '.join(args)}: expected {expect!r}:\n{text[-4000:]}")
        if after:
            after(i)
    return secs, texts


def timed_call(fn, repeat: int) -> tuple[list[float], list]:
    secs, values = [], []
    for _ in range(repeat):
        drop_caches()
        t0 = time.perf_counter()
        values.append(fn())
        secs.append(time.perf_counter() - t0)
    return secs, values


# --- the "everything built" state --------------------------------------------------------------
ROUTE_CODE = """
import json, resource, sys, time
from ta2d.index.route import route_labels
from ta2d.plan import Plan
cfg = json.loads(sys.argv[1])
plan = Plan.from_config(cfg)
plan.chunks  # the plan, as the job has it before it routes
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
res = route_labels(cfg["inputs"]["labels"], plan, out_dir=sys.argv[2], force=True)
sec = time.perf_counter() - t0
print(json.dumps({"seconds": sec, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mb": rss0 / 1024, **res}))
"""


def route_in_subprocess(work: Path, cfg: dict) -> dict:
    """route_labels(force=True), what rule label_parts runs, in its own process (the library of the workdir's
    copy, as the Snakemake jobs import it): its time and peak RSS."""
    keep = {k: cfg[k] for k in ("period", "chunking", "split", "inputs")}
    keep["index"] = cfg.get("index", {})
    proc = subprocess.run([sys.executable, "-c", ROUTE_CODE, json.dumps(keep, default=str), LABELS_DIR],
                          cwd=work, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(work / "src")})
    if proc.returncode != 0:
        raise RuntimeError(f"route_labels failed:\n{proc.stderr[-5000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_inventories(work: Path, cfg: dict, plan: Plan) -> float:
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    t0 = time.perf_counter()
    (work / "results/inventory").mkdir(parents=True, exist_ok=True)
    for key in plan.keys:
        write_inventory(raw_inputs, key, plan.freq, cfg["period"], work / f"results/inventory/{key}.tsv")
    return time.perf_counter() - t0


def build_state(work: Path, cfg: dict, plan: Plan) -> dict:
    """Scene stubs with all-ok status, the label parts (real routing), the rest stubbed, --touch --forceall."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    (work / "results/scenes").mkdir(parents=True, exist_ok=True)
    minutes = cfg["inputs"]["l1b"]["slot_minutes"]
    for key in plan.keys:
        days = plan.days(key)
        slots = [d + pd.Timedelta(hours=h, minutes=m) for d in days for h in range(24) for m in minutes]
        times = [int(s.timestamp()) for s in slots]  # plan.days: UTC days
        (work / f"results/scenes/{key}.nc").touch()
        pd.DataFrame({"time": times, "status": "ok"}).to_csv(work / f"results/scenes/{key}.status.csv", index=False)
    t["scene stubs + ok status"] = time.perf_counter() - t0
    step("scene stubs + all-ok status tables", t["scene stubs + ok status"])

    route = route_in_subprocess(work, cfg)
    t["route_labels force (real)"] = route["seconds"]
    parts = list((work / LABELS_DIR).glob("*_chunk_*.csv"))
    parts_mb = sum(p.stat().st_size for p in parts) / 1e6
    step("route_labels(force=True) (real, subprocess)", route["seconds"],
         f"peak RSS {route['maxrss_mb']:.0f} MB (after imports {route['rss_after_imports_mb']:.0f} MB); "
         f"read {route['read']} files, wrote {route['parts_written']} parts ({parts_mb:.0f} MB)")

    t0 = time.perf_counter()  # every output of the DAG: stub the missing ones
    out = snakemake(work, "--summary", check=True)
    n_stub = 0
    for line in out.stdout.splitlines()[1:]:
        path = work / line.split("\t")[0]
        if line.strip() and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            n_stub += 1
    t["list + stub other outputs"] = time.perf_counter() - t0
    step("snakemake --summary + stub other outputs", t["list + stub other outputs"], f"{n_stub} stubs")
    t0 = time.perf_counter()
    proc = snakemake(work, "--touch", "--forceall", check=True)
    t["snakemake --touch --forceall"] = time.perf_counter() - t0
    touched = finished_jobs(proc.stdout + proc.stderr)
    step("snakemake --touch --forceall", t["snakemake --touch --forceall"], f"{touched['total']} jobs")
    return {"seconds": t, "route": route, "parts_mb": parts_mb, "n_parts": len(parts), "n_stubbed": n_stub,
            "jobs": touched}


# --- the changes of phases (d) and (e) -----------------------------------------------------------
def pick_label_row(work: Path, plan: Plan, pattern: str) -> tuple[str, str, int]:
    """(chunk key, label file, 1-based data row) of a row in the middle test chunk's part.

    A part's `source` names the file below the pattern's last folder without a wildcard (ta2d.index.route)."""
    parts = Path(pattern).parts
    base = Path(*parts[:next((i for i, p in enumerate(parts) if glob.has_magic(p)), len(parts) - 1)])
    tests = [k for s, k in plan.chunks if s == "test"]
    for key in tests[len(tests) // 2:] + tests[:len(tests) // 2]:
        part = pd.read_csv(work / LABELS_DIR / chunk_name("test", key, ".csv"), usecols=["source", "row"])
        if len(part):
            r = part.iloc[len(part) // 2]
            return key, str(base / str(r["source"])), int(r["row"])
    raise RuntimeError("no label row in any test part")


def edit_label_row(path: str, row: int, value: float) -> tuple[str, str]:
    """Rewrite the TA field of data row `row` (1-based; line 0 is the header) of a portal CSV in place."""
    data = Path(path).read_bytes()
    start = 0
    for _ in range(row):  # skip the header and row - 1 data rows
        start = data.index(b"\n", start) + 1
    end = data.index(b"\n", start)
    fields = data[start:end].split(b",")
    old = fields[3].decode()
    fields[3] = f"{value:.1f}".encode()
    with open(path, "r+b") as fh:  # the same file (inode), rewritten: an edit in place
        fh.seek(start)
        fh.write(b",".join(fields) + data[end:])
        fh.truncate()
    return old, fields[3].decode()


def replace_raw_file(raw: Path, key: str, plan: Plan, i: int) -> Path:
    """A reprocessed file: a new stub written under a temporary name in the slot directory, renamed over one."""
    day = plan.days(key)[len(plan.days(key)) // 2]
    slot = day + pd.Timedelta(hours=(6 + i) % 24)
    target = raw / slot.strftime(SUBDIR) / l1b_filename(ALL_CHANNELS[0], "fd", slot.strftime("%Y%m%d%H%M"))
    assert target.is_file(), target
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(b"")
    os.replace(tmp, target)
    return target


# --- one archive size --------------------------------------------------------------------------
def bench_size(name: str, root: Path, data: Path, stations: pd.DataFrame, args) -> dict:
    start, end = SIZES[name]
    print(f"\n=== {name}: {start} .. {end}", flush=True)
    t0 = time.perf_counter()
    n_files = make_archive(data / "raw", start, end)
    t_archive = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels_glob, n_new, n_rows, size = make_labels(data / "labels", stations, start, end)
    n_months = len(months_of(start, end))
    print(f"inputs: {n_files} stub L1B files [{t_archive:.0f} s]; {n_months} monthly label files "
          f"({n_new} written now, {time.perf_counter() - t0:.0f} s), {n_rows} label rows, {size / 1e6:.0f} MB; "
          f"{len(stations)} stations; inputs.labels.path {labels_glob}", flush=True)
    work = root / f"wf_{name}"
    shutil.rmtree(work, ignore_errors=True)
    make_workdir(work)
    write_config(work, data, start, end, labels_glob)
    cfg = load_config(work)
    plan = Plan.from_config(cfg)
    raw_inputs = {k: cfg["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    print(f"chunking.period {plan.freq} (config/config.yaml): {len(plan.keys)} periods, {len(plan.chunks)} "
          f"planned chunks, {len(plan.index_keys)} index periods ({plan.index_freq})", flush=True)
    res = {"name": name, "n_files": n_files, "n_days": len(pd.date_range(start, end)), "freq": plan.freq,
           "n_periods": len(plan.keys), "n_chunks": len(plan.chunks), "n_label_rows": n_rows,
           "n_label_files": n_months}

    def clean_results(_i: int) -> None:
        shutil.rmtree(work / "results", ignore_errors=True)

    secs, texts = timed(work, "-n", repeat=args.repeat, before=clean_results)
    res["plan"] = secs
    res["plan_jobs"] = job_counts(texts[-1])
    print(f"(a) plan from scratch (snakemake -n):        {fmt(secs)}", flush=True)
    print(f"    jobs: {res['plan_jobs']}", flush=True)

    print("built state:", flush=True)
    t_inv = write_inventories(work, cfg, plan)
    res["inventories_written"] = t_inv
    step("inventories + sidecars (real write_inventory)", t_inv, f"{len(plan.keys)} periods")

    def refresh_inv() -> int:
        return refresh_inventories(raw_inputs, plan, work / "results/inventory")

    if args.plan_only:
        time.sleep(2.5)  # directories written < 2 s before a listing are "unsettled" and listed again
        t0 = time.perf_counter()
        refresh_inv()
        step("first refresh (lists the unsettled directories)", time.perf_counter() - t0)
        secs, changed = timed_call(refresh_inv, args.repeat)
        assert not any(changed), changed
        res["refresh_inventories"] = secs
        print(f"    parse-time inventory refresh alone:      {fmt(secs)}", flush=True)
        secs, _ = timed(work, "-n", repeat=args.repeat)
        res["plan_inventories"] = secs
        print(f"(a2) plan with every inventory present:      {fmt(secs)}", flush=True)
        return res

    state = build_state(work, cfg, plan)
    res["state"] = state
    res["route_seconds"] = state["route"]["seconds"]
    res["route_maxrss_mb"] = state["route"]["maxrss_mb"]
    t0 = time.perf_counter()
    changed = refresh_inv()
    res["refresh_after_touch"] = time.perf_counter() - t0
    step("first refresh after --touch (lists every period)", res["refresh_after_touch"],
         f"{changed} inventories changed")
    assert changed == 0, changed

    secs, changed = timed_call(refresh_inv, args.repeat)
    assert not any(changed), changed
    res["refresh_inventories"] = secs
    print(f"parse-time refresh_inventories alone:        {fmt(secs)}", flush=True)
    secs, done = timed_call(lambda: refresh_label_parts(cfg["inputs"]["labels"], plan, work / LABELS_DIR),
                            args.repeat)
    assert all(d == {"read": 0, "parts_written": 0} for d in done), done
    res["refresh_labels"] = secs
    print(f"parse-time refresh_label_parts alone:        {fmt(secs)}", flush=True)

    secs, _ = timed(work, "-n", repeat=args.repeat, expect="Nothing to be done")
    res["plan_built"] = secs
    print(f"(a') plan, everything built (snakemake -n):  {fmt(secs)}", flush=True)
    secs, _ = timed(work, repeat=args.repeat, expect="Nothing to be done")
    res["noop"] = secs
    print(f"(c) no-op rerun (snakemake):                 {fmt(secs)}", flush=True)

    # (d) one label row
    key, label_file, row = pick_label_row(work, plan, cfg["inputs"]["labels"]["path"])
    print(f"(d) label row {row} of {Path(label_file).name} (in part {chunk_name('test', key, '.csv')}, "
          f"index period {plan.index_key(key)})", flush=True)
    edits = []

    def edit(i: int) -> None:
        edits.append(edit_label_row(label_file, row, 30.0 + 0.1 * (i + 1)))

    def touch(_i: int) -> None:
        snakemake(work, "--touch", check=True)

    secs, texts = timed(work, "-n", repeat=args.repeat, before=edit, after=touch)
    res["label_row"] = secs
    res["label_row_jobs"] = [job_counts(t) for t in texts]
    print(f"    one label row changed (snakemake -n):    {fmt(secs)}", flush=True)
    print(f"    TA edits {edits}; jobs: {res['label_row_jobs'][-1]}", flush=True)
    for jobs in res["label_row_jobs"]:
        assert jobs.get("build_patch_chunk") == 1 and jobs.get("build_index") == 1, jobs
    assert is_clean(work), "(d): not clean after --touch"

    # (e) one raw file replaced by rename
    rkey = plan.keys[len(plan.keys) // 2]
    n_key_chunks = sum(k == rkey for _, k in plan.chunks)
    replaced = []

    def replace(i: int) -> None:
        replaced.append(replace_raw_file(data / "raw", rkey, plan, i))

    secs, texts = timed(work, "-n", repeat=args.repeat, before=replace, after=touch)
    res["raw_file"] = secs
    res["raw_file_jobs"] = [job_counts(t) for t in texts]
    print(f"(e) raw file {replaced[-1].relative_to(data / 'raw')} replaced by rename (period {rkey}, "
          f"{n_key_chunks} planned chunks)", flush=True)
    print(f"    one raw file replaced (snakemake -n):    {fmt(secs)}", flush=True)
    print(f"    jobs: {res['raw_file_jobs'][-1]}", flush=True)
    for jobs in res["raw_file_jobs"]:
        assert jobs.get("calibrate") == 1 and jobs.get("build_patch_chunk") == n_key_chunks, jobs
    assert is_clean(work), "(e): not clean after --touch"
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main() -> None:
    global DROP_CACHES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="month,year", help="comma-separated: month, year")
    ap.add_argument("--six-years", action="store_true", help="also 2018..2023 (~841k stub files, ~31.5 M label rows)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stations", type=int, default=600)
    ap.add_argument("--root", type=Path, default=Path("/tmp/ta2d_bench_dag"))
    ap.add_argument("--keep", action="store_true", help="keep --root (stub archive, labels, workdirs) for another run")
    ap.add_argument("--plan-only", action="store_true",
                    help="only (a), the inventories and their refresh, (a2): no built state (--touch: ~0.1 s a job)")
    ap.add_argument("--drop-caches", action="store_true",
                    help="sync + echo 3 > /proc/sys/vm/drop_caches before every timed repeat (root): cold caches")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.drop_caches:
        why = check_drop_caches()
        if why:
            print(f"--drop-caches: cannot drop the caches ({why}); running with WARM caches", flush=True)
        DROP_CACHES = why is None
    print(f"code: {code_version()}", flush=True)
    print(f"cache mode: {'COLD (caches dropped before every timed repeat)' if DROP_CACHES else 'warm caches'}; "
          f"{os.cpu_count()} CPUs; snakemake --cores 2", flush=True)
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
            args.json.write_text(json.dumps({"cold_caches": DROP_CACHES, "sizes": results}, indent=1, default=str))


def code_version() -> str:
    """The commit of the repository and whether the workflow's code differs from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "workflow", "scripts", "Snakefile",
                                "config"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else " (workflow code clean)")


def print_summary(results: list[dict]) -> None:
    if not results:
        return
    phases = [("plan", "(a) plan from scratch"), ("plan_inventories", "(a2) plan, inventories exist"),
              ("plan_built", "(a') plan, all built"), ("noop", "(c) no-op rerun"),
              ("label_row", "(d) one label row, -n"), ("raw_file", "(e) one raw file, -n"),
              ("refresh_inventories", "refresh_inventories alone"), ("refresh_labels", "refresh_label_parts alone"),
              ("route_seconds", "route_labels force (step)"), ("route_maxrss_mb", "  its peak RSS, MB")]
    print(f"\nSummary (median seconds; ratio to the previous size in brackets; "
          f"{'COLD' if DROP_CACHES else 'warm'} caches)")
    print(f"{'':30s}" + "".join(f"{r['name'] + ' (' + str(r['n_days']) + ' d)':>22s}" for r in results))
    for key, label in phases:
        if not all(key in r for r in results):
            continue
        cells, prev = [], None
        for r in results:
            v = statistics.median(r[key]) if isinstance(r[key], list) else r[key]
            cells.append(f"{v:8.2f}" + (f" [{v / prev:5.1f}x]" if prev else " " * 9))
            prev = v
        print(f"{label:30s}" + "".join(f"{c:>22s}" for c in cells))

    def row(label: str, cell) -> None:
        print(f"{label:30s}" + "".join(f"{cell(r):>22}" for r in results))

    row("chunking / periods / chunks", lambda r: f"{r['freq']} / {r['n_periods']} / {r['n_chunks']}")
    row("jobs planned from scratch", lambda r: r["plan_jobs"].get("total", 0))
    if all("state" in r for r in results):
        row("jobs in the built DAG", lambda r: r["state"]["jobs"]["total"])
        row("(d) chunk/index/total jobs", lambda r: "{}/{}/{}".format(
            *(r["label_row_jobs"][-1].get(k, 0) for k in ("build_patch_chunk", "build_index", "total"))))
        row("(e) calib/chunk/total jobs", lambda r: "{}/{}/{}".format(
            *(r["raw_file_jobs"][-1].get(k, 0) for k in ("calibrate", "build_patch_chunk", "total"))))


if __name__ == "__main__":
    main()
