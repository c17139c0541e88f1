"""Rule summary: count samples and rejects of every chunk; fail if a label row went missing."""

from ta2d.chunks.summary import summarize
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    summarize(snakemake.input.index_summary, list(snakemake.input.chunks), snakemake.output[0])
