# Trained runs -> test-split evaluation side by side (one job over all runs). Outputs flagged with report()
# go into `snakemake --report`. The maps are in maps.smk.


if TRAINS:  # a training period (ta2d.plan.Plan.trains); a mapping-only config has none

    rule evaluate:
        message:
            "Evaluating every run on the test split"
        input:
            checkpoints=expand("results/runs/{run}/best.pt", run=RUNS),
            test=chunk_files(("test",)),
            val=chunk_files(("val",)),  # each run's error model is fit on its validation residuals
            demo=demo_inputs,  # the demo's truth file is written with its manifest
            static=config["inputs"]["static"]["path"],  # the DEM the background is height-corrected to
            background=background_files,
        output:
            metrics="results/eval/metrics.csv",
            markdown="results/eval/metrics.md",
            html=report(
                "results/eval/metrics.html", caption="../report/metrics.rst", category="1. Evaluation", subcategory="Summary"
            ),
            by_station=report("results/eval/by_station.csv", caption="../report/tables.rst", category="1. Evaluation",
                              subcategory="Tables"),
            by_hour=report("results/eval/by_hour.csv", caption="../report/tables.rst", category="1. Evaluation",
                           subcategory="Tables"),
            by_month=report("results/eval/by_month.csv", caption="../report/tables.rst", category="1. Evaluation",
                            subcategory="Tables"),
            by_landcover=report("results/eval/by_landcover.csv", caption="../report/tables.rst",
                                category="1. Evaluation", subcategory="Tables"),
            predictions="results/eval/predictions.csv",
            scatter=report(
                "results/eval/scatter.png", caption="../report/scatter.rst", category="1. Evaluation", subcategory="Plots"
            ),
            residual_by_hour=report(
                "results/eval/residual_by_hour.png",
                caption="../report/residual_by_hour.rst",
                category="1. Evaluation",
                subcategory="Plots",
            ),
            rmse_by_station=report(
                "results/eval/rmse_by_station.png",
                caption="../report/rmse_by_station.rst",
                category="1. Evaluation",
                subcategory="Plots",
            ),
            reliability=report(
                "results/eval/reliability.png",
                caption="../report/reliability.rst",
                category="1. Evaluation",
                subcategory="Plots",
            ),
            # every run's error model (ta2d.evaluation.uncertainty), for its model file and the maps' standard errors
            error_models="results/eval/error_models.json",
        params:
            runs=list(RUNS),
            noise_sigma_k=config["demo"]["noise_sigma_k"] if DEMO else None,
            # validation schemes (ta2d.splits) and the demo's per-sample truth for the floors
            split=config["split"],
            truth=os.path.join(config["demo"]["out_dir"], "truth", "labels_truth.csv") if DEMO else None,
            # the reanalysis baseline `background` (inputs.background; null: none) on the domain's static fields
            background=BACKGROUND,
            static=config["inputs"]["static"],
            domain=config["domain"],
        log:
            "logs/evaluate.log",
        benchmark:
            "results/benchmarks/evaluate.tsv"
        threads: 2
        resources:
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 30 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/evaluate.py"
