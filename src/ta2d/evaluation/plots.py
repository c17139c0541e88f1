"""The evaluation's figures (matplotlib, Agg, PNG at 110 dpi): predicted vs observed per run (scatter.png), the
residual by KST hour (residual_by_hour.png) and RMSE per station (rmse_by_station.png)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ta2d.atomic import atomic_path
from ta2d.evaluation.report import format_value


def _plt():
    """pyplot on Agg (jobs have no display), imported only once a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, width: float = 4.6, height: float = 4.4, sharey: bool = True, max_cols: int = 4):
    plt = _plt()
    ncols = min(max(n, 1), max_cols)
    nrows = -(-max(n, 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             sharey=sharey, constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _plt().close(fig)


def plot_scatter(df: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> None:
    """Predicted vs observed TA, one panel per run, 1:1 line, RMSE in the title."""
    runs = list(table["run"])
    fig, axes = _panels(len(runs), sharey=False)
    y = df["y"].to_numpy()
    vals = np.concatenate([y] + [df[f"pred_{r}"].to_numpy() for r in runs]) if len(df) else np.array([0.0, 1.0])
    lo, hi = np.floor(np.nanmin(vals)) - 1, np.ceil(np.nanmax(vals)) + 1
    for ax, r in zip(axes, table.itertuples(index=False), strict=False):
        p = df[f"pred_{r.run}"].to_numpy()
        ax.scatter(y, p, s=4, alpha=0.25, color="tab:blue", edgecolors="none", rasterized=True)
        ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="1:1")
        ax.set(xlim=(lo, hi), ylim=(lo, hi), aspect="equal", xlabel="Observed TA (°C)", ylabel="Predicted TA (°C)")
        ax.set_title(f"{r.run} ({r.model})\nRMSE {format_value(r.rmse, 2)} K, bias {format_value(r.bias, 2)} K, "
                     f"n = {r.n}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle("Test split: predicted vs observed air temperature")
    _save(fig, path)


def plot_residual_by_hour(df: pd.DataFrame, runs: Sequence[str], path: str | Path) -> None:
    """Box plot of the residual (predicted - observed) per KST hour, one panel per run."""
    fig, axes = _panels(len(runs), width=10.0, height=3.4, sharey=True, max_cols=1 if len(runs) <= 4 else 2)
    hours = np.arange(24)
    for ax, run in zip(axes, runs, strict=False):
        res = df[f"pred_{run}"] - df["y"]
        groups = [res[df["hour_kst"] == h].to_numpy() for h in hours]
        ax.boxplot([g if len(g) else [np.nan] for g in groups], positions=hours, widths=0.6, showfliers=False,
                   medianprops={"color": "tab:red"})
        mean = [g.mean() if len(g) else np.nan for g in groups]
        ax.plot(hours, mean, "o", ms=3, color="k", label="mean (bias)")
        ax.axhline(0, color="grey", lw=1)
        ax.set_xticks(hours[::3], [str(h) for h in hours[::3]])
        rmse = float(np.sqrt(np.mean(res**2))) if len(res) else math.nan
        ax.set(xlim=(-0.7, 23.7), xlabel="Hour of day (KST)", ylabel="Residual, predicted − observed (K)",
               title=f"{run}: residual by hour (RMSE {format_value(rmse, 2)} K)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(loc="upper right")
    fig.suptitle("Test split: residual by hour of day (boxes: quartiles, whiskers: 1.5 IQR)")
    _save(fig, path)


def plot_rmse_by_station(by_station: pd.DataFrame, runs: Sequence[str], path: str | Path,
                         noise_sigma_k: float | None = None) -> None:
    """Grouped bars: RMSE per station (sorted by the mean over runs), one colour per run."""
    plt = _plt()
    wide = by_station.pivot(index="stn", columns="run", values="rmse").reindex(columns=list(runs))
    wide = wide.loc[wide.mean(axis=1).sort_values().index] if len(wide) else wide
    n = max(len(wide), 1)
    fig, ax = plt.subplots(figsize=(min(max(8.0, 0.1 * n * max(len(runs), 1) + 2), 16.0), 5.0),
                           constrained_layout=True)
    width = 0.8 / max(len(runs), 1)
    x = np.arange(len(wide))
    for i, run in enumerate(runs):
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, wide[run].to_numpy() if len(wide) else [], width, label=run)
    if noise_sigma_k is not None:
        ax.axhline(noise_sigma_k, color="k", ls="--", lw=1, label=f"noise σ = {noise_sigma_k:g} K (best achievable)")
    ax.set_xticks(x, [str(s) for s in wide.index], rotation=90, fontsize=8)
    ax.set(xlim=(-0.6, len(wide) - 0.4), xlabel="Station id (sorted by mean RMSE over runs)", ylabel="RMSE (K)",
           title="Test split: RMSE per station")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", ncols=min(len(runs) + 1, 4))
    _save(fig, path)


RELIABILITY_LEVELS = np.arange(0.1, 1.0, 0.1)  # central interval levels 10 %, ..., 90 %


def plot_reliability(df: pd.DataFrame, runs: Sequence[str], path: str | Path) -> None:
    """The reliability diagram: for each central interval level of N(pred, sigma²), the share of test observations
    inside it, one line per run with a sigma_{run} column; the diagonal is a calibrated standard error."""
    from ta2d.evaluation.metrics import interval_coverage

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 5.0), constrained_layout=True)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="calibrated")
    y = df["y"].to_numpy()
    for run in runs:
        if f"sigma_{run}" not in df:
            continue
        pred, sigma = df[f"pred_{run}"].to_numpy(), df[f"sigma_{run}"].to_numpy()
        covered = [interval_coverage(y, pred, sigma, level) for level in RELIABILITY_LEVELS]
        ax.plot(RELIABILITY_LEVELS, covered, marker="o", ms=3, label=run)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal interval level", ylabel="share of test observations inside",
           title="Reliability of the standard errors (test split)")
    ax.legend(fontsize=8)
    _save(fig, path)
