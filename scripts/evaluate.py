"""Rule evaluate: every run's best.pt on the test chunks -> results/eval/ tables, Markdown/HTML and plots."""

from ta2d.evaluation.evaluate import evaluate_runs
from ta2d.logsetup import log_to

with log_to(snakemake.log[0]):
    out = snakemake.output
    evaluate_runs(
        dict(zip(snakemake.params.runs, snakemake.input.checkpoints, strict=True)),
        list(snakemake.input.test),
        val_chunks=list(snakemake.input.val),
        out_dir=None,
        noise_sigma_k=snakemake.params.noise_sigma_k,
        split_cfg=snakemake.params.split,
        truth_path=snakemake.params.truth,
        background=snakemake.params.background,
        static=snakemake.params.static,
        domain=snakemake.params.domain,
        outputs={
            "metrics.csv": out.metrics,
            "metrics.md": out.markdown,
            "metrics.html": out.html,
            "by_station.csv": out.by_station,
            "by_hour.csv": out.by_hour,
            "by_month.csv": out.by_month,
            "by_landcover.csv": out.by_landcover,
            "predictions.csv": out.predictions,
            "scatter.png": out.scatter,
            "residual_by_hour.png": out.residual_by_hour,
            "rmse_by_station.png": out.rmse_by_station,
            "reliability.png": out.reliability,
            "error_models.json": out.error_models,
        },
    )
