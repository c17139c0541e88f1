"""Rule train: one configured run -> results/runs/{run}/best.pt, current.pt, metrics.csv (ta2d.training).

``launch`` trains in this process, or with run key gpus: N > 1 starts one torchrun with N processes
(DistributedDataParallel) and forwards their output to this rule's log; the job's threads are split over them.
"""

from pathlib import Path

from ta2d.logsetup import log_to
from ta2d.training import launch

with log_to(snakemake.log[0]) as log:
    launch(
        dict(snakemake.params.run),
        list(snakemake.input.train),
        list(snakemake.input.val),
        snakemake.input.stats,
        Path(snakemake.output.best).parent,
        embed_dir=snakemake.params.embed_dir,
        threads=snakemake.threads,
        log=log.info,
    )
