"""Exporters: make the station's ONNX files from a model family's upstream weights.

``station models pull NAME`` uses one when NAME's manifest entry names it (``export =
"litemedsam"``) and no checked copy or download of the file is to be had. The puller
(station/models_store.py):

1. checks, without importing them, that the exporter's Python packages are installed
   (``registry.Exporter.needs``; the ``export`` extra of pyproject.toml installs them);
2. imports the exporter's module and calls ``export(job)`` with a fresh, empty ``job.out_dir``;
3. for each ``Exported`` returned: checks the file is there, hashes it, writes ``NAME.json``
   from the manifest entry plus ``Exported.extra``, and moves both into the models directory.
   If ``export`` raises, nothing is installed.

An exporter is a module with one function::

    def export(job: ExportJob) -> list[Exported]

It writes its files into ``job.out_dir``, keeps what is worth keeping between runs (a
downloaded checkpoint) in ``job.cache_dir``, shows long steps with ``job.step(...)``, and checks
its result NUMERICALLY against the framework model it came from (an export is not
byte-identical across torch versions, so a hash proves nothing), raising ``ModelError`` when the
check fails. torch and its friends are imported inside exporter modules only: the station's
runtime never imports torch.

To add a family: write ``models/export/FAMILY.py`` with ``export(job)``, register it in
``registry.EXPORTERS`` with the import names it needs, set ``export = "FAMILY"`` on its manifest
entries, and add its packages to the ``export`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from station.progress import step

if TYPE_CHECKING:
    from station.models_store import ManifestEntry


@dataclass
class ExportJob:
    entries: dict[str, "ManifestEntry"]  # the manifest entries this exporter makes, by name
    out_dir: Path  # write the exported files here
    cache_dir: Path  # downloads kept between runs (e.g. a resumable checkpoint)
    checkpoint_url: str | None = None  # tried before the manifest's checkpoint URLs (a plant mirror)
    step: Callable[..., Any] = step  # progress display: ``with job.step("export encoder"): ...``

    def by_role(self, role: str) -> "ManifestEntry":
        for entry in self.entries.values():
            if entry.role == role:
                return entry
        raise KeyError(f"no manifest entry with role {role} among {sorted(self.entries)}")


@dataclass
class Exported:
    name: str  # the manifest entry this file is for
    path: Path  # the file written in job.out_dir
    source: str  # what it was exported from (the metadata's source is "exported from SOURCE")
    extra: dict = field(default_factory=dict)  # merged into the metadata's ``extra`` (parity figures, versions)
