"""Rule pretrain: unlabelled tiles -> results/pretrain/{name}/encoder.ckpt, metrics.csv (ta2d.training.pretrain)."""

from pathlib import Path

from ta2d.logsetup import log_to
from ta2d.training.pretrain import pretrain_run

with log_to(snakemake.log[0]) as log:
    pretrain_run(
        dict(snakemake.params.run),
        list(snakemake.input.tiles),
        snakemake.input.stats,
        Path(snakemake.output.encoder).parent,
        log=log.info,
    )
