"""Rule build_unlabeled_chunk: one period's scene -> results/unlabeled/{key}.pt (ta2d.chunks.unlabeled)."""

from ta2d.chunks.unlabeled import build_unlabeled_chunk
from ta2d.grid import Domain
from ta2d.logsetup import log_to
from ta2d.static import read_static

with log_to(snakemake.log[0]):
    p = snakemake.params
    static = read_static(snakemake.input.static, Domain.from_config(p.domain), p.static["dem_var"],
                         p.static["land_sea_mask_var"], p.static["landcover_var"])
    build_unlabeled_chunk(
        snakemake.input.scene,
        static,
        p.patch_size,
        p.tiles_per_slot,
        p.seed,
        snakemake.output[0],
        x_dtype=p.x_dtype,
        split_cfg=p.split,
    )
