"""Rule assemble_day (maps.unit slot): a day's slot maps -> the day's CF file and station table."""

from ta2d.logsetup import log_to
from ta2d.maps.archive import assemble_day

with log_to(snakemake.log[0]):
    assemble_day(dict(zip(snakemake.params.slot_keys, snakemake.input.slots, strict=True)),
                 list(snakemake.input.tables), snakemake.wildcards.day, snakemake.params.slot_minutes,
                 snakemake.output.nc, snakemake.output.stations)
