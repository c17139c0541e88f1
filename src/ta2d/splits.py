"""Splits and validation schemes: the one rule that build_index (which sample goes to which split) and
evaluate (which validation scheme a test sample belongs to) both use.

Everything follows from the ``split`` config and a sample's (station id, UTC day) alone, never from
which other data exist, so adding days or stations moves no existing sample:

* the day rule (:func:`assign_split_by_day`) sends each UTC day to train, val or test;
* ``split.time_block_start`` ("YYYY-MM-DD" or null): every day on or after it is a test day (a held-out
  time block at the end of the period);
* a station is held out when it is listed in ``split.holdout_stations`` or when a hash of
  (seed, station id) falls below ``split.holdout_station_fraction``; all its samples go to test.

A sample is a test sample when its station is held out or its day is a test day. Its scheme:

==================  ==================================================  ==========================
scheme              samples                                             day by the day rule
==================  ==================================================  ==========================
held_out_days       stations seen in training, random test days         test, before the block
held_out_stations   held-out stations, days that are train/val days     train or val, before it
time_block          stations seen in training, days of the time block   any, in the block
held_out_both       held-out stations on test days or time-block days   test, or in the block
==================  ==================================================  ==========================

Train and val samples have the scheme "" (:data:`NOT_TEST`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
SCHEMES = ("held_out_days", "held_out_stations", "time_block", "held_out_both")
HEADLINE_SCHEMES = SCHEMES[:3]  # the three schemes of the literature; held_out_both is reported too
NOT_TEST = ""


def assign_split_by_day(days: pd.Series, fractions: dict, seed: int, block_days: int = 20) -> pd.Series:
    """Split of each UTC day (YYYYMMDD strings), stable when other days are added or removed.

    The calendar is cut into fixed blocks of `block_days` days (counted from 1970-01-01); inside a
    block, days are ranked by a hash of (seed, day) and the ranks are cut at the cumulative
    fractions. A day's split therefore depends only on its block's calendar days, never on which
    days have data, and every full block holds the configured fractions exactly (a plain per-day
    hash would leave e.g. 1 test day of 21).
    """
    edges = np.cumsum([fractions[s] for s in SPLITS])
    unique_days = pd.unique(days)
    day_number = (pd.to_datetime(unique_days, format="%Y%m%d") - pd.Timestamp("1970-01-01")).days.to_numpy()
    chosen = {}
    for block in np.unique(day_number // block_days):
        calendar = np.arange(block * block_days, (block + 1) * block_days)
        hashes = [unit_hash(f"{seed}:{pd.Timestamp(0) + pd.Timedelta(days=int(d)):%Y%m%d}") for d in calendar]
        rank = np.empty(block_days, dtype=np.int64)
        rank[np.argsort(hashes, kind="stable")] = np.arange(block_days)
        position = (rank + 0.5) / block_days
        which = np.minimum(np.searchsorted(edges, position, side="right"), len(SPLITS) - 1)
        split_of = [SPLITS[i] for i in which]
        chosen.update({int(d): split_of[i] for i, d in enumerate(calendar)})
    return days.map(dict(zip(unique_days, (chosen[int(n)] for n in day_number), strict=True)))


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from text (blake2b): the project's one seeded choice by name."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def utc_day(time_s) -> pd.Series:
    """UTC day (YYYYMMDD strings) of Unix times in seconds."""
    return pd.Series(pd.to_datetime(np.asarray(time_s, dtype=np.int64), unit="s", utc=True).strftime("%Y%m%d"))


def held_out_station(stn, split_cfg: dict) -> np.ndarray:
    """Whether each station id is held out: listed in holdout_stations, or hash(seed, id) < holdout_station_fraction."""
    stn = np.asarray(stn, dtype=np.int64)
    fraction = float(split_cfg.get("holdout_station_fraction", 0) or 0)
    seed = split_cfg.get("seed", 42)
    unique = np.unique(stn)
    by_hash = {int(s): unit_hash(f"{seed}:stn:{int(s)}") < fraction for s in unique}
    hashed = np.array([by_hash[int(s)] for s in stn], dtype=bool)
    return np.isin(stn, np.asarray(split_cfg.get("holdout_stations", []) or [], dtype=np.int64)) | hashed


def training_station(stn, fraction: float, seed: int) -> np.ndarray:
    """Whether each station id is among the ``fraction`` of training stations a run keeps (run key train_stations):
    hash(seed, id) < fraction, so the stations of a smaller fraction are a subset of a larger one's."""
    stn = np.asarray(stn, dtype=np.int64)
    if fraction >= 1:
        return np.ones(stn.shape, dtype=bool)
    keep = {int(s): unit_hash(f"{seed}:train_stn:{int(s)}") < fraction for s in np.unique(stn)}
    return np.array([keep[int(s)] for s in stn], dtype=bool)


def in_time_block(days, split_cfg: dict) -> np.ndarray:
    """Whether each UTC day (YYYYMMDD) is on or after split.time_block_start (all False when it is null)."""
    days = np.asarray(days, dtype=str)
    start = split_cfg.get("time_block_start")
    if not start:
        return np.zeros(len(days), dtype=bool)
    try:
        start = pd.to_datetime(str(start), format="%Y-%m-%d").strftime("%Y%m%d")
    except ValueError as err:
        raise ValueError(f"split.time_block_start: {start!r} is not a YYYY-MM-DD date") from err
    return days >= start


def assign_splits(stn, days, split_cfg: dict) -> pd.DataFrame:
    """Split and validation scheme of each sample (station id, UTC day YYYYMMDD): columns split, scheme.

    The one rule of this module's docstring; scheme is NOT_TEST ("") for train and val samples.
    """
    stn = np.asarray(stn, dtype=np.int64)
    days = pd.Series(np.asarray(days, dtype=str))
    if len(stn) != len(days):
        raise ValueError(f"assign_splits: {len(stn)} station ids but {len(days)} days")
    if len(days) == 0:
        return pd.DataFrame({"split": pd.Series(dtype=object), "scheme": pd.Series(dtype=object)})
    by_day = assign_split_by_day(days, split_cfg["fractions"], split_cfg.get("seed", 42),
                                 split_cfg.get("block_days", 20)).to_numpy(dtype=object)
    held = held_out_station(stn, split_cfg)
    block = in_time_block(days, split_cfg)
    test_day = block | (by_day == "test")
    split = np.where(held | test_day, "test", by_day).astype(object)
    scheme = np.select(
        [held & test_day, held, block, test_day],
        ["held_out_both", "held_out_stations", "time_block", "held_out_days"],
        default=NOT_TEST,
    ).astype(object)
    return pd.DataFrame({"split": split, "scheme": scheme})


def scheme_of(stn, time_s, split_cfg: dict) -> np.ndarray:
    """Validation scheme of each sample from its station id and Unix time (s, UTC); "" for non-test samples."""
    return assign_splits(stn, utc_day(time_s), split_cfg)["scheme"].to_numpy(dtype=object)
