"""The run summary: every label row is a sample or a counted reject (DESIGN.md invariant)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from ta2d.atomic import atomic_path
from ta2d.chunks.contract import chunk_len, parse_chunk_name


class InvariantError(RuntimeError):
    pass


def summarize(index_summary_path: str | Path, chunk_paths: list[str | Path], out_path: str | Path) -> dict:
    index_summary = json.loads(Path(index_summary_path).read_text())
    per_split: Counter = Counter()
    reasons: Counter = Counter(index_summary["rejected_by_reason"])
    n_chunk_rejects = 0
    for path in chunk_paths:
        path = Path(path)
        split = parse_chunk_name(path)[0]
        n = chunk_len(path)
        per_split[split] += n
        rejects = pd.read_csv(path.with_suffix(".rejects.csv"))
        n_chunk_rejects += len(rejects)
        reasons.update(rejects["reason"].value_counts().to_dict())
    n_samples = sum(per_split.values())
    n_rejected = index_summary["n_rejected"] + n_chunk_rejects
    summary = {
        "n_label_rows": index_summary["n_label_rows"],
        "n_samples": n_samples,
        "n_rejected": n_rejected,
        "invariant_holds": index_summary["n_label_rows"] == n_samples + n_rejected,
        "samples_by_split": {s: per_split.get(s, 0) for s in ("train", "val", "test")},
        "rejected_by_reason": dict(sorted(reasons.items())),
        "n_chunks": len(chunk_paths),
        "days_by_split": index_summary["days_by_split"],
        "n_stations": index_summary["n_stations"],
    }
    with atomic_path(out_path) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not summary["invariant_holds"]:
        raise InvariantError(
            f"n_label_rows {summary['n_label_rows']} != n_samples {n_samples} + n_rejected {n_rejected}: "
            f"some label rows were lost (see {out_path})")
    return summary
