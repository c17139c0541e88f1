"""Rule map_plots: one day's map file -> a PNG per slot, the day's GIF, one slot's uncertainty map and the report
page (ta2d.maps.plots)."""

from ta2d.logsetup import log_to
from ta2d.maps.plots import plot_day_files

with log_to(snakemake.log[0]):
    out = snakemake.output
    plot_day_files(snakemake.input.nc, snakemake.input.stations, out.pngs, out.gif, out.html,
                   uncertainty_png=out.uncertainty)
