"""Rule label_parts: route every label row to its chunk's part (the first build; later builds: parse time)."""

from ta2d.index.route import route_labels
from ta2d.logsetup import log_to
from ta2d.plan import Plan

with log_to(snakemake.log[0]):
    cfg = snakemake.config
    route_labels(cfg["inputs"]["labels"], Plan.from_config(cfg),
                 out_dir=snakemake.output.summary.rsplit("/", 1)[0], force=True)
