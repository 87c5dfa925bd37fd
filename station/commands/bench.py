"""`station bench`: pipeline throughput and efficiency on real models (see station/benchmarks/pipeline.py)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from station.paths import REPO_ROOT


def default_sam_dir() -> Path:
    shared = Path(os.environ.get("STATION_SHARED_DIR", REPO_ROOT.parent / "shared"))
    return shared / "models" / "mobilesam"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="pipeline throughput, per-stage latency and efficiency (onnxruntime or simulated RK3588)")
    p.add_argument("--backend", choices=["onnxruntime", "sim-rk3588"], default="onnxruntime")
    p.add_argument("--parts", type=int, default=None, help="parts per run (default 12 onnxruntime, 60 sim-rk3588)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--extra-workers", type=int, default=1, help="sim-rk3588: analyse workers beyond the NPU cores (default 1)")
    p.add_argument("--sam-dir", type=Path, default=None, help="folder with litemedsam_encoder/decoder.onnx (default ../shared/models/mobilesam)")
    p.add_argument("--recipe", type=Path, default=None, help="bench a recipe file as configured (its models and analyzer) instead")
    p.add_argument("--data", type=Path, default=None, help="with --recipe: manifest CSV of the recipe's images")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"), help="with --recipe: where its models are")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from station.benchmarks.pipeline import format_report, run_bench

    sam_dir = args.sam_dir or default_sam_dir()
    if args.recipe is None and not (sam_dir / "litemedsam_encoder.onnx").is_file():
        print(f"error: no litemedsam_encoder.onnx in {sam_dir} (give --sam-dir)")
        return 2
    parts = args.parts or (60 if args.backend == "sim-rk3588" else 12)
    if parts < 4:
        print("error: --parts must be at least 4")
        return 2
    with tempfile.TemporaryDirectory(prefix="station-bench-") as tmp:
        if args.recipe is not None:
            from station.benchmarks.pipeline import bench_recipe

            if args.data is None:
                print("error: --recipe needs --data MANIFEST.csv (the recipe's images)")
                return 2
            report = bench_recipe(args.recipe, args.data, args.models_dir, args.backend, parts, Path(tmp), threads=args.threads)
        else:
            report = run_bench(args.backend, parts, sam_dir, Path(tmp), threads=args.threads, extra_workers=args.extra_workers)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
