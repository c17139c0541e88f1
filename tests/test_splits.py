"""Splits and validation schemes (ta2d.splits) on hand-made (station, day) arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ta2d.splits import SCHEMES, assign_split_by_day, assign_splits, held_out_station, scheme_of

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _grid(stations, first_day, n_days):
    days = pd.date_range(first_day, periods=n_days).strftime("%Y%m%d").to_numpy()
    s, d = np.meshgrid(np.asarray(stations), days)
    return s.ravel(), d.ravel()


def _expected(stn, days, by_day: dict, held: set, block_start: str | None):
    """The scheme rule written out sample by sample (day rule given by by_day)."""
    split, scheme = [], []
    for s, d in zip(stn, days, strict=True):
        block = block_start is not None and d >= block_start.replace("-", "")
        day_test = block or by_day[d] == "test"
        if int(s) in held:
            split.append("test")
            scheme.append("held_out_both" if day_test else "held_out_stations")
        elif block:
            split.append("test")
            scheme.append("time_block")
        elif day_test:
            split.append("test")
            scheme.append("held_out_days")
        else:
            split.append(by_day[d])
            scheme.append("")
    return split, scheme


def test_schemes_follow_the_rule():
    stn, days = _grid(range(1, 11), "2024-01-01", 60)
    cfg = {"fractions": FRACTIONS, "seed": 5, "block_days": 20, "holdout_stations": [3, 7],
           "holdout_station_fraction": 0, "time_block_start": "2024-02-15"}
    unique_days = pd.unique(days)
    by_day = dict(zip(unique_days, assign_split_by_day(pd.Series(unique_days), FRACTIONS, 5, 20), strict=True))
    split, scheme = _expected(stn, days, by_day, {3, 7}, "2024-02-15")
    got = assign_splits(stn, days, cfg)
    assert got["split"].tolist() == split
    assert got["scheme"].tolist() == scheme
    assert set(got["scheme"]) == {*SCHEMES, ""}  # every scheme occurs on this grid
    assert ((got["split"] == "test") == (got["scheme"] != "")).all()
    # the same from Unix times (any hour of the UTC day)
    t = (pd.to_datetime(days, format="%Y%m%d") - pd.Timestamp(0)) // pd.Timedelta(seconds=1) + 23 * 3600 + 59
    assert scheme_of(stn, t, cfg).tolist() == scheme


def test_without_holdouts_or_block_the_day_rule_is_unchanged():
    stn, days = _grid([90, 91], "2024-03-01", 40)
    got = assign_splits(stn, days, {"fractions": FRACTIONS, "seed": 42})
    want = assign_split_by_day(pd.Series(days), FRACTIONS, 42, 20)
    assert got["split"].tolist() == want.tolist()
    assert set(got.loc[got["split"] == "test", "scheme"]) == {"held_out_days"}


def test_schemes_are_stable_when_days_and_stations_are_added():
    cfg = {"fractions": FRACTIONS, "seed": 11, "holdout_stations": [104], "holdout_station_fraction": 0.3,
           "time_block_start": "2024-05-20"}
    stn, days = _grid(range(100, 120), "2024-04-10", 45)
    small = assign_splits(stn, days, cfg)
    stn2, days2 = _grid(range(80, 160), "2024-01-01", 200)  # more days before and after, more stations
    big = assign_splits(stn2, days2, cfg).assign(stn=stn2, day=days2).set_index(["stn", "day"])
    again = big.loc[list(zip(stn, days, strict=True))]
    assert again["split"].tolist() == small["split"].tolist()
    assert again["scheme"].tolist() == small["scheme"].tolist()


def test_time_block_sends_every_later_day_to_test():
    stn, days = _grid(range(1, 6), "2024-04-01", 30)
    base = {"fractions": FRACTIONS, "seed": 3}
    plain = assign_splits(stn, days, base)
    block = assign_splits(stn, days, {**base, "time_block_start": "2024-04-21"})
    late = days >= "20240421"
    assert (block.loc[late, "split"] == "test").all() and (block.loc[late, "scheme"] == "time_block").all()
    assert block.loc[~late].equals(plain.loc[~late])
    assert assign_splits(stn, days, {**base, "time_block_start": None}).equals(plain)
    with pytest.raises(ValueError, match="time_block_start"):
        assign_splits(stn, days, {**base, "time_block_start": "2024-13-01"})


def test_holdout_fraction_is_about_right_and_deterministic():
    ids = np.arange(1, 5001)
    cfg = {"seed": 42, "holdout_station_fraction": 0.15}
    held = held_out_station(ids, cfg)
    assert abs(held.mean() - 0.15) < 0.02
    assert np.array_equal(held, held_out_station(ids, dict(cfg)))
    assert np.array_equal(held[::-1], held_out_station(ids[::-1], cfg))  # per station, not per position
    assert not np.array_equal(held, held_out_station(ids, {**cfg, "seed": 43}))
    assert not held_out_station(ids, {"seed": 42}).any()
    assert (held <= held_out_station(ids, {**cfg, "holdout_station_fraction": 0.3})).all()  # nested
    explicit = held_out_station(ids, {**cfg, "holdout_stations": [1, 2, 3]})
    assert explicit[:3].all() and np.array_equal(explicit[3:], held[3:])
