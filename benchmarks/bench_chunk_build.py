"""Samples/s of the chunk builder against a naive per-row reference, measured in the same run.

    .venv/bin/python benchmarks/bench_chunk_build.py [--stations 600] [--slots 24] [--repeat 3]

Both build the same chunk from the same scene file (a day of hourly slots on the default demo
domain, written here with random values) and the same rows (every station at every slot):
* ta2d: ta2d.chunks.patches.build_patch_chunk from the label part and the station table, as the rule runs
  it (matching to stations, pixels and slots included; one gather per slot, one torch.save);
* naive: what the seed did per row group: open the scene for each (slot) group, slice each row's
  patch with Python indexing, append to lists, stack, torch.save per group, then concatenate.
The two outputs are checked to be equal before timing is reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ta2d.chunks.patches import build_patch_chunk
from ta2d.grid import Domain, linecol_to_lonlat
from ta2d.static import read_static

DOMAIN = Domain(850, 1075, 2590, 2905)


def make_inputs(root: Path, n_stations: int, n_slots: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    nl, nc = DOMAIN.shape
    times = pd.date_range("2024-04-01", periods=n_slots, freq="h")
    ds = xr.Dataset(
        {"bt": (("time", "bt_channel", "line", "column"), rng.uniform(200, 320, (n_slots, 10, nl, nc)).astype("f4")),
         "rf": (("time", "rf_channel", "line", "column"), rng.uniform(0, 1, (n_slots, 6, nl, nc)).astype("f4")),
         "sza": (("time", "line", "column"), rng.uniform(0, 120, (n_slots, nl, nc)).astype("f4")),
         "status": (("time",), np.array(["ok"] * n_slots))},
        coords={"time": times, "line": DOMAIN.lines, "column": DOMAIN.columns},
    )
    enc = {v: {"chunksizes": (1,) + ds[v].shape[1:], "zlib": True, "complevel": 1} for v in ("bt", "rf", "sza")}
    ds.to_netcdf(root / "scene.nc", engine="h5netcdf", encoding=enc)
    xr.Dataset({"dem": (("line", "column"), rng.uniform(0, 1500, (nl, nc)).astype("f4")),
                "land_sea_mask": (("line", "column"), np.ones((nl, nc), "f4")),
                "landcover": (("line", "column"), rng.integers(1, 18, (nl, nc)).astype("u1"))},
               coords={"line": DOMAIN.lines, "column": DOMAIN.columns}).to_netcdf(root / "static.nc", engine="h5netcdf")
    lines = rng.integers(DOMAIN.first_line + 4, DOMAIN.last_line - 4, n_stations)
    cols = rng.integers(DOMAIN.first_column + 4, DOMAIN.last_column - 4, n_stations)
    lon, lat = linecol_to_lonlat(lines, cols)
    t = (times.values.astype("datetime64[s]").astype(np.int64))
    m = pd.DataFrame({
        "row": np.arange(n_stations * n_slots) + 1,
        "stn": np.tile(np.arange(n_stations) + 100, n_slots),
        "time": np.repeat(t, n_stations),
        "ta_c": rng.normal(10, 5, n_stations * n_slots).round(2),
        "lat": np.tile(lat, n_slots).round(5), "lon": np.tile(lon, n_slots).round(5),
        "line": np.tile(lines, n_slots), "column": np.tile(cols, n_slots),
    })
    m.to_csv(root / "manifest.csv", index=False)
    m.assign(source="labels.csv")[["source", "row", "stn", "time", "ta_c"]].to_csv(root / "part.csv", index=False)
    pd.DataFrame({"stn": np.arange(n_stations) + 100, "lat": lat.round(5), "lon": lon.round(5),
                  "elev_m": 50.0}).to_csv(root / "stations.csv", index=False)
    return root / "part.csv", root / "stations.csv", root / "scene.nc", root / "static.nc"


def naive_build(manifest_path, scene_path, static, out_path):
    """Seed-style: per group open + per-row slicing into Python lists + torch.save per group."""
    m = pd.read_csv(manifest_path)
    parts = []
    for i, (t, group) in enumerate(m.groupby("time", sort=True)):
        with xr.open_dataset(scene_path, engine="h5netcdf") as scene:
            slot = int(np.flatnonzero(scene["time"].values.astype("datetime64[s]").astype(np.int64) == t)[0])
            bt, rf, sza = scene["bt"][slot].values, scene["rf"][slot].values, scene["sza"][slot].values
        xs = []
        for row in group.itertuples():
            li, ci = row.line - DOMAIN.first_line, row.column - DOMAIN.first_column
            patch = np.concatenate([bt[:, li - 4:li + 5, ci - 4:ci + 5], rf[:, li - 4:li + 5, ci - 4:ci + 5],
                                    sza[None, li - 4:li + 5, ci - 4:ci + 5],
                                    static.dem[None, li - 4:li + 5, ci - 4:ci + 5],
                                    static.land_sea_mask[None, li - 4:li + 5, ci - 4:ci + 5]])
            xs.append(torch.from_numpy(patch.copy()))
        part = out_path.with_name(f"part{i}.pt")
        torch.save({"x": torch.stack(xs)}, part)
        parts.append(part)
    x = torch.cat([torch.load(p, weights_only=True)["x"] for p in parts])
    torch.save({"x": x}, out_path)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=600)
    ap.add_argument("--slots", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        part, stations, scene, static_path = make_inputs(root, args.stations, args.slots)
        manifest = root / "manifest.csv"
        static = read_static(static_path, DOMAIN)
        n = args.stations * args.slots
        best = {"ta2d": np.inf, "naive": np.inf}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            build_patch_chunk(part, stations, scene, static, 9, root / "train_chunk_x.pt",
                              root / "train_chunk_x.rejects.csv", root / "train_chunk_x.index.csv")
            best["ta2d"] = min(best["ta2d"], time.perf_counter() - t0)
            t0 = time.perf_counter()
            x_naive = naive_build(manifest, scene, static, root / "naive.pt")
            best["naive"] = min(best["naive"], time.perf_counter() - t0)
        x = torch.load(root / "train_chunk_x.pt", weights_only=True)["x"]
        assert torch.equal(x, x_naive), "the two builders disagree"
    print(f"chunk of {n} samples ({args.stations} stations x {args.slots} slots), best of {args.repeat}:")
    for name, sec in best.items():
        print(f"  {name:6s} {sec:7.3f} s  {n / sec:10.0f} samples/s")
    print(f"  speed-up ta2d / naive: {best['naive'] / best['ta2d']:.1f}x")


if __name__ == "__main__":
    main()
