"""Build the calibrated scene of one period: every nominal slot, all 16 channels, on the 2 km domain.

Scene file contract (docs/architecture.md#file-contracts):

- dims ``time`` (every nominal slot of the period, whether or not files exist), ``bt_channel`` (10,
  ``ta2d.channels.BT_CHANNELS``), ``rf_channel`` (6, ``RF_CHANNELS``), ``line``, ``column`` (1-based
  GK-2A FD 2 km grid, int32 coordinates);
- ``bt`` float32 (time, bt_channel, line, column) in K; ``rf`` float32 (time, rf_channel, line, column)
  TOA albedo fraction (not divided by cos SZA); ``sza`` float32 (time, line, column) in degrees;
  ``lat``/``lon`` float32 (line, column); ``status`` (time) string: ``ok`` or the reason the slot has no
  data (``no_files``, ``missing_channel:vi004,ir105``, ``unreadable:ir105:<short reason>``).
  A slot that is not ``ok`` has NaN ``bt``/``rf``; one bad or missing file never raises.
- ``sza`` is computed for every slot (it is geometry, not data) at the nominal slot time + 120 s:
  the FD scan runs north to south for about 9 minutes from about 30 s after the slot, and Korea
  (FD lines ~700-1080) is seen about 100-140 s in (docs/gk2a-format.md#scan-timing).
- global attributes: projection, domain bounds, source files, input kind, ta2d version.

Files are written slot by slot with h5netcdf (a month of hourly slots would not fit in memory at
once), chunked one slot per chunk so readers of one slot or of station windows touch only that slot,
into a hidden temp file that is renamed over ``out_path`` only when complete: a killed job never
leaves a file that looks finished. Before the rename every variable gets ``ta2d_crc32``, the CRC-32 of
its stored bytes (ta2d.checksums), which ``ta2d verify`` checks.

Two input kinds fill the same file:

``inputs.kind: l1b`` -- :func:`build_scene` reads raw AMI L1B files listed by the period's inventory
(:mod:`ta2d.ingest.inventory`), calibrates them (:mod:`ta2d.ingest.l1b`).

``inputs.kind: calibrated`` -- :func:`build_scene_from_calibrated` reads the previous system's
already-calibrated per-timestamp arrays. Keys of ``inputs.calibrated``:

  dir            directory the patterns are relative to
  bt_pattern     strftime pattern (slot time, UTC) of the BT file, e.g. "%Y%m%d/bt_%Y%m%d%H%M.nc"
  rf_pattern     same for reflectances
  sza_pattern    same for SZA; "" or absent -> SZA is computed like for L1B input
  bt_variable    variable name in the NetCDF files (default "bt"); ignored for .npy files
  rf_variable    default "rf"
  sza_variable   default "sza"
  bt_channels    channel order of the BT arrays' first axis (default BT_CHANNELS order)
  rf_channels    channel order of the RF arrays' first axis (default RF_CHANNELS order)
  rf_scale       factor turning the stored reflectance into an albedo fraction (default 1; 0.01 for %)
  first_line     FD 2 km line of the arrays' [.., 0, 0] pixel (1-based)
  first_column   FD 2 km column of the arrays' [.., 0, 0] pixel (1-based)
  slot_minutes   minutes of the hour with a file (default [0]), like inputs.l1b.slot_minutes

Arrays are (C, y, x) (SZA (y, x)) in NetCDF4 or .npy files and may cover more than the domain.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5netcdf
import h5py
import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

import ta2d
from ta2d import grid
from ta2d.channels import BT_CHANNELS, RF_CHANNELS
from ta2d.checksums import atomic_netcdf
from ta2d.grid import Domain
from ta2d.ingest.inventory import SLOT_FORMAT, read_inventory
from ta2d.ingest.l1b import L1BError, read_l1b
from ta2d.periods import period_slots
from ta2d.solar import solar_zenith_deg

log = logging.getLogger(__name__)

SZA_SCAN_OFFSET_S = 120.0  # Korea is scanned about 2 min after the nominal slot time
_REASON_CHARS = 80  # status strings stay short; the full message goes to the log


@dataclass
class SlotData:
    """What one slot contributes: arrays (None when the slot is not ok), status and the files used."""

    status: str
    bt: np.ndarray | None = None  # (10, nl, nc)
    rf: np.ndarray | None = None  # (6, nl, nc)
    sza: np.ndarray | None = None  # (nl, nc); None -> computed
    sources: list[str] = field(default_factory=list)


# --- L1B input -------------------------------------------------------------------------------------------

def build_scene(inventory_tsv_path, raw_dir, key: str, freq: str, slot_minutes, start, end, domain: Domain,
                out_path, allow_conditional: bool = False, compression_level: int = 1,
                progress: bool = True) -> dict:
    """Calibrate the L1B files of the inventory into the scene of period `key`. Returns a summary dict."""
    slots = period_slots(key, freq, slot_minutes, start, end)
    inventory = read_inventory(inventory_tsv_path)
    files = _files_by_slot(inventory)
    listed_sizes = dict(zip(inventory["path"], inventory["size"], strict=True))
    raw_dir = Path(raw_dir)

    def read_slot(slot: pd.Timestamp) -> SlotData:
        return _read_l1b_slot(files.get(slot.strftime(SLOT_FORMAT), {}), raw_dir, domain, allow_conditional,
                              listed_sizes)

    attrs = {"input_kind": "l1b", "allow_conditional_pixels": int(allow_conditional),
             "calibration": "KMA FILE mode: effective-wavenumber inverse Planck + Teff_to_Tbb polynomial; "
                            "albedo = radiance * Radiance_to_Albedo_c, negatives clipped to 0"}
    return write_scene(out_path, key, slots, domain, read_slot, attrs, compression_level, progress)


def _read_l1b_slot(channel_files: dict[str, str], raw_dir: Path, domain: Domain,
                   allow_conditional: bool, listed_sizes: dict[str, int] | None = None) -> SlotData:
    if not channel_files:
        return SlotData("no_files")
    missing = [c for c in BT_CHANNELS + RF_CHANNELS if c not in channel_files]
    if missing:
        found = raw_dir / next(iter(channel_files.values()))
        log.warning("slot %s: no L1B file for channel(s) %s (the other channels are in %s)",
                    found.name[-15:-3], ",".join(missing), found.parent)
        return SlotData("missing_channel:" + ",".join(missing), sources=sorted(channel_files.values()))
    values, failures, growing = {}, [], []
    for channel, rel in channel_files.items():
        try:
            values[channel] = read_l1b(raw_dir / rel, domain, allow_conditional).values
            error = None
        except L1BError as exc:
            error = exc
        # checked after the read: a file that grew while it was read is as incomplete as one that failed
        if _size_moved(raw_dir / rel, (listed_sizes or {}).get(rel)):
            growing.append(channel)
        elif error is not None:
            log.warning("unreadable L1B file %s", error)  # the full reason and path; the status is short
            failures.append(f"{channel}:{_short(error.reason)}")
    sources = [channel_files[c] for c in BT_CHANNELS + RF_CHANNELS]
    if growing:
        # a copy still under way when the archive was listed or read: the next invocation lists the file again,
        # its inventory changes, and the slot is calibrated again
        log.warning("slot %s: L1B file(s) of %s still being written (size moved since the listing)",
                    next(iter(channel_files.values()))[-15:-3], ",".join(growing))
        return SlotData("still_being_written:" + ",".join(growing), sources=sources)
    if failures:
        return SlotData("unreadable:" + ";".join(failures), sources=sources)
    return SlotData(
        "ok",
        bt=np.stack([values[c] for c in BT_CHANNELS]),
        rf=np.stack([values[c] for c in RF_CHANNELS]),
        sources=sources,
    )


def _size_moved(path: Path, listed_size: int | None) -> bool:
    """Whether a file is no longer the size the inventory listed (a copy still growing, or gone)."""
    if listed_size is None:
        return False
    try:
        return path.stat().st_size != listed_size
    except FileNotFoundError:
        return True


def _files_by_slot(inventory: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{slot stamp: {channel: relative path}}; for duplicates the first path in sort order wins."""
    out: dict[str, dict[str, str]] = {}
    for slot, channel, rel in inventory.sort_values(["slot", "channel", "path"])[["slot", "channel", "path"]] \
            .itertuples(index=False, name=None):
        out.setdefault(slot, {}).setdefault(channel, rel)
    return out


# --- already-calibrated input ------------------------------------------------------------------------------

def build_scene_from_calibrated(inventory_tsv_path, calibrated_cfg: dict, key: str, freq: str, slot_minutes,
                                start, end, domain: Domain, out_path, compression_level: int = 1,
                                progress: bool = True) -> dict:
    """Same scene from the previous system's calibrated per-timestamp files (module docstring: keys).

    The inventory comes from :func:`ta2d.ingest.inventory.calibrated_period_inventory` (channel column bt/rf/sza).
    """
    slots = period_slots(key, freq, slot_minutes, start, end)
    files = _files_by_slot(read_inventory(inventory_tsv_path))
    reader = _CalibratedReader(calibrated_cfg, domain)

    def read_slot(slot: pd.Timestamp) -> SlotData:
        return reader.read(files.get(slot.strftime(SLOT_FORMAT), {}))

    return write_scene(out_path, key, slots, domain, read_slot, {"input_kind": "calibrated"},
                       compression_level, progress)


class _CalibratedReader:
    def __init__(self, cfg: dict, domain: Domain):
        self.root = Path(cfg["dir"])
        self.domain = domain
        self.first_line = int(cfg["first_line"])
        self.first_column = int(cfg["first_column"])
        self.variables = {k: cfg.get(f"{k}_variable", k) for k in ("bt", "rf", "sza")}
        self.needs_sza_file = bool(cfg.get("sza_pattern"))
        self.rf_scale = float(cfg.get("rf_scale", 1.0))
        self.order = {"bt": _channel_order(cfg, "bt_channels", BT_CHANNELS),
                      "rf": _channel_order(cfg, "rf_channels", RF_CHANNELS)}

    def read(self, kind_files: dict[str, str]) -> SlotData:
        if not kind_files:
            return SlotData("no_files")
        wanted = ["bt", "rf"] + (["sza"] if self.needs_sza_file else [])
        missing = [k for k in wanted if k not in kind_files]
        sources = [kind_files[k] for k in wanted if k in kind_files]
        if missing:
            return SlotData("missing_channel:" + ",".join(missing), sources=sources)
        arrays, failures = {}, []
        for kind in wanted:
            try:
                arrays[kind] = self._read_array(kind, self.root / kind_files[kind])
            except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
                failures.append(f"{kind}:{_short(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}")
        if failures:
            return SlotData("unreadable:" + ";".join(failures), sources=sources)
        return SlotData("ok", bt=arrays["bt"][self.order["bt"]],
                        rf=np.maximum(arrays["rf"][self.order["rf"]] * self.rf_scale, 0.0),
                        sza=arrays.get("sza"), sources=sources)

    def _read_array(self, kind: str, path: Path) -> np.ndarray:
        y0 = self.domain.first_line - self.first_line
        x0 = self.domain.first_column - self.first_column
        nl, nc = self.domain.shape
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with xr.open_dataset(path, engine="h5netcdf", mask_and_scale=True) as ds:
                if self.variables[kind] not in ds:
                    raise KeyError(f"no variable {self.variables[kind]}")
                arr = ds[self.variables[kind]]
                return self._crop(kind, arr, y0, x0, nl, nc)
        return self._crop(kind, arr, y0, x0, nl, nc)

    def _crop(self, kind, arr, y0, x0, nl, nc) -> np.ndarray:
        n_channels = {"bt": len(BT_CHANNELS), "rf": len(RF_CHANNELS), "sza": None}[kind]
        if kind == "sza" and arr.ndim == 3 and arr.shape[0] == 1:
            arr = arr[0]
        expected_ndim = 2 if n_channels is None else 3
        if arr.ndim != expected_ndim or (n_channels is not None and arr.shape[0] != n_channels):
            raise ValueError(f"shape {tuple(arr.shape)}, expected ({n_channels or ''}y, x)")
        if y0 < 0 or x0 < 0 or y0 + nl > arr.shape[-2] or x0 + nc > arr.shape[-1]:
            raise ValueError(f"domain outside the array {tuple(arr.shape)}")
        return np.asarray(arr[..., y0:y0 + nl, x0:x0 + nc], dtype=np.float32)


def _channel_order(cfg: dict, key: str, wanted: tuple[str, ...]) -> list[int]:
    """Index in the file's channel axis of each output channel (a config error raises, naming the key)."""
    stored = [str(c).lower() for c in cfg.get(key, wanted)]
    if sorted(stored) != sorted(wanted):
        raise ValueError(f"inputs.calibrated.{key} must list exactly {list(wanted)}, got {stored}")
    return [stored.index(c) for c in wanted]


# --- writer ---------------------------------------------------------------------------------------------

def write_scene(out_path, key: str, slots: pd.DatetimeIndex, domain: Domain,
                read_slot: Callable[[pd.Timestamp], SlotData], extra_attrs: dict,
                compression_level: int = 1, progress: bool = True) -> dict:
    """Stream every slot's data from `read_slot` into a new scene file at `out_path` (atomically)."""
    out_path = Path(out_path)
    nl, nc = domain.shape
    lon, lat = grid.domain_lonlat(domain)
    times = pd.DatetimeIndex(slots)
    unix = (times - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    unix = np.asarray(unix, dtype=np.int64)
    statuses: list[str] = []
    sources: list[str] = []
    # the variables' CRCs (ta2d.checksums) are recorded once h5netcdf has closed the file, before the rename
    with atomic_netcdf(out_path) as tmp, h5netcdf.File(tmp, "w") as f:
        variables = _create_layout(f, domain, unix, lat, lon, compression_level)
        nan_slot = {"bt": np.full((len(BT_CHANNELS), nl, nc), np.nan, np.float32),
                    "rf": np.full((len(RF_CHANNELS), nl, nc), np.nan, np.float32)}
        for i, slot in enumerate(tqdm(times, desc=f"scene {key}", unit="slot", disable=not progress)):
            data = read_slot(slot)
            ok = data.status == "ok"
            variables["bt"][i] = data.bt if ok else nan_slot["bt"]
            variables["rf"][i] = data.rf if ok else nan_slot["rf"]
            sza = data.sza if ok and data.sza is not None else \
                solar_zenith_deg(unix[i] + SZA_SCAN_OFFSET_S, lat, lon)
            variables["sza"][i] = np.asarray(sza, dtype=np.float32)
            statuses.append(data.status)
            sources.extend(data.sources)
        variables["status"][:] = np.array(statuses, dtype=object)
        f.attrs.update(_global_attrs(key, domain, sources, extra_attrs))
    counts = Counter(statuses)
    return {
        "key": key, "path": str(out_path), "n_slots": len(statuses), "n_ok": counts.get("ok", 0),
        "bad_slots": {t.strftime(SLOT_FORMAT): s for t, s in zip(times, statuses, strict=True) if s != "ok"},
        "n_source_files": len(sources),
    }


def _create_layout(f: h5netcdf.File, domain: Domain, unix, lat, lon, level: int) -> dict:
    nl, nc = domain.shape
    f.dimensions = {"time": len(unix), "bt_channel": len(BT_CHANNELS), "rf_channel": len(RF_CHANNELS),
                    "line": nl, "column": nc}
    time = f.create_variable("time", ("time",), np.int64, data=unix)
    time.attrs.update({"units": "seconds since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian",
                       "long_name": "nominal slot start time, UTC"})
    str_dtype = h5py.string_dtype()
    f.create_variable("bt_channel", ("bt_channel",), str_dtype, data=np.array(BT_CHANNELS, dtype=object))
    f.create_variable("rf_channel", ("rf_channel",), str_dtype, data=np.array(RF_CHANNELS, dtype=object))
    f.create_variable("line", ("line",), np.int32, data=domain.lines).attrs.update(
        {"long_name": "GK-2A full-disk 2 km grid line, 1-based, grows southward"})
    f.create_variable("column", ("column",), np.int32, data=domain.columns).attrs.update(
        {"long_name": "GK-2A full-disk 2 km grid column, 1-based, grows eastward"})
    f.create_variable("lat", ("line", "column"), np.float32, data=lat.astype(np.float32)).attrs.update(
        {"units": "degrees_north", "long_name": "geodetic latitude of the pixel centre"})
    f.create_variable("lon", ("line", "column"), np.float32, data=lon.astype(np.float32)).attrs.update(
        {"units": "degrees_east", "long_name": "longitude of the pixel centre"})

    packed = {"compression": "gzip", "compression_opts": int(level)} if level > 0 else {}
    nan = np.float32(np.nan)
    bt = f.create_variable("bt", ("time", "bt_channel", "line", "column"), np.float32,
                           chunks=(1, len(BT_CHANNELS), nl, nc), fillvalue=nan, **packed)
    bt.attrs.update({"units": "K", "long_name": "brightness temperature"})
    rf = f.create_variable("rf", ("time", "rf_channel", "line", "column"), np.float32,
                           chunks=(1, len(RF_CHANNELS), nl, nc), fillvalue=nan, **packed)
    rf.attrs.update({"units": "1", "long_name": "TOA albedo fraction, not divided by cos(SZA)"})
    sza = f.create_variable("sza", ("time", "line", "column"), np.float32, chunks=(1, nl, nc),
                            fillvalue=nan, **packed)
    sza.attrs.update({"units": "degree", "long_name": "solar zenith angle",
                      "comment": f"geometric, at the nominal slot time + {SZA_SCAN_OFFSET_S:g} s (scan of Korea)"})
    status = f.create_variable("status", ("time",), str_dtype)
    status.attrs["long_name"] = "ok, or why the slot has no data (then bt and rf are NaN)"
    return {"bt": bt, "rf": rf, "sza": sza, "status": status}


def _global_attrs(key: str, domain: Domain, sources: list[str], extra: dict) -> dict:
    coff, cfac, size = grid.FD_GRIDS[2.0]
    return {
        "title": "ta2d scene: calibrated GK-2A AMI on the 2 km fixed grid",
        "period_key": key,
        "projection": "GEOS",
        "proj4": (f"+proj=geos +lon_0={grid.SUB_LON_DEG} +h={round((grid.SAT_RADIUS_KM - grid.EQ_RADIUS_KM) * 1000)}"
                  f" +a={grid.EQ_RADIUS_KM * 1000:.0f} +b={grid.POLAR_RADIUS_KM * 1000:.1f} +sweep=y +units=m"),
        "sub_lon": grid.SUB_LON_DEG,
        "perspective_height_m": (grid.SAT_RADIUS_KM - grid.EQ_RADIUS_KM) * 1000.0,
        "semi_major_axis_m": grid.EQ_RADIUS_KM * 1000.0,
        "semi_minor_axis_m": grid.POLAR_RADIUS_KM * 1000.0,
        "cfac": cfac, "lfac": cfac, "coff": coff, "loff": coff, "fd_size": size,
        "first_line": domain.first_line, "last_line": domain.last_line,
        "first_column": domain.first_column, "last_column": domain.last_column,
        "source_files": "\n".join(sources),
        "ta2d_version": ta2d.__version__,
        **extra,
    }


def _short(reason: str) -> str:
    """One line, no status separators, bounded length."""
    text = " ".join(reason.split()).replace(";", ",")
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."


def read_scene(path) -> xr.Dataset:
    """Open a scene lazily (values load on access, per slot chunk). Close it, or use it as a context manager."""
    return xr.open_dataset(path, engine="h5netcdf", cache=False)
