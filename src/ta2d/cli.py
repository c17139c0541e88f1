"""The `ta2d` command: the library's entry points without Snakemake."""

from __future__ import annotations

import argparse
import logging
import sys

DEFAULT_CONFIG = "config/config.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ta2d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    config_help = ("config file; repeat it to merge several in order, as snakemake --configfile my.yaml merges "
                   "my.yaml over config/config.yaml (default: config/config.yaml)")
    p = sub.add_parser("demo", help="generate the synthetic GK-2A-format demo inputs of a config")
    p.add_argument("--config", action="append", help=config_help)

    p = sub.add_parser("inspect", help="show a chunk .pt file and check it against the chunk contract")
    p.add_argument("path")
    p.add_argument("--idx", type=int, default=None, help="also print sample N")

    p = sub.add_parser("verify", help="read every product of a workflow folder's results/ whole (chunks, embeddings, "
                                      "tiles, scenes, maps, model files, run checkpoints) and check the CRCs "
                                      "recorded when each was written, and the chunk contract; names every file "
                                      "that fails and the command that rebuilds just that file")
    p.add_argument("results", nargs="?", default="results", metavar="DIR",
                   help="a workflow folder or its results/ folder (default: results)")
    p.add_argument("--jobs", "-j", type=int, default=None,
                   help="processes checking files side by side (default: the CPUs this process may use)")
    p.add_argument("--config", action="append", default=None,
                   help="also check that every sample is in the split this config's split rule gives it (repeat "
                        "to merge, as for snakemake --configfile; its input paths need not exist)")

    p = sub.add_parser("validate-config", help="validate config files against the schema (several: merged in "
                                               "order, as snakemake --configfile merges my.yaml over config.yaml)")
    p.add_argument("config", nargs="+")

    p = sub.add_parser("map-day", help="TA maps of every slot of one day from a model file -> CF NetCDF "
                                       "(station-corrected with --labels and --stations), optionally PNGs and a GIF")
    p.add_argument("--model", required=True, help="a model file: results/models/{run}.pt (or best.pt)")
    p.add_argument("--scene", required=True, help="results/scenes/{key}.nc holding the day")
    p.add_argument("--static", required=True, help="static NetCDF (dem, land_sea_mask, landcover)")
    p.add_argument("--day", required=True, help="UTC day, e.g. 2024-04-10")
    p.add_argument("--out", required=True, help="output NetCDF")
    p.add_argument("--labels", default=None,
                   help="station observations for the correction (and the plots): a KMA label file or glob, with "
                        "--stations")
    p.add_argument("--stations", default=None, help="the station table of --labels")
    p.add_argument("--station-table", default=None, help="write the day's station table (leave-stations-out) here")
    p.add_argument("--png-dir", default=None,
                   help="also draw a PNG per slot into this folder (with the stations of --station-table) ...")
    p.add_argument("--gif", default=None, help="... and the day's animation here (beside it {stem}.html and the "
                                                "uncertainty map of one slot, {stem}_uncertainty.png)")
    p.add_argument("--background-t2m", default=None,
                   help="the reanalysis t2m file(s), a path or glob (inputs.background.t2m), with --orography: what "
                        "a model file trained with the background needs")
    p.add_argument("--orography", default=None, help="the reanalysis orography of --background-t2m")
    p.add_argument("--lapse-rate", type=float, default=6.5, help="K per km (inputs.background.lapse_rate_k_per_km)")
    p.add_argument("--slot-minutes", type=int, nargs="+", default=[0], help="minutes of the slots (default 0)")
    p.add_argument("--patch-size", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, ...")

    p = sub.add_parser("model-info", help="what a model file holds: model, inputs, training period and stations, "
                                          "test scores per validation scheme")
    p.add_argument("model", help="a model file, e.g. results/models/best.pt")
    p.add_argument("--json", action="store_true", help="everything but the weights, as JSON")

    text = ("list every period that has an inventory again, stating every raw file: the parse-time refresh trusts "
            "unchanged directory mtimes, so run this (in the workflow's folder) after editing a raw file in place")
    p = sub.add_parser("refresh-inventories", help=text, description=text)
    p.add_argument("--config", action="append", help=config_help)
    p.add_argument("--results", default="results", help="the results folder holding inventory/ (default results)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, OSError, IndexError) as err:
        print(f"ta2d {args.command}: error: {err}", file=sys.stderr)
        return 1


def _demo(args) -> int:
    from ta2d.config import load_config
    from ta2d.demo import generate_demo

    config = load_config(*(args.config or [DEFAULT_CONFIG]))
    summary = generate_demo(config)
    print(summary)
    return 0


def _inspect(args) -> int:
    from ta2d.chunks.inspect import describe, file_problems, load_chunk

    data = load_chunk(args.path)
    print(describe(data, args.idx))
    problems = file_problems(args.path, data)
    if problems:
        print(f"\n{args.path}: fails the chunk contract:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("\ncontract: ok")
    return 0


def _verify(args) -> int:
    from ta2d.config import load_config
    from ta2d.verify import available_cpus, report_lines, verify_products

    split_cfg = load_config(*args.config, check_files=False)["split"] if args.config else None
    report = verify_products(args.results, split_cfg, jobs=args.jobs or available_cpus())
    rule = "the config's split rule" if split_cfg is not None else "no config given: the split rule unchecked"
    summary, problems = report_lines(report, rule)
    for line in problems:
        print(line, file=sys.stderr)
    print("\n".join(summary))
    return 1 if report.failed or not report.files else 0


def _validate(args) -> int:
    from ta2d.config import load_config

    load_config(*args.config)
    print(f"{' + '.join(args.config)}: valid")
    return 0


def _refresh_inventories(args) -> int:
    from pathlib import Path

    from ta2d.config import load_config
    from ta2d.ingest.archive import refresh_inventories
    from ta2d.plan import Plan

    # the same arguments as the parse-time refresh (workflow/rules/common.smk), so both write the same bytes
    config = load_config(*(args.config or [DEFAULT_CONFIG]))
    plan = Plan.from_config(config)
    keys = plan.scene_keys
    inventory_dir = Path(args.results) / "inventory"
    if not inventory_dir.is_dir():
        raise FileNotFoundError(f"{inventory_dir} does not exist: run this in the workflow's folder, or give --results")
    raw_inputs = {k: config["inputs"][k] for k in ("kind", "l1b", "calibrated")}
    present = sum((inventory_dir / f"{key}.tsv").is_file() for key in keys)
    changed = refresh_inventories(raw_inputs, plan, inventory_dir, full=True)
    print(f"{present} inventories under {inventory_dir} listed again: {changed} changed")
    return 0


def _map_day(args) -> int:
    from pathlib import Path

    import pandas as pd

    from .maps.archive import day_slot_times, map_files

    try:
        day = pd.Timestamp(args.day).strftime("%Y%m%d")
    except ValueError as err:
        raise ValueError(f"--day {args.day!r} is not a day ({err})") from err
    if bool(args.labels) != bool(args.stations):
        raise ValueError("--labels and --stations go together")
    if bool(args.background_t2m) != bool(args.orography):
        raise ValueError("--background-t2m and --orography go together")
    background = {"t2m": args.background_t2m, "orography": args.orography,
                  "lapse_rate_k_per_km": args.lapse_rate} if args.background_t2m else None
    labels = None
    if args.labels:
        from .maps.observations import label_rows_of_days

        labels = label_rows_of_days({"path": args.labels}, [day])
    times = day_slot_times(day, args.slot_minutes)
    summary = map_files(Path(args.model).stem, args.model, args.scene, args.static, times, args.out,
                        args.station_table, labels=labels, stations=args.stations, patch_size=args.patch_size,
                        batch_size=args.batch_size, device=args.device, label="ta2d map-day", background=background)
    if args.png_dir or args.gif:
        if not (args.png_dir and args.gif):
            raise ValueError("--png-dir and --gif go together")
        from .maps.plots import plot_day_files

        gif = Path(args.gif)
        plot_day_files(args.out, args.station_table, args.png_dir, gif, gif.with_suffix(".html"),
                       uncertainty_png=gif.with_name(f"{gif.stem}_uncertainty.png"))
    print(summary)
    return 0


def _model_info(args) -> int:
    import json

    from .checksums import CHECKSUM_KEY
    from .models.model_file import describe, read_model_file

    info = read_model_file(args.model)
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if k not in ("model", "stats", CHECKSUM_KEY)}, indent=1,
                         default=str))
    else:
        print(describe(info, args.model))
    return 0


_COMMANDS = {"demo": _demo, "inspect": _inspect, "verify": _verify, "validate-config": _validate, "map-day": _map_day,
             "model-info": _model_info, "refresh-inventories": _refresh_inventories}

if __name__ == "__main__":
    sys.exit(main())
