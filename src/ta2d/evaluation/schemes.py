"""The validation schemes as the evaluation scores them: the samples each scheme's test set holds, their titles,
and the scheme "beats every baseline" is judged on.

Which scheme a sample belongs to is decided by :mod:`ta2d.splits` (held_out_days, held_out_stations,
time_block, held_out_both, from the split config); "all" adds every test sample.
"""

from __future__ import annotations

import pandas as pd

from ta2d.splits import SCHEMES

SCHEME_ALL = "all"  # every test sample
SCHEME_ORDER = (*SCHEMES, SCHEME_ALL)
SCHEME_TITLES = {
    "held_out_days": "held-out days",
    "held_out_stations": "held-out stations",
    "time_block": "time block",
    "held_out_both": "held-out stations × test days",
    SCHEME_ALL: "all test samples",
}
SCHEME_NOTES = {
    "held_out_days": "random test days, stations seen in training, outside the time block",
    "held_out_stations": "held-out stations on days that are train/val days by the day rule, outside the time block",
    "time_block": "days on or after split.time_block_start, stations seen in training",
    "held_out_both": "held-out stations on test days or time-block days (not a headline scheme)",
    SCHEME_ALL: "every test sample",
}
JUDGE_SCHEME = "held_out_days"  # "beats every baseline" is judged here


def scheme_subsets(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Scheme name -> its samples: every scheme of SCHEMES when df has a scheme column, and "all"."""
    out = {s: df[df["scheme"] == s] for s in SCHEMES} if "scheme" in df else {}
    out[SCHEME_ALL] = df
    return out


def judge_scheme(table: pd.DataFrame) -> str:
    """The scheme "beats every baseline" is judged on: JUDGE_SCHEME when it has samples, else "all"."""
    sub = table[table["scheme"] == JUDGE_SCHEME]
    return JUDGE_SCHEME if len(sub) and (sub["n"] > 0).all() else SCHEME_ALL
