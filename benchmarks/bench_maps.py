"""Maps: CPU-seconds per pixel·slot of a day of maps per model kind, dense pass vs one patch per pixel, beside the
model's own compute; and a year of stub maps on disk + open_mfdataset.

1. For every model file of a built demo (results/models/{run}.pt), one day of maps (ta2d.maps.archive.map_day, every
   land pixel of every slot) by the per-pixel path (a 9x9 patch gathered per pixel, batched across slots: the
   reference) and by the dense path (ta2d.maps.dense: a convolution over the tile for a valid cnn, the pixels for
   ridge, patches cut from the tile for the others), on --threads CPU threads: CPU seconds of the process (all its
   threads) and pixel·slots per CPU-second, their ratio, and the "limit": the model's own forward pass on the
   same inputs prepared beforehand (ta2d.maps.dense.predict_tile on ready tiles: what no mapping code can beat on
   this CPU), with the model's FLOPs per pixel (torch.utils.flop_counter). The dense maps are checked against the
   reference (max |diff|). Then what a year of hourly maps of a land domain of --land-pixels pixels costs:
   core-hours at the dense rate, and GPU hours from the FLOPs at --gpu-tflops sustained.
2. A year of day files in the archive's format (ta2d.maps.archive.write_day: TA and TA_corrected int16-packed,
   deflated) on the demo's domain, filled from a real day's maps shifted per day (or a smooth stub field without
   one): bytes on disk, and the seconds to open all of them lazily with open_mfdataset and to read one slot and
   one pixel's year.

    .venv/bin/python benchmarks/bench_maps.py --root /path/where/the/demo/ran
    .venv/bin/python benchmarks/bench_maps.py --root . --days 365 --skip-models
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ta2d.grid import Domain, domain_lonlat
from ta2d.maps.archive import day_dataset, day_slot_times, map_day, open_archive, write_day
from ta2d.maps.predict import MASK_NOT_LAND, MASK_PREDICTED
from ta2d.plan import Plan, split_test_days


def _model_only(model, scene, static, t: int, patch_size: int, batch_size: int) -> tuple[float, int, float]:
    """(CPU seconds, pixels, FLOPs per pixel) of the model's forward pass alone on one slot's ready tiles."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ta2d.chunks.patches import pixel_inputs
    from ta2d.maps import dense
    from ta2d.models import uses_background

    slots = scene[["bt", "rf", "sza", "lat", "lon"]]
    planes = dense.slot_planes(slots, t, static)
    half = patch_size // 2
    nl, nc = planes.shape[1:]
    land = (static.land_sea_mask > 0.5) & (static.landcover >= 1) & (static.landcover <= 17)
    finite = np.isfinite(planes).all(axis=0)
    ok = land.copy()
    ok[:half], ok[-half:], ok[:, :half], ok[:, -half:] = False, False, False, False
    ok &= finite
    unix = int(slots["time"].values[t].astype("datetime64[s]").astype(np.int64))
    lat, lon = slots["lat"].values, slots["lon"].values
    tiles = []
    for r0 in range(half, nl - half, dense.TILE):
        r1 = min(r0 + dense.TILE, nl - half)
        for c0 in range(half, nc - half, dense.TILE):
            c1 = min(c0 + dense.TILE, nc - half)
            rr, cc = np.nonzero(ok[r0:r1, c0:c1])
            pr, pc = rr + r0, cc + c0
            centre = planes[:, pr, pc].T
            # the forward pass's speed does not depend on the background's values: its training mean for every pixel
            bg = np.full(len(pr), float(model.normalizer.background_mean)) if uses_background(model) else None
            side = pixel_inputs(centre, np.full(len(pr), unix), lat[pr, pc], lon[pr, pc], static.landcover[pr, pc],
                                background=bg)
            block = torch.from_numpy(np.where(np.isfinite(planes), planes, 0.0)[:, r0 - half:r1 + half,
                                              c0 - half:c1 + half].copy())
            tiles.append((block, {**side, "x_center": torch.from_numpy(centre)}, torch.from_numpy(rr),
                          torch.from_numpy(cc)))
    n = sum(len(t[2]) for t in tiles)
    with torch.no_grad():
        c0 = time.process_time()
        for block, batch, rr, cc in tiles:
            dense.predict_tile(model, block, batch, rr, cc, patch_size, batch_size)
        seconds = time.process_time() - c0
        block, batch, rr, cc = tiles[0]
        k = min(256, len(rr))
        counter = FlopCounterMode(display=False)
        with counter:
            dense.predict_tile(model, block, {key: v[:k] for key, v in batch.items()}, rr[:k], cc[:k], patch_size,
                               batch_size)
    flops = counter.get_total_flops() / k
    if getattr(model, "dense", False):  # the tile's convolutions serve every pixel: count them once per tile
        with counter:
            dense.predict_tile(model, block, batch, rr, cc, patch_size, batch_size)
        flops = counter.get_total_flops() / len(rr)
    return seconds, n, flops


def bench_models(root: Path, cfg: dict, day: str, threads: int, batch_size: int, land_pixels: int,
                 gpu_tflops: float, n_slots: int, only: set[str] | None = None) -> None:
    import torch
    import xarray as xr

    from ta2d.models.model_file import load_model_file
    from ta2d.static import read_static

    torch.set_num_threads(threads)
    plan = Plan.from_config(cfg)
    scene_path = root / f"results/scenes/{plan.map_scene_key(day)}.nc"
    static_path = root / cfg["inputs"]["static"]["path"]
    times = day_slot_times(day, cfg["inputs"]["l1b"]["slot_minutes"])
    times = times[:: max(1, len(times) // n_slots)][:n_slots]  # spread over the day: night and day slots
    year = land_pixels * 8760
    hours = ", ".join(f"{t:%H:%M}" for t in times)
    print(f"day {day}: {len(times)} slots ({hours}), scene {scene_path.name}, {threads} thread(s); "
          f"a year of hourly maps of "
          f"{land_pixels:,} land pixels = {year:,} pixel·slots")
    print(f"{'model':12s} {'kind':14s} {'px·slots':>9s} {'per-pixel':>10s} {'dense':>9s} {'ratio':>6s} "
          f"{'limit':>9s} {'dense/limit':>11s} {'max|diff| K':>11s} {'FLOP/px':>9s} {'core-h/yr':>9s} "
          f"{'GPU-h/yr':>8s}")
    print(f"{'':12s} {'':14s} {'':9s} {'px/CPU-s':>10s} {'px/CPU-s':>9s} {'':6s} {'px/CPU-s':>9s}")
    models = [(p.stem, *load_model_file(p)) for p in sorted(root.glob("results/models/*.pt")) if p.name != "best.pt"]
    reanalysis = None  # models trained with inputs.background map with it, as rule map_day does
    if cfg["inputs"].get("background") is not None:
        from ta2d.ingest.background import open_background_config

        bg = cfg["inputs"]["background"]
        t2m = [str(root / p) for p in ([bg["t2m"]] if isinstance(bg["t2m"], str) else bg["t2m"])]
        reanalysis = open_background_config({**bg, "t2m": t2m, "orography": str(root / bg["orography"])},
                                            f"{times[0]:%Y-%m-%d}", f"{times[-1]:%Y-%m-%d}")
    cnn = next((m for m in models if m[2]["model_kind"] == "cnn"), None)
    if cnn is not None:  # the cnn as models were before the dense maps: zero-padded, mapped patch by patch
        from ta2d.models import build_model

        same = build_model({**cnn[2]["run_config"], "cnn_padding": "same"}, cnn[2]["stats"])
        models.append(("cnn_same*", same.eval(), {**cnn[2], "model_kind": "cnn"}))
    for name, model, info in models:
        if only and name not in only:
            continue
        rates, maps = {}, {}
        with xr.open_dataset(scene_path, engine="h5netcdf", cache=False) as scene:
            lines, cols = scene["line"].values, scene["column"].values
            static = read_static(static_path, Domain(int(lines[0]), int(lines[-1]), int(cols[0]), int(cols[-1])))
            for method in ("per_pixel", "dense"):
                c0 = time.process_time()
                out = map_day(model, scene, static, times, patch_size=cfg["patch"]["size"], batch_size=batch_size,
                              device="cpu", method=method, background=reanalysis)
                rates[method] = out["n_pixels"] / (time.process_time() - c0)
                maps[method] = out["ta"]
            mid = np.datetime64(times[len(times) // 2].tz_convert(None))
            t_idx = int(np.flatnonzero(scene["time"].values == mid)[0])
            secs, n, flops = _model_only(model, scene, static, t_idx, cfg["patch"]["size"], batch_size)
        limit = n / secs
        diff = float(np.nanmax(np.abs(maps["dense"] - maps["per_pixel"])))
        print(f"{name:12s} {info['model_kind']:14s} {out['n_pixels']:9,d} {rates['per_pixel']:10,.0f} "
              f"{rates['dense']:9,.0f} {rates['dense'] / rates['per_pixel']:5.1f}x {limit:9,.0f} "
              f"{rates['dense'] / limit:10.0%} {diff:11.1e} {flops:9,.0f} {year / rates['dense'] / 3600:9.2f} "
              f"{year * flops / (gpu_tflops * 1e12) / 3600:8.3f}", flush=True)
    print("cnn_same*: the cnn's widths zero-padded (cnn_padding: same, every cnn before the dense maps), random "
          "weights: its speed, not its values. FLOP/px: torch's count (LightGBM's trees are not counted: 0).")
    print(f"GPU-h/yr: the FLOPs at {gpu_tflops:g} TFLOP/s sustained (a guess for small fp32 batches on one GPU: about "
          "a tenth of an H100's fp32 peak); limit: the model's forward pass alone on ready tiles of one slot.")


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
    ap.add_argument("--slots", type=int, default=4, help="slots of the day mapped per model (per-pixel Clay: ~1 min a "
                                                         "slot on the demo domain)")
    ap.add_argument("--models", default=None, help="comma-separated model names to run (default: all; cnn_same* is the "
                                                   "zero-padded cnn)")
    ap.add_argument("--land-pixels", type=int, default=20_000,
                    help="land pixels of the domain a year is costed for (South Korea: ~100,000 km² of land in "
                         "GK-2A 2 km pixels of ~5 km²)")
    ap.add_argument("--gpu-tflops", type=float, default=6.0, help="sustained TFLOP/s assumed for the GPU hours")
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

    cfg = validate_config(cfg, check_files=False)
    day = a.day or split_test_days(cfg["period"], cfg["split"])[0]
    if not a.skip_models:
        bench_models(root, cfg, day, a.threads, a.batch_size, a.land_pixels, a.gpu_tflops, a.slots,
                     set(a.models.split(",")) if a.models else None)
    if not a.skip_year:
        template = Path(a.template) if a.template else root / f"results/maps/best/{day}.nc"
        bench_year(root, cfg, a.days, template, Path(a.keep) if a.keep else None)


if __name__ == "__main__":
    main()
