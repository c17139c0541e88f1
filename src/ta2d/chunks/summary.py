"""The run summary: every label row is a sample or a counted reject (docs/results.md#rejects).

Totals come from the label routing (rows read per file, rows no chunk could take) and from each index
period's summary (samples and the chunks' rejects), so the job reads small JSON files only.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ta2d.atomic import atomic_path

SPLITS = ("train", "val", "test")


class InvariantError(RuntimeError):
    pass


def summarize(label_summary_path: str | Path, index_summary_paths: list[str | Path], out_path: str | Path) -> dict:
    labels = json.loads(Path(label_summary_path).read_text())
    months = [json.loads(Path(p).read_text()) for p in index_summary_paths]
    per_split: Counter = Counter()
    reasons: Counter = Counter(labels["rejected_by_reason"])
    days: dict[str, set] = {s: set() for s in SPLITS}
    stations: set = set()
    for m in months:
        per_split.update(m["samples_by_split"])
        reasons.update(m["rejected_by_reason"])
        for s in SPLITS:
            days[s] |= set(m["days_by_split"][s])
        stations |= set(m["stations"])
    n_samples = sum(per_split.values())
    n_rejected = labels["n_rejected"] + sum(m["n_rejected"] for m in months)
    summary = {
        "n_label_rows": labels["n_label_rows"],
        "n_samples": n_samples,
        "n_rejected": n_rejected,
        "invariant_holds": labels["n_label_rows"] == n_samples + n_rejected,
        "samples_by_split": {s: per_split.get(s, 0) for s in SPLITS},
        "rejected_by_reason": dict(sorted(reasons.items())),
        "n_chunks": sum(m["n_chunks"] for m in months),
        "empty_chunks": sorted(c for m in months for c in m["empty_chunks"]),
        "days_by_split": {s: len(days[s]) for s in SPLITS},
        "n_stations": len(stations),
        "test_samples_by_scheme": dict(sum((Counter(m["test_samples_by_scheme"]) for m in months), Counter())),
        "rows_by_label_file": labels["rows_by_file"],
    }
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not summary["invariant_holds"]:
        raise InvariantError(
            f"n_label_rows {summary['n_label_rows']} != n_samples {n_samples} + n_rejected {n_rejected}: "
            f"some label rows were lost (see {out_path})")
    return summary
