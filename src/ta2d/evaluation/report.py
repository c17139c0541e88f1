"""metrics.md and metrics.html: RMSE and RMSE/floor per run and validation scheme side by side, the floor rows,
the per-run table on all test samples, the demo's noise sigma when known, and whether each non-baseline run beats
every baseline (judged on ta2d.evaluation.schemes.JUDGE_SCHEME).

`table` is always tables.scheme_table's long table (metrics.csv), `df` the samples it was computed on.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from ta2d.evaluation.schemes import SCHEME_ALL, SCHEME_NOTES, SCHEME_ORDER, SCHEME_TITLES, judge_scheme
from ta2d.evaluation.tables import BASELINE_KINDS, beats_baselines

HEADERS = {"run": "run", "model": "model", "baseline": "baseline", "n": "n", "rmse": "RMSE (K)",
           "mae": "MAE (K)", "bias": "bias (K)", "r2": "R²"}


def format_value(v, digits=3) -> str:
    """A table cell: yes/no, an integer, or a float with `digits` decimals ("–" when not finite)."""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return "–" if not np.isfinite(v) else f"{v:.{digits}f}"


def _days(df: pd.DataFrame) -> str:
    n = pd.to_datetime(df["time"], unit="s").dt.date.nunique()
    return f"{n} UTC day" + ("" if n == 1 else "s")


def _floor_note(df: pd.DataFrame) -> str:
    if "ta_true_c" not in df:
        return ("floor: not available: no demo truth file (real data have no noise-free truth), so the floor and "
                "RMSE/floor columns are empty.")
    missing = int(df["ta_true_c"].isna().sum())
    return ("floors, from the demo's truth file over exactly the samples of their column: the lowest RMSE a model "
            "can reach given the satellite inputs (satellite), those and the reanalysis background (+ background), "
            "or those and the other stations' observations (+ station correction; the maps' kriging); ÷ floor = "
            "RMSE / the floor of the inputs the runs were given (docs/demo.md#the-observable-floor-per-input-set)."
            + (f" {missing} samples have no truth row: floors of sets holding them are empty." if missing else ""))


def _summary_lines(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> list[str]:
    """Notes under the tables; `table` is scheme_table's long table."""
    lines = [
        f"{len(df)} test samples, the same for every run ({df['stn'].nunique()} stations, "
        f"{_days(df)})."
    ]
    if len(df) < n_all:
        lines.append(f"{n_all - len(df)} of {n_all} samples were left out: some run predicted no finite value.")
    if noise_sigma_k is not None:
        lines.append(f"The demo's white station noise sigma (demo.noise_sigma_k): {noise_sigma_k:.3f} K; the floor "
                     "rows are the best achievable RMSE on exactly each column's samples.")
    judge = judge_scheme(table)
    sub = table[table["scheme"] == judge]
    verdicts = beats_baselines(sub)
    for run, v in verdicts.items():
        rmse = float(sub.loc[sub["run"] == run, "rmse"].iloc[0])
        if v["beats"] is None:
            lines.append(f"{run}: no baseline run (kinds {', '.join(BASELINE_KINDS)}) to compare with.")
        else:
            word = "beats every baseline" if v["beats"] else "does NOT beat every baseline"
            lines.append(f"{run} {word} on {judge} ({SCHEME_TITLES[judge]}): RMSE {format_value(rmse)} K vs "
                         f"{format_value(v['best_baseline_rmse'])} K of the best baseline, {v['best_baseline']} "
                         "(on the same samples).")
    return lines


def _scheme_lines(df: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """What each column of the side-by-side table holds, and the floor."""
    lines = []
    if "scheme" not in df:
        lines.append("No split config given: only all test samples are scored (no validation schemes).")
    for s in _shown_schemes(table):
        lines.append(f"{SCHEME_TITLES[s]} ({s}): {SCHEME_NOTES[s]}.")
    lines.append(_floor_note(df))
    return lines


def _shown_schemes(table: pd.DataFrame) -> list[str]:
    """The schemes with samples, in SCHEME_ORDER, and always "all"."""
    n = table.groupby("scheme")["n"].max()
    return [s for s in SCHEME_ORDER if s == SCHEME_ALL or n.get(s, 0) > 0]


def side_by_side(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows (text) of the side-by-side table: one row per run with RMSE and RMSE/floor per scheme,
    then the floor of every input set and n rows."""
    schemes = _shown_schemes(table)
    header = ["run", "model"]
    for s in schemes:
        header += [f"{SCHEME_TITLES[s]}: RMSE (K)", "÷ floor"]
    runs = list(dict.fromkeys(table["run"]))
    at = table.set_index(["run", "scheme"])
    rows = []
    for run in runs:
        row = [run, str(at.loc[(run, schemes[0]), "model"]) + (" (baseline)" if at.loc[(run, schemes[0]), "baseline"]
                                                              else "")]
        for s in schemes:
            row += [format_value(at.loc[(run, s), "rmse"]), format_value(at.loc[(run, s), "rmse_over_floor"], 2)]
        rows.append(row)
    if runs:
        first = runs[0]  # the floors and n depend on the samples only, the same for every run
        for label, col, digits in (("floor, satellite (K)", "floor_satellite", 3),
                                   ("floor, + background (K)", "floor_background", 3),
                                   ("floor, + station correction (K)", "floor_corrected", 3), ("n samples", "n", 0)):
            row = [label, ""]
            for s in schemes:
                v = at.loc[(first, s), col]
                row += [format_value(int(v)) if col == "n" else format_value(v, digits), ""]
            rows.append(row)
    return header, rows


def uncertainty_side_by_side(table: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of the standard-error table: per run and scheme the 90 % interval's coverage and the CRPS;
    None when no run has standard errors."""
    if "coverage_90" not in table or not np.isfinite(table["coverage_90"]).any():
        return None
    schemes = _shown_schemes(table)
    header = ["run", "model"]
    for s in schemes:
        header += [f"{SCHEME_TITLES[s]}: 90 % coverage", "CRPS (K)"]
    at = table.set_index(["run", "scheme"])
    rows = []
    for run in dict.fromkeys(table["run"]):
        row = [run, str(at.loc[(run, schemes[0]), "model"])]
        for s in schemes:
            row += [format_value(at.loc[(run, s), "coverage_90"]), format_value(at.loc[(run, s), "crps"])]
        rows.append(row)
    return header, rows


THICK_CLOUD_BT_K = 255.0  # a centre IR10.5 BT below this is a cold cloud top: thick cloud hides the surface


def sigma_by_sky(df: pd.DataFrame) -> tuple[list[str], list[list[str]]] | None:
    """Header and rows of the "where the standard error rises" table: per run, under thick cloud (centre IR10.5 BT
    below THICK_CLOUD_BT_K) and elsewhere, the samples, the mean standard error and the RMSE it should follow;
    None without standard errors."""
    runs = [c[len("sigma_"):] for c in df.columns if c.startswith("sigma_")]
    if not runs or "bt_ir105" not in df:
        return None
    thick = df["bt_ir105"].to_numpy() < THICK_CLOUD_BT_K
    header = ["run"]
    for name in ("thick cloud", "clear or thin cloud"):
        header += [f"{name}: n", "mean σ (K)", "RMSE (K)"]
    rows = []
    for run in runs:
        row = [run]
        for sel in (thick, ~thick):
            g = df[sel]
            err = g["y"].to_numpy() - g[f"pred_{run}"].to_numpy()
            row += [format_value(int(sel.sum())), format_value(float(g[f"sigma_{run}"].mean()) if len(g) else np.nan),
                    format_value(float(np.sqrt(np.mean(err**2))) if len(g) else np.nan)]
        rows.append(row)
    return header, rows


def markdown_report(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> str:
    """metrics.md; `table` is scheme_table's long table."""
    header, rows = side_by_side(table)
    out = ["# Test-split evaluation", "", "## RMSE by validation scheme", "",
           "| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out += [f"- {line}" for line in _scheme_lines(df, table)]
    uncertainty = uncertainty_side_by_side(table)
    if uncertainty is not None:
        header_u, rows_u = uncertainty
        out += ["", "## Standard errors by validation scheme", "", "| " + " | ".join(header_u) + " |",
                "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header_u))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows_u]
        out += ["", "- each run's standard error comes from its error model, fit on its validation residuals "
                "(ta2d.evaluation.uncertainty); a calibrated 90 % interval covers 90 % (reliability.png)."]
        sky = sigma_by_sky(df)
        if sky is not None:
            out += ["", f"Where the standard error rises: all test samples, thick cloud = centre IR10.5 BT below "
                    f"{THICK_CLOUD_BT_K:.0f} K.", "", "| " + " | ".join(sky[0]) + " |",
                    "|---|" + "|".join("---:" for _ in sky[0][1:]) + "|"]
            out += ["| " + " | ".join(r) + " |" for r in sky[1]]
    cols = list(HEADERS)
    detail = table[table["scheme"] == SCHEME_ALL]
    out += ["", "## All test samples, per run", "", "| " + " | ".join(HEADERS[c] for c in cols) + " |",
            "|" + "|".join("---" if c in ("run", "model") else "---:" for c in cols) + "|"]
    for r in detail.itertuples(index=False):
        out.append("| " + " | ".join(format_value(getattr(r, c)) if c not in ("run", "model") else getattr(r, c)
                                     for c in cols) + " |")
    out.append("")
    out += [f"- {line}" for line in _summary_lines(df, table, n_all, noise_sigma_k)]
    out.append("- bias = mean(predicted - observed); errors in K (a difference of °C); hours and months in KST "
               "(UTC+9); baselines are the runs of model kind " + " or ".join(BASELINE_KINDS) + "; per-scheme "
               "n, MAE, bias, R² and floors in metrics.csv.")
    return "\n".join(out) + "\n"


def html_report(df: pd.DataFrame, table: pd.DataFrame, n_all: int, noise_sigma_k: float | None) -> str:
    """metrics.html (the Snakemake report); `table` is scheme_table's long table."""
    def html_table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    cols = list(HEADERS)
    detail = [[str(getattr(r, c)) if c in ("run", "model") else format_value(getattr(r, c)) for c in cols]
              for r in table[table["scheme"] == SCHEME_ALL].itertuples(index=False)]
    schemes_notes = "".join(f"<li>{html.escape(s)}</li>" for s in _scheme_lines(df, table))
    uncertainty = uncertainty_side_by_side(table)
    if uncertainty is not None:
        schemes_notes += f"</ul><h3>Standard errors by validation scheme</h3>{html_table(*uncertainty)}<ul>"
        sky = sigma_by_sky(df)
        if sky is not None:
            schemes_notes += (f"</ul><p>Where the standard error rises (thick cloud: centre IR10.5 BT below "
                              f"{THICK_CLOUD_BT_K:.0f} K)</p>{html_table(*sky)}<ul>")
    notes = "".join(f"<li>{html.escape(s)}</li>" for s in _summary_lines(df, table, n_all, noise_sigma_k))
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}th{background:#eee}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ta2d test evaluation</title>"
            f"<style>{style}</style></head><body><h2>Test-split evaluation</h2><h3>RMSE by validation scheme</h3>"
            f"{html_table(*side_by_side(table))}<ul>{schemes_notes}</ul><h3>All test samples, per run</h3>"
            f"{html_table([HEADERS[c] for c in cols], detail)}<ul>{notes}</ul>"
            f"<p>bias = mean(predicted &minus; observed); errors in K; hours and months "
            f"in KST (UTC+9).</p></body></html>\n")
