"""Rule summary: total samples and rejects; fail if a label row went missing."""

from ta2d.chunks.summary import summarize
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    summarize(snakemake.input.labels, list(snakemake.input.months), snakemake.output[0])
