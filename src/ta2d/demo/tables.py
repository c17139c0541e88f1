"""Station metadata and hourly TA labels in the KMA data-portal CSV layouts (CP949, KST times).

Stations sit on land pixels of the domain, >= half a patch (and >= 4 px) from its edge. Their
elevation is the pixel DEM plus N(0, station_elev_sigma_m); a label is
    TA_label = TA_true(pixel, t) - 6.5 K/km * (station elevation - pixel DEM)
               + siting error (per station) + shared error (a field neighbours share) + N(0, noise_sigma_k),
rounded to 0.1 deg C as the portal prints it. Every term is written to truth/labels_truth.csv.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.demo.static import FILL, WATER, StaticFields, Window, static_fields
from ta2d.demo.truth import LAPSE_K_PER_M, TruthModel
from ta2d.grid import Domain, linecol_to_lonlat, lonlat_to_linecol

KST = dt.timezone(dt.timedelta(hours=9))
ENCODING = "cp949"
META_HEADER = [
    "지점",
    "시작일",
    "종료일",
    "지점명",
    "지점주소",
    "관리관서",
    "위도",
    "경도",
    "노장해발고도(m)",
    "기온계(관측장비지상높이(m))",
]
LABEL_HEADER = ["지점", "지점명", "일시", "기온(°C)", "기온 QC플래그"]
_FIRST = "가강고광금남대동무문보부산서성순안양영울원의인장정제진청춘충태통평포하해홍화"
_SECOND = "산천주원양성포진해평안릉덕동수창흥령계곡"
_OFFICES = [
    "서울기상청",
    "부산기상청",
    "광주기상청",
    "대전기상청",
    "대구기상청",
    "강원기상청",
    "제주기상청",
    "청주기상지청",
    "전주기상지청",
]


@dataclass
class StationPeriod:
    """One metadata row: where the station stood from `start` to `end` (KST dates, inclusive)."""

    start: dt.date
    end: dt.date | None  # None = still there (empty 종료일)
    line: int  # FD 2 km pixel, 1-based
    column: int
    lat: float  # rounded to 4 decimals, inside the pixel
    lon: float
    elev_m: float  # rounded to 0.1 m


@dataclass
class Station:
    stn: int
    name: str
    address: str
    office: str
    periods: list[StationPeriod] = field(default_factory=list)
    role: str = "normal"  # normal | relocated | out_of_domain | invalid_landcover

    def period_on(self, kst_date: dt.date) -> StationPeriod:
        for p in self.periods:
            if p.start <= kst_date and (p.end is None or kst_date <= p.end):
                return p
        raise ValueError(f"station {self.stn} has no metadata row for {kst_date}")


def patch_half(config: dict) -> int:
    """Stations keep at least this many pixels to the domain edge (half a patch, never < 4)."""
    return max(4, int(config.get("patch", {}).get("size", 9)) // 2)


def site_in_pixel(line: int, column: int, elev_m: float, start, end, rng) -> StationPeriod:
    """A station position somewhere inside the pixel (<= 0.3 px from its centre)."""
    for jitter in (0.3, 0.0):
        dl, dc = rng.uniform(-jitter, jitter, size=2) if jitter else (0.0, 0.0)
        lon, lat = linecol_to_lonlat(line + dl, column + dc)
        lon, lat = round(float(lon), 4), round(float(lat), 4)
        back_line, back_col = lonlat_to_linecol(lon, lat)
        if int(np.rint(back_line)) == line and int(np.rint(back_col)) == column:
            break
    return StationPeriod(start, end, int(line), int(column), lat, lon, round(float(elev_m), 1))


def station_candidates(static: StaticFields, window: Window, domain: Domain, margin: int) -> np.ndarray:
    """Flat window indices of pixels a station may occupy: valid land inside the domain margin."""
    inside = domain.contains(static.line, static.column, margin)
    ok = inside & static.land & (static.landcover != WATER) & (static.landcover != FILL)
    return np.flatnonzero(ok)


def place_stations(
    static: StaticFields,
    window: Window,
    domain: Domain,
    n: int,
    margin: int,
    elev_sigma_m: float,
    rng: np.random.Generator,
    n_extra_ids: int = 1,
) -> list[Station]:
    """n stations spread over the land of the domain, lowlands favoured (as the real ASOS network)."""
    cands = station_candidates(static, window, domain, margin)
    if len(cands) < n:
        raise ValueError(
            f"demo: only {len(cands)} land pixels at >= {margin} px inside the domain for "
            f"{n} stations; pick a domain over the Korean peninsula (docs/demo.md) or fewer stations"
        )
    weights = np.exp(-static.dem.flat[cands] / 700.0)
    order = rng.choice(cands, size=len(cands), replace=False, p=weights / weights.sum())
    chosen: list[int] = []
    for spacing in (6, 4, 2, 1):  # Chebyshev distance in px; relaxed when the domain is small
        for idx in order:
            if len(chosen) == n:
                break
            r, c = divmod(int(idx), window.n_columns)
            if all(
                max(abs(r - r2), abs(c - c2)) >= spacing
                for r2, c2 in (divmod(i, window.n_columns) for i in chosen)
            ):
                chosen.append(int(idx))
    pool = np.arange(90, max(301, 90 + 2 * (n + n_extra_ids)))
    ids = np.sort(rng.choice(pool, size=n + n_extra_ids, replace=False))
    names = [a + b for a in _FIRST for b in _SECOND]
    name_pick = rng.choice(len(names), size=n + n_extra_ids, replace=False)
    stations = []
    for k, idx in enumerate(chosen):
        r, c = divmod(idx, window.n_columns)
        elev = max(0.0, float(static.dem[r, c]) + rng.normal(0.0, elev_sigma_m))
        since = dt.date(int(rng.integers(1960, 2015)), int(rng.integers(1, 13)), 1)
        stations.append(make_station(int(ids[k]), names[name_pick[k]], rng))
        stations[-1].periods.append(
            site_in_pixel(int(static.line[r, c]), int(static.column[r, c]), elev, since, None, rng)
        )
    # Spare ids/names for stations the defects add (the out-of-domain one).
    stations_spare = [make_station(int(ids[k]), names[name_pick[k]], rng) for k in range(n, n + n_extra_ids)]
    return stations + stations_spare


def make_station(stn: int, name: str, rng) -> Station:
    address = f"가상특별자치도 {name}시 관측로 {int(rng.integers(1, 300))}"
    return Station(stn, name, address, _OFFICES[int(rng.integers(len(_OFFICES)))])


def write_stations(path: Path, stations: list[Station]) -> None:
    """META CSV: one row per station period (a relocated station has two consecutive rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=ENCODING, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(META_HEADER)
        for s in sorted(stations, key=lambda s: s.stn):
            for p in s.periods:
                w.writerow(
                    [
                        s.stn,
                        p.start.isoformat(),
                        "" if p.end is None else p.end.isoformat(),
                        s.name,
                        s.address,
                        s.office,
                        f"{p.lat:.4f}",
                        f"{p.lon:.4f}",
                        f"{p.elev_m:.1f}",
                        "1.5",
                    ]
                )


def station_points(stations: list[Station], static: StaticFields, window: Window, seed: int):
    """Static attributes at every station period's pixel, as one 1-D StaticFields (+ its keys)."""
    keys, parts = [], []
    for s in stations:
        for k, p in enumerate(s.periods):
            r, c = window.index(p.line, p.column)
            if 0 <= r < window.n_lines and 0 <= c < window.n_columns:
                pt = static.take(np.array([r]), np.array([c]))
            else:  # outside the files' window: the same absolute-coordinate model, on a 1x1 window
                pt = static_fields(Window(p.line, p.column, 1, 1), seed).take(np.array([0]), np.array([0]))
            keys.append((s.stn, k))
            parts.append(pt)
    pts = StaticFields(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in StaticFields.__dataclass_fields__)
    )
    return keys, pts


def label_truth(
    stations: list[Station],
    model: TruthModel,
    static: StaticFields,
    window: Window,
    hours_utc: pd.DatetimeIndex,
    seed: int,
    noise_sigma_k: float,
    siting_sigma_k: float = 0.0,
    shared_error_k: float = 0.0,
) -> pd.DataFrame:
    """One row per station and UTC hour: the truth, each station error term and the observation (unrounded).

    ta_pixel_c is the pixel's TA, hidden_c the part of it no input sees; ta_true_c the TA at the station's
    height; siting_c its persistent siting error (one N(0, siting_sigma_k) per station), shared_c the error it
    shares with its neighbours (shared_error_k x TruthModel.shared_station_error), and the observation adds
    white N(0, noise_sigma_k) noise to all of them.
    """
    keys, pts = station_points(stations, static, window, seed)
    col_of = {key: i for i, key in enumerate(keys)}
    t_unix = [int(ts.timestamp()) for ts in hours_utc]
    visible, hidden, shared = (np.empty((len(t_unix), len(keys))) for _ in range(3))  # (hours, station periods)
    for i, t in enumerate(t_unix):
        clouds = model.clouds(float(t), pts)
        visible[i] = model.visible_air_temperature(float(t), pts, clouds)
        hidden[i] = model.boundary_layer_anomaly(float(t), pts, clouds)
        shared[i] = model.shared_station_error(float(t), pts)
    rows = []
    for s in stations:
        if not s.periods:
            continue
        siting = siting_sigma_k * float(np.random.default_rng([seed, 8, s.stn]).standard_normal())
        for i, (t, ts) in enumerate(zip(t_unix, hours_utc, strict=True)):
            kst = ts.tz_convert(KST)
            k = s.periods.index(s.period_on(kst.date()))
            p = s.periods[k]
            j = col_of[(s.stn, k)]
            ta = float(visible[i, j] + hidden[i, j])
            ta_true = ta + LAPSE_K_PER_M * (p.elev_m - float(pts.dem[j]))
            rows.append((s.stn, s.name, int(t), kst.strftime("%Y-%m-%d %H:%M"), ta, ta_true, float(hidden[i, j]),
                         siting, shared_error_k * float(shared[i, j]), p.line, p.column, s.role))
    df = pd.DataFrame(rows, columns=["stn", "name", "time_utc", "kst", "ta_pixel_c", "ta_true_c", "hidden_c",
                                     "siting_c", "shared_c", "line", "column", "role"])
    rng = np.random.default_rng([seed, 4])
    df["ta_obs_c"] = df["ta_true_c"] + df["siting_c"] + df["shared_c"] + rng.normal(0.0, noise_sigma_k, size=len(df))
    return df


def write_labels(path: Path, rows: pd.DataFrame) -> None:
    """Portal hourly CSV; `rows` has the final string columns ta_text, qc_text, kst (defects applied)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=ENCODING, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(LABEL_HEADER)
        w.writerows(rows[["stn", "name", "kst", "ta_text", "qc_text"]].itertuples(index=False, name=None))


def write_truth(path: Path, truth: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["stn", "time_utc", "ta_true_c", "ta_pixel_c", "line", "column", "hidden_c", "siting_c", "shared_c"]
    out = truth[columns + [c for c in truth.columns if c.startswith("oracle_")]].copy()
    out.to_csv(path, index=False, float_format="%.4f")
