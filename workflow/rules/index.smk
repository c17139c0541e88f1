# Labels -> one part per planned chunk and per map unit (label_parts: the first build only; afterwards the parse-time refresh
# of common.smk keeps the parts up to date), and per index period the index rows and rejects of its chunks
# (build_index, downstream of the chunks). The DAG is static: see docs/architecture.md.


if LABELS is not None:

    rule label_parts:
        message:
            "Routing every label row to its chunk's part (first build)"
        input:
            demo_inputs,
        output:
            # a part per planned chunk and per map unit (results/labels/obs/{unit}.csv)
            parts=[f"{LABELS_DIR}/{name}" for name in planned_parts(PLAN)],
            rejects=f"{LABELS_DIR}/rejects.csv",
            summary=f"{LABELS_DIR}/summary.json",
        # no params on purpose: the label config and the split are read from snakemake.config, so that changing
        # them does not rerun this job (which would rewrite every part and so rebuild every chunk); the parse-time
        # refresh reroutes instead and rewrites only the parts whose rows change
        log:
            "logs/label_parts.log",
        benchmark:
            "results/benchmarks/label_parts.tsv"
        threads: 1
        resources:
            # one label file at a time, parsed in blocks: 0.27 GB for a month of 600 stations, 0.81 GB for a year
            # (a 151 MB file; benchmarks/bench_memory.py)
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 60 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/label_parts.py"


if TRAINS:

    rule build_index:
        message:
            "Index rows and rejects of the chunks of {wildcards.ikey}"
        input:
            index=lambda wc: [f"results/patch_pt/{chunk_name(s, k, '.index.csv')}" for s, k in PLAN.chunks_of_index(wc.ikey)],
            rejects=lambda wc: [f"results/patch_pt/{chunk_name(s, k, '.rejects.csv')}"
                                for s, k in PLAN.chunks_of_index(wc.ikey)],
        output:
            index="results/index/{ikey}/index.csv",
            rejects="results/index/{ikey}/rejects.csv",
            summary="results/index/{ikey}/summary.json",
        params:
            split=config["split"],
        log:
            "logs/build_index/{ikey}.log",
        benchmark:
            "results/benchmarks/build_index/{ikey}.tsv"
        localrule: True
        threads: 1
        resources:
            mem_mb=1000,
            runtime=10,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/build_index.py"
