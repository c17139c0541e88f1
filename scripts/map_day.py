"""Rule map_day: a run's TA at every slot of one day -> results/maps/{run}/{day}.nc + station table (ta2d.maps)."""

from ta2d.logsetup import log_to
from ta2d.maps.archive import map_day_files

with log_to(snakemake.log[0]):
    p = snakemake.params
    map_day_files(
        snakemake.wildcards.maprun,
        dict(zip(p.runs, snakemake.input.checkpoints, strict=True)),
        snakemake.input.scene,
        snakemake.input.static,
        snakemake.input.index,
        snakemake.wildcards.day,
        p.slot_minutes,
        snakemake.output.nc,
        snakemake.output.stations,
        metrics_csv=snakemake.input.metrics[0] if snakemake.input.metrics else None,
        correction=p.correction,
        patch_size=p.patch_size,
        batch_size=p.batch_size,
        device=p.device,
        static_vars=p.static,
        threads=snakemake.threads,
    )
