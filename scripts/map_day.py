"""Rules map_day and map_slot: a model file's TA at every slot of one day, or at one slot -> the CF file + station
table (ta2d.maps.archive.map_files)."""

import pandas as pd

from ta2d.index.route import read_part
from ta2d.logsetup import log_to
from ta2d.maps.archive import day_slot_times, map_files

with log_to(snakemake.log[0]):
    p, w, inp = snakemake.params, snakemake.wildcards, snakemake.input
    if "slot" in w.keys():
        times = pd.DatetimeIndex([pd.Timestamp(w.slot, tz="UTC")])
    else:
        times = day_slot_times(w.day, p.slot_minutes)
    map_files(
        w.maprun,
        inp.model,
        inp.scene,
        inp.static,
        times,
        snakemake.output.nc,
        snakemake.output.stations,
        labels=read_part(inp.observations[0]) if inp.observations else None,
        stations=inp.stations[0] if inp.stations else None,
        correction=p.correction,
        patch_size=p.patch_size,
        batch_size=p.batch_size,
        device=p.device,
        static_vars=p.static,
        background=p.get("background"),  # absent: inputs.background is null
        threads=snakemake.threads,
        label=snakemake.rule,
    )
