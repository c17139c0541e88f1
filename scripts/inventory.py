"""Rule inventory: list the raw files of one period (ta2d.ingest.archive.write_inventory)."""

from ta2d.ingest.archive import write_inventory
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    write_inventory(
        snakemake.params.inputs,
        snakemake.wildcards.key,
        snakemake.params.freq,
        snakemake.params.period,
        snakemake.output[0],
    )
