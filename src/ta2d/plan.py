"""What exists, from the config alone: periods, chunks, index periods, scenes and map units (the one planning module).

The Snakefile, the scripts and the library all ask this module which chunk files there are, so that
the DAG is static: whole UTC days go to one split by the day rule of :mod:`ta2d.splits`, and a
test chunk exists for every period when stations can be held out, so every chunk's name is known when
the Snakefile is parsed, before any label is read. A planned chunk whose labels are all missing or
rejected is still written, with zero rows (legal in the chunk contract; the loader skips it).

Index periods (``index.period``: M, a calendar month, or Y) group chunks for ``build_index``, which
collects their index rows and rejects. A chunk belongs to the index period of its first day inside the
configured period, so an ISO week that straddles two months belongs to exactly one of them.

The maps have periods of their own (``maps.days``: the training period's test days, all or a list;
``maps.period``: any UTC days), before, inside or after the training ``period``, which may be absent (a
mapping-only config). Scenes exist for every training period key and, for map days outside the training
period, per map day (``maps.unit: day``, key YYYYMMDD) or per slot (``maps.unit: slot``, key YYYYMMDDThhmm, the
near-real-time layout: one new slot reruns only its own jobs). :meth:`Plan.scene_keys`, :meth:`Plan.scene_bounds`
and :meth:`Plan.map_units` say which; a key's format names its frequency (:func:`ta2d.periods.key_freq`).

Imported at every parse (the Snakefile): pandas only, no torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from ta2d.periods import key_freq, period_days, period_key, period_keys, period_slots, slot_key
from ta2d.splits import SPLITS, assign_split_by_day, in_time_block, unit_hash

CHUNK_STEM = "{split}_chunk_{key}"  # the Snakemake pattern of a chunk's name, without suffix
_CHUNK_NAME = re.compile(r"(?P<split>train|val|test)_chunk_(?P<key>[^.]+)")
INDEX_FREQS = {"M": "%Y%m", "Y": "%Y"}
DAY_FORMAT = "%Y%m%d"  # map days and per-day keys: YYYYMMDD
MAP_UNITS = ("day", "slot")


def chunk_name(split: str, key: str, suffix: str = ".pt") -> str:
    """The file name of a (split, period key) chunk; label parts, rejects and index rows share its stem."""
    return CHUNK_STEM.format(split=split, key=key) + suffix


def parse_chunk_name(path: str | Path) -> tuple[str, str] | None:
    """(split, key) of a chunk, label part, rejects or index-rows file name; None for any other name."""
    m = _CHUNK_NAME.fullmatch(Path(path).name.split(".")[0])
    return (m["split"], m["key"]) if m else None


# a year-month (or year-month-day) in a background file's name: era5land_t2m_202404.nc, t2m_2024-04-01.nc
_FILE_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_]?(0[1-9]|1[0-2])(?:[-_]?(0[1-9]|[12]\d|3[01]))?(?!\d)")


def background_t2m_files(files, first_day: str | None = None, last_day: str | None = None) -> list[str]:
    """Of the t2m ``files`` (inputs.background.t2m expanded: ta2d.ingest.background.expand_paths), those that may
    hold the hours of the UTC days ``first_day``..``last_day`` (inclusive, YYYY-MM-DD or YYYYMMDD) and of the hour
    after them (a sample after the last whole hour of a day interpolates towards the next day's first).

    A file is chosen by the one year-month or year-month-day in its name (one file per month or day, as CDS
    downloads are usually split); when any name holds none or several, every file is returned: the names then
    say nothing of the hours inside, and a chunk or map job that opened too few would reject good samples. So a
    chunk job declares, and reads, only the files of its days where the names allow it: a changed file reruns
    the chunks of its month, not the archive's. No days: every file."""
    files = [str(f) for f in files]
    if first_day is None or last_day is None:
        return files
    first = pd.Timestamp(first_day)
    after = pd.Timestamp(last_day) + pd.Timedelta(days=1)  # the next day's first hour
    chosen = []
    for path in files:
        found = _FILE_DATE.findall(Path(path).name)
        if len(found) != 1:
            return files
        year, month, day = found[0]
        start = pd.Timestamp(int(year), int(month), int(day or 1))
        end = start + (pd.Timedelta(days=1) if day else pd.offsets.MonthBegin(1))  # exclusive
        if start <= after and first < end:
            chosen.append(path)
    return chosen


def slot_minutes(inputs: Mapping) -> list[int]:
    """Minutes past the hour of the scene slots, for either input kind (one place for the default)."""
    if inputs["kind"] == "calibrated":
        return list(inputs["calibrated"].get("slot_minutes", [0]))
    return list(inputs["l1b"]["slot_minutes"])


@dataclass(frozen=True)
class Plan:
    """The chunks of a configured period: (split, key) pairs, and which index period each belongs to; the scenes
    and map units of the training period and of the maps. ``start``/``end`` None: no training period."""

    start: str | None
    end: str | None
    freq: str  # chunking.period
    split_cfg: Mapping = field(compare=False)
    index_freq: str = "M"
    map_day_list: tuple[str, ...] = ()  # YYYYMMDD, sorted
    map_unit: str = "day"
    slot_minutes: tuple[int, ...] = (0,)

    @classmethod
    def from_config(cls, config: Mapping) -> Plan:
        period = config.get("period") or {}
        maps = config.get("maps", {})
        return cls(start=period.get("start"), end=period.get("end"),
                   freq=config["chunking"]["period"], split_cfg=config["split"],
                   index_freq=config.get("index", {}).get("period", "M"),
                   map_day_list=tuple(map_days(maps.get("days", []), period or None, config["split"],
                                               maps.get("max_days"), maps.get("period"))),
                   map_unit=maps.get("unit", "day"), slot_minutes=tuple(slot_minutes(config["inputs"])))

    @property
    def trains(self) -> bool:
        """Whether there is a training period (chunks, index, stats, runs); a mapping-only config has none."""
        return self.start is not None

    @cached_property
    def keys(self) -> list[str]:
        """The chunk period keys of the training period."""
        return period_keys(self.start, self.end, self.freq) if self.trains else []

    def days(self, key: str) -> pd.DatetimeIndex:
        """The UTC days of period `key` inside the configured period."""
        return period_days(key, self.freq, self.start, self.end)

    @cached_property
    def chunks(self) -> list[tuple[str, str]]:
        """Every planned (split, key), sorted by key then split."""
        if not self.trains:
            return []
        days = pd.date_range(self.start, self.end, freq="D")
        names = pd.Series(days.strftime("%Y%m%d"))
        by_day = assign_split_by_day(names, self.split_cfg["fractions"], self.split_cfg.get("seed", 42),
                                     self.split_cfg.get("block_days", 20)).to_numpy(dtype=object)
        by_day[in_time_block(names.to_numpy(), dict(self.split_cfg))] = "test"
        stations_held_out = bool(self.split_cfg.get("holdout_stations")) or \
            float(self.split_cfg.get("holdout_station_fraction", 0) or 0) > 0
        keys = self.key_of_days(days)
        planned = set(zip(by_day, keys, strict=True))
        if stations_held_out:  # a held-out station's samples are test samples on every day
            planned |= {("test", k) for k in keys}
        order = {s: i for i, s in enumerate(SPLITS)}
        return sorted(planned, key=lambda sk: (sk[1], order[sk[0]]))

    def key_of_days(self, days: pd.DatetimeIndex) -> list[str]:
        return list(period_key(days, self.freq))

    def chunk_names(self, splits: Iterable[str] = SPLITS, suffix: str = ".pt") -> list[str]:
        splits = set(splits)
        return [chunk_name(s, k, suffix) for s, k in self.chunks if s in splits]

    def stats_chunk_names(self, fraction: float = 1.0, seed: int = 0) -> list[str]:
        """The train chunks the normalisation statistics are computed from: each with probability `fraction`, by a
        hash of (seed, key), so the choice of a chunk never changes when others are added or rebuilt (all when
        fraction is 1, or when the hash picks none)."""
        train = [k for s, k in self.chunks if s == "train"]
        picked = [k for k in train if fraction >= 1 or unit_hash(f"{seed}:stats:{k}") < fraction] or train
        return [chunk_name("train", k) for k in picked]

    def index_key(self, key: str) -> str:
        """The index period (month YYYYMM, or year YYYY) that chunk period `key` belongs to."""
        return self._index_keys[key]

    @cached_property
    def _index_keys(self) -> dict[str, str]:
        fmt = INDEX_FREQS[self.index_freq]
        return {k: self.days(k)[0].strftime(fmt) for k in self.keys}

    @cached_property
    def index_keys(self) -> list[str]:
        return sorted(set(self._index_keys.values()))

    def chunks_of_index(self, index_key: str) -> list[tuple[str, str]]:
        return [(s, k) for s, k in self.chunks if self._index_keys[k] == index_key]


    # --- scenes and maps --------------------------------------------------------------------------------

    def in_training(self, day: str) -> bool:
        """Whether a day (YYYYMMDD) lies inside the training period."""
        return self.trains and pd.Timestamp(self.start) <= pd.Timestamp(day) <= pd.Timestamp(self.end)

    @cached_property
    def map_days(self) -> list[str]:
        return list(self.map_day_list)

    @cached_property
    def map_units(self) -> list[str]:
        """The keys of the map jobs: the map days (unit day) or every slot of them (unit slot, YYYYMMDDThhmm)."""
        if self.map_unit == "day":
            return self.map_days
        return [slot_key(t) for d in self.map_days for t in period_slots(d, "D", self.slot_minutes)]

    @cached_property
    def map_unit_set(self) -> frozenset:
        return frozenset(self.map_units)

    def unit_day(self, unit: str) -> str:
        return unit[:8]

    def slots_of_day(self, day: str) -> list[str]:
        """The slot keys (YYYYMMDDThhmm) of a day."""
        return [slot_key(t) for t in period_slots(day, "D", self.slot_minutes)]

    def map_scene_key(self, unit: str) -> str:
        """The scene a map unit reads: a training period's scene for a map day inside it (unit day), else the
        map unit's own (a day's, or a slot's)."""
        if self.map_unit == "day" and self.in_training(unit):
            return period_key([pd.Timestamp(unit, tz="UTC")], self.freq)[0]
        return unit

    @cached_property
    def scene_keys(self) -> list[str]:
        """Every scene: the training period's keys, then the map units' own scenes outside them."""
        extra = sorted({self.map_scene_key(u) for u in self.map_units} - set(self.keys))
        return [*self.keys, *extra]

    def scene_bounds(self, key: str) -> dict:
        """{start, end} (YYYY-MM-DD) of the days a scene holds: a training key's days inside the training period,
        a map day or slot key its day. What inventory and calibrate get as params: extending a period changes
        this only for the scenes at its ends."""
        freq = key_freq(key)
        if freq == self.freq and key in self._training_key_set:
            days = self.days(key)
        else:
            days = period_days(key, freq)
        return {"start": f"{days[0]:%Y-%m-%d}", "end": f"{days[-1]:%Y-%m-%d}"}

    def scene_slots(self, key: str) -> pd.DatetimeIndex:
        bounds = self.scene_bounds(key)
        return period_slots(key, key_freq(key), self.slot_minutes, bounds["start"], bounds["end"])

    @cached_property
    def _training_key_set(self) -> frozenset:
        return frozenset(self.keys)


def split_test_days(period: Mapping, split_cfg: Mapping) -> list[str]:
    """The period's test days (YYYYMMDD): random test days of the day rule and the days of the time block."""
    days = pd.Series(pd.date_range(period["start"], period["end"], freq="D").strftime(DAY_FORMAT))
    by_day = assign_split_by_day(days, split_cfg["fractions"], split_cfg.get("seed", 42),
                                 split_cfg.get("block_days", 20)).to_numpy()
    test = (by_day == "test") | in_time_block(days.to_numpy(), dict(split_cfg))
    return list(days[test])


def map_days(days, period: Mapping | None, split_cfg: Mapping, max_days: int | None = None,
             map_period: Mapping | None = None) -> list[str]:
    """The days to map (YYYYMMDD, sorted): ``maps.days`` ("test", "all" — of the training period, nothing without
    one — or a list of "YYYY-MM-DD" days, anywhere), at most ``max_days`` of them spread evenly (first and last
    included, so a sample of the test days reaches the time block at the end), and every day of ``maps.period``
    ({start, end}, any UTC days). Raises ValueError naming the key."""
    if days in ("test", "all"):
        if period is None:
            chosen = []
        elif days == "test":
            chosen = split_test_days(period, split_cfg)
        else:
            chosen = list(pd.date_range(period["start"], period["end"], freq="D").strftime(DAY_FORMAT))
    elif isinstance(days, str):
        raise ValueError(f"key maps.days: {days!r}: use 'test', 'all' or a list of YYYY-MM-DD days")
    else:
        chosen = sorted({_day(text, "maps.days") for text in days})
    if max_days is not None and len(chosen) > max_days:
        chosen = _spread(chosen, max_days)
    if map_period:
        start, end = _day(map_period["start"], "maps.period.start"), _day(map_period["end"], "maps.period.end")
        if start > end:
            raise ValueError(f"key maps.period: start {map_period['start']} is after end {map_period['end']}")
        chosen = sorted(set(chosen) | set(pd.date_range(start, end, freq="D").strftime(DAY_FORMAT)))
    return chosen


def _day(text, key: str) -> str:
    try:
        return pd.Timestamp(str(text)).strftime(DAY_FORMAT)
    except ValueError as err:
        raise ValueError(f"key {key}: {text!r} is not a day ({err})") from err


def _spread(days: Sequence[str], n: int) -> list[str]:
    if n <= 1:
        return list(days[:n])
    picks = sorted({round(i * (len(days) - 1) / (n - 1)) for i in range(n)})
    return [days[i] for i in picks]
