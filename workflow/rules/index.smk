# Labels x stations x scene slots -> index, splits and one manifest per chunk. A checkpoint: the set
# of chunks is known only after it ran, and only chunks whose manifest content changed are rebuilt.


checkpoint build_index:
    message:
        "Matching labels to scenes and stations; writing per-chunk manifests"
    input:
        labels=config["inputs"]["labels"]["path"],
        stations=config["inputs"]["stations"]["path"],
        static=config["inputs"]["static"]["path"],
        status=expand("results/scenes/{key}.status.csv", key=KEYS),
    output:
        index="results/index/index.csv",
        splits=expand("results/index/index_{split}.csv", split=SPLITS),
        rejects="results/index/rejects.csv",
        summary="results/index/summary.json",
        chunks=directory("results/index/chunks"),
    params:
        labels=config["inputs"]["labels"],
        static=config["inputs"]["static"],
        domain=config["domain"],
        period=PERIOD,
        freq=FREQ,
        split=config["split"],
        patch_size=config["patch"]["size"],
    log:
        "logs/build_index.log",
    benchmark:
        "results/benchmarks/build_index.tsv"
    threads: 1
    resources:
        # measured: ~18x the label CSV's size (bench_dag: 3.1 GB for a 177 MB year of 600 stations);
        # input.size_mb is the total of all inputs, which the label file dominates
        mem_mb=lambda wc, input, attempt: max(4000, 25 * int(input.size_mb)) * attempt,
        runtime=lambda wc, input, attempt: max(30, int(input.size_mb / 10)) * attempt,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/build_index.py"
