"""ONNX Runtime on the CPU: the backend wherever there is no NPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError, ModelMetadata


class OnnxModel(InferenceModel):
    backend = "onnxruntime"

    def __init__(self, path: Path | str, metadata: ModelMetadata, threads: int = 0):
        import onnxruntime as ort

        self.metadata = metadata
        self.path = Path(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelError(f"model {metadata.name}: cannot load {self.path}: {exc}") from None
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._input_shapes = {i.name: list(i.shape) for i in self._session.get_inputs()}

    def fixed_input_shape(self, name: str) -> list[int] | None:
        shape = self._input_shapes.get(name)
        return shape if shape and all(isinstance(d, int) and d > 0 for d in shape) else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self.output_names, inputs)
        except Exception as exc:
            raise ModelError(f"model {self.metadata.name}: inference failed: {exc}") from None
        return dict(zip(self.output_names, outputs))

    def close(self) -> None:
        self._session = None
