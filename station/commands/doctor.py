"""`station doctor [--config FILE] [--json]`: self-test of this machine for the station.

Exit status: 0 when the station can run (warnings allowed), 1 when a check failed, 2 when
the station file is invalid. See station/doctor.py for what is checked.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="self-test: SoC, NPU, backend, cameras, PLC, disk, models, database")
    p.add_argument("--config", type=Path, default=None, help="station.toml (default: $STATION_CONFIG or /etc/station/station.toml)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--no-devices", action="store_true", help="do not enumerate GenICam devices (producers are still checked)")
    p.add_argument("--no-npu-probe", action="store_true", help="do not start a runtime on each NPU core")
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    from station.doctor import default_config_path, run_doctor

    # Library loggers (harvesters, discovery) would interleave with the report.
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)
    report = run_doctor(
        args.config or default_config_path(), enumerate_devices=not args.no_devices, probe_npu=not args.no_npu_probe
    )
    print(report.to_json() if args.json else report.render())
    if report.ok:
        return 0
    config = next((c for c in report.checks if c.name == "config"), None)
    return 2 if config is not None and config.details.get("invalid") else 1
