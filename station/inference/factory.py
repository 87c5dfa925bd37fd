"""Load a model by name from the models directory with the configured backend."""

from __future__ import annotations

from pathlib import Path

from station.inference.base import InferenceModel
from station.inference.metadata import resolve_model
from station.inference.onnx import OnnxModel


def load_model(models_dir: Path | str, name: str, backend: str = "onnxruntime", threads: int = 0) -> InferenceModel:
    """Resolve ``name`` (metadata + sha256 check) and open it. Raises ModelError."""
    meta, path = resolve_model(models_dir, name)
    if backend != "onnxruntime":
        raise ValueError(f"backend {backend!r} is not available yet")
    return OnnxModel(path, meta, threads=threads)
