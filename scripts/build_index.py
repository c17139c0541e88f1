"""Rule build_index: the index rows and rejects of one index period's chunks."""

from pathlib import Path

from ta2d.index.build import build_month_index
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    build_month_index(list(snakemake.input.index), list(snakemake.input.rejects), snakemake.params.split,
                      Path(snakemake.output.index).parent)
