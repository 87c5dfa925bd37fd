"""`station bench`: a recipe's throughput and per-stage latency on the real pipeline (station/benchmarks/pipeline.py)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="a recipe's throughput, per-stage latency and efficiency (onnxruntime or simulated RK3588)")
    p.add_argument("--recipe", default="demo-part", help="recipe name (in --recipes-dir) or path to a .toml (default demo-part)")
    p.add_argument("--data", type=Path, default=None, help="manifest CSV of the recipe's images (default: simulated parts)")
    p.add_argument("--backend", choices=["onnxruntime", "sim-rk3588"], default="onnxruntime")
    p.add_argument("--parts", type=int, default=None, help="parts per run (default 12 onnxruntime, 60 sim-rk3588)")
    p.add_argument("--frames", type=int, default=8, help="distinct views replayed (default 8; from --data in a seeded order)")
    p.add_argument("--view-size", metavar="HxW", default=None,
                   help="a backbone recipe: the camera's view size (views of --data with its model input; the NPU form's size)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--extra-workers", type=int, default=1, help="sim-rk3588: analyse workers beyond the NPU cores (default 1)")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"), help="where the recipe's models are (pulled if missing)")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from station.benchmarks.pipeline import bench_recipe, format_report
    from station.commands.common import resolve_recipe

    parts = args.parts or (60 if args.backend == "sim-rk3588" else 12)
    if parts < 4:
        print("error: --parts must be at least 4", file=sys.stderr)
        return 2
    view_size = None
    if args.view_size:
        from station.vision.convert_backbone import parse_view_size

        try:
            view_size = parse_view_size(args.view_size)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        report = bench_recipe(loaded.path, args.data, args.models_dir, args.backend, parts, Path(tmp), threads=args.threads,
                              extra_workers=args.extra_workers, distinct_frames=args.frames, view_size=view_size)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
