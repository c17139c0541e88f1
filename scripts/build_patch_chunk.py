"""Rule build_patch_chunk: a chunk's label part + its period's scene -> results/patch_pt/{split}_chunk_{key}.pt."""

from ta2d.chunks.patches import build_patch_chunk
from ta2d.grid import Domain
from ta2d.index.stations import read_stations
from ta2d.ingest.background import open_background_config
from ta2d.logsetup import log_to
from ta2d.static import read_static

with log_to(snakemake.log[0]):
    p = snakemake.params
    static = read_static(snakemake.input.static, Domain.from_config(p.domain), p.static["dem_var"],
                         p.static["land_sea_mask_var"], p.static["landcover_var"])
    background = p.get("background")  # absent: inputs.background is null
    if background is not None:
        background = open_background_config(background, p.days["start"], p.days["end"])
    build_patch_chunk(
        snakemake.input.part,
        read_stations(snakemake.input.stations),
        snakemake.input.scene,
        static,
        p.patch_size,
        snakemake.output.chunk,
        snakemake.output.rejects,
        snakemake.output.index,
        x_dtype=p.x_dtype,
        background=background,
    )
