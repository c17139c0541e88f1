# Self-supervised pretraining of the Clay encoder (pretrain in the config): unlabelled tiles from every
# period's scene (land and sea, clear and cloudy), then one pretrain job per entry of pretrain.runs, whose
# encoder.ckpt a train run starts from with encoder_from. With pretrain.runs empty (the default) no job
# of this file runs.


wildcard_constraints:
    pretrain_run="|".join(PRETRAIN_RUNS) or "NO_PRETRAIN_RUNS",


if TRAINS:  # a training period (ta2d.plan.Plan.trains); a mapping-only config has none

    rule build_unlabeled_chunk:
        message:
            "Sampling unlabelled tiles from scene {wildcards.key}"
        input:
            scene="results/scenes/{key}.nc",
            static=config["inputs"]["static"]["path"],
        output:
            "results/unlabeled/{key}.pt",
        params:
            static=config["inputs"]["static"],
            domain=config["domain"],
            patch_size=PRETRAIN["patch_size"],
            tiles_per_slot=PRETRAIN["tiles_per_slot"],
            seed=PRETRAIN["seed"],
            x_dtype=PRETRAIN["x_dtype"],
            # only when test days are left out does the split decide which slots count
            split=config["split"] if PRETRAIN["exclude_test_days"] else None,
        log:
            "logs/build_unlabeled_chunk/{key}.log",
        benchmark:
            "results/benchmarks/build_unlabeled_chunk/{key}.tsv"
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 15 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/build_unlabeled_chunk.py"


    rule pretrain:
        message:
            "Pretraining the Clay encoder: run {wildcards.pretrain_run}"
        input:
            tiles=expand("results/unlabeled/{key}.pt", key=KEYS),
            # the labelled train split's x statistics: the normalisation the transfer model applies too
            stats="results/stats.json",
        output:
            encoder="results/pretrain/{pretrain_run}/encoder.ckpt",
            metrics="results/pretrain/{pretrain_run}/metrics.csv",
        params:
            run=lambda wc: job_params(PRETRAIN_RUNS[wc.pretrain_run], "pretrain"),
        log:
            "logs/pretrain/{pretrain_run}.log",
        benchmark:
            "results/benchmarks/pretrain/{pretrain_run}.tsv"
        threads: 2
        resources:
            gpu=lambda wc: 0 if PRETRAIN_RUNS[wc.pretrain_run]["device"] == "cpu" else 1,
            mem_mb=lambda wc, attempt: 8000 * attempt,
            runtime=lambda wc, attempt: 480 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/pretrain.py"
