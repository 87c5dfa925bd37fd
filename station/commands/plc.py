"""`station plc …`: the register map, a live status read, the link benchmark."""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plc", help="PLC link: register map, status of a running station, benchmark")
    psub = p.add_subparsers(dest="action", required=True)

    q = psub.add_parser("map", help="print the Modbus register map and the error-code table")
    q.add_argument("--json", action="store_true", help="machine-readable map")
    q.set_defaults(func=cmd_map)

    q = psub.add_parser("status", help="read a running station's status block over Modbus TCP and decode it")
    q.add_argument("--host", default="127.0.0.1")
    q.add_argument("--port", type=int, default=5020)
    q.add_argument("--unit", type=int, default=1)
    q.set_defaults(func=cmd_status)

    q = psub.add_parser("bench", help="handshake latencies (p50/p99) over loopback with a PLC polling every --poll-ms")
    q.add_argument("--parts", type=int, default=200)
    q.add_argument("--poll-ms", type=float, default=10.0, help="PLC poll period (default 10 ms)")
    q.add_argument("--result-buffer", type=int, default=8)
    q.add_argument("--crowd", type=int, default=0, metavar="N",
                   help="also run with N other clients polling at full speed; report both and the ratio of the medians")
    q.add_argument("--reader-interval-ms", type=float, default=None,
                   help="the server's pacing of clients that only read (default: plc.reader_interval_ms's default; 0: none)")
    q.add_argument("--rate", type=float, default=None, help="at most this many parts per second (default: as fast as it goes)")
    q.add_argument("--no-history", action="store_true",
                   help="the PLC as the only sink (no verdict journal / database before it): the link alone")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_bench)


def cmd_map(args: argparse.Namespace) -> int:
    from station.plc.registers import ERROR_TEXT, INPUT_MAP, OUTPUT_MAP, RESULT_CODES, format_map

    if args.json:
        doc = {
            "input": [r.__dict__ for r in INPUT_MAP],
            "output": [r.__dict__ for r in OUTPUT_MAP],
            "result_codes": {code: text for code, text in RESULT_CODES},
            "errors": {int(code): {"name": code.name, "text": text} for code, text in ERROR_TEXT.items()},
        }
        print(json.dumps(doc, indent=2))
    else:
        print(format_map())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pymodbus.client import ModbusTcpClient
    from pymodbus.exceptions import ModbusException

    from station.plc.registers import OUTPUT_BASE, OUTPUT_MAP, OUTPUT_WORDS, ERROR_TEXT, ErrorCode, Status, describe_bits, join_u32

    client = ModbusTcpClient(args.host, port=args.port, timeout=2, retries=0)
    try:
        if not client.connect():
            print(f"error: cannot connect to {args.host}:{args.port}", file=sys.stderr)
            return 1
        rr = client.read_holding_registers(OUTPUT_BASE, count=OUTPUT_WORDS, device_id=args.unit)
    except ModbusException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if rr.isError():
        print(f"error: station answered {rr}", file=sys.stderr)
        return 1
    regs = rr.registers
    for r in OUTPUT_MAP:
        off = r.address - OUTPUT_BASE
        value = regs[off] if r.width == 1 else join_u32(regs[off], regs[off + 1])
        extra = ""
        if r.name == "STATUS":
            extra = describe_bits(Status, value)
        elif r.name == "ERROR_CODE":
            code = ErrorCode(value) if value in ErrorCode._value2member_map_ else None
            extra = f"{code.name}: {ERROR_TEXT[code]}" if code is not None else "unknown code"
        print(f"{r.address:<4} {r.name:<16} {value:>10}  {extra}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import logging

    from station.benchmarks.plc import crowd_ratio, format_report, run_bench

    if not getattr(args, "verbose", False):
        logging.getLogger("station.parts").setLevel(logging.WARNING)  # one line per part drowns the report

    def bench(crowd: int) -> dict:
        return run_bench(parts=args.parts, poll_ms=args.poll_ms, result_buffer=args.result_buffer, crowd=crowd,
                         reader_interval_ms=args.reader_interval_ms, rate=args.rate, history=not args.no_history)

    if args.crowd < 0:
        print("error: --crowd must be >= 0", file=sys.stderr)
        return 2
    runs = [bench(0)] + ([bench(args.crowd)] if args.crowd else [])
    ratio = crowd_ratio(*runs) if args.crowd else None
    if args.json:
        doc = runs[0] if not args.crowd else {"quiet": runs[0], "crowded": runs[1], "cycle_ratio_p50": ratio}
        print(json.dumps(doc, indent=2))
    else:
        print("\n\n".join(format_report(r) for r in runs))
        if args.crowd:
            print(f"\nhandshake cycle (trigger → RESULT_VALID seen by the PLC), median crowded / quiet: {ratio}")
    complete = all(r["stored"] in (None, r["parts"]) for r in runs)  # every verdict recorded
    return 0 if all(r["in_order_none_lost"] for r in runs) and complete else 1
