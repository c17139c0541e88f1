"""Rule stats: per-channel and TA mean/std of the train chunks -> results/stats.json."""

from ta2d.chunks.stats import write_stats
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    write_stats(list(snakemake.input), snakemake.output[0])
