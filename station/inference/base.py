"""The one inference interface for every model in the station.

A backend loads a model (file + metadata), runs named float32/uint8 arrays, and closes.
Failures are ``ModelError`` naming the model, whatever the backend underneath does.
"""

from __future__ import annotations

import abc

import numpy as np

from station.inference.metadata import ModelError, ModelMetadata

__all__ = ["InferenceModel", "ModelError"]


class InferenceModel(abc.ABC):
    metadata: ModelMetadata
    backend: str  # "onnxruntime" | "rknn"

    @property
    def name(self) -> str:
        return self.metadata.name

    @abc.abstractmethod
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; inputs and outputs by tensor name. Raises ModelError."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def fixed_input_shape(self, name: str) -> list[int] | None:
        """The one shape input ``name`` must have (an NPU form is built for fixed shapes), or
        None when the model takes any size there."""
        return None

    def __enter__(self) -> "InferenceModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
