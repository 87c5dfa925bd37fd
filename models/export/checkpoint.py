"""The upstream weights an exporter starts from, checked against the manifest's pinned sha256."""

from __future__ import annotations

from pathlib import Path

from station.download import download
from station.inference.metadata import ModelError, sha256_file

from . import ExportJob


def verified(path: Path, sha256: str, job: ExportJob) -> Path:
    """``path`` if its sha256 is the pinned one; ModelError otherwise."""
    with job.step(f"check {path.name}"):
        actual = sha256_file(path) if path.is_file() else None
    if actual != sha256:
        found = f"sha256 {actual[:12]}…" if actual else "missing"
        raise ModelError(f"checkpoint {path}: {found}, the manifest pins {sha256[:12]}…")
    return path


def fetched(entry, job: ExportJob) -> Path:
    """The entry's checkpoint in ``job.cache_dir``: kept from an earlier run, or downloaded (resumably)."""
    spec = entry.checkpoint
    if spec is None or not (spec.urls or job.checkpoint_url):
        raise ModelError(f"model {entry.name}: the manifest gives no checkpoint URL (pass --checkpoint-url)")
    dest = job.cache_dir / spec.file
    if dest.is_file():
        try:
            return verified(dest, spec.sha256, job)
        except ModelError:
            dest.unlink()
    tried = []
    for url in ([job.checkpoint_url] if job.checkpoint_url else []) + spec.urls:
        try:
            download(url, dest, spec.sha256, size=spec.bytes, desc=f"download {spec.file}")
            return dest
        except ModelError as exc:
            tried.append(str(exc))
    raise ModelError(f"model {entry.name}: checkpoint {spec.file} could not be downloaded ({'; '.join(tried)}); "
                     f"without internet, fetch it elsewhere and pass --checkpoint-url file:///path/to/{spec.file}")
