"""Rule map_correction: the mapped days' station tables -> results/eval/map_correction.{csv,md,html}."""

from ta2d.logsetup import log_to
from ta2d.maps.kriging import correction_report_files

with log_to(snakemake.log[0]):
    out = snakemake.output
    correction_report_files(list(snakemake.input), snakemake.params.split, snakemake.params.correction, out.csv,
                            out.markdown, out.html)
