"""`station models …`: this module owns the group and `pull`; the NPU side (`list`, `convert`,
`convert-env`) is added by station/commands/npu.py through ``register_npu``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="fetch, list and convert models")
    models_sub = p.add_subparsers(dest="models_action", required=True)

    q = models_sub.add_parser("pull", help="fetch models into the models directory and check their sha256")
    q.add_argument("names", nargs="*", help="model names (default: every model the recipe needs)")
    q.add_argument("--recipe", help="pull what this recipe needs (name in recipes/ or a .toml path)")
    q.add_argument("--models-dir", type=Path, default=Path("var/models"))
    q.add_argument("--manifest", type=Path, help="model manifest (default models/manifest.toml)")
    q.add_argument("--url", help="download URL for a model the manifest does not locate")
    q.add_argument("--sha256", help="the sha256 you trust for --url (required when the manifest pins none)")
    q.add_argument("--no-export", action="store_true", help="never fall back to exporting LiteMedSAM")
    q.set_defaults(func=cmd_pull)

    # NPU engineer's commands (list, convert, convert-env) hang off the same group:
    from station.commands.npu import register_npu

    register_npu(models_sub)


def cmd_pull(args: argparse.Namespace) -> int:
    from station.commands.common import resolve_recipe
    from station.inference.metadata import ModelError
    from station.models_store import MANIFEST, pull, read_manifest
    from station.recipe_models import recipe_models

    names = list(args.names)
    if args.recipe:
        names += recipe_models(resolve_recipe(args.recipe, None).recipe).names
    if not names:
        print("error: name a model or give --recipe", file=sys.stderr)
        return 2
    failed = 0
    try:
        manifest = read_manifest(args.manifest or MANIFEST)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in names:
        try:
            results = pull(name, args.models_dir, manifest=manifest, url=args.url, sha256=args.sha256,
                           allow_export=not args.no_export)
        except ModelError as exc:
            failed += 1
            print(f"FAILED {name}: {exc}", file=sys.stderr)
            continue
        for r in results:
            print(f"{r.name:<28} {r.action:<10} {r.path}  (from {r.source})")
    return 1 if failed else 0
