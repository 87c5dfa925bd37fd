"""`station camera list` and `station camera grab`: GenTL producers and devices, test acquisition.

Producers come from ``--cti`` (repeatable), ``GENICAM_GENTL64_PATH``, and with
``--simulator`` the GenTL simulator (viky.cti) shipped in the ``genicam`` package.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import cv2
import numpy as np
import psutil

from station.alarms import AlarmBoard

log = logging.getLogger("station.cli.camera")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("camera", help="GenICam cameras: list producers and devices, grab test frames")
    csub = p.add_subparsers(dest="action", required=True)

    q = csub.add_parser("list", help="GenTL producers and their devices (vendor, model, serial)")
    _producer_args(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_list)

    q = csub.add_parser("grab", help="grab N frames from a device into PNG files; print fps, latency and dropped frames")
    _producer_args(q)
    q.add_argument("--device", default="0", help="serial number, user-defined name, device id or index (default 0)")
    q.add_argument("--count", type=int, required=True, help="frames to grab")
    q.add_argument("--out", type=Path, required=True, help="directory for frame_NNNNNN.png")
    q.add_argument("--trigger", choices=["software", "hardware", "freerun"], default="freerun")
    q.add_argument("--feature", action="append", default=[], metavar="NAME=VALUE",
                   help="GenICam feature to set before grabbing, e.g. ExposureTime=5000 (repeatable)")
    q.add_argument("--timeout-ms", type=int, default=2000, help="per-frame timeout")
    q.add_argument("--per-part", action="store_true",
                   help="one fresh frame per call as the pipeline grabs a part (flush, trigger, wait) instead of streaming")
    q.set_defaults(func=cmd_grab)


def usage_error(message: str) -> NoReturn:
    """Bad usage or configuration: exit status 2 (see station/cli.py)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _producer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cti", type=Path, action="append", default=[], help="GenTL producer file (repeatable)")
    p.add_argument("--simulator", action="store_true", help="add the GenTL simulator shipped with the genicam package")


def _producers(args) -> list[Path]:
    from station.camera.discovery import producer_paths, simulator_cti

    configured = list(args.cti)
    if args.simulator:
        sim = simulator_cti()
        if sim is None:
            usage_error("--simulator: the genicam package (with viky.cti) is not installed")
        configured.append(sim)
    paths = producer_paths(configured)
    if not paths:
        usage_error("no GenTL producer: pass --cti PATH, set GENICAM_GENTL64_PATH, or use --simulator")
    return paths


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def cmd_list(args) -> int:
    from station.camera.discovery import shared_producers

    paths = _producers(args)
    producers = shared_producers()
    problems = producers.ensure(paths)
    devices = producers.devices()
    if args.json:
        print(json.dumps({
            "producers": [{"path": str(p), "ok": p in producers.files, "problem": producers.problems.get(p, "")} for p in paths],
            "devices": [d.__dict__ for d in devices],
        }, indent=2))
    else:
        print("producers:")
        for p in paths:
            print(f"  {p}  {'ok' if p in producers.files else producers.problems.get(p, '')}")
        print("devices:" if devices else "devices: none")
        for d in devices:
            user = f" name {d.user_defined_name!r}" if d.user_defined_name else ""
            print(f"  [{d.index}] {d.vendor} {d.model} serial {d.serial_number!r}{user} id {d.id} ({d.tl_type})")
    producers.reset()
    # a broken producer is shown in the table; fail only when none of them could be used
    return 0 if len(problems) < len(paths) else 1


def cmd_grab(args) -> int:
    from station.camera.base import CameraError
    from station.camera.discovery import shared_producers
    from station.camera.genicam import GenicamCamera
    from station.config import GenicamCameraConfig
    from station.recipe import RecipeCamera

    if args.count < 1:
        usage_error("--count must be at least 1")
    features = {}
    for item in args.feature:
        name, sep, value = item.partition("=")
        if not sep or not name:
            usage_error(f"--feature {item!r}: expected NAME=VALUE")
        features[name] = _parse_value(value)
    config = GenicamCameraConfig(name="cli", cti=_producers(args), device=args.device,
                                 timeout_ms=args.timeout_ms, lost_after_timeouts=1, reconnect_backoff_ms=[60_000])
    camera = GenicamCamera(config, AlarmBoard())
    args.out.mkdir(parents=True, exist_ok=True)
    saved = queue.Queue(maxsize=64)  # PNG encoding off the acquisition loop; a full queue slows it down

    def writer() -> None:
        while (item := saved.get()) is not None:
            n, image = item
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
            cv2.imwrite(str(args.out / f"frame_{n:06d}.png"), bgr)

    thread = threading.Thread(target=writer, name="png-writer", daemon=True)
    got = 0
    try:
        camera.open()
        report = camera.configure(RecipeCamera(name="cli", trigger=args.trigger, features=features))
        for problem in report.problems():
            print(f"warning: {problem}", file=sys.stderr)
        thread.start()
        latencies_ms = []
        rss_start = psutil.Process().memory_info().rss
        views = (camera.grab(n, args.timeout_ms / 1000.0) for n in range(args.count)) if args.per_part \
            else camera.frames(args.count)
        t0 = last = time.perf_counter()
        for view in views:
            now = time.perf_counter()
            latencies_ms.append((now - last) * 1000.0)
            saved.put((got, view.image))
            got += 1
            last = time.perf_counter()  # PNG hand-off excluded from the next frame's latency
        elapsed = time.perf_counter() - t0
    except CameraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        saved.put(None)
        if thread.is_alive():
            thread.join()
        info = camera.describe()
        camera.close()
        shared_producers().reset()
    c = info["counters"]
    print(f"device {info['vendor']} {info['model']} serial {info['serial']!r}, trigger {info['trigger']}")
    p50, p99 = np.percentile(latencies_ms, [50, 99])
    what = "per-part grab (flush, trigger, fresh frame)" if args.per_part else "streamed frame"
    print(f"grabbed {got} frames in {elapsed:.2f} s: {got / elapsed:.1f} fps; dropped {c['dropped']}, "
          f"incomplete {c['incomplete']}, stale discarded {c['stale_discarded']}; PNGs in {args.out}")
    print(f"{what} latency: median {p50:.1f} ms, p99 {p99:.1f} ms")
    rss_end = psutil.Process().memory_info().rss
    print(f"process memory: {rss_start / 2**20:.1f} MB before, {rss_end / 2**20:.1f} MB after "
          f"({(rss_end - rss_start) / 2**20:+.1f} MB)")
    return 0
