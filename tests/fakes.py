"""The test data, one place for all of it: what the tests generate and the runs they train.

* The tiny demo made by the demo generator itself, so tests and the demo exercise the same file formats:
  `tiny_config` (config/config.yaml + config/test/tiny.yaml with every input under a folder) and
  `make_tiny_demo`. tests/conftest.py makes the session's copies (`tiny_demo`, `four_days`, and the clean
  data of the bad-input battery, tests/bad_inputs.py); use them where a test needs the real file set of an
  archive.
* Chunks following the chunk contract with a learnable target: ta2d.demo.synthetic (`make_chunk`,
  `write_chunks`; the benchmarks use them too); here their statistics as the tests compute them
  (`compute_stats`, independent of ta2d.chunks.stats), a training set (`training_data`), a chunk from a
  hand-made manifest (`chunk_from_manifest`), chunks given a reanalysis background field (`with_background`)
  and a flipped byte (`flip_byte_in_tensor`).
* Trained runs: `SMALL_RUNS` (one small run of each kind of model), `train_small_runs`, and `small_runs`,
  what the session fixture `small_runs` (tests/conftest.py) trains once for the evaluation and map tests.
* Error models as rule evaluate writes them (`write_error_models`: a known, non-flat error model per run), for
  the model files and the maps' standard errors.
* Reanalysis background files in the CDS layouts (`write_cds_t2m`, `write_cds_orography`), for the background's
  reader, the chunks' background field and the maps of a model built with it.
* L1B NetCDF files in the real GK-2A layout (sector windows, messy attribute types) with a known smooth
  field: `write_l1b` and the independent reference calibration around it (`phys_to_count`,
  `count_to_phys`, `expected_on_domain`, `truth_field`, `native_window`, `l1b_path`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5netcdf
import numpy as np
import torch
import yaml

from ta2d.channels import CHANNELS, l1b_filename
from ta2d.config import deep_merge
from ta2d.demo.synthetic import write_chunks
from ta2d.grid import FD_GRIDS, Domain

REPO = Path(__file__).resolve().parents[1]

# --- the tiny demo ---------------------------------------------------------------------------------------


def tiny_config(root: Path, **overrides) -> dict:
    """config/config.yaml + config/test/tiny.yaml (+ overrides, merged as --configfile merges) with every
    input path under `root`, validated."""
    from ta2d.config import validate_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    deep_merge(config, yaml.safe_load((REPO / "config/test/tiny.yaml").read_text()))
    deep_merge(config, overrides)
    inputs = config["inputs"]
    inputs["l1b"]["dir"] = str(root / inputs["l1b"]["dir"])
    for key in ("labels", "stations", "static"):
        inputs[key]["path"] = str(root / inputs[key]["path"])
    if inputs.get("background"):
        inputs["background"] = {**inputs["background"], "t2m": str(root / inputs["background"]["t2m"]),
                                "orography": str(root / inputs["background"]["orography"])}
    config["demo"]["out_dir"] = str(root / config["demo"]["out_dir"])
    return validate_config(config)


def make_tiny_demo(root: Path, **overrides) -> dict:
    """The demo generator's inputs for tiny_config(root, **overrides), written under `root`:
    {"root", "config", "summary"} (summary: what generate_demo returns)."""
    from ta2d.demo import generate_demo

    config = tiny_config(root, **overrides)
    return {"root": root, "config": config, "summary": generate_demo(config, progress=False)}


# --- chunks (ta2d.demo.synthetic makes them) -------------------------------------------------------------

def compute_stats(paths, out: str | Path | None = None) -> dict:
    """Per-plane mean/std of x over all pixels and TA mean/std, the keys the stats rule writes (computed here
    with torch, independently of ta2d.chunks.stats); written to `out` as JSON when given."""
    xs = [torch.load(p, weights_only=True, mmap=True) for p in paths]
    x = torch.cat([d["x"] for d in xs]).double()
    y = torch.cat([d["y"] for d in xs]).double()
    stats = {
        "x_mean": x.mean(dim=(0, 2, 3)).tolist(),
        "x_std": x.std(dim=(0, 2, 3)).tolist(),
        "y_mean": float(y.mean()),
        "y_std": float(y.std()),
        "n_samples": len(y),
    }
    if all("background" in d for d in xs):  # chunks with the reanalysis background: models then take it
        b = torch.cat([d["background"] for d in xs]).double()
        stats.update(background_mean=float(b.mean()), background_std=float(b.std()))
    if out is not None:
        Path(out).write_text(json.dumps(stats))
    return stats


def with_background(paths, out_dir: str | Path, seed: int = 0, error_k: float = 1.0) -> list[Path]:
    """Copies of the chunks `paths` in `out_dir` (same names) with the field `background`: the label plus a random
    error of `error_k` K, an informative first guess as a reanalysis is."""
    from ta2d.chunks.contract import open_chunk, save_tensors

    rng = np.random.default_rng(seed)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        d = dict(open_chunk(path))
        d["background"] = (d["y"] + torch.from_numpy(rng.normal(0, error_k, len(d["y"])).astype(np.float32)))
        out.append(Path(out_dir) / Path(path).name)
        save_tensors(d, out[-1])
    return out


def flip_byte_in_tensor(path: str | Path, field: str = "x") -> None:
    """Flip one byte in the middle of a saved tensor's data, as a bad disk would: the file still loads
    (memory-mapped loading skips the zip CRC) but its bytes no longer match its recorded CRC."""
    from ta2d.chunks.loader import _field_offsets

    d = {k: v for k, v in torch.load(path, weights_only=True, mmap=True).items() if isinstance(v, torch.Tensor)}
    offsets = _field_offsets(str(path), d)
    assert offsets is not None, f"{path}: cannot locate the tensors' data records"
    at = offsets[field] + d[field].numel() * d[field].element_size() // 2
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x10]))


def chunk_from_manifest(manifest: str | Path, scene, static, patch_size: int, out: str | Path,
                        x_dtype: str = "float32", background=None) -> dict:
    """build_patch_chunk on stations placed by hand: `manifest` is a CSV of (row, stn, time, ta_c, line, column
    [, lat, lon, elev_m]); each station is put at its lat/lon (the pixel centre when not given), so the matching
    finds exactly that pixel. Writes out (.pt), its .rejects.csv and .index.csv; the label part beside them.
    `background`: a ta2d.ingest.background.Background, for chunks with the background field."""
    import pandas as pd

    from ta2d.chunks.patches import build_patch_chunk
    from ta2d.grid import linecol_to_lonlat

    rows = pd.read_csv(manifest)
    if "lat" not in rows:
        lon, lat = linecol_to_lonlat(rows["line"].to_numpy(float), rows["column"].to_numpy(float))
        rows = rows.assign(lat=lat, lon=lon)
    if "elev_m" not in rows:
        rows = rows.assign(elev_m=float("nan"))
    stations = rows.drop_duplicates("stn")[["stn", "lat", "lon", "elev_m"]].assign(valid_from=pd.NaT, valid_to=pd.NaT)
    if stations["stn"].duplicated().any() or len(rows.drop_duplicates(["stn", "lat", "lon"])) != len(stations):
        raise ValueError(f"{manifest}: a station at two places")
    out = Path(out)
    part = out.with_suffix(".part.csv")
    rows.assign(source=Path(manifest).name)[["source", "row", "stn", "time", "ta_c"]].to_csv(part, index=False)
    return build_patch_chunk(part, stations.reset_index(drop=True), scene, static, patch_size, out,
                             out.with_suffix(".rejects.csv"), out.with_suffix(".index.csv"), x_dtype=x_dtype,
                             background=background)


# --- training sets and trained runs ---------------------------------------------------------------------

def training_data(tmp_path_factory, n_train_files: int = 3, n_val_files: int = 2) -> tuple[list, list, Path]:
    """(train chunks, val chunks, stats.json) for training tests: 100 (train) / 60 (val) samples a file."""
    d = tmp_path_factory.mktemp("patch_pt")
    train = write_chunks(d, "train", n_train_files, 100, seed=1)
    val = write_chunks(d, "val", n_val_files, 60, seed=2)
    stats = tmp_path_factory.mktemp("stats") / "stats.json"
    compute_stats(train, stats)
    return train, val, stats


class Killed(Exception):
    """A training job killed at the end of an epoch (kill_after), as a crash or the scheduler would stop it."""


def kill_after(epoch: int):
    """on_epoch_end for train_run / pretrain_run: kills the job (raises Killed) when `epoch` has ended."""
    def on_epoch_end(ended: int, row) -> None:
        if ended == epoch:
            raise Killed

    return on_epoch_end


def rerun_killed(cfg: dict, train, val, stats, run_dir: Path) -> tuple[dict, list[str]]:
    """A killed train_run job run again as Snakemake reruns it: its declared outputs (best.pt, metrics.csv)
    removed first, the rest of run_dir (current.pt) kept: (train_run's result, its log lines)."""
    from ta2d.training import train_run

    (run_dir / "best.pt").unlink()
    (run_dir / "metrics.csv").unlink()
    logs = []
    return train_run(cfg, train, val, stats, run_dir, progress=False, log=logs.append), logs


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """A run's metrics.csv, row by row."""
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


# one small run of each kind of model, fast enough for evaluation and map tests
SMALL_RUNS = {
    "clay": {"model": "clay_transfer", "preset": "tiny", "epochs": 1, "batch_size": 64, "head_hidden": 32},
    "cnn": {"model": "cnn", "epochs": 2, "batch_size": 64, "head_hidden": 32, "cnn_channels": [8]},
    "ridge": {"model": "ridge"},
}


def train_small_runs(d: Path, train: list, runs: dict | None = None) -> dict:
    """SMALL_RUNS (or `runs`) trained on the train chunks (stats from them) under d/runs: {run: best.pt}."""
    from ta2d.training import train_run

    stats = compute_stats(train, d / "stats.json")
    ckpts = {}
    for run, cfg in (SMALL_RUNS if runs is None else runs).items():
        train_run({**cfg, "seed": 3, "device": "cpu"}, train, [], stats, d / "runs" / run, progress=False,
                  log=lambda s: None)
        ckpts[run] = d / "runs" / run / "best.pt"
    return ckpts


# log sigma = weights . (1, (features - mean) / scale), features (hour cos, hour sin, IR10.5 BT, VIS0.6 reflectance):
# every feature moves sigma, so a pixel's sigma tests that each one is read from the right plane and hour
ERROR_MODEL = {"weights": [math.log(0.9), 0.2, -0.15, -0.3, 0.25], "mean": [0.0, 0.0, 285.0, 0.3],
               "scale": [0.7, 0.7, 6.0, 0.17], "n_fit": 1234}


def write_error_models(path: Path, runs) -> Path:
    """An evaluate error_models.json holding ERROR_MODEL for each of ``runs``."""
    from ta2d.evaluation.uncertainty import ErrorModel

    m = ErrorModel(*(np.array(ERROR_MODEL[k]) for k in ("weights", "mean", "scale")), ERROR_MODEL["n_fit"])
    Path(path).write_text(json.dumps({run: m.to_dict() for run in runs}))
    return Path(path)


def small_runs(d: Path) -> dict:
    """SMALL_RUNS trained on two synthetic train chunks (120 and 121 samples) under d:
    {"dir": d, "train": the chunks, "ckpts": {run: best.pt}} (the session fixture `small_runs`)."""
    train = write_chunks(d / "patch_pt", "train", 2, 120, seed=1)
    return {"dir": d, "train": train, "ckpts": train_small_runs(d, train)}


# --- L1B files -------------------------------------------------------------------------------------------

# Real coefficients (docs/gk2a-format.md#real-coefficients): IR105's for every emissive channel, VI005's for
# every reflective one. Fixture bit widths are fixed per kind so the same counts fit every channel.
IR_COEFFS = {"DN_to_Radiance_Gain": -0.0198196955025196, "DN_to_Radiance_Offset": 161.580139160156,
             "Teff_to_Tbb_c0": -0.142866448475177, "Teff_to_Tbb_c1": 1.00064069572049,
             "Teff_to_Tbb_c2": -5.50443294960498e-7}
VIS_COEFFS = {"DN_to_Radiance_Gain": 0.343625485897064, "DN_to_Radiance_Offset": -6.87249755859375,
              "Radiance_to_Albedo_c": 0.0016595767}
BITS = {"emissive": 13, "reflective": 11}
H, C, K = 6.62606957e-34, 299792458.0, 1.3806488e-23

L1B_DOMAIN = Domain(895, 898, 2698, 2702)  # around Seoul, 4 x 5 pixels
L1B_STAMP = "202404010000"


def truth_field(channel: str, lines, cols):
    """Smooth physical field on FD native coordinates (1-based): BT in K or albedo fraction."""
    lines, cols = np.asarray(lines, float), np.asarray(cols, float)
    wave = np.sin(lines * 0.37) + np.cos(cols * 0.23)
    if CHANNELS[channel].kind == "emissive":
        return 270.0 + 15.0 * wave
    return 0.3 + 0.12 * wave


def phys_to_count(channel: str, values):
    """Invert the calibration (notes 1.3) to integer counts, as KMA's quantisation would give."""
    values = np.asarray(values, float)
    if CHANNELS[channel].kind == "reflective":
        rad = values / VIS_COEFFS["Radiance_to_Albedo_c"]
        count = (rad - VIS_COEFFS["DN_to_Radiance_Offset"]) / VIS_COEFFS["DN_to_Radiance_Gain"]
    else:
        c0, c1, c2 = (IR_COEFFS[f"Teff_to_Tbb_c{i}"] for i in range(3))
        t_eff = (-c1 + np.sqrt(c1 * c1 - 4 * c2 * (c0 - values))) / (2 * c2)
        nu = CHANNELS[channel].wavenumber_cm * 100.0
        rad = 2 * H * C**2 * nu**3 / (np.exp(H * C * nu / (K * t_eff)) - 1) / 1e-5
        count = (rad - IR_COEFFS["DN_to_Radiance_Offset"]) / IR_COEFFS["DN_to_Radiance_Gain"]
    bits = BITS[CHANNELS[channel].kind]
    return np.clip(np.rint(count), 0, 2**bits - 1).astype(np.uint16)


def count_to_phys(channel: str, count):
    """Straight-line forward calibration, element by element (independent of ta2d.ingest.calibration)."""
    out = np.empty(np.shape(count))
    for idx, n in np.ndenumerate(np.asarray(count, float)):
        if CHANNELS[channel].kind == "reflective":
            rad = VIS_COEFFS["DN_to_Radiance_Gain"] * n + VIS_COEFFS["DN_to_Radiance_Offset"]
            out[idx] = max(rad * VIS_COEFFS["Radiance_to_Albedo_c"], 0.0)
            continue
        rad = IR_COEFFS["DN_to_Radiance_Gain"] * n + IR_COEFFS["DN_to_Radiance_Offset"]
        nu = CHANNELS[channel].wavenumber_cm * 100.0
        t_eff = H * C * nu / K / math.log(2 * H * C * C * nu**3 / (rad * 1e-5) + 1)
        out[idx] = IR_COEFFS["Teff_to_Tbb_c0"] + IR_COEFFS["Teff_to_Tbb_c1"] * t_eff + \
            IR_COEFFS["Teff_to_Tbb_c2"] * t_eff**2
    return out


def native_window(channel: str, domain: Domain = L1B_DOMAIN, margin: int = 3, extra: int = 2):
    """FD native (first_line, first_column, n_lines, n_columns) of a sector covering `domain`.

    An odd `margin` puts the window's first pixel off the 2 km block boundaries, as real sectors may be.
    """
    f = CHANNELS[channel].factor
    nl, nc = domain.shape
    first_line = (domain.first_line - 1) * f + 1 - margin
    first_col = (domain.first_column - 1) * f + 1 - margin
    return first_line, first_col, nl * f + margin + extra, nc * f + margin + extra


def write_l1b(path, channel: str, window=None, flags=None, attrs=None, drop=(), field=truth_field,
              stamp: str = L1B_STAMP):
    """Write a L1B NetCDF in the real layout; returns the uint16 words written.

    window: FD native (first_line, first_column, n_lines, n_columns), 1-based; default native_window().
    flags: {(row, col): dqf} for pixels of the window; attrs: overrides; drop: attribute names to omit.
    Attribute types are deliberately mixed (str, bytes, numpy scalars, 1-element arrays).
    """
    spec = CHANNELS[channel]
    first_line, first_col, n_lines, n_cols = window or native_window(channel)
    lines, cols = np.meshgrid(np.arange(first_line, first_line + n_lines),
                              np.arange(first_col, first_col + n_cols), indexing="ij")
    raw = phys_to_count(channel, field(channel, lines, cols))
    if spec.kind == "reflective":
        raw[0, 0] |= np.uint16(1 << 12)  # a padding bit above the 11 valid bits: must be masked off
    for (r, c), dqf in (flags or {}).items():
        raw[r, c] = (raw[r, c] & 0x3FFF) | (dqf << 14)
    fd_off, fd_fac, _ = FD_GRIDS[spec.resolution_km]
    gattrs = {
        "satellite_name": "GK-2A", "observation_mode": "ELA", "projection_type": "GEOS",
        "channel_spatial_resolution": f"{spec.resolution_km:.1f}",
        "channel_center_wavelength": f"{spec.wavelength_um:.1f}",  # rounded on purpose, as in real files
        "number_of_lines": str(n_lines), "number_of_columns": np.array([n_cols], np.int32),
        "cfac": repr(fd_fac), "lfac": np.array([-fd_fac]), "coff": np.float64(fd_off - (first_col - 1)),
        "loff": np.array([fd_off - (first_line - 1)], np.float32),
        "sub_longitude": 2.2375121, "nominal_satellite_height": 42164000.0,
        "observation_start_time": np.float64(765201632.0),
    }
    if spec.kind == "emissive":
        gattrs |= {k: np.array([v]) for k, v in IR_COEFFS.items()}
        gattrs |= {"light_speed": "299792458", "Boltzmann_constant_k": np.float64(1.3806488e-23),
                   "Plank_constant_h": np.array([6.62606957e-34])}
    else:
        gattrs |= {k: np.float64(v) for k, v in VIS_COEFFS.items()}
        gattrs["Radiance_to_Albedo_c"] = f"{VIS_COEFFS['Radiance_to_Albedo_c']!r}"
    gattrs |= attrs or {}
    vattrs = {"channel_name": channel.upper().encode(), "number_of_valid_bits_per_pixel":
              np.array([BITS[spec.kind]], np.int16), "number_of_total_bits_per_pixel": 16,
              "data_quality_flag_meaning": "0:good_pixel, 1:conditionally_usable_pixel, "
                                           "2:out_of_scan_area_pixel, 3:error_pixel"}
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"dim_image_y": n_lines, "dim_image_x": n_cols}
        var = f.create_variable("image_pixel_values", ("dim_image_y", "dim_image_x"), np.uint16, data=raw,
                                chunks=(min(n_lines, 8), min(n_cols, 8)), compression="gzip")
        var.attrs.update({k: v for k, v in vattrs.items() if k not in drop})
        f.attrs.update({k: v for k, v in gattrs.items() if k not in drop})
    return raw


def expected_on_domain(channel: str, raw, window=None, domain: Domain = L1B_DOMAIN, allow_conditional=False):
    """Block means of the straight-line calibrated valid native pixels, via a direct reshape."""
    f = CHANNELS[channel].factor
    first_line, first_col, _, _ = window or native_window(channel, domain)
    r0 = (domain.first_line - 1) * f + 1 - first_line
    c0 = (domain.first_column - 1) * f + 1 - first_col
    nl, nc = domain.shape
    block = raw[r0:r0 + nl * f, c0:c0 + nc * f]
    dqf = block >> 14
    phys = count_to_phys(channel, block & (2 ** BITS[CHANNELS[channel].kind] - 1))
    ok = (dqf == 0) | (allow_conditional & (dqf == 1))
    phys = np.where(ok, phys, np.nan).reshape(nl, f, nc, f)
    n = np.isfinite(phys).sum(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(phys, axis=(1, 3)) / n, np.nan)


def l1b_path(folder, channel, stamp=L1B_STAMP, area="ela") -> Path:
    """The real file name of a channel's L1B file in `folder`."""
    return Path(folder) / l1b_filename(channel, area, stamp)


# --- reanalysis background files ------------------------------------------------------------------------

def write_cds_t2m(path, values, times, lat, lon, *, layout="current", lon_0_360=False, units="K", variable="t2m"):
    """A t2m file in a CDS layout (current: `valid_time` int64 seconds, scalar `number` and an `expver` per hour;
    old: `time`), written north to south as the CDS does; `values` (time, lat, lon) on ascending `lat`/`lon`,
    `times` numpy datetime64[ns]."""
    import xarray as xr

    time_name = "valid_time" if layout == "current" else "time"
    seconds = ((times - np.datetime64("1970-01-01", "ns")) // np.timedelta64(1, "s")).astype(np.int64)
    written_lon = np.where(lon < 0, lon + 360, lon) if lon_0_360 else lon
    lon_order = np.argsort(written_lon)
    data = np.asarray(values)[:, ::-1, :][:, :, lon_order]
    dataset = xr.Dataset(
        {variable: ((time_name, "latitude", "longitude"), data,
                    {"units": units, "long_name": "2 metre temperature", "GRIB_paramId": 167,
                     "GRIB_shortName": "2t", "standard_name": "unknown"})},
        coords={
            time_name: (time_name, seconds, {"units": "seconds since 1970-01-01", "calendar": "proleptic_gregorian",
                                             "standard_name": "time", "long_name": "time"}),
            "latitude": ("latitude", lat[::-1], {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": ("longitude", written_lon[lon_order], {"units": "degrees_east"}),
        },
        attrs={"GRIB_centre": "ecmf", "Conventions": "CF-1.7", "institution": "European Centre for Medium-Range "
               "Weather Forecasts"},
    )
    if layout == "current":
        dataset = dataset.assign_coords(number=np.int64(0), expver=(time_name, np.array(["0001"] * len(times))))
    dataset.to_netcdf(path, engine="h5netcdf")
    return path


def write_cds_orography(path, height, lat, lon, *, time_dim="valid_time", lon_0_360=False):
    """The reanalysis orography as the CDS delivers it: geopotential `z` (m2 s-2) of `height` (lat, lon; m, on
    ascending `lat`/`lon`), north to south, with a length-1 time dimension unless `time_dim` is None."""
    import xarray as xr

    from ta2d.ingest.background import GRAVITY

    written_lon = np.where(lon < 0, lon + 360, lon) if lon_0_360 else lon
    z = (np.asarray(height) * GRAVITY)[::-1, :].astype(np.float32)
    coords = {"latitude": lat[::-1], "longitude": written_lon}
    dims = ("latitude", "longitude")
    if time_dim:
        z = z[None]
        dims = (time_dim, *dims)
        coords[time_dim] = (time_dim, np.array([0], dtype=np.int64), {"units": "seconds since 1970-01-01"})
    xr.Dataset({"z": (dims, z, {"units": "m**2 s**-2", "long_name": "Geopotential"})}, coords=coords).to_netcdf(
        path, engine="h5netcdf")
    return path
