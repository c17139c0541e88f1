"""Chunk periods: the stable keys that name scenes and chunks.

A key depends only on the calendar (UTC), never on how many rows exist, so adding a month of data
adds new keys and leaves every existing chunk untouched (docs/architecture.md#the-dag).
  D -> 20240701      W -> 2024W27 (ISO week)      M -> 202407      S -> 20240701T0300 (one slot)

S is not a chunking period: it is the unit of the near-real-time maps (``maps.unit: slot``), whose scenes hold
one slot each. A key's format names its frequency (:func:`key_freq`).
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import pandas as pd

FREQS = ("D", "W", "M")  # chunking.period
_KEY_RE = {"D": re.compile(r"^\d{8}$"), "W": re.compile(r"^\d{4}W\d{2}$"), "M": re.compile(r"^\d{6}$"),
           "S": re.compile(r"^\d{8}T\d{4}$")}
SLOT_KEY_FORMAT = "%Y%m%dT%H%M"


def key_freq(key: str) -> str:
    """The frequency whose key format `key` has (D, W, M or S); ValueError for anything else."""
    for freq, pattern in _KEY_RE.items():
        if pattern.match(key):
            return freq
    raise ValueError(f"{key!r} is not a period key (YYYYMMDD, YYYYWww, YYYYMM or YYYYMMDDThhmm)")


def slot_key(slot) -> str:
    """The S key of a slot time (UTC)."""
    return pd.Timestamp(slot).strftime(SLOT_KEY_FORMAT)


def period_key(times_utc, freq: str):
    """Period key(s) of UTC timestamps (Unix seconds or datetimes)."""
    ts = _to_utc_index(times_utc)
    if freq == "D":
        return ts.strftime("%Y%m%d")
    if freq == "W":
        # one ISO calendar lookup per distinct day, not per row: routing a month of labels called this for
        # 446k rows of 31 days
        inverse, unique = pd.factorize(ts.normalize())
        iso = pd.DatetimeIndex(unique).isocalendar()
        keys = np.array([f"{y:04d}W{w:02d}" for y, w in zip(iso["year"], iso["week"], strict=True)], dtype=object)
        return pd.Index(keys[inverse])
    if freq == "M":
        return ts.strftime("%Y%m")
    if freq == "S":
        return ts.strftime(SLOT_KEY_FORMAT)
    raise ValueError(f"chunking.period must be one of {FREQS}, got {freq!r}")


def period_keys(start: str, end: str, freq: str) -> list[str]:
    """Keys of every period touching the UTC days start..end (inclusive), sorted."""
    days = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D", tz="UTC")
    if len(days) == 0:
        raise ValueError(f"period: start {start} is after end {end}")
    return sorted(set(period_key(days, freq)))


def period_days(key: str, freq: str, start: str | None = None, end: str | None = None) -> pd.DatetimeIndex:
    """The UTC days (midnights) of a period, clipped to [start, end] when given."""
    return _period_days(key, freq, start, end)


@lru_cache(maxsize=65536)  # called per period and rule at every parse (inventories, period_bounds); Index is immutable
def _period_days(key: str, freq: str, start, end) -> pd.DatetimeIndex:
    if not _KEY_RE[freq].match(key):
        raise ValueError(f"{key!r} is not a chunk key for chunking.period={freq}")
    if freq == "D":
        days = pd.DatetimeIndex([pd.Timestamp(key, tz="UTC")])
    elif freq == "S":
        days = pd.DatetimeIndex([pd.Timestamp(key[:8], tz="UTC")])
    elif freq == "W":
        first = pd.Timestamp.fromisocalendar(int(key[:4]), int(key[5:]), 1).tz_localize("UTC")
        days = pd.date_range(first, periods=7, freq="D")
    else:
        first = pd.Timestamp(f"{key[:4]}-{key[4:]}-01", tz="UTC")
        days = pd.date_range(first, first + pd.offsets.MonthEnd(0), freq="D")
    if start is not None:
        days = days[days >= pd.Timestamp(start, tz="UTC")]
    if end is not None:
        days = days[days <= pd.Timestamp(end, tz="UTC")]
    return days


def period_slots(key: str, freq: str, slot_minutes, start=None, end=None) -> pd.DatetimeIndex:
    """Nominal slot times (UTC) of a period: every hour of every day at the given minutes (an S key: its slot)."""
    if freq == "S":
        slot = pd.DatetimeIndex([pd.Timestamp(key, tz="UTC")])
        return slot if len(period_days(key, freq, start, end)) else pd.DatetimeIndex([])
    days = period_days(key, freq, start, end)
    if len(days) == 0:
        return pd.DatetimeIndex([])
    # numpy arithmetic: a pandas Timestamp + Timedelta per slot was the slowest step of the parse-time refresh
    offsets = np.array([h * 60 + int(m) for h in range(24) for m in sorted(slot_minutes)], dtype="timedelta64[m]")
    return pd.DatetimeIndex((days.tz_convert(None).to_numpy()[:, None] + offsets[None, :]).ravel()).tz_localize("UTC")


def _to_utc_index(times) -> pd.DatetimeIndex:
    arr = np.atleast_1d(np.asarray(times))
    if np.issubdtype(arr.dtype, np.number):
        return pd.to_datetime(arr.astype("int64"), unit="s", utc=True)
    idx = pd.DatetimeIndex(pd.to_datetime(arr, utc=True))
    return idx
