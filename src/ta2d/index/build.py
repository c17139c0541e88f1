"""build_index, one job per index period (a month): the index rows and rejects of that period's chunks.

Downstream of the chunks, never upstream: which label rows go to which chunk is decided at parse time
(ta2d.index.route) and the matching to stations, pixels and slots happens in each chunk's job
(ta2d.index.match), so a label change reruns one chunk and then this month's index, nothing else.
Memory holds one month's rows.

Outputs in ``results/index/{month}/``: index.csv (every sample: INDEX_COLUMNS, the evaluation's and the
maps' station observations), rejects.csv (the chunks' rejected label rows) and summary.json (counts).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd

from ta2d.atomic import atomic_path, ensure_dir, write_text_if_changed
from ta2d.index.match import INDEX_COLUMNS
from ta2d.index.route import LABEL_REJECT_COLUMNS
from ta2d.splits import SCHEMES, SPLITS, assign_splits

log = logging.getLogger(__name__)

INDEX_DTYPES = {"source": str, "row": "int64", "stn": "int32", "time": "int64", "ta_c": "float32", "lat": "float64",
                "lon": "float64", "elev_m": "float64", "line": "int32", "column": "int32", "split": str, "chunk": str}


def read_index(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=INDEX_DTYPES, keep_default_na=False, na_values={"elev_m": ["nan", ""]})


def build_month_index(chunk_index_paths: list[str | Path], chunk_reject_paths: list[str | Path], split_cfg: dict,
                      out_dir: str | Path) -> dict:
    """Concatenate the chunks' index rows and rejects into out_dir/{index,rejects}.csv; write summary.json."""
    out_dir = ensure_dir(out_dir)
    texts = [Path(p).read_text() for p in sorted(chunk_index_paths)]
    index_csv = ",".join(INDEX_COLUMNS) + "\n" + "".join(t.split("\n", 1)[1] for t in texts)
    write_text_if_changed(out_dir / "index.csv", index_csv)
    rejects = [pd.read_csv(p, dtype={"source": str, "detail": str}, keep_default_na=False)
               for p in sorted(chunk_reject_paths)]
    rejects = pd.concat(rejects, ignore_index=True).reindex(columns=LABEL_REJECT_COLUMNS) if rejects else \
        pd.DataFrame(columns=LABEL_REJECT_COLUMNS)
    write_text_if_changed(out_dir / "rejects.csv", rejects.to_csv(index=False, lineterminator="\n"))
    summary = month_summary(read_index(io.StringIO(index_csv)), rejects, split_cfg)
    summary["n_chunks"] = len(texts)
    summary["empty_chunks"] = [Path(p).name.split(".")[0] for p, t in zip(sorted(chunk_index_paths), texts, strict=True)
                               if t.count("\n") <= 1]
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log.info("%s: %d samples in %d chunks, %d rejected (%s)", out_dir.name, summary["n_samples"],
             len(chunk_index_paths), summary["n_rejected"], summary["rejected_by_reason"])
    return summary


def month_summary(index: pd.DataFrame, rejects: pd.DataFrame, split_cfg: dict) -> dict:
    day = pd.to_datetime(index["time"], unit="s", utc=True).dt.strftime("%Y%m%d")
    scheme = assign_splits(index["stn"].to_numpy(), day.to_numpy(), split_cfg)["scheme"]
    return {
        "n_samples": int(len(index)),
        "n_rejected": int(len(rejects)),
        "rejected_by_reason": {k: int(v) for k, v in rejects["reason"].value_counts().sort_index().items()},
        "samples_by_split": {s: int((index["split"] == s).sum()) for s in SPLITS},
        "days_by_split": {s: sorted(set(day[index["split"] == s])) for s in SPLITS},
        "stations": sorted(int(s) for s in index["stn"].unique()),
        "test_samples_by_scheme": {s: int((scheme == s).sum()) for s in SCHEMES},
    }
