"""What exists, from the config alone: periods, chunks and index periods (the one planning module).

The Snakefile, the scripts and the library all ask this module which chunk files there are, so that
the DAG is static: whole UTC days go to one split by the day rule of :mod:`ta2d.index.schemes`, and a
test chunk exists for every period when stations can be held out, so every chunk's name is known when
the Snakefile is parsed, before any label is read. A planned chunk whose labels are all missing or
rejected is still written, with zero rows (legal in the chunk contract; the loader skips it).

Index periods (``index.period``: M, a calendar month, or Y) group chunks for ``build_index``, which
collects their index rows and rejects. A chunk belongs to the index period of its first day inside the
configured period, so an ISO week that straddles two months belongs to exactly one of them.

Imported at every parse (the Snakefile): pandas only, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from ta2d.chunks.contract import chunk_name
from ta2d.index.schemes import assign_split_by_day, in_time_block, unit_hash
from ta2d.periods import period_days, period_keys

SPLITS = ("train", "val", "test")
INDEX_FREQS = {"M": "%Y%m", "Y": "%Y"}


@dataclass(frozen=True)
class Plan:
    """The chunks of a configured period: (split, key) pairs, and which index period each belongs to."""

    start: str
    end: str
    freq: str  # chunking.period
    split_cfg: Mapping = field(compare=False)
    index_freq: str = "M"

    @classmethod
    def from_config(cls, config: Mapping) -> Plan:
        return cls(start=config["period"]["start"], end=config["period"]["end"],
                   freq=config["chunking"]["period"], split_cfg=config["split"],
                   index_freq=config.get("index", {}).get("period", "M"))

    @cached_property
    def keys(self) -> list[str]:
        return period_keys(self.start, self.end, self.freq)

    def days(self, key: str) -> pd.DatetimeIndex:
        """The UTC days of period `key` inside the configured period."""
        return period_days(key, self.freq, self.start, self.end)

    @cached_property
    def chunks(self) -> list[tuple[str, str]]:
        """Every planned (split, key), sorted by key then split."""
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
        from ta2d.periods import period_key

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

