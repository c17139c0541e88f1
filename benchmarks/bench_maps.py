"""Maps: pixels/s of the batched day pass per model kind, and a year of stub maps on disk + open_mfdataset.

1. For every run of a built demo (results/runs/*/best.pt), one model pass over every land pixel of every slot of
   one day (ta2d.maps.archive.map_day: patch gather + model, batched across slots), on --threads CPU threads:
   pixels per wall second, and per CPU second of the process (all its threads; steadier on a shared machine).
2. A year of day files in the archive's format (ta2d.maps.archive.write_day: TA and TA_corrected int16-packed,
   deflated, one slot per chunk) on the demo's domain, filled from a real day's maps shifted per day (or a
   smooth stub field without one): bytes on disk, and the seconds to open all of them lazily with
   open_mfdataset (ta2d.maps.archive.open_archive) and to read one slot and one pixel's year.

    .venv/bin/python benchmarks/bench_maps.py --root /path/where/the/demo/ran
    .venv/bin/python benchmarks/bench_maps.py --root . --days 365 --skip-models
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ta2d.grid import Domain, domain_lonlat  # noqa: E402
from ta2d.maps.archive import day_dataset, day_slot_times, map_day, open_archive, write_day  # noqa: E402
from ta2d.maps.plan import day_period_key, split_test_days  # noqa: E402
from ta2d.maps.predict import MASK_NOT_LAND, MASK_PREDICTED  # noqa: E402


def bench_models(root: Path, cfg: dict, day: str, threads: int, batch_size: int) -> None:
    import torch
    import xarray as xr

    from ta2d.evaluation.evaluate import run_kind
    from ta2d.models import load_model
    from ta2d.static import read_static

    torch.set_num_threads(threads)
    scene_path = root / f"results/scenes/{day_period_key(day, cfg['chunking']['period'])}.nc"
    static_path = root / cfg["inputs"]["static"]["path"]
    times = day_slot_times(day, cfg["inputs"]["l1b"]["slot_minutes"])
    print(f"day {day}: {len(times)} slots, scene {scene_path.name}, {threads} threads, batch {batch_size}")
    print(f"{'run':14s} {'kind':14s} {'pixels':>9s} {'model pass s':>12s} {'pixels/s':>9s} {'day total s':>11s} "
          f"{'CPU s':>6s} {'px/CPU-s':>9s}")
    for ckpt in sorted(root.glob("results/runs/*/best.pt")):
        model = load_model(ckpt)
        t0, c0 = time.perf_counter(), time.process_time()
        with xr.open_dataset(scene_path, engine="h5netcdf", cache=False) as scene:
            lines, cols = scene["line"].values, scene["column"].values
            static = read_static(static_path, Domain(int(lines[0]), int(lines[-1]), int(cols[0]), int(cols[-1])))
            out = map_day(model, scene, static, times, patch_size=cfg["patch"]["size"], batch_size=batch_size,
                          device="cpu")
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"{ckpt.parent.name:14s} {run_kind(ckpt):14s} {out['n_pixels']:9,d} {out['seconds']:12.1f} "
              f"{out['n_pixels'] / out['seconds']:9,.0f} {total:11.1f} {cpu:6.1f} {out['n_pixels'] / cpu:9,.0f}")


def bench_year(root: Path, cfg: dict, n_days: int, template: Path | None, keep: Path | None) -> None:
    import xarray as xr

    d = cfg["domain"]
    domain = Domain(d["first_line"], d["last_line"], d["first_column"], d["last_column"])
    lon, lat = domain_lonlat(domain)
    if template is not None and template.exists():
        with xr.open_dataset(template, engine="h5netcdf") as t:
            base, corr = t["TA"].values, t["TA_corrected"].values
        what = f"the maps of {template}"
    else:
        rng = np.random.default_rng(0)
        ny, nx = domain.shape
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        base = np.stack([12 + 6 * np.sin(2 * np.pi * (h - 6) / 24) + 2 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
                         + rng.normal(0, 0.3, (ny, nx)) for h in range(24)]).astype(np.float32)
        corr = base + 0.2
        what = "a smooth stub field"
    mask = np.where(np.isfinite(base), MASK_PREDICTED, MASK_NOT_LAND).astype(np.uint8)
    out_dir = keep or Path(tempfile.mkdtemp(prefix="bench_maps_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    start = pd.Timestamp("2023-01-01")
    t0 = time.perf_counter()
    for i in range(n_days):
        day = (start + pd.Timedelta(days=i)).strftime("%Y%m%d")
        shift = np.float32(10 * np.sin(2 * np.pi * i / 365))
        ds = day_dataset(day_slot_times(day, [0]), domain, lat, lon, base + shift, mask, ["ok"] * 24, corr + shift,
                         ["ok: 40 station residuals kriged"] * 24, np.full(24, 40), {"run": "stub"})
        write_day(ds, out_dir / f"{day}.nc")
    t_write = time.perf_counter() - t0
    files = sorted(out_dir.glob("*.nc"))
    size = sum(f.stat().st_size for f in files)
    print(f"{n_days} days of maps ({domain.shape[0]} x {domain.shape[1]} px, 24 slots, TA + TA_corrected, from "
          f"{what}): {size / 1e6:,.0f} MB on disk ({size / n_days / 1e6:.2f} MB a day), written in {t_write:.0f} s")
    t0 = time.perf_counter()
    with open_archive(files) as ds:
        t_open = time.perf_counter() - t0
        t1 = time.perf_counter()
        one = ds["TA"].isel(time=len(ds["time"]) // 2).values
        t_slot = time.perf_counter() - t1
        iy, ix = np.argwhere(np.isfinite(one))[len(np.argwhere(np.isfinite(one))) // 2]
        t1 = time.perf_counter()
        series = ds["TA"].isel(y=int(iy), x=int(ix)).values
        t_pixel = time.perf_counter() - t1
        print(f"open_mfdataset over {len(files)} files: {t_open:.1f} s (lazy: {ds['TA'].shape}, "
              f"{ds['TA'].data.npartitions} dask chunks); one slot: {t_slot:.2f} s; one pixel's {len(series)} hours: "
              f"{t_pixel:.1f} s")
    if keep is None:
        shutil.rmtree(out_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="a directory where the demo workflow has run")
    ap.add_argument("--config", default=None, help="its config (default: ROOT/config/config.yaml)")
    ap.add_argument("--day", default=None, help="YYYYMMDD (default: the first test day)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (rule map_day runs with 1)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--days", type=int, default=365, help="days of stub maps")
    ap.add_argument("--template", default=None, help="a day file whose maps fill the stub year "
                                                      "(default: ROOT/results/maps/best/DAY.nc if there)")
    ap.add_argument("--keep", default=None, help="write the stub year here and keep it")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-year", action="store_true")
    a = ap.parse_args()
    root = Path(a.root)
    cfg = yaml.safe_load(Path(a.config or root / "config/config.yaml").read_text())
    from ta2d.config import validate_config

    cfg = validate_config(cfg)
    day = a.day or split_test_days(cfg["period"], cfg["split"])[0]
    if not a.skip_models:
        bench_models(root, cfg, day, a.threads, a.batch_size)
    if not a.skip_year:
        template = Path(a.template) if a.template else root / f"results/maps/best/{day}.nc"
        bench_year(root, cfg, a.days, template, Path(a.keep) if a.keep else None)


if __name__ == "__main__":
    main()
