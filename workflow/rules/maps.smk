# TA maps as a product (ta2d.maps): per map run and UTC day, the hourly CF NetCDF with the station-corrected
# field and the day's station table (map_day), a PNG per slot and a GIF (map_plots), and the leave-stations-out
# evaluation of the correction over all mapped test days (map_correction). The DAG is static: the "best" run is
# chosen inside map_day from results/eval/metrics.csv and named in the file's attributes.
from ta2d.ingest.archive import slot_minutes
from ta2d.maps.plan import BEST, day_period_key, map_days, map_runs, map_targets, model_runs

MAP_RUNS = map_runs(config["maps"]["runs"], list(RUNS))
MAP_DAYS = map_days(config["maps"]["days"], PERIOD, config["split"], config["maps"]["max_days"]) if MAP_RUNS else []
MAP_TARGETS = map_targets(MAP_RUNS, MAP_DAYS, config["maps"]["plots"])  # for rule all


wildcard_constraints:
    maprun="|".join(MAP_RUNS) or "NO_MAP_RUNS",
    day="[0-9]{8}",


rule map_day:
    message:
        "TA maps of run {wildcards.maprun} at every slot of {wildcards.day}, station-corrected"
    input:
        checkpoints=lambda wc: expand("results/runs/{run}/best.pt", run=model_runs(wc.maprun, RUNS)),
        metrics=lambda wc: ["results/eval/metrics.csv"] if wc.maprun == BEST else [],
        scene=lambda wc: f"results/scenes/{day_period_key(wc.day, FREQ)}.nc",
        static=config["inputs"]["static"]["path"],
        # the station observations of the day: the index of the index period its chunks belong to
        index=lambda wc: f"results/index/{PLAN.index_key(day_period_key(wc.day, FREQ))}/index.csv",
    output:
        nc="results/maps/{maprun}/{day}.nc",
        stations="results/maps/{maprun}/{day}_stations.csv",
    params:
        runs=lambda wc: model_runs(wc.maprun, RUNS),
        slot_minutes=slot_minutes(config["inputs"]),
        patch_size=config["patch"]["size"],
        batch_size=config["maps"]["batch_size"],
        device=config["maps"]["device"],
        correction=config["maps"]["correction"],
        static=config["inputs"]["static"],
    log:
        "logs/map_day/{maprun}_{day}.log",
    benchmark:
        "results/benchmarks/map_day/{maprun}_{day}.tsv"
    # one thread: the models' small convolutions hardly gain from a second one, two days side by side do
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 60 * attempt,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/map_day.py"


rule map_plots:
    message:
        "PNG per slot and GIF of the {wildcards.maprun} maps of {wildcards.day}"
    input:
        nc="results/maps/{maprun}/{day}.nc",
        stations="results/maps/{maprun}/{day}_stations.csv",  # map_day's observations: no second index scan
    output:
        pngs=directory("results/maps/{maprun}/{day}_png"),
        gif="results/maps/{maprun}/{day}.gif",
        html=report(
            "results/maps/{maprun}/{day}.html",
            caption="../report/map_animation.rst",
            category="2. Maps",
            subcategory="{maprun}",
            labels=lambda wc: {"map": wc.maprun, "day (UTC)": f"{wc.day[:4]}-{wc.day[4:6]}-{wc.day[6:]}"},
        ),
    log:
        "logs/map_plots/{maprun}_{day}.log",
    benchmark:
        "results/benchmarks/map_plots/{maprun}_{day}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/map_plots.py"


rule map_correction:
    message:
        "Station correction of the maps: raw vs kriged, leave-stations-out"
    input:
        expand("results/maps/{maprun}/{day}_stations.csv", maprun=MAP_RUNS, day=MAP_DAYS),
    output:
        csv="results/eval/map_correction.csv",
        markdown="results/eval/map_correction.md",
        html=report(
            "results/eval/map_correction.html",
            caption="../report/map_correction.rst",
            category="1. Evaluation",
            subcategory="Summary",
        ),
    params:
        split=config["split"],
        correction=config["maps"]["correction"],
    log:
        "logs/map_correction.log",
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 10 * attempt,
    conda:
        "../../envs/ta2d.yaml"
    script:
        "../../scripts/map_correction.py"
