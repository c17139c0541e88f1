"""Solar zenith angle, low-precision Meeus/Almanac series (max error ~0.02 deg over Korea).

Broadcasts over times (Unix seconds UTC) and lat/lon (degrees); geometric zenith, no refraction,
which is what satellite work wants (docs/gk2a-format.md#solar-zenith-angle).
"""

from __future__ import annotations

import numpy as np

J2000_UNIX = 946728000.0  # 2000-01-01 12:00:00 UTC


def solar_zenith_deg(unix_seconds, lat_deg, lon_deg) -> np.ndarray:
    days = (np.asarray(unix_seconds, dtype=np.float64) - J2000_UNIX) / 86400.0
    t = days / 36525.0  # Julian centuries since J2000
    mean_anomaly = np.radians(357.52910 + 35999.05030 * t - 0.0001559 * t**2 - 0.00000048 * t**3)
    mean_longitude = np.radians(280.46645 + 36000.76983 * t + 0.0003032 * t**2)
    centre = np.radians(
        (1.914600 - 0.004817 * t - 0.000014 * t**2) * np.sin(mean_anomaly)
        + (0.019993 - 0.000101 * t) * np.sin(2 * mean_anomaly)
        + 0.000290 * np.sin(3 * mean_anomaly)
    )
    ecliptic_lon = mean_longitude + centre
    obliquity_arcsec = 21.448 - (46.8150 * t + 0.00059 * t**2 - 0.001813 * t**3)
    obliquity = np.radians(23.0 + 26.0 / 60.0 + obliquity_arcsec / 3600.0)
    x = np.cos(ecliptic_lon)
    y = np.cos(obliquity) * np.sin(ecliptic_lon)
    z = np.sin(obliquity) * np.sin(ecliptic_lon)
    r = np.sqrt(1.0 - z * z)
    declination = np.arctan2(z, r)
    right_ascension = 2.0 * np.arctan2(y, x + r)
    gmst_sec = 67310.54841 + t * (876600.0 * 3600.0 + 8640184.812866 + t * (0.093104 - t * 6.2e-6))
    gmst = np.radians(gmst_sec / 240.0) % (2.0 * np.pi)
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    hour_angle = gmst + np.radians(np.asarray(lon_deg, dtype=np.float64)) - right_ascension
    cos_zen = np.sin(lat) * np.sin(declination) + np.cos(lat) * np.cos(declination) * np.cos(hour_angle)
    return np.degrees(np.arccos(np.clip(cos_zen, -1.0, 1.0)))
