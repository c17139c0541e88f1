"""Rule select_best_model: the model file of the run with the lowest held-out-days RMSE -> results/models/best.pt."""

from ta2d.logsetup import log_to
from ta2d.maps.plan import best_run
from ta2d.models.model_file import copy_as_best

with log_to(snakemake.log[0]):
    run, why = best_run(snakemake.input.metrics, snakemake.params.runs)
    copy_as_best(dict(zip(snakemake.params.runs, snakemake.input.models, strict=True))[run], snakemake.output[0], why)
