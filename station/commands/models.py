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
    q.add_argument("--no-export", action="store_true",
                   help="never fall back to exporting a model from its checkpoint (models/export/)")
    q.add_argument("--install-export-deps", action="store_true",
                   help="install the `export` extra (torch, timm, model code) without asking if an export needs it")
    q.add_argument("--checkpoint-url", help="get an exported model's checkpoint from here first: a plant mirror, or "
                                            "file:///path for a copy brought in by hand; its sha256 is still the manifest's")
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
                           allow_export=not args.no_export, installer=_installer(args.install_export_deps),
                           checkpoint_url=args.checkpoint_url)
        except ModelError as exc:
            failed += 1
            print(f"FAILED {name}: {exc}", file=sys.stderr)
            continue
        for r in results:
            print(f"{r.name:<28} {r.action:<10} {r.path}  (from {r.source})")
    return 1 if failed else 0


def _installer(consented: bool):
    """Whether to install the export extra: yes with --install-export-deps, else ask on a terminal.

    Never silently: on a line PC, pip installing torch (hundreds of MB, possibly a CUDA build) into
    the station's environment changes a validated installation, so it takes a person's yes or an
    explicit flag; without either the error names the exact command to run in a maintenance window.
    """

    def ask(missing: list[str], command: list[str]) -> bool:
        if consented:
            return True
        if not (sys.stdin.isatty() and sys.stderr.isatty()):
            return False
        print(f"Exporting needs Python packages that are not installed: {', '.join(missing)}.\n"
              f"  {' '.join(command)}", file=sys.stderr)
        try:
            return input("Install them now? [y/N] ").strip().lower() in ("y", "yes")
        except EOFError:
            return False

    return ask
