# The embedded synthetic demo: GK-2A-format L1B files, static fields, station table and KST labels
# with known truth and planted defects (docs/demo.md). Defined only when demo.enabled, so that with
# real data no rule claims the user's input files.
if DEMO:

    rule demo:
        message:
            "Generating the synthetic GK-2A demo inputs"
        output:
            manifest=DEMO_MANIFEST,
            labels=config["inputs"]["labels"]["path"],
            stations=config["inputs"]["stations"]["path"],
            static=config["inputs"]["static"]["path"],
        params:
            config={k: config[k] for k in ("period", "domain", "inputs", "patch", "demo")},
        log:
            "logs/demo.log",
        benchmark:
            "results/benchmarks/demo.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/demo.py"
