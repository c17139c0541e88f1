"""Rule embed_chunk: the frozen encoder's embeddings of one chunk (ta2d.training.embed.embed_chunk)."""

from ta2d.logsetup import log_to
from ta2d.training.embed import embed_chunk

with log_to(snakemake.log[0]):
    embed_chunk(snakemake.input.chunk, snakemake.output[0], run_cfg=dict(snakemake.params.encoder),
                stats=snakemake.input.stats)
