# Label part + scene -> one chunk of patches per planned (split, period); then train-split statistics and the
# run summary that checks that every label row is a sample or a counted reject.


if TRAINS:  # a training period (ta2d.plan.Plan.trains); a mapping-only config has none

    rule build_patch_chunk:
        message:
            "Building chunk {wildcards.split}/{wildcards.key}"
        input:
            part=f"{LABELS_DIR}/{CHUNK_STEM}.csv",
            scene="results/scenes/{key}.nc",
            stations=config["inputs"]["stations"]["path"],
            static=config["inputs"]["static"]["path"],
            # the reanalysis files of the chunk's days (inputs.background; every file when their names do not
            # say which days they hold): a changed file rebuilds the chunks whose samples it may serve
            background=chunk_background_files,
        output:
            chunk=f"results/patch_pt/{CHUNK_STEM}.pt",
            rejects=f"results/patch_pt/{CHUNK_STEM}.rejects.csv",
            index=f"results/patch_pt/{CHUNK_STEM}.index.csv",
        params:
            static=config["inputs"]["static"],
            domain=config["domain"],
            patch_size=config["patch"]["size"],
            x_dtype=config["patch"]["x_dtype"],
            # the reanalysis (and the days whose t2m files the job reads) only when inputs.background is set: with
            # it null the params, and so the chunks, are what they were before the key existed
            **({"background": BACKGROUND, "days": period_bounds} if BACKGROUND is not None else {}),
        log:
            "logs/build_patch_chunk/{split}_{key}.log",
        benchmark:
            "results/benchmarks/build_patch_chunk/{split}_{key}.tsv"
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 15 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/build_patch_chunk.py"


    rule stats:
        message:
            "Normalisation statistics from the train chunks"
        input:
            # a fixed, hash-chosen share of the train chunks (stats.chunk_fraction), so that a rebuilt chunk outside it
            # reruns neither the statistics nor, through them, every embedding
            [f"results/patch_pt/{name}" for name in PLAN.stats_chunk_names(config["stats"]["chunk_fraction"],
                                                                             config["split"]["seed"])],
        output:
            "results/stats.json",
        log:
            "logs/stats.log",
        benchmark:
            "results/benchmarks/stats.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/stats.py"


    rule summary:
        message:
            "Checking that every label row is a sample or a counted reject"
        input:
            labels=f"{LABELS_DIR}/summary.json",
            months=expand("results/index/{ikey}/summary.json", ikey=PLAN.index_keys),
        output:
            "results/summary.json",
        log:
            "logs/summary.log",
        benchmark:
            "results/benchmarks/summary.tsv"
        localrule: True
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/summary.py"
