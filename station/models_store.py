"""`station models pull`: put the models a recipe needs into the models directory, checked.

Sources, in order, for a model NAME:
1. already in the models directory with a matching sha256: nothing to do;
2. the repository's trained recipe models (``models/trained/NAME.json`` + file);
3. a local directory from ``STATION_MODEL_DIRS`` (``os.pathsep``-separated, e.g. ``../shared/models``),
   at one of the manifest entry's ``local`` paths (only for a pinned sha256);
4. the manifest entry's download ``urls`` (HTTP(S), resumable, sha256 checked before the file is
   renamed into place; only for a pinned sha256);
5. the entry's exporter (``export = "NAME"``, models/export/): the ONNX files are made from the
   upstream checkpoint with torch and checked numerically against the PyTorch model. The
   exporter's packages (the ``export`` extra) are installed only with the caller's consent
   (``installer``); without it the error names the exact command.

The manifest (``models/manifest.toml``) pins each file's sha256 (or its checkpoint's, for an
exported file, which is not byte-identical across torch versions) and carries the metadata that
becomes ``NAME.json`` next to the file (input size, normalisation, prompts, mask head, pair).
A file whose checksum does not match is never installed.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.download import download
from station.inference.metadata import InputSpec, ModelError, ModelMetadata, sha256_file
from station.paths import MANIFEST, TRAINED_DIR

log = logging.getLogger("station.models")

SHA256_PATTERN = r"^([0-9a-f]{64})?$"
# Called with (missing import names, the pip command) before the export extra is installed; True
# when it installed them (with the user's consent), False to stop with the command in the error.
Installer = Callable[[list[str], list[str]], bool]


class Checkpoint(BaseModel):
    """The upstream weights an exporter starts from."""

    model_config = ConfigDict(extra="forbid")

    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = None
    urls: list[str] = Field(default_factory=list, description="downloads, tried in order")
    package: str = Field("", description="where the file and its model code come from, e.g. a PyPI package")


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: str
    file: str
    sha256: str = Field(default="", pattern=SHA256_PATTERN, description="empty: not pinned (exported, or needs --sha256)")
    bytes: int | None = None
    input: InputSpec | None = None
    prompts: list[str] = Field(default_factory=lambda: ["box"])
    mask_index: int = 0
    pair: str | None = None
    local: list[str] = Field(default_factory=list, description="paths tried under each STATION_MODEL_DIRS entry")
    urls: list[str] = Field(default_factory=list)
    export: str | None = None  # exporter name in models/export/registry.py (e.g. "litemedsam")
    checkpoint: Checkpoint | None = None  # what the exporter starts from
    license: str = ""
    source: str = ""
    extra: dict = Field(default_factory=dict, description="copied into the metadata (e.g. mask_output)")

    def metadata(self, sha256: str, size: int, source: str, extra: dict | None = None) -> ModelMetadata:
        return ModelMetadata(
            name=self.name, role=self.role, file=self.file, sha256=sha256, bytes=size, input=self.input,
            prompts=self.prompts, mask_index=self.mask_index, pair=self.pair, source=source or self.source,
            extra={**self.extra, **({"license": self.license} if self.license else {}), **(extra or {})},
        )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ManifestEntry]

    def get(self, name: str) -> ManifestEntry | None:
        return next((m for m in self.models if m.name == name), None)

    def made_by(self, exporter: str) -> dict[str, ManifestEntry]:
        return {m.name: m for m in self.models if m.export == exporter}


def read_manifest(path: Path = MANIFEST) -> Manifest:
    try:
        return Manifest.model_validate(tomllib.loads(Path(path).read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} not found") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ModelError(f"model manifest {path} is invalid: {exc}") from None


def local_dirs() -> list[Path]:
    raw = os.environ.get("STATION_MODEL_DIRS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


@dataclass
class PullResult:
    name: str
    action: str  # "present" | "copied" | "downloaded" | "exported"
    source: str
    path: Path


def _installed(models_dir: Path, name: str) -> ModelMetadata | None:
    meta_path = models_dir / f"{name}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = ModelMetadata.read(meta_path)
    except ModelError:
        return None
    path = models_dir / meta.file
    if path.is_file() and sha256_file(path) == meta.sha256:
        return meta
    return None


def _copy_checked(src: Path, dest: Path, sha256: str) -> None:
    """Copy ``src`` to ``dest`` through a temporary file; raise ModelError if the checksum differs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        actual = sha256_file(tmp)
        if actual != sha256:
            raise ModelError(f"{src}: sha256 {actual[:12]}… does not match the pinned {sha256[:12]}…")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _pull_trained(name: str, models_dir: Path, trained_dir: Path) -> PullResult | None:
    meta_path = trained_dir / f"{name}.json"
    if not meta_path.is_file():
        return None
    meta = ModelMetadata.read(meta_path)
    src = trained_dir / meta.file
    if not src.is_file():
        raise ModelError(f"model {name}: {src} is missing (metadata {meta_path} names it)")
    _copy_checked(src, models_dir / meta.file, meta.sha256)
    meta.write(models_dir / f"{name}.json")
    return PullResult(name, "copied", str(src), models_dir / meta.file)


@dataclass
class PullOptions:
    """How far ``pull`` may go to get a model."""

    sources: list[Path] | None = None  # local directories (default: STATION_MODEL_DIRS)
    sha256: str | None = None  # for the named model: the sha256 to trust (with url, or unpinned)
    url: str | None = None  # for the named model: a download tried before the manifest's
    allow_export: bool = True
    installer: Installer | None = None  # consent to install the export extra (None: say the command)
    checkpoint_url: str | None = None  # tried before the manifest's checkpoint URLs


def pull(
    name: str,
    models_dir: Path | str,
    *,
    manifest: Manifest | None = None,
    trained_dir: Path = TRAINED_DIR,
    sources: list[Path] | None = None,
    sha256: str | None = None,
    url: str | None = None,
    allow_export: bool = True,
    installer: Installer | None = None,
    checkpoint_url: str | None = None,
) -> list[PullResult]:
    """Install ``name`` (and its pair) into ``models_dir``; one PullResult per model. Raises ModelError."""
    models_dir = Path(models_dir)
    opts = PullOptions(sources, sha256, url, allow_export, installer, checkpoint_url)
    results: list[PullResult] = []
    queue, seen = [name], set()
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        own = opts if current == name else replace(opts, sha256=None, url=None)  # --sha256/--url are the named file's
        for result in _pull_one(current, models_dir, manifest, trained_dir, own):
            if result.name in seen:
                continue
            seen.add(result.name)
            results.append(result)
            meta = ModelMetadata.read(models_dir / f"{result.name}.json")
            if meta.pair:
                queue.append(meta.pair)
    return results


def _pull_one(name: str, models_dir: Path, manifest: Manifest | None, trained_dir: Path,
              opts: PullOptions) -> list[PullResult]:
    if (meta := _installed(models_dir, name)) is not None:
        return [PullResult(name, "present", str(models_dir), models_dir / meta.file)]
    trained = _pull_trained(name, models_dir, trained_dir)
    if trained is not None:
        return [trained]
    manifest = manifest or read_manifest()
    entry = manifest.get(name)
    if entry is None:
        known = ", ".join(m.name for m in manifest.models)
        raise ModelError(f"model {name}: not in the manifest ({known}) nor in {trained_dir}")
    pinned = opts.sha256 or entry.sha256
    exportable = bool(entry.export and opts.allow_export)
    if not pinned and not exportable:
        raise ModelError(f"model {name}: the manifest pins no sha256; pass --sha256 (and --url) for the file you trust")
    tried: list[str] = []
    if pinned:
        got = _copy_or_download(entry, models_dir, pinned, opts, tried)
        if got is not None:
            return [got]
    if exportable:
        return _export(entry, manifest, models_dir, opts)
    where = "; ".join(tried) or "no STATION_MODEL_DIRS, no URL, no exporter"
    raise ModelError(f"model {name}: could not be fetched ({where})")


def _copy_or_download(entry: ManifestEntry, models_dir: Path, pinned: str, opts: PullOptions,
                      tried: list[str]) -> PullResult | None:
    """A checked copy from a local directory, else a checked download; None (reasons in ``tried``) if neither."""
    dest = models_dir / entry.file
    for base in opts.sources if opts.sources is not None else local_dirs():
        for rel in entry.local or [entry.file]:
            src = base / rel
            if not src.is_file():
                tried.append(f"{src}: not there")
                continue
            try:
                _copy_checked(src, dest, pinned)
            except ModelError as exc:
                tried.append(str(exc))
                continue
            entry.metadata(pinned, dest.stat().st_size, f"copied from {src}").write(models_dir / f"{entry.name}.json")
            return PullResult(entry.name, "copied", str(src), dest)
    for u in ([opts.url] if opts.url else []) + entry.urls:
        try:
            download(u, dest, pinned, size=entry.bytes if pinned == entry.sha256 else None)
        except ModelError as exc:
            tried.append(str(exc))
            continue
        entry.metadata(pinned, dest.stat().st_size, f"downloaded from {u}").write(models_dir / f"{entry.name}.json")
        return PullResult(entry.name, "downloaded", u, dest)
    if tried:
        log.info("model %s: no checked copy or download (%s); exporting", entry.name, "; ".join(tried))
    return None


def _ensure_export_packages(exporter, installer: Installer | None) -> None:
    """The exporter's packages importable, installing the export extra if ``installer`` consents."""
    from station.models.export.registry import install_command

    missing = exporter.missing()
    if not missing:
        return
    command = install_command()
    shown = " ".join(command)
    if installer is None or not installer(missing, command):
        raise ModelError(f"exporting {exporter.name} needs Python packages that are not installed ({', '.join(missing)}); "
                         f"install them with:  {shown}   (or pass --install-export-deps)")
    log.info("installing the export extra: %s", shown)
    proc = subprocess.run(command, check=False)
    if proc.returncode != 0:
        raise ModelError(f"installing the export extra failed (exit {proc.returncode}): {shown}")
    importlib.invalidate_caches()
    if still := exporter.missing():
        raise ModelError(f"after `{shown}`, still not importable: {', '.join(still)}")


def _export(entry: ManifestEntry, manifest: Manifest, models_dir: Path, opts: PullOptions) -> list[PullResult]:
    """Run the entry's exporter in a scratch folder; install what it made, with metadata, if it succeeds."""
    from station.models.export import ExportJob
    from station.models.export.registry import get_exporter

    exporter = get_exporter(entry.export)
    _ensure_export_packages(exporter, opts.installer)
    entries = manifest.made_by(entry.export)
    models_dir.mkdir(parents=True, exist_ok=True)
    cache = models_dir / "checkpoints"
    cache.mkdir(exist_ok=True)
    log.info("model %s: exporting %s with the %s exporter", entry.name, ", ".join(entries), exporter.name)
    with tempfile.TemporaryDirectory(dir=models_dir, prefix=f".export-{exporter.name}-") as scratch:
        job = ExportJob(entries=entries, out_dir=Path(scratch), cache_dir=cache, checkpoint_url=opts.checkpoint_url)
        made = exporter.load()(job)
        for item in made:  # all checked before any is installed
            if item.name not in entries or not item.path.is_file() or item.path.parent != job.out_dir:
                raise ModelError(f"exporter {exporter.name}: returned {item.name} at {item.path}, "
                                 f"which is not a file it made for one of {sorted(entries)}")
        results = []
        for item in made:
            made_entry = entries[item.name]
            dest = models_dir / made_entry.file
            extra = dict(item.extra)
            if made_entry.sha256:  # the pinned reference file, made from the same checkpoint: this export stands in for it
                extra["stands_for_sha256"] = [made_entry.sha256]
            meta = made_entry.metadata(sha256_file(item.path), item.path.stat().st_size, f"exported from {item.source}", extra)
            os.replace(item.path, dest)
            meta.write(models_dir / f"{item.name}.json")
            results.append(PullResult(item.name, "exported", item.source, dest))
    if entry.name not in {r.name for r in results}:
        raise ModelError(f"exporter {exporter.name} did not make {entry.name}")
    return results


def ensure_recipe_models(recipe_path: Path | str, models_dir: Path | str) -> list[PullResult]:
    """Pull whatever the recipe at ``recipe_path`` needs (station.recipe_models) and ``models_dir``
    lacks; a SAM encoder brings its decoder. Raises ModelError/ConfigError."""
    from station.recipe import load_recipe
    from station.recipe_models import recipe_models

    recipe = load_recipe(recipe_path).recipe
    results = []
    for name in recipe_models(recipe).names:
        results += pull(name, models_dir)
    return results
