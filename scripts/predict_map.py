"""Rule predict_map: one run's best.pt on every land pixel of one slot -> TA NetCDF + PNG map (ta2d.predict)."""

from ta2d.logsetup import log_to
from ta2d.predict import predict_map_files

with log_to(snakemake.log[0]):
    p = snakemake.params
    predict_map_files(
        snakemake.input.checkpoint,
        snakemake.input.scene,
        snakemake.input.static,
        p.time,
        snakemake.output.nc,
        snakemake.output.png,
        index_csv=snakemake.input.index,
        run=snakemake.wildcards.run,
        patch_size=p.patch_size,
        static_vars=p.static,
    )
