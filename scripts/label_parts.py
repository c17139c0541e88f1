"""Rule label_parts: route every label row to its chunk's part (the first build; later builds: parse time)."""

from pathlib import Path

from ta2d.index.route import route_labels
from ta2d.logsetup import log_to
from ta2d.plan import Plan

with log_to(snakemake.log[0]):
    cfg = snakemake.config  # not params: a config change must not rerun this job (workflow/rules/index.smk)
    route_labels(cfg["inputs"]["labels"], Plan.from_config(cfg), out_dir=Path(snakemake.output.summary).parent,
                 force=True)
