"""Per-sample time features (the seed's time7), from UTC observation times."""

from __future__ import annotations

import numpy as np
import pandas as pd


def time7_features(unix_seconds: np.ndarray, sza_center_deg: np.ndarray) -> np.ndarray:
    """(N, 7) float32: doy cos/sin, hour cos/sin (UTC, fractional), month cos/sin, centre SZA (deg)."""
    ts = pd.to_datetime(np.asarray(unix_seconds, dtype=np.int64), unit="s", utc=True)
    days_in_year = np.where(ts.is_leap_year, 366.0, 365.0)
    doy = 2 * np.pi * (ts.day_of_year.to_numpy() - 1) / days_in_year
    hour = 2 * np.pi * (ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0) / 24.0
    month = 2 * np.pi * (ts.month.to_numpy() - 1) / 12.0
    out = np.stack([np.cos(doy), np.sin(doy), np.cos(hour), np.sin(hour), np.cos(month), np.sin(month),
                    np.asarray(sza_center_deg, dtype=np.float64)], axis=1)
    return out.astype(np.float32)
