"""`station …` command line. Thin: each area registers its own subcommands.

Exit status: 0 success, 1 failure at run time, 2 bad configuration / recipe / usage.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from station.config_errors import ConfigError
from station.inference.metadata import ModelError

# Modules that add subcommands: each has register(subparsers) -> None.
# A parser added there sets `func=callable(args) -> int` via set_defaults.
COMMAND_MODULES = [
    "station.commands.core",  # demo, run, inspect, recipes
    "station.commands.users",  # HMI accounts (hmi/auth.py)
    "station.commands.camera",  # GenICam: camera list / grab
    "station.commands.history",  # history, db upgrade/check/backup/sweep/bench
    "station.commands.doctor",  # self-test of the machine (deploy)
    "station.commands.bench",  # pipeline throughput benchmark (NPU)
    "station.commands.plc",  # PLC: plc map / status / bench
    "station.commands.models",  # models pull (+ list/convert from commands/npu.py)
    "station.commands.vision",  # train, eval
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="station", description="Line-side visual inspection station")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:  # missing, corrupt or mismatching model: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
