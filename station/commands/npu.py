"""`station models list|convert|convert-env`: the NPU side of the models command group.

``register_npu(models_subparsers)`` is called by station/commands/models.py (which owns
the ``models`` group and ``pull``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from station.config_errors import ConfigError
from station.inference.metadata import ModelError, ModelMetadata
from station.inference.select import detect_npu


def register_npu(models_sub: argparse._SubParsersAction) -> None:
    p = models_sub.add_parser("list", help="every model in the models directory, its backend forms and parity")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = models_sub.add_parser("convert", help="convert a model to .rknn with rknn-toolkit2 (in its own venv) and check parity")
    p.add_argument("--model", help="model name (NAME.json in --models-dir); with --recipe: the recipe's backbone")
    p.add_argument("--recipe", help="a backbone recipe (name or .toml): convert its backbone for --view-size, its verdicts as a gate")
    p.add_argument("--view-size", metavar="HxW", help="with --recipe: the camera's view size in px (one size per camera on a line)")
    p.add_argument("--recipes-dir", type=Path, default=None)
    p.add_argument("--quant-algorithm", choices=["normal", "mmse", "kl_divergence"], default=None,
                   help="int8 calibration (rknn-toolkit2 quantized_algorithm; default normal, with --recipe mmse)")
    p.add_argument("--target", default="rk3588", help="SoC (default rk3588)")
    p.add_argument("--quant", choices=["fp16", "int8"], default="fp16")
    p.add_argument("--calib", type=Path, help="the recipe's images: manifest CSV or folder (int8 calibration, held-back parity)")
    p.add_argument("--models-dir", type=Path, default=Path("var/models"))
    p.add_argument("--venv", type=Path, default=Path("var/rknn-venv"))
    p.add_argument("--calib-count", type=int, default=32, help="calibration images (default 32)")
    p.add_argument("--held-back", type=int, default=None,
                   help="images kept out of calibration for parity (default 4; with --recipe 40 views, verdicts compared)")
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=D,D,...", help="fix a dynamic input shape")
    p.add_argument("--log", type=Path, default=Path("var/rknn-convert.log"), help="toolkit output (default var/rknn-convert.log)")
    p.set_defaults(func=cmd_convert)

    p = models_sub.add_parser("convert-env", help="create the rknn-toolkit2 venv from models/convert/requirements*.txt")
    p.add_argument("--venv", type=Path, default=Path("var/rknn-venv"))
    p.add_argument("--log", type=Path, default=Path("var/rknn-venv-create.log"))
    p.set_defaults(func=cmd_convert_env)


def model_rows(models_dir: Path) -> list[dict]:
    """One row per NAME.json: role, file, and each form with its parity; a bad file is a row with its error."""
    rows = []
    for meta_path in sorted(Path(models_dir).glob("*.json")):
        try:
            meta = ModelMetadata.read(meta_path)
        except ModelError as exc:
            rows.append({"name": meta_path.stem, "error": str(exc)})
            continue
        forms = {"onnxruntime": {"file": meta.file, "present": (meta_path.parent / meta.file).is_file()}}
        for key, form in meta.forms.items():
            forms[key] = {
                "file": form.get("file"),
                "present": (meta_path.parent / str(form.get("file"))).is_file(),
                "parity": form.get("parity", {}),
                "baked_normalization": form.get("mean_values") is not None,
                "view_size": form.get("view_size"),
                "decision_parity": form.get("decision_parity"),
            }
        rows.append({"name": meta.name, "role": meta.role, "forms": forms})
    return rows


def cmd_list(args: argparse.Namespace) -> int:
    rows = model_rows(args.models_dir)
    npu = detect_npu()
    if args.json:
        print(json.dumps({"models_dir": str(args.models_dir), "npu": npu.__dict__, "models": rows}, indent=2))
        return 0
    print(f"NPU: {'present' if npu.present else 'absent'} ({npu.reason})")
    if not rows:
        print(f"no models in {args.models_dir} (run `station models pull`)")
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<24} ERROR {r['error']}")
            continue
        print(f"{r['name']:<24} {r['role']}")
        for key, f in r["forms"].items():
            status = "" if f["present"] else "  [file missing]"
            parity = "  ".join(
                f"{out}: cos {p.get('cosine', float('nan')):.5f} max|err| {p.get('max_abs_error', float('nan')):.3g}"
                + (f" mask IoU {p['mask_iou']:.4f}" if "mask_iou" in p else "")
                for out, p in f.get("parity", {}).items()
            )
            print(f"    {key:<20} {f['file']}{status}  {parity}")
            if f.get("view_size"):
                d = f.get("decision_parity") or {}
                print(f"    {'':<20} for views of {f['view_size'][0]}x{f['view_size'][1]} px; verdicts flipped: "
                      f"{d.get('verdict_flips', '?')} of {d.get('views', '?')} held-back views")
    return 0


def _shapes(items: list[str]) -> dict[str, list[int]]:
    out = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            out[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise SystemExit(f"error: --shape {item!r}: expected INPUT=D,D,...") from None
    return out


def cmd_convert(args: argparse.Namespace) -> int:
    from station.inference.convert import ConversionError, convert_model

    if bool(args.recipe) != bool(args.view_size) or not (args.model or args.recipe):
        print("error: give --model NAME, or --recipe NAME with --view-size HxW (a backbone recipe's backbone)", file=sys.stderr)
        return 2
    args.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.recipe:
            form = _convert_recipe_backbone(args)
        else:
            form = convert_model(
                args.models_dir, args.model, args.target, args.quant, args.calib, args.venv,
                calib_count=args.calib_count, held_back=args.held_back or 4, shapes=_shapes(args.shape), log_file=args.log,
                quantized_algorithm=args.quant_algorithm,
            )
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, ConfigError) as exc:  # the view size, or a recipe that does not load
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = "x".join(str(d) for d in form.inputs[0].shape) if form.inputs else "?"
    print(f"{form.file} ({form.target}, {form.quant}, input {shape}); {form.calibration}")
    for out, p in form.parity.items():
        print(f"    {out}: cosine {p['cosine']:.6f}, max abs error {p['max_abs_error']:.4g}")
    if form.decision_parity:
        d = form.decision_parity
        print(f"    verdicts: {d['verdict_flips']} of {d['views']} held-back views flipped ({d['not_passed_by_onnx']} not passed "
              f"with ONNX Runtime's features); view scores differ by up to {d['max_view_score_diff']} log-odds")
    return 0


def _convert_recipe_backbone(args: argparse.Namespace):
    from station.commands.common import resolve_recipe
    from station.inference.convert import ConversionError
    from station.vision.convert_backbone import DEFAULT_HELD_BACK, convert_backbone, parse_view_size

    view_size = parse_view_size(args.view_size)
    loaded = resolve_recipe(args.recipe, args.recipes_dir)
    if args.model and args.model != getattr(loaded.recipe.vision, "backbone", None):
        raise ConversionError(f"--model {args.model}: recipe {loaded.recipe.name} runs {getattr(loaded.recipe.vision, 'backbone', None)!r}")
    if args.calib is None:
        raise ConversionError("a recipe's backbone needs the recipe's images (--calib MANIFEST.csv or folder): calibration and verdicts")
    return convert_backbone(args.models_dir, loaded, view_size, args.calib, args.target, args.quant, args.venv,
                            calib_count=args.calib_count, held_back=args.held_back or DEFAULT_HELD_BACK, log_file=args.log,
                            quantized_algorithm=args.quant_algorithm or "mmse")


def cmd_convert_env(args: argparse.Namespace) -> int:
    from station.inference.convert import ConversionError, ensure_convert_env

    args.log.parent.mkdir(parents=True, exist_ok=True)
    try:
        python = ensure_convert_env(args.venv, args.log)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"rknn-toolkit2 venv ready: {python}")
    return 0
