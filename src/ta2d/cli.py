"""The `ta2d` command: the library's entry points without Snakemake."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ta2d", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate the synthetic GK-2A-format demo inputs of a config")
    p.add_argument("--config", default="config/config.yaml")

    p = sub.add_parser("inspect", help="show a chunk .pt file and check it against the chunk contract")
    p.add_argument("path")
    p.add_argument("--idx", type=int, default=None, help="also print sample N")

    p = sub.add_parser("validate-config", help="validate a config file against the schema")
    p.add_argument("config")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, OSError, IndexError) as err:
        print(f"ta2d {args.command}: error: {err}", file=sys.stderr)
        return 1


def _demo(args) -> int:
    from .config import load_config
    from .demo import generate_demo

    config = load_config(args.config)
    summary = generate_demo(config)
    print(summary)
    return 0


def _inspect(args) -> int:
    from .inspect_chunk import contract_problems, describe, load_chunk

    data = load_chunk(args.path)
    print(describe(data, args.idx))
    problems = contract_problems(data)
    if problems:
        print(f"\n{args.path}: fails the chunk contract:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("\ncontract: ok")
    return 0


def _validate(args) -> int:
    from .config import load_config

    load_config(args.config)
    print(f"{args.config}: valid")
    return 0


_COMMANDS = {"demo": _demo, "inspect": _inspect, "validate-config": _validate}

if __name__ == "__main__":
    sys.exit(main())
