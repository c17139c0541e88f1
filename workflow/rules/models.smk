# Trained runs -> model files (ta2d.models.model_file): each run's best.pt with its normalisation statistics, input
# spec, provenance and test scores as results/models/{run}.pt, and the run with the lowest held-out-days RMSE as
# results/models/best.pt. A model file maps on its own, in this workflow or any other (config/map.yaml).
if TRAINS:

    rule export_model:
        message:
            "Model file of run {wildcards.run}"
        input:
            best="results/runs/{run}/best.pt",
            metrics="results/eval/metrics.csv",
            error_models="results/eval/error_models.json",  # the run's, for the maps' standard errors
            train=chunk_files(("train",)),
            val=chunk_files(("val",)),
        output:
            "results/models/{run}.pt",
        params:
            period=PERIOD,
            patch_size=config["patch"]["size"],
        log:
            "logs/export_model/{run}.log",
        localrule: True
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/export_model.py"

    rule select_best_model:
        message:
            "The best run's model file (lowest RMSE on the held-out days)"
        input:
            models=expand("results/models/{run}.pt", run=RUNS),
            metrics="results/eval/metrics.csv",
        output:
            "results/models/best.pt",
        params:
            runs=list(RUNS),
        log:
            "logs/select_best_model.log",
        localrule: True
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/select_best_model.py"
