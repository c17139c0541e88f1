# Raw archive -> one calibrated scene per period (a UTC day by default; outside the training period a map day's or
# a map slot's own, ta2d.plan.Plan.scene_keys).


rule inventory:
    message:
        "Listing the raw files of scene {wildcards.key}"
    input:
        demo_inputs,
    output:
        "results/inventory/{key}.tsv",
    params:
        inputs=RAW_INPUTS,
        freq=scene_freq,
        period=period_bounds,
    log:
        "logs/inventory/{key}.log",
    benchmark:
        "results/benchmarks/inventory/{key}.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/inventory.py"


rule calibrate:
    message:
        "Calibrating scene {wildcards.key} onto the 2 km domain"
    input:
        inventory="results/inventory/{key}.tsv",
    output:
        scene="results/scenes/{key}.nc",
        status="results/scenes/{key}.status.csv",
    params:
        inputs=RAW_INPUTS,
        freq=scene_freq,
        period=period_bounds,
        domain=config["domain"],
        scene=config["scene"],
    log:
        "logs/calibrate/{key}.log",
    benchmark:
        "results/benchmarks/calibrate/{key}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 3000 * attempt,
        # ~7.5 CPU-s a slot for single-chunk full-disk files (benchmarks/bench_calibrate_fd.py): 10 s a slot
        runtime=lambda wc, attempt: (10 + len(PLAN.scene_slots(wc.key)) * 10 // 60) * attempt,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/calibrate.py"
