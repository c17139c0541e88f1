"""Peak memory of one build_patch_chunk job and of one training epoch, per chunk size.

    .venv/bin/python benchmarks/bench_memory.py [--stations 40 400] [--train-chunks 4]

Design claims checked (docs/architecture.md): a chunk build holds one chunk's worth of samples plus one
scene slot (extract_patches reads one slot); training holds its training set in memory when it fits the
loader's budget (``ta2d.chunks.loader.memory_budget``: half of what the job's cgroup or the machine leaves; a SLURM
job's ``mem_mb`` sets it) and otherwise two blocks of ``mix_files`` chunks, whatever the training set's size.

Every case runs in a fresh child process (this script with --child) that imports, prepares what
the rule's script prepares (the static fields; nothing for training), records its baseline, resets
the kernel's peak-RSS counter (`echo 5 > /proc/self/clear_refs`), does the work and reports:
* peak RSS: VmHWM after the work (exact; counts anonymous memory and the memory-mapped chunk pages
  the process touched, which are page cache and reclaimable);
* peak anonymous memory: RssAnon sampled every 2 ms by a thread (what the process really holds).
Both are given as the increase over the baseline, next to the bytes of one chunk (N samples x
(19x9x9 + 7 + 3 + 17 + 1) float32 + stn, time, pixel) and, for training, of all its chunks.

Cases, for each --stations S (N = S x 24 hourly samples: 40 is the demo's size, 400 ten times it):
* build: ta2d.chunks.patches.build_patch_chunk on one day's scene (24 slots on the demo domain, random
  values; benchmarks/bench_chunk_build.make_inputs) and a label part of every station at every slot,
  with the calls scripts/build_patch_chunk.py makes (matching included);
* cnn / clay_frozen: ta2d.training.train_run with epochs=1 on CPU over --train-chunks training chunks
  and one validation chunk of N samples each (ta2d.demo.synthetic); clay_frozen (tiny preset,
  frozen encoder, embed_cache) first embeds every chunk, as rule embed_chunk would;
* cnn_blocks: the cnn run with ``mix_files: 2`` and a loader budget of 2.5 chunks (beyond it, as a year
  of chunks is for a real job): the loader reads blocks of 2 files.
* route (``--label-days 31 365``): ta2d.index.route.route_labels(force=True), what rule label_parts runs on a
  first build and the parse-time refresh runs for a changed file, on one KMA portal CSV of --label-stations
  stations x 24 hours x N days (weekly chunks, the gk2a.yaml default): its memory grows with the largest label
  file, one file at a time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RUNS = {"cnn": {"model": "cnn"}, "clay_frozen": {"model": "clay_transfer", "preset": "tiny"},
        "cnn_blocks": {"model": "cnn", "mix_files": 2}}
# a training job whose memory budget (ta2d.chunks.loader.memory_budget: half of what its cgroup / the machine leaves)
# holds 2.5 chunks: the training set does not fit, so the loader reads blocks of mix_files files
BUDGET_CHUNKS = {"cnn_blocks": 2.5}
SAMPLE_BYTES = (19 * 9 * 9 + 7 + 3 + 17 + 1) * 4 + 4 + 8 + 2 * 4  # x, y, time7, loc, onehot + stn, time, pixel


def proc_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class AnonSampler(threading.Thread):
    def __init__(self, period_s: float = 0.002):
        super().__init__(daemon=True)
        self.period_s, self.peak, self.stop = period_s, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, proc_status()["RssAnon"])
            time.sleep(self.period_s)


def measure(work) -> dict:
    """Run work() with the peak counters reset; returns baseline and peaks (bytes)."""
    import gc

    gc.collect()
    base = proc_status()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    sampler = AnonSampler()
    sampler.start()
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    end = proc_status()
    return {"base_rss": base["VmRSS"], "base_anon": base["RssAnon"], "peak_rss": end["VmHWM"],
            "peak_anon": max(sampler.peak, end["RssAnon"]), "seconds": seconds}


# --- child cases -------------------------------------------------------------------------------
def child_build(d: Path) -> dict:
    from bench_chunk_build import DOMAIN

    from ta2d.chunks.patches import build_patch_chunk
    from ta2d.static import read_static

    static = read_static(d / "static.nc", DOMAIN, "dem", "land_sea_mask", "landcover")
    return measure(lambda: build_patch_chunk(d / "part.csv", d / "stations.csv", d / "scene.nc", static, 9,
                                             d / "train_chunk_x.pt", d / "train_chunk_x.rejects.csv",
                                             d / "train_chunk_x.index.csv"))


def child_train(d: Path, run: str) -> dict:
    import torch

    import ta2d.chunks.loader
    import ta2d.training.loop
    from ta2d.training import train_run

    cfg = RUNS[run]
    if run in BUDGET_CHUNKS:
        n = torch.load(next((d / "patch_pt").glob("train_chunk_*.pt")), weights_only=True, mmap=True)["y"].shape[0]
        budget = int(BUDGET_CHUNKS[run] * n * SAMPLE_BYTES)
        # the budget train_run gives its training loader, and the loader's own default (validation)
        ta2d.training.loop.memory_budget = ta2d.chunks.loader.memory_budget = lambda: budget
    train = sorted(str(p) for p in (d / "patch_pt").glob("train_chunk_*.pt"))
    val = sorted(str(p) for p in (d / "patch_pt").glob("val_chunk_*.pt"))
    torch.set_num_threads(2)
    return measure(lambda: train_run({**cfg, "epochs": 1, "device": "cpu"}, train, val, d / "stats.json",
                                     d / f"run_{run}", progress=False, log=lambda s: None))


def write_label_file(path: Path, n_stations: int, n_days: int, seed: int = 0) -> int:
    """A KMA data-portal CSV (CP949, KST) of every station at every hour of n_days from 2023-01-01."""
    import numpy as np
    import pandas as pd

    from ta2d.demo.tables import ENCODING, LABEL_HEADER

    rng = np.random.default_rng(seed)
    hours = pd.date_range("2023-01-01 09:00", periods=24 * n_days, freq="h").strftime("%Y-%m-%d %H:%M")
    df = pd.DataFrame({"stn": np.tile(np.arange(n_stations) + 100, len(hours)), "name": "X",
                       "time": np.repeat(np.asarray(hours), n_stations),
                       "ta": np.round(rng.normal(12, 8, len(hours) * n_stations), 1), "qc": ""})
    df.to_csv(path, index=False, header=LABEL_HEADER, encoding=ENCODING, float_format="%.1f")
    return len(df)


def child_route(d: Path) -> dict:
    import json as _json

    from ta2d.index.route import route_labels
    from ta2d.plan import Plan

    meta = _json.loads((d / "labels.json").read_text())
    plan = Plan(start="2023-01-01", end=meta["end"], freq="W",
                split_cfg={"fractions": {"train": 0.7, "val": 0.15, "test": 0.15}, "block_days": 20, "seed": 42,
                           "holdout_station_fraction": 0.1})
    cfg = {"path": str(d / "labels.csv"), "format": "kma_portal_csv", "timezone": "KST"}
    return measure(lambda: route_labels(cfg, plan, d / "parts", force=True))


# --- parent --------------------------------------------------------------------------------------
def run_child(case: str, d: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", case, str(d)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {case} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_bytes(run: str, stats_path: Path, train: list) -> int:
    from ta2d.models import build_model
    from ta2d.training import load_stats, resolve_run_config

    model = build_model(resolve_run_config(RUNS[run]), load_stats(stats_path, train))
    return sum(p.numel() * p.element_size() for p in model.parameters())


def mb(b: float) -> str:
    return f"{b / 1e6:8.1f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, nargs="+", default=[40, 400], help="stations per chunk (x 24 slots)")
    ap.add_argument("--train-chunks", type=int, default=4)
    ap.add_argument("--label-days", type=int, nargs="*", default=[31, 365], help="days per label file (route)")
    ap.add_argument("--label-stations", type=int, default=600)
    ap.add_argument("--child", nargs=2, metavar=("CASE", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, d = args.child
        children = {"build": child_build, "route": child_route}
        res = children[case](Path(d)) if case in children else child_train(Path(d), case)
        print(json.dumps(res))
        return

    import pandas as pd
    from bench_chunk_build import make_inputs  # benchmarks/, this script's folder (sys.path[0])

    from ta2d.chunks.stats import write_stats
    from ta2d.demo.synthetic import write_chunks

    rows = []
    with tempfile.TemporaryDirectory(prefix="ta2d_bench_mem_") as tmp:
        for days in args.label_days:
            d = Path(tmp) / f"labels{days}"
            d.mkdir()
            n_rows = write_label_file(d / "labels.csv", args.label_stations, days)
            end = (pd.Timestamp("2023-01-01") + pd.Timedelta(days=days - 1)).strftime("%Y-%m-%d")
            (d / "labels.json").write_text(json.dumps({"end": end}))
            size = (d / "labels.csv").stat().st_size
            r = run_child("route", d)
            r.update(case=f"route_labels ({days} d)", n=n_rows, chunk=size, data=size)
            rows.append(r)
            print(f"route_labels: {n_rows} rows ({days} days x {args.label_stations} stations), file {mb(size)}: "
                  f"peak RSS +{mb(r['peak_rss'] - r['base_rss'])}, peak anon +{mb(r['peak_anon'] - r['base_anon'])},"
                  f" {r['seconds']:.1f} s", flush=True)
        for s in args.stations:
            n = s * 24
            d = Path(tmp) / f"s{s}"
            d.mkdir()
            make_inputs(d, s, 24)
            scene_mb = (d / "scene.nc").stat().st_size
            r = run_child("build", d)
            r.update(case="build_patch_chunk", n=n, chunk=n * SAMPLE_BYTES, data=n * SAMPLE_BYTES)
            rows.append(r)
            print(f"build_patch_chunk N={n}: scene file {mb(scene_mb)}; peak RSS +{mb(r['peak_rss'] - r['base_rss'])}"
                  f", peak anon +{mb(r['peak_anon'] - r['base_anon'])}, chunk {mb(r['chunk'])}", flush=True)
            train = write_chunks(d / "patch_pt", "train", args.train_chunks, n, seed=1)
            write_chunks(d / "patch_pt", "val", 1, n, seed=2)
            write_stats(train, d / "stats.json")
            for run in RUNS:
                r = run_child(run, d)
                r.update(case=f"train {run} (1 epoch)", n=n, chunk=n * SAMPLE_BYTES,
                         data=(args.train_chunks + 1) * n * SAMPLE_BYTES,
                         model=model_bytes(run, d / "stats.json", train))
                rows.append(r)
                print(f"train {run} N={n} x {args.train_chunks + 1} chunks: peak RSS "
                      f"+{mb(r['peak_rss'] - r['base_rss'])}, peak anon +{mb(r['peak_anon'] - r['base_anon'])}, "
                      f"{r['seconds']:.1f} s", flush=True)
    print("\nPeak memory above the process baseline (imports done, inputs not yet read); CPU, "
          f"{args.train_chunks} train + 1 val chunk per training run")
    print(f"{'case':28s} {'N/chunk':>8s} {'baseline RSS':>13s} {'peak RSS +':>12s} {'peak anon +':>12s} "
          f"{'one chunk':>11s} {'all chunks':>11s} {'model params':>13s} {'seconds':>8s}")
    for r in rows:
        print(f"{r['case']:28s} {r['n']:8d} {mb(r['base_rss']):>13s} {mb(r['peak_rss'] - r['base_rss']):>12s} "
              f"{mb(r['peak_anon'] - r['base_anon']):>12s} {mb(r['chunk']):>11s} {mb(r['data']):>11s} "
              f"{mb(r.get('model', 0)):>13s} {r['seconds']:8.1f}")


if __name__ == "__main__":
    main()
