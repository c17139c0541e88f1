# Chunks -> trained runs (train.runs in the config: the Clay transfer model and the baselines).
# With a frozen encoder the per-chunk embeddings are computed once by embed_chunk; its params hold
# only what changes the encoder's output, so a head hyper-parameter reruns train but no embedding.
if TRAINS:  # a training period (ta2d.plan.Plan.trains); a mapping-only config has none

    rule embed_chunk:
        message:
            "Embedding chunk {wildcards.split}/{wildcards.key} with the frozen encoder of run {wildcards.run}"
        input:
            chunk=f"results/patch_pt/{CHUNK_STEM}.pt",
            stats="results/stats.json",
            encoder=pretrained_encoder,
        output:
            f"results/embed/{{run}}/{CHUNK_STEM}.pt",
        params:
            encoder=encoder_params,
        log:
            "logs/embed_chunk/{run}/{split}_{key}.log",
        benchmark:
            "results/benchmarks/embed_chunk/{run}/{split}_{key}.tsv"
        threads: 1
        resources:
            gpu=run_gpus,
            mem_mb=lambda wc, attempt: 4000 * attempt,
            runtime=lambda wc, attempt: 20 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/embed_chunk.py"


    rule train:
        message:
            "Training run {wildcards.run}"
        input:
            train=chunk_files(("train",)),
            val=chunk_files(("val",)),
            stats="results/stats.json",
            embeddings=embedding_files,
            encoder=pretrained_encoder,
        output:
            best="results/runs/{run}/best.pt",
            metrics="results/runs/{run}/metrics.csv",
        params:
            run=train_params,
            embed_dir=lambda wc, input: os.path.dirname(input.embeddings[0]) if input.embeddings else None,
        log:
            "logs/train/{run}.log",
        benchmark:
            "results/benchmarks/train/{run}.tsv"
        threads: train_threads
        resources:
            # gpus: N -> N GPUs for ONE task: scripts/train.py starts torchrun with N processes itself
            gpu=train_gpus,
            mem_mb=lambda wc, attempt: 8000 * RUNS[wc.run]["gpus"] * attempt,
            runtime=lambda wc, attempt: 240 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/train.py"
