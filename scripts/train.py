"""Rule train: one configured run -> results/runs/{run}/best.pt, current.pt, metrics.csv (ta2d.training)."""

from pathlib import Path

from ta2d.logsetup import log_to
from ta2d.training import train_run

with log_to(snakemake.log[0]) as log:
    train_run(
        dict(snakemake.params.run),
        list(snakemake.input.train),
        list(snakemake.input.val),
        snakemake.input.stats,
        Path(snakemake.output.best).parent,
        embed_dir=snakemake.params.embed_dir,
        log=log.info,
    )
