"""Rule calibrate: one period's raw files -> results/scenes/{key}.nc + its slot status table."""

from ta2d.ingest.archive import calibrate_period
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    calibrate_period(
        snakemake.params.inputs,
        snakemake.input.inventory,
        snakemake.wildcards.key,
        snakemake.params.freq,
        snakemake.params.period,
        snakemake.params.domain,
        snakemake.params.scene,
        snakemake.output.scene,
        snakemake.output.status,
    )
