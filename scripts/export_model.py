"""Rule export_model: a run's best.pt + its test scores -> results/models/{run}.pt (ta2d.models.model_file)."""

from ta2d.logsetup import log_to
from ta2d.models.model_file import export_model

with log_to(snakemake.log[0]):
    export_model(snakemake.input.best, snakemake.output[0], snakemake.wildcards.run, snakemake.input.metrics,
                 list(snakemake.input.train), list(snakemake.input.val), snakemake.params.period,
                 snakemake.params.patch_size, error_models=snakemake.input.error_models)
