"""RKNN backend: one ``rknnlite.api.RKNNLite`` runtime on the RK3588 NPU behind InferenceModel.

The runtime never raises: it returns -1 or ``None`` and logs a line. This adapter turns
each of those into ``ModelError`` naming the model, checks the ``.rknn`` file against its
metadata (sha256, tensor names and fixed shapes), and feeds inputs in the form the
``.rknn`` expects:

- normalisation baked in at conversion (``mean_values``/``std_values`` in the form):
  uint8 RGB NHWC. Callers may pass that directly, or the same float32 NCHW tensor they
  give ONNX Runtime; it is mapped back to uint8 (x * std + mean, rounded) here.
- otherwise: float32 as for ONNX Runtime, declared ``nchw`` for 4-D tensors.

``rknnlite`` is imported lazily (it exists only on aarch64 boards); tests inject the
double from ``station.inference.rknn_double`` as ``runtime_class``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError, ModelMetadata, verified_file

log = logging.getLogger("station.inference.rknn")

# RKNNLite core masks (rknn-toolkit-lite2 2.5.0): one runtime per core uses 1, 2, 4.
NPU_CORE_AUTO = 0
NPU_CORE_0, NPU_CORE_1, NPU_CORE_2 = 1, 2, 4
SINGLE_CORE_MASKS = (NPU_CORE_0, NPU_CORE_1, NPU_CORE_2)
VALID_CORE_MASKS = {0, 1, 2, 4, 3, 7, 0xFFFF}


class RknnTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]  # as the ONNX model takes it (NCHW for images); fixed, no dynamic dims
    dtype: str = "float32"


class RknnForm(BaseModel):
    """One converted form of a model, stored in ``ModelMetadata.forms["rknn-<target>-<quant>"]``."""

    model_config = ConfigDict(extra="forbid")

    file: str  # .rknn file name, relative to the metadata file
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    target: str = "rk3588"
    quant: Literal["fp16", "int8"]
    onnx: str | None = None  # ONNX the .rknn was built from when it is not the metadata's file (fixed-shape re-export)
    inputs: list[RknnTensor]
    outputs: list[str]
    # Normalisation baked into the .rknn (0..255 units, one list per input; None: not baked).
    mean_values: list[list[float]] | None = None
    std_values: list[list[float]] | None = None
    parity: dict[str, dict[str, float]] = Field(default_factory=dict)  # output -> {cosine, max_abs_error}
    toolkit_version: str = ""
    calibration: str = ""
    # a backbone form is built for one camera view size (the integrator's --view-size, H x W px);
    # its decision parity: the recipe's verdicts on held-back views with these features vs ONNX Runtime's
    view_size: list[int] | None = None
    decision_parity: dict[str, float | int | str] | None = None
    created_at: str = ""

    @property
    def baked_normalization(self) -> bool:
        return self.mean_values is not None


def form_key(target: str, quant: str) -> str:
    return f"rknn-{target}-{quant}"


def rknn_forms(metadata: ModelMetadata, target: str | None = None) -> dict[str, RknnForm]:
    """The valid RKNN forms of a model (optionally for one target), by key. Raises ModelError if one is malformed."""
    out = {}
    for key, raw in metadata.forms.items():
        if not key.startswith("rknn-"):
            continue
        try:
            form = RknnForm.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(f"model {metadata.name}: metadata form {key!r} is invalid: {exc}") from None
        if target is None or form.target == target:
            out[key] = form
    return out


def pick_form(metadata: ModelMetadata, target: str, key: str | None = None) -> tuple[str, RknnForm]:
    """Choose the RKNN form to run: ``key`` if given, else fp16 (accuracy), else int8. Raises ModelError."""
    forms = rknn_forms(metadata, target)
    if key is not None:
        if key not in forms:
            raise ModelError(f"model {metadata.name}: no form {key!r} in its metadata (has {sorted(forms) or 'none'})")
        return key, forms[key]
    for quant in ("fp16", "int8"):
        k = form_key(target, quant)
        if k in forms:
            return k, forms[k]
    raise ModelError(
        f"model {metadata.name}: no RKNN form for {target} "
        f"(run `station models convert --model {metadata.name} --target {target} --quant fp16`)"
    )


def default_runtime_class() -> Callable[..., Any]:
    """``rknnlite.api.RKNNLite``, imported only when the rknn backend is used."""
    try:
        from rknnlite.api import RKNNLite  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError(
            f"rknn backend needs rknn-toolkit-lite2 (aarch64 boards only; `pip install rknn-toolkit-lite2`): {exc}"
        ) from None
    return RKNNLite


def resolve_form_file(models_dir: Path, metadata: ModelMetadata, form: RknnForm, verify: bool = True) -> Path:
    """Path of the form's .rknn, checked against the metadata's sha256. Raises ModelError."""
    hint = f"run `station models convert --model {metadata.name}`"
    return verified_file(Path(models_dir) / form.file, metadata.name, form.sha256, hint, verify)


class RknnModel(InferenceModel):
    """One RKNNLite runtime bound to one core mask. ``run`` is serialised (a runtime is not re-entrant)."""

    backend = "rknn"

    def __init__(
        self,
        path: Path | str,
        metadata: ModelMetadata,
        form: RknnForm,
        core_mask: int = NPU_CORE_AUTO,
        runtime_class: Callable[..., Any] | None = None,
    ):
        if core_mask not in VALID_CORE_MASKS:
            raise ValueError(f"core mask {core_mask} is not an RKNNLite core mask ({sorted(VALID_CORE_MASKS)})")
        self.metadata = metadata
        self.form = form
        self.path = Path(path)
        self.core_mask = core_mask
        self._lock = threading.Lock()
        cls = runtime_class or default_runtime_class()
        where = f"{self.path} on core mask {core_mask}"
        try:
            rt = cls(verbose=False)
            ret = rt.load_rknn(str(self.path))
            if ret != 0:
                raise ModelError(f"model {self.name}: RKNNLite.load_rknn({self.path}) returned {ret}")
            # target=None: the NPU of this board. Any target string would start an adb server.
            ret = rt.init_runtime(core_mask=core_mask)
            if ret != 0:
                rt.release()
                raise ModelError(
                    f"model {self.name}: RKNNLite.init_runtime failed ({ret}) for {where}: corrupt .rknn, "
                    "librknnrt.so missing or of another version than the toolkit, or no NPU (see the runtime log)"
                )
        except ModelError:
            raise
        except Exception as exc:  # the real runtime should not raise; anything that does is a load failure
            raise ModelError(f"model {self.name}: cannot start RKNN runtime for {where}: {type(exc).__name__}: {exc}") from None
        self._runtime = rt
        if form.baked_normalization:
            self._mean = [np.asarray(m, np.float32) for m in form.mean_values]
            self._std = [np.asarray(s, np.float32) for s in (form.std_values or [])]
            if len(self._std) != len(self._mean):
                raise ModelError(f"model {self.name}: form has {len(self._mean)} mean_values but {len(self._std)} std_values")

    def fixed_input_shape(self, name: str) -> list[int] | None:
        return next((list(t.shape) for t in self.form.inputs if t.name == name), None)

    # ---- input conversion -----------------------------------------------------------
    def _feed(self, index: int, spec: RknnTensor, x: np.ndarray) -> tuple[np.ndarray, str]:
        """The array to hand RKNNLite for input ``spec`` and its data_format."""
        shape = list(spec.shape)
        baked = self.form.baked_normalization and index < len(self._mean) and len(shape) == 4
        if baked:
            n, c, h, w = shape
            if x.dtype == np.uint8 and list(x.shape) == [n, h, w, c]:
                return np.ascontiguousarray(x), "nhwc"
            if list(x.shape) != shape:
                raise ModelError(
                    f"model {self.name}: input {spec.name} has shape {list(x.shape)}, "
                    f"the .rknn takes {shape} (float NCHW) or {[n, h, w, c]} (uint8 RGB NHWC)"
                )
            mean = self._mean[index].reshape(1, -1, 1, 1)
            std = self._std[index].reshape(1, -1, 1, 1)
            raw = np.clip(np.rint(x.astype(np.float32) * std + mean), 0, 255).astype(np.uint8)
            return np.ascontiguousarray(raw.transpose(0, 2, 3, 1)), "nhwc"
        if list(x.shape) != shape:
            raise ModelError(f"model {self.name}: input {spec.name} has shape {list(x.shape)}, the .rknn takes {shape} (fixed)")
        arr = np.ascontiguousarray(x, dtype=np.dtype(spec.dtype))
        # one string per input: the toolkit lower()s each; it only matters for 4-D tensors
        return arr, "nchw"

    def _batch_of(self, inputs: dict[str, np.ndarray]) -> int | None:
        """N when every input is N times the .rknn's batch of 1 (e.g. N crops at once), else None."""
        sizes = set()
        for spec in self.form.inputs:
            x = inputs.get(spec.name)
            if x is None or spec.shape[:1] != [1] or np.ndim(x) != len(spec.shape):
                return None
            sizes.add(np.shape(x)[0])
        n = sizes.pop() if len(sizes) == 1 else None
        return n if n and n > 1 else None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = self._batch_of(inputs)
        if n is not None:
            # an .rknn has a fixed batch of 1: run the items one by one, stack the outputs
            parts = [self._run_one({k: np.asarray(v)[i : i + 1] for k, v in inputs.items()}) for i in range(n)]
            return {name: np.concatenate([p[name] for p in parts], axis=0) for name in self.form.outputs}
        return self._run_one(inputs)

    def _run_one(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds, formats = [], []
        for i, spec in enumerate(self.form.inputs):
            if spec.name not in inputs:
                raise ModelError(f"model {self.name}: input {spec.name!r} missing (got {sorted(inputs)})")
            arr, fmt = self._feed(i, spec, np.asarray(inputs[spec.name]))
            feeds.append(arr)
            formats.append(fmt)
        with self._lock:
            rt = self._runtime
            if rt is None:
                raise ModelError(f"model {self.name}: runtime is closed")
            try:
                outputs = rt.inference(inputs=feeds, data_format=formats)
            except Exception as exc:
                raise ModelError(f"model {self.name}: NPU inference raised on core mask {self.core_mask}: {exc}") from None
        if outputs is None:
            raise ModelError(f"model {self.name}: NPU inference failed on core mask {self.core_mask} (RKNNLite returned None)")
        if len(outputs) != len(self.form.outputs):
            raise ModelError(
                f"model {self.name}: NPU returned {len(outputs)} outputs, metadata names {len(self.form.outputs)}"
            )
        return {name: np.asarray(out) for name, out in zip(self.form.outputs, outputs)}

    def close(self) -> None:
        with self._lock:
            rt, self._runtime = self._runtime, None
        if rt is not None:
            try:
                rt.release()
            except Exception:  # releasing a broken runtime must not stop shutdown
                log.exception("model %s: RKNNLite.release failed", self.name)
