"""CPU cost of calibrating real-size (full-disk) GK-2A L1B files onto a domain, per HDF5 chunking.

    .venv/bin/python benchmarks/bench_calibrate_fd.py [--layouts single,strips,tiles] [--repeats 2]
                                                      [--day] [--out DIR] [--keep]

Writes one slot of all 16 channels as FULL-DISK files (5500^2 px at 2 km, 11000^2 at 1 km, 22000^2 at
0.5 km) with the demo writer (`ta2d.demo.l1b_writer.write_l1b`: gzip + shuffle, the demo's level 1),
once per chunk layout:

* single  one chunk = the whole image (what the demo writer does by default);
* strips  full-width strips of 550 lines at 2 km (1,100 at 1 km, 2,200 at 0.5 km: the same ground);
* tiles   1375 x 1375 tiles at every resolution: what netCDF-C picks by default for a deflated 2-D
          variable without explicit chunk sizes (4 MiB target; 5500/4, 11000/8, 22000/16).

The real KMA files' chunking is not documented (docs/performance.md#calibrating-full-disk-files); these three layouts
bracket what a user's files can be (check yours: `h5dump -pH file.nc | grep -A3 CHUNKED` or
`ncdump -hs file.nc | grep _ChunkSizes`). The pixel values are synthetic but not trivially
compressible: the Earth disk from the GEOS navigation (off-disk = 0x8000, ~23 % of the image, as
in real FD files), a smooth field plus Gaussian count noise (sigma 4 counts) on the disk.

Then it times the real reader, `ta2d.ingest.l1b.read_l1b` per file (h5py hyperslab of the domain window,
calibration, block mean to 2 km), for the gk2a.yaml domain and the demo domain: CPU seconds
(time.process_time: this process only, user + system) per slot, per day (24 hourly slots, and 144
10-minute slots) and per year, the minimum over --repeats (the files are in the page cache after
the first pass; the cold read of a cluster file system adds I/O wait, not CPU). Bytes read are
counted from the file's chunk index (h5py get_chunk_info): HDF5 reads and inflates exactly the
chunks the window intersects, whole.

--day also runs `ta2d.ingest.archive.calibrate_period` (the calibrate rule's code: inventory, 24 slots,
SZA, the scene file) on one day whose 24 hourly slots are symbolic links to the one written slot,
for the gk2a.yaml domain: the whole calibrate job's work, not only the reads.

Disk: the files go to --out (default: a temp dir under benchmarks/out, which git ignores) and are
deleted at the end unless --keep (one layout: ~1.4 GB compressed; layouts are written one at a time
and deleted before the next unless --keep). Memory: ~5 GB peak while writing the 0.5 km file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import yaml

from ta2d.channels import ALL_CHANNELS, CHANNELS, l1b_filename
from ta2d.demo.l1b_writer import write_l1b
from ta2d.demo.static import Window
from ta2d.grid import FD_GRIDS, Domain
from ta2d.ingest.l1b import read_l1b

REPO = Path(__file__).resolve().parents[1]
SLOT = dt.datetime(2022, 7, 1, 3, 0, tzinfo=dt.UTC)
FD_WINDOW = Window(1, 1, 5500, 5500)
LAYOUTS = {
    "single": lambda f: None,
    "strips": lambda f: (550 * f, 5500 * f),
    "tiles": lambda f: (1375, 1375),
}
SAT_KM = 42164.0
NOISE_COUNTS = 4.0
YEAR_DAYS = 365


def on_disk(rows: np.ndarray, cols: np.ndarray, res_km: float) -> np.ndarray:
    """True where the line of sight of FD pixel (row, col) (0-based, native grid) hits the Earth (CGMS/KMA
    GEOS navigation: the discriminant of the ray-ellipsoid intersection is non-negative)."""
    off, fac, _ = FD_GRIDS[res_km]
    step = np.radians(2.0**16 / fac)
    x = ((cols + 1 - off) * step)[None, :]
    y = ((rows + 1 - off) * step)[:, None]
    cos_y, sin_y = np.cos(y), np.sin(y)
    disc = (SAT_KM * np.cos(x) * cos_y) ** 2 - (cos_y**2 + 1.006739501 * sin_y**2) * 1737122264.0
    return disc >= 0


def fd_raw(channel: str, seed: int) -> np.ndarray:
    """Synthetic FD image of `channel` at its native resolution: uint16 counts (DQF 0) on the disk, 0x8000 off it."""
    ch = CHANNELS[channel]
    n = FD_GRIDS[ch.resolution_km][2]
    top = 2**ch.valid_bits - 1
    rng = np.random.default_rng([seed, ALL_CHANNELS.index(channel)])
    raw = np.empty((n, n), dtype=np.uint16)
    cols = np.arange(n)
    u = cols / n
    phase = rng.uniform(0, 2 * np.pi, 4)
    across = (np.sin(2 * np.pi * 3 * u + phase[0]) + 0.5 * np.sin(2 * np.pi * 17 * u + phase[1])).astype(np.float32)
    step = 1000 * ch.factor
    for r0 in range(0, n, step):
        rows = np.arange(r0, min(n, r0 + step))
        v = rows / n
        down = (np.cos(2 * np.pi * 2 * v + phase[2]) + 0.5 * np.cos(2 * np.pi * 13 * v + phase[3])).astype(np.float32)
        field = top * (0.45 + 0.12 * down[:, None] * across[None, :])
        field += rng.standard_normal(field.shape, dtype=np.float32) * NOISE_COUNTS
        counts = np.clip(np.rint(field), 0, top).astype(np.uint16)
        raw[r0: r0 + len(rows)] = np.where(on_disk(rows, cols, ch.resolution_km), counts, np.uint16(0x8000))
    return raw


def slot_dir(root: Path, slot: dt.datetime) -> Path:
    return root / slot.strftime("%Y%m/%d/%H")


def write_slot(root: Path, layouts: list[str], level: int, seed: int) -> dict:
    """The 16 FD files of SLOT once per layout (root/<layout>/YYYYMM/DD/HH/...); {layout: {channel: path}}."""
    paths = {name: {} for name in layouts}
    t0 = time.process_time()
    for channel in ALL_CHANNELS:
        raw = fd_raw(channel, seed)
        for name in layouts:
            path = slot_dir(root / name, SLOT) / l1b_filename(channel, "fd", SLOT.strftime("%Y%m%d%H%M"))
            path.parent.mkdir(parents=True, exist_ok=True)
            write_l1b(path, channel, SLOT, FD_WINDOW, raw, level, chunks=LAYOUTS[name](CHANNELS[channel].factor))
            paths[name][channel] = path
        del raw
    print(f"wrote {len(ALL_CHANNELS)} channels x {len(layouts)} layouts in {time.process_time() - t0:.0f} CPU-s")
    return paths


def chunk_bytes(path: Path, domain: Domain, factor: int) -> dict:
    """Chunks of image_pixel_values that the domain window intersects: count, stored (compressed) bytes,
    inflated bytes; and the file's totals."""
    with h5py.File(path, "r") as h5:
        var = h5["image_pixel_values"]
        shape, chunk = var.shape, var.chunks
        dsid = var.id
        r0, c0 = (domain.first_line - 1) * factor, (domain.first_column - 1) * factor
        r1, c1 = domain.last_line * factor, domain.last_column * factor
        out = {"chunk": chunk, "n_chunks": dsid.get_num_chunks(), "file_bytes": path.stat().st_size,
               "raw_bytes": shape[0] * shape[1] * 2, "read_chunks": 0, "read_bytes": 0, "inflated_bytes": 0}
        for i in range(out["n_chunks"]):
            info = dsid.get_chunk_info(i)
            lr, lc = info.chunk_offset
            if lr < r1 and lr + chunk[0] > r0 and lc < c1 and lc + chunk[1] > c0:
                out["read_chunks"] += 1
                out["read_bytes"] += info.size
                out["inflated_bytes"] += chunk[0] * chunk[1] * 2
    return out


def time_reads(paths: dict, domain: Domain, repeats: int) -> tuple[float, dict]:
    """min over repeats of the CPU seconds of read_l1b over the 16 files; and per resolution."""
    best, best_by_res = None, None
    for _ in range(repeats):
        by_res = {2.0: 0.0, 1.0: 0.0, 0.5: 0.0}
        for channel, path in paths.items():
            t0 = time.process_time()
            image = read_l1b(path, domain)
            by_res[CHANNELS[channel].resolution_km] += time.process_time() - t0
            assert image.values.shape == domain.shape and image.n_valid > 0
        total = sum(by_res.values())
        if best is None or total < best:
            best, best_by_res = total, by_res
    return best, best_by_res


def day_calibrate(root: Path, layout: str, paths: dict, domain_cfg: dict, workdir: Path) -> float:
    """CPU seconds of calibrate_period for one day of 24 hourly slots (each a link to SLOT's files)."""
    from ta2d.ingest.archive import calibrate_period, write_inventory

    raw_dir = root / layout
    for hour in range(24):
        slot = SLOT.replace(hour=hour)
        if slot == SLOT:
            continue
        folder = slot_dir(raw_dir, slot)
        folder.mkdir(parents=True, exist_ok=True)
        for channel, path in paths.items():
            link = folder / l1b_filename(channel, "fd", slot.strftime("%Y%m%d%H%M"))
            if not link.exists():
                link.symlink_to(path)
    day = SLOT.strftime("%Y-%m-%d")
    inputs = {"kind": "l1b", "calibrated": None,
              "l1b": {"dir": str(raw_dir), "subdir": "%Y%m/%d/%H", "area": "fd", "slot_minutes": [0],
                      "allow_conditional_pixels": False}}
    period = {"start": day, "end": day}
    key = SLOT.strftime("%Y%m%d")
    inventory = workdir / f"{layout}_{key}.tsv"
    t0 = time.process_time()
    write_inventory(inputs, key, "D", period, inventory)
    summary = calibrate_period(inputs, inventory, key, "D", period, domain_cfg, {"compression_level": 1},
                               workdir / f"{layout}_{key}.nc", workdir / f"{layout}_{key}.status.csv",
                               progress=False)
    cpu = time.process_time() - t0
    print(f"  calibrate_period, one day (24 slots), {layout}: {cpu:.1f} CPU-s  ({summary})")
    return cpu


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="single,strips,tiles", help=f"comma list of {sorted(LAYOUTS)}")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--level", type=int, default=1, help="gzip level of the written files (demo default 1)")
    ap.add_argument("--day", action="store_true", help="also run calibrate_period on a 24-slot day (gk2a domain)")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: temp dir in benchmarks/out)")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    layouts = [s for s in args.layouts.split(",") if s]
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        ap.error(f"unknown layouts {sorted(unknown)}")

    domains = {
        "gk2a.yaml": yaml.safe_load((REPO / "config/gk2a.yaml").read_text())["domain"],
        "demo": yaml.safe_load((REPO / "config/config.yaml").read_text())["domain"],
    }
    if args.out is None:
        (REPO / "benchmarks/out").mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="calibrate_fd_", dir=REPO / "benchmarks/out"))
    else:
        root = args.out
        root.mkdir(parents=True, exist_ok=True)
    print(f"files in {root}")
    rows = []
    try:
        for layout in layouts:  # one layout on disk at a time (~1.4 GB each)
            paths = write_slot(root, [layout], args.level, args.seed)[layout]
            sizes = {res: {"file": 0, "raw": 0} for res in (2.0, 1.0, 0.5)}
            for channel, path in paths.items():
                info = chunk_bytes(path, Domain.from_config(domains["demo"]), CHANNELS[channel].factor)
                res = CHANNELS[channel].resolution_km
                sizes[res]["file"] += info["file_bytes"]
                sizes[res]["raw"] += info["raw_bytes"]
            total_file = sum(s["file"] for s in sizes.values())
            total_raw = sum(s["raw"] for s in sizes.values())
            print(f"[{layout}] one slot: {mb(total_file)} on disk, {mb(total_raw)} raw "
                  f"(x{total_raw / total_file:.2f}); per resolution 2/1/0.5 km: "
                  + " / ".join(mb(sizes[r]["file"]) for r in (2.0, 1.0, 0.5)))
            for dname, dcfg in domains.items():
                domain = Domain.from_config(dcfg)
                read = {"read_chunks": 0, "read_bytes": 0, "inflated_bytes": 0}
                for channel, path in paths.items():
                    info = chunk_bytes(path, domain, CHANNELS[channel].factor)
                    for k in read:
                        read[k] += info[k]
                cpu, by_res = time_reads(paths, domain, args.repeats)
                rows.append((layout, dname, domain.shape, cpu, by_res, read, total_file))
                print(f"  {dname} {domain.shape}: {cpu:.2f} CPU-s per slot (2 km {by_res[2.0]:.2f}, 1 km "
                      f"{by_res[1.0]:.2f}, 0.5 km {by_res[0.5]:.2f}); reads {read['read_chunks']} chunks, "
                      f"{mb(read['read_bytes'])} stored -> {mb(read['inflated_bytes'])} inflated")
            if args.day:
                with tempfile.TemporaryDirectory(dir=root) as work:
                    day_cpu = day_calibrate(root, layout, paths, domains["gk2a.yaml"], Path(work))
                rows.append((layout, "gk2a.yaml day", None, day_cpu / 24, None, None, total_file))
            if not args.keep:
                shutil.rmtree(root / layout)
    finally:
        if not args.keep and args.out is None:
            shutil.rmtree(root, ignore_errors=True)

    print("\nCPU-s of calibrating (read_l1b x 16 files per slot; min of repeats; 1 core)")
    print(f"{'layout':8} {'domain':15} {'per slot':>9} {'day 24':>8} {'day 144':>8} {'year 24/d':>10} "
          f"{'year 144/d':>11} {'read/slot':>10} {'of file':>8}")
    for layout, dname, _, cpu, _, read, total_file in rows:
        read_txt = mb(read["read_bytes"]) if read else "-"
        frac = f"{read['read_bytes'] / total_file:.1%}" if read else "-"
        print(f"{layout:8} {dname:15} {cpu:9.2f} {cpu * 24:8.0f} {cpu * 144:8.0f} "
              f"{cpu * 24 * YEAR_DAYS / 3600:9.1f}h {cpu * 144 * YEAR_DAYS / 3600:10.1f}h {read_txt:>10} {frac:>8}")
    print("(day 24 / day 144: CPU-s per day of hourly / 10-minute slots; year: CPU-hours; the 'gk2a.yaml day' "
          "row is calibrate_period's whole day / 24)")
    if os.environ.get("BENCH_JSON"):
        import json

        Path(os.environ["BENCH_JSON"]).write_text(json.dumps(
            [{"layout": r[0], "domain": r[1], "cpu_s_per_slot": r[3], "read": r[5]} for r in rows], indent=1))


if __name__ == "__main__":
    main()
