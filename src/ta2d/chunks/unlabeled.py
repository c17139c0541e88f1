"""build_unlabeled_chunk: tiles without labels from one period's scene, for self-supervised pretraining.

From every good slot (status ``ok``) of the scene, ``n_per_slot`` tile centres are drawn uniformly, without
replacement, from the domain's pixels whose tile lies inside the domain: land and sea, clear and cloudy
alike. The positions of a slot depend only on (seed, slot time), so a slot's tiles are the same whatever
else the period or the archive holds, and a rerun writes the same file.

The file follows the chunk contract (docs/architecture.md) minus the label fields (y, stn): x
(N, 19, P, P) in physical units, time7, loc (tile-centre lat, lon, 2000), landcover_onehot, elev (the
centre pixel's DEM), time, pixel; built by ta2d.chunks.patches.extract_patches / model_inputs exactly as a
labelled sample. Tiles with a non-finite value (error or off-disk pixels) or an invalid land-cover code
at the centre are skipped and counted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

from ta2d.chunks.contract import save_tensors
from ta2d.chunks.patches import _check_scene_covers, extract_patches, model_inputs
from ta2d.splits import assign_split_by_day, in_time_block
from ta2d.static import StaticFields, valid_landcover

log = logging.getLogger(__name__)

UNLABELED_KEYS = ("x", "time7", "loc", "landcover_onehot", "elev", "time", "pixel")


def slot_positions(seed: int, slot_time_s: int, n_lines: int, n_columns: int, n: int) -> np.ndarray:
    """Flat indices (row-major over the n_lines x n_columns centre grid) of one slot's tiles: seeded by
    (seed, slot time) alone, so independent of every other slot."""
    rng = np.random.default_rng([int(seed), int(slot_time_s)])
    return np.sort(rng.choice(n_lines * n_columns, size=min(n, n_lines * n_columns), replace=False))


def on_test_days(times_s: np.ndarray, split_cfg: Mapping) -> np.ndarray:
    """Whether each Unix time (s, UTC) falls on a test day: the split's day rule or the time block
    (ta2d.splits)."""
    days = pd.Series(pd.to_datetime(np.asarray(times_s, dtype=np.int64), unit="s", utc=True).strftime("%Y%m%d"))
    if days.empty:
        return np.zeros(0, dtype=bool)
    by_day = assign_split_by_day(days, split_cfg["fractions"], split_cfg.get("seed", 42),
                                 split_cfg.get("block_days", 20)).to_numpy(dtype=object)
    return (by_day == "test") | in_time_block(days.to_numpy(), split_cfg)


def build_unlabeled_chunk(scene_path: str | Path, static: StaticFields, patch_size: int, n_per_slot: int, seed: int,
                          out_path: str | Path, x_dtype: str = "float32", *,
                          split_cfg: Mapping | None = None) -> dict:
    """Write results/unlabeled/{key}.pt from one scene; returns counts.

    ``split_cfg`` (the config's ``split``): when given, the slots of test days are left out (pretrain's
    exclude_test_days), so the encoder never sees the imagery of the held-out days or the time block.
    """
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd (a centre pixel), got {patch_size}")
    half = patch_size // 2
    dom = static.domain
    c_lines = np.arange(dom.first_line + half, dom.last_line - half + 1)
    c_cols = np.arange(dom.first_column + half, dom.last_column - half + 1)
    if len(c_lines) == 0 or len(c_cols) == 0:
        raise ValueError(f"the domain {dom} is smaller than one {patch_size}x{patch_size} tile")
    with xr.open_dataset(scene_path, engine="h5netcdf") as scene:
        _check_scene_covers(scene, dom, scene_path)
        slot_times = scene["time"].values.astype("datetime64[s]").astype(np.int64)
        good = np.char.equal(scene["status"].values.astype(str), "ok")
        excluded = on_test_days(slot_times, split_cfg) & good if split_cfg is not None else np.zeros_like(good)
        use = slot_times[good & ~excluded]
        picks = [slot_positions(seed, t, len(c_lines), len(c_cols), n_per_slot) for t in use]
        times = np.repeat(use, [len(p) for p in picks]).astype(np.int64)
        flat = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        lines, cols = c_lines[flat // len(c_cols)].astype(np.int32), c_cols[flat % len(c_cols)].astype(np.int32)
        x = extract_patches(scene, static, times, lines, cols, patch_size)
        l0, k0 = int(scene["line"].values[0]), int(scene["column"].values[0])
        lat = scene["lat"].values[lines - l0, cols - k0].astype(np.float64)
        lon = scene["lon"].values[lines - l0, cols - k0].astype(np.float64)
    lc = static.landcover[lines - dom.first_line, cols - dom.first_column]
    finite = np.isfinite(x).reshape(len(x), x[0].size if len(x) else 1).all(axis=1)
    valid_lc = valid_landcover(lc)
    ok = finite & valid_lc
    xk = x if ok.all() else x[ok]
    del x
    tensors = {
        **model_inputs(xk, times[ok], lat[ok], lon[ok], lc[ok]),  # elev None: the centre pixel's DEM
        "time": torch.from_numpy(times[ok]),
        "pixel": torch.from_numpy(np.stack([lines[ok], cols[ok]], axis=1).astype(np.int32).reshape(-1, 2)),
    }
    tensors["x"] = tensors["x"].to(getattr(torch, x_dtype))
    save_tensors(tensors, out_path)
    counts = {
        "n_slots": len(slot_times),
        "n_good_slots": int(good.sum()),
        "n_test_day_slots_excluded": int(excluded.sum()),
        "n_drawn": len(times),
        "n_tiles": int(ok.sum()),
        "n_skipped_nonfinite": int((~finite).sum()),
        "n_skipped_invalid_landcover": int((finite & ~valid_lc).sum()),
    }
    log.info("%s: %s", Path(out_path).name, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts
