"""Checkpoint build_index: labels x stations x scene slots -> index, splits, per-chunk manifests."""

from pathlib import Path

from ta2d.grid import Domain
from ta2d.index.build import build_index
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    p = snakemake.params
    build_index(
        labels_cfg=p.labels,
        stations_path=snakemake.input.stations,
        static_cfg=p.static,
        scene_status_paths=list(snakemake.input.status),
        domain=Domain.from_config(p.domain),
        period=p.period,
        freq=p.freq,
        split_cfg=p.split,
        patch_size=p.patch_size,
        out_dir=Path(snakemake.output.index).parent,
    )
