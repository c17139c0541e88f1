# TA maps as a product (ta2d.maps): per map (a model file: a run's, the best run's, or any given path) and UTC day,
# the hourly CF NetCDF with the station-corrected field and the day's station table, a PNG per slot and a GIF
# (map_plots), and the leave-stations-out evaluation of the correction over all mapped test days (map_correction).
# A map needs only its model file, the scenes, the static file and, for the correction, the routed observations
# (results/labels/obs/{unit}.csv): no run folder, no index. maps.unit day: one job per day (map_day); slot: one
# per slot (map_slot, from the slot's own scene) and the day assembled from them (assemble_day), so a new slot
# reruns only its own calibration and map. `snakemake maps` makes only these files.
from ta2d.maps.plan import map_sources, map_targets, slots_to_map

MAP_SOURCES = map_sources(config)  # {map name: model file}
MAP_NAMES = list(MAP_SOURCES) if PLAN.map_days else []
UNIT = PLAN.map_unit
SLOT_MINUTES = slot_minutes(config["inputs"])
STATIONS_PATH = [STATIONS["path"]] if LABELS is not None else []


# unit slot: the slots with files now, and the days complete enough to assemble (ta2d.maps.plan.slots_to_map)
SLOTS_BY_DAY, COMPLETE_DAYS = slots_to_map(PLAN, RAW_INPUTS) if UNIT == "slot" and MAP_NAMES else ({}, [])
OBSERVATION_PARTS = (lambda unit: [f"{LABELS_DIR}/{obs_part_name(unit)}"]) if LABELS is not None else (lambda unit: [])
MAP_DAYS = PLAN.map_days if UNIT == "day" else COMPLETE_DAYS
# the correction is scored on mapped test days only (labels of the training period)
SCORED = TRAINS and LABELS is not None and any(PLAN.in_training(d) for d in MAP_DAYS)
MAP_TARGETS = map_targets(MAP_NAMES, MAP_DAYS, config["maps"]["plots"], SCORED) + [
    f"results/maps/{n}/slots/{s}.nc" for n in MAP_NAMES for d, slots in SLOTS_BY_DAY.items() for s in slots]


wildcard_constraints:
    maprun="|".join(MAP_NAMES) or "NO_MAPS",
    day="[0-9]{8}",
    slot="[0-9]{8}T[0-9]{4}",


MAP_PARAMS = dict(
    slot_minutes=SLOT_MINUTES,
    patch_size=config["patch"]["size"],
    batch_size=config["maps"]["batch_size"],
    device=config["maps"]["device"],
    correction=config["maps"]["correction"],
    static=config["inputs"]["static"],
    # a model trained with the reanalysis background needs it (without inputs.background it is refused); absent
    # when null, so that the maps of a config without it are what they were before the key existed
    **({"background": BACKGROUND} if BACKGROUND is not None else {}),
)


if UNIT == "day":

    rule map_day:
        message:
            "TA maps of {wildcards.maprun} at every slot of {wildcards.day}, station-corrected"
        input:
            model=lambda wc: MAP_SOURCES[wc.maprun],
            scene=lambda wc: f"results/scenes/{PLAN.map_scene_key(wc.day)}.nc",
            static=config["inputs"]["static"]["path"],
            observations=lambda wc: OBSERVATION_PARTS(wc.day),
            stations=STATIONS_PATH,
            background=map_background_files,  # the t2m files of the map's day (all when their names do not say)
        output:
            nc="results/maps/{maprun}/{day}.nc",
            stations="results/maps/{maprun}/{day}_stations.csv",
        params:
            **MAP_PARAMS,
        log:
            "logs/map_day/{maprun}_{day}.log",
        benchmark:
            "results/benchmarks/map_day/{maprun}_{day}.tsv"
        # one thread: two days side by side gain more than a second thread for one (docs/maps.md#maps-at-the-models-speed)
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 3000 * attempt,
            runtime=lambda wc, attempt: 30 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/map_day.py"

else:

    rule map_slot:
        message:
            "TA map of {wildcards.maprun} at slot {wildcards.slot}, station-corrected"
        input:
            model=lambda wc: MAP_SOURCES[wc.maprun],
            scene="results/scenes/{slot}.nc",
            static=config["inputs"]["static"]["path"],
            observations=lambda wc: OBSERVATION_PARTS(wc.slot),
            stations=STATIONS_PATH,
            background=map_background_files,  # the t2m files of the map's day (all when their names do not say)
        output:
            nc="results/maps/{maprun}/slots/{slot}.nc",
            stations="results/maps/{maprun}/slots/{slot}_stations.csv",
        params:
            **MAP_PARAMS,
        log:
            "logs/map_slot/{maprun}_{slot}.log",
        benchmark:
            "results/benchmarks/map_slot/{maprun}_{slot}.tsv"
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=lambda wc, attempt: 10 * attempt,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/map_day.py"

    rule assemble_day:
        message:
            "The day file of {wildcards.maprun} on {wildcards.day} from its slot maps"
        input:
            slots=lambda wc: [f"results/maps/{wc.maprun}/slots/{s}.nc" for s in SLOTS_BY_DAY[wc.day]],
            tables=lambda wc: [f"results/maps/{wc.maprun}/slots/{s}_stations.csv" for s in SLOTS_BY_DAY[wc.day]],
        output:
            nc="results/maps/{maprun}/{day}.nc",
            stations="results/maps/{maprun}/{day}_stations.csv",
        params:
            slot_keys=lambda wc: SLOTS_BY_DAY[wc.day],
            slot_minutes=SLOT_MINUTES,
        log:
            "logs/assemble_day/{maprun}_{day}.log",
        localrule: True
        threads: 1
        resources:
            mem_mb=lambda wc, attempt: 2000 * attempt,
            runtime=10,
        conda:
            "../../envs/ta2d.yaml"
        script:
            "../../scripts/assemble_day.py"


rule map_plots:
    message:
        "PNG per slot and GIF of the {wildcards.maprun} maps of {wildcards.day}"
    input:
        nc="results/maps/{maprun}/{day}.nc",
        stations="results/maps/{maprun}/{day}_stations.csv",  # the map job's observations: no second read
    output:
        pngs=directory("results/maps/{maprun}/{day}_png"),
        gif="results/maps/{maprun}/{day}.gif",
        # one slot's TA beside its standard errors, stations marked (ta2d.maps.plots.plot_uncertainty)
        uncertainty=report(
            "results/maps/{maprun}/{day}_uncertainty.png",
            caption="../report/map_uncertainty.rst",
            category="2. Maps",
            subcategory="{maprun}",
            labels=lambda wc: map_report_labels(wc, "standard error of one slot"),
        ),
        html=report(
            "results/maps/{maprun}/{day}.html",
            caption="../report/map_animation.rst",
            category="2. Maps",
            subcategory="{maprun}",
            labels=lambda wc: map_report_labels(wc, "hourly maps"),
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


if SCORED:

    rule map_correction:
        message:
            "Station correction of the maps: raw vs kriged, leave-stations-out"
        input:
            expand("results/maps/{maprun}/{day}_stations.csv", maprun=MAP_NAMES, day=MAP_DAYS),
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


# every map of the config (maps.model x maps.days / maps.period), and only what they need
rule maps:
    input:
        MAP_TARGETS,
