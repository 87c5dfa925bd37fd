"""A test double of ``rknnlite.api.RKNNLite`` (rknn-toolkit-lite2 2.5.0) for machines without an NPU.

Same constructor, methods, parameters, defaults, constants and return conventions as the
real class (see ../shared/notes/rknn.md): it never raises, failures are -1 or ``None``
plus a log line. ``inference`` computes real outputs with ONNX Runtime on the ONNX model
the ``.rknn`` was converted from, found through the model metadata next to the file
(the form whose ``file`` is this ``.rknn``; its ``onnx`` or else the metadata's ``file``),
applying the normalisation the form says is baked in.

What a real board does and this double imitates, configured per subclass (``simulated``):
- latency: each call lasts at least ``latency_s`` (by model name, then role, then default);
- NPU cores: a call holds its core(s) for its whole duration, so runtimes on one core
  serialise as they do on the chip; core mask 0 (auto) takes any free core; a multi-core
  mask holds all its cores and is not faster (one model on three cores barely speeds up);
- faults: missing librknnrt, load/init failures, per-core init failures (model too big
  for another copy), inference returning ``None`` from call N on (NPU failing mid-run).
``memoize`` keeps outputs per distinct input so a CPU-only machine can simulate an NPU's
rate; the outputs are still ONNX Runtime's for that input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("station.inference.rknn_double")

RKNN_MAGIC = b"RKNN"
MEMO_FULL_HASH_BYTES = 256 * 1024  # memo keys hash larger inputs sparsely


@dataclass
class Faults:
    missing_library: bool = False  # librknnrt.so cannot be loaded: init_runtime -> -1
    load: bool = False  # load_rknn -> -1
    init: bool = False  # init_runtime -> -1
    init_cores: frozenset[int] = frozenset()  # init_runtime -> -1 for these core masks (e.g. out of NPU memory)
    inference_from_call: int | None = None  # inference -> None from this call index (0-based, per instance) on
    inference_cores: frozenset[int] = frozenset()  # inference -> None on these core masks


class SimulatedNpu:
    """The cores of one simulated chip: a call holds its cores while it runs."""

    def __init__(self, cores: int = 3):
        self.masks = [1 << i for i in range(cores)]
        self._busy: set[int] = set()
        self._cv = threading.Condition()
        self.peak_busy = 0  # most cores busy at once so far (observability for tests and benches)
        self.calls_by_core: dict[int, int] = {m: 0 for m in self.masks}
        self.queued_beside_idle_core = 0

    def _wanted(self, core_mask: int) -> list[int]:
        if core_mask == 0:
            return []
        return [m for m in self.masks if core_mask & m] or self.masks[:1]

    def acquire(self, core_mask: int) -> list[int]:
        with self._cv:
            if core_mask == 0:  # auto: the driver takes an idle core
                while not (free := [m for m in self.masks if m not in self._busy]):
                    self._cv.wait()
                held = [free[0]]
            else:
                held = self._wanted(core_mask)
                if any(m in self._busy for m in held) and any(m not in self._busy for m in self.masks):
                    self.queued_beside_idle_core += 1  # a scheduling miss: this call waits, another core idles
                while any(m in self._busy for m in held):
                    self._cv.wait()
            self._busy.update(held)
            self.peak_busy = max(self.peak_busy, len(self._busy))
            for m in held:
                self.calls_by_core[m] = self.calls_by_core.get(m, 0) + 1
            return held

    def release(self, held: list[int]) -> None:
        with self._cv:
            self._busy.difference_update(held)
            self._cv.notify_all()


def _find_form(rknn_path: Path) -> tuple[dict, dict] | None:
    """(metadata dict, form dict) of the model whose form names this .rknn file, if any."""
    for meta_path in sorted(rknn_path.parent.glob("*.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict):
            continue
        for form in (meta.get("forms") or {}).values():
            if isinstance(form, dict) and form.get("file") == rknn_path.name:
                return meta, form
    return None


class RKNNLite:
    """Double of ``rknnlite.api.RKNNLite``. Configure a subclass with ``simulated(...)``."""

    NPU_CORE_AUTO = 0
    NPU_CORE_0 = 1
    NPU_CORE_1 = 2
    NPU_CORE_2 = 4
    NPU_CORE_0_1 = 3
    NPU_CORE_0_1_2 = 7
    NPU_CORE_ALL = 0xFFFF

    # configuration (class level, per subclass; see simulated())
    latency_s: float | dict[str, float] = 0.0
    latency_s_per_mpx: dict[str, float] = {}  # by role: seconds per megapixel of the form's first input
    memoize: bool = False
    memo_entries: int = 64
    faults: Faults = Faults()
    npu: SimulatedNpu = SimulatedNpu(3)
    sdk_version = "2.5.0 (double)"

    _sessions: dict[str, object] = {}
    _sessions_lock = threading.Lock()
    _memo_store: OrderedDict = OrderedDict()  # shared by the runtimes of one configured class
    _memo_lock = threading.Lock()

    def __init__(self, verbose=False, verbose_file=None):
        self.verbose = verbose
        self.verbose_file = verbose_file
        self._rknn_path: Path | None = None
        self._blob: bytes | None = None
        self._session = None
        self._core_mask = 0
        self._calls = 0
        self._latency = 0.0
        self._mean: list[np.ndarray | None] = []
        self._std: list[np.ndarray | None] = []
        self._input_names: list[str] = []
        self._input_shapes: list[list] = []
        self._memo: OrderedDict | None = None
        self._onnx_key = b""

    # ---- real API --------------------------------------------------------------------
    def load_rknn(self, path, key_path=None):
        if self.faults.load:
            log.error("E load_rknn: injected failure")
            return -1
        p = Path(path)
        try:
            self._blob = p.read_bytes()
        except OSError as exc:
            log.error("E load_rknn: %s: %s", path, exc)
            return -1
        self._rknn_path = p
        return 0

    def init_runtime(self, target=None, device_id=None, async_mode=False, core_mask=NPU_CORE_AUTO):
        if target is not None:
            # On the board target is None; a target name means a PC driving a board over adb.
            log.error("E init_runtime: target %r: no device over adb in the double", target)
            return -1
        if self.faults.missing_library:
            log.error("E init_runtime: Can not find dynamic library on RK3588! (librknnrt.so)")
            return -1
        if self._blob is None or self._rknn_path is None:
            log.error("E init_runtime: model is not loaded yet, call load_rknn first")
            return -1
        if core_mask not in (0, 1, 2, 4, 3, 7, 0xFFFF):
            log.error("E init_runtime: invalid core mask %s", core_mask)
            return -1
        if self.faults.init or core_mask in self.faults.init_cores:
            log.error("E init_runtime: RKNN_ERR_MALLOC_FAIL on core mask %s (injected)", core_mask)
            return -1
        if not self._blob.startswith(RKNN_MAGIC):
            log.error("E init_runtime: RKNN_ERR_MODEL_INVALID: %s is not an RKNN model", self._rknn_path)
            return -1
        found = _find_form(self._rknn_path)
        if found is None:
            log.error("E init_runtime: double: no metadata form names %s, cannot find its ONNX", self._rknn_path.name)
            return -1
        meta, form = found
        onnx_path = self._rknn_path.parent / (form.get("onnx") or meta.get("file", ""))
        session = self._session_for(onnx_path)
        if session is None:
            return -1
        self._session = session
        self._input_names = [i.name for i in session.get_inputs()]
        self._input_shapes = [list(i.shape) for i in session.get_inputs()]
        means, stds = form.get("mean_values"), form.get("std_values")
        self._mean = [np.asarray(m, np.float32).reshape(1, -1, 1, 1) for m in means] if means else []
        self._std = [np.asarray(s, np.float32).reshape(1, -1, 1, 1) for s in stds] if stds else []
        self._latency = self._latency_for(meta, form)
        self._core_mask = core_mask
        self._onnx_key = str(onnx_path.resolve()).encode()
        self._memo = type(self)._memo_store if self.memoize else None
        return 0

    def inference(self, inputs, data_type=None, data_format=None, inputs_pass_through=None, get_frame_id=False, reuse_outputs=False):
        if self._session is None:
            log.error("E inference: runtime is not initialised, call init_runtime first")
            return None
        call = self._calls
        self._calls += 1
        if not isinstance(inputs, (list, tuple)) or len(inputs) != len(self._input_names):
            log.error("E inference: expected %d inputs, got %s", len(self._input_names), type(inputs).__name__)
            return None
        formats = data_format if isinstance(data_format, (list, tuple)) else [data_format] * len(inputs)
        held = self.npu.acquire(self._core_mask)
        start = time.perf_counter()
        try:
            faulty = self._core_mask in self.faults.inference_cores or any(m in self.faults.inference_cores for m in held)
            if faulty or (self.faults.inference_from_call is not None and call >= self.faults.inference_from_call):
                log.error("E inference: RKNN_ERR_TIMEOUT on core %s (injected)", held or self._core_mask)
                return None
            feed = {}
            for i, (name, shape, x, fmt) in enumerate(zip(self._input_names, self._input_shapes, inputs, formats)):
                arr = self._to_model_input(i, np.asarray(x), fmt)
                if arr is None or (all(isinstance(d, int) for d in shape) and list(arr.shape) != shape):
                    log.error("E inference: input %s shape %s does not match the model's %s", name, np.shape(x), shape)
                    return None
                feed[name] = arr
            outputs = self._compute(feed)
            if outputs is None:
                return None
            remaining = self._latency - (time.perf_counter() - start)
            if remaining > 0:
                time.sleep(remaining)
            return outputs
        finally:
            self.npu.release(held)

    def get_sdk_version(self):
        return f"rknn-toolkit-lite2 version: {self.sdk_version}\nlibrknnrt version: {self.sdk_version}"

    def list_devices(self):
        log.warning("W list_devices: the double has no adb devices")
        return [], []

    def list_support_target_platform(self, rknn_model=None):
        return {"support_target_platform": ["rk3562", "rk3566", "rk3568", "rk3576", "rk3588"]}

    def release(self):
        self._session = None
        self._blob = None
        self._memo = None

    # ---- helpers ---------------------------------------------------------------------
    def _latency_for(self, meta: dict, form: dict) -> float:
        lat = self.latency_s
        if isinstance(lat, dict) and meta.get("name") in lat:
            return float(lat[meta["name"]])
        per_mpx = self.latency_s_per_mpx.get(meta.get("role"))
        shape = (form.get("inputs") or [{}])[0].get("shape") or []
        if per_mpx is not None and len(shape) == 4:  # a fully convolutional net: its MACs grow with the input's pixels
            return per_mpx * shape[2] * shape[3] / 1e6
        if isinstance(lat, dict):
            for key in (meta.get("role"), "default"):
                if key in lat:
                    return float(lat[key])
            return 0.0
        return float(lat)

    @classmethod
    def _session_for(cls, onnx_path: Path):
        import onnxruntime as ort

        key = str(onnx_path.resolve())
        with cls._sessions_lock:
            if key in cls._sessions:
                return cls._sessions[key]
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1  # a simulated core is one compute unit, not the whole CPU
            opts.log_severity_level = 3
            try:
                session = ort.InferenceSession(key, opts, providers=["CPUExecutionProvider"])
            except Exception as exc:
                log.error("E init_runtime: double cannot load ONNX %s: %s", onnx_path, exc)
                return None
            cls._sessions[key] = session
            return session

    def _to_model_input(self, index: int, x: np.ndarray, fmt: str | None) -> np.ndarray | None:
        if x.ndim == 4 and (fmt or "nhwc") == "nhwc":
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW, as the ONNX model takes it
        if index < len(self._mean):
            # normalisation baked in: the .rknn takes uint8 RGB and applies (x - mean) / std itself
            if x.dtype != np.uint8:
                log.error("E inference: input %d must be uint8 (normalisation is baked in), got %s", index, x.dtype)
                return None
            return ((x.astype(np.float32) - self._mean[index]) / self._std[index]).astype(np.float32)
        return np.ascontiguousarray(x, dtype=np.float32) if x.dtype != np.int64 else x

    def _compute(self, feed: dict[str, np.ndarray]) -> list[np.ndarray] | None:
        key = None
        if self._memo is not None:
            h = hashlib.blake2b(self._onnx_key, digest_size=16)
            for name in sorted(feed):
                a = np.ascontiguousarray(feed[name])
                h.update(name.encode())
                h.update(str(a.shape).encode() + str(a.dtype).encode())
                if a.nbytes > MEMO_FULL_HASH_BYTES:
                    # a 4 MB embedding would cost more to hash than the decoder's 8.6 ms; every 17th
                    # element tells distinct images apart (inputs equal there share outputs)
                    a = np.ascontiguousarray(a.reshape(-1)[::17])
                h.update(a.data)
            key = h.digest()
            with self._memo_lock:
                hit = self._memo.get(key)
                if hit is not None:
                    self._memo.move_to_end(key)
            if hit is not None:
                return [o.copy() for o in hit]
        try:
            outputs = self._session.run(None, feed)
        except Exception as exc:
            log.error("E inference: %s", exc)
            return None
        outputs = [np.asarray(o, dtype=np.float32) for o in outputs]  # RKNNLite returns float32 outputs
        if key is not None:
            with self._memo_lock:
                self._memo[key] = [o.copy() for o in outputs]
                while len(self._memo) > self.memo_entries:
                    self._memo.popitem(last=False)
        return outputs


def simulated(
    latency_s: float | dict[str, float] = 0.0,
    cores: int = 3,
    latency_s_per_mpx: dict[str, float] | None = None,
    faults: Faults | None = None,
    memoize: bool = False,
    memo_entries: int = 64,
    npu: SimulatedNpu | None = None,
) -> type[RKNNLite]:
    """A configured ``RKNNLite`` double class with its own simulated chip (pass ``npu`` to share one)."""
    return type(
        "RKNNLite",
        (RKNNLite,),
        {
            "latency_s": latency_s,
            "latency_s_per_mpx": dict(latency_s_per_mpx or {}),
            "faults": faults or Faults(),
            "memoize": memoize,
            "memo_entries": memo_entries,
            "npu": npu or SimulatedNpu(cores),
            "_memo_store": OrderedDict(),
            "_memo_lock": threading.Lock(),
        },
    )


# Published single-core RK3588 latencies (rknn_model_zoo; see ../shared/notes/rknn.md), s.
RK3588_PUBLISHED_LATENCY_S = {
    "sam_encoder": 0.100,  # MobileSAM encoder 448x448 FP16, 10.0 FPS
    "sam_decoder": 0.0086,  # decoder, 116.4 FPS
    "classifier": 0.0022,  # MobileNetV2 224 INT8, 450.7 FPS
}

# Derived, not published: rknn_model_zoo and Rockchip's docs give no RK3588 figure for EfficientNet-Lite0
# (searched). From the published MobileNetV2 224 INT8 figure (450.7 FPS: 2.219 ms for its 300 M MACs) by
# MAC ratio: the Lite0 feature backbone (stem and blocks 0-15, taps s8/s16/s32; counted on its
# convolutions) has 363.8 M MACs at 224x224, so 2.691 ms there; its MACs grow with the input's pixels:
# 53.6 ms per megapixel (6.6 ms at 384x320). Both nets are int8 depthwise-separable ReLU6 stacks, so the
# ratio is a fair first guess; a board measurement replaces it.
RK3588_DERIVED_LATENCY_S_PER_MPX = {
    "backbone": 0.0536,
}


def write_simulated_rknn(path: Path | str, payload: bytes = b"") -> Path:
    """A file the double accepts as an .rknn (the magic plus a payload). For tests and the sim bench only."""
    path = Path(path)
    path.write_bytes(RKNN_MAGIC + b"\0double\0" + payload)
    return path


__all__ = [
    "RKNNLite", "Faults", "SimulatedNpu", "simulated", "RK3588_PUBLISHED_LATENCY_S", "RK3588_DERIVED_LATENCY_S_PER_MPX",
    "write_simulated_rknn", "add_simulated_form",
]


def add_simulated_form(
    models_dir: Path | str,
    name: str,
    quant: str = "fp16",
    target: str = "rk3588",
    bake_normalization: bool = False,
    shapes: dict[str, list[int]] | None = None,
    view_size: list[int] | None = None,
) -> str:
    """Give model ``name`` an RKNN form the double runs: a stand-in .rknn + its metadata entry.

    The form's tensors come from the ONNX model (``shapes`` fixes dynamic dims, as a real
    conversion must). With ``bake_normalization`` the metadata's mean/std (meanstd or scale
    normalisation) are recorded as baked in, so the runtime takes uint8 RGB NHWC. Returns
    the form key. For tests and the sim bench only: a real .rknn comes from ``station models convert``.
    """
    import onnxruntime as ort

    from station.inference.metadata import ModelMetadata, sha256_file
    from station.inference.rknn import RknnForm, RknnTensor, form_key

    models_dir = Path(models_dir)
    meta_path = models_dir / f"{name}.json"
    meta = ModelMetadata.read(meta_path)
    session = ort.InferenceSession(str(models_dir / meta.file), providers=["CPUExecutionProvider"])
    shapes = shapes or {}
    inputs = []
    for i in session.get_inputs():
        shape = shapes.get(i.name, i.shape)
        if not all(isinstance(d, int) for d in shape):
            raise ValueError(f"model {name}: input {i.name} has dynamic shape {i.shape}; give it in shapes")
        dtype = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(uint8)": "uint8"}.get(i.type, "float32")
        inputs.append(RknnTensor(name=i.name, shape=list(shape), dtype=dtype))
    mean = std = None
    if bake_normalization:
        spec = meta.input
        if spec is None or spec.normalization == "minmax":
            raise ValueError(f"model {name}: min-max normalisation depends on each image and cannot be baked in")
        mean, std = ([list(spec.mean)], [list(spec.std)]) if spec.normalization == "meanstd" else ([[0.0] * 3], [[255.0] * 3])
    key = form_key(target, quant)
    rknn_path = write_simulated_rknn(models_dir / f"{name}.{target}.{quant}.rknn", f"{name}:{quant}".encode())
    form = RknnForm(
        file=rknn_path.name,
        sha256=sha256_file(rknn_path),
        target=target,
        quant=quant,
        inputs=inputs,
        outputs=[o.name for o in session.get_outputs()],
        mean_values=mean,
        std_values=std,
        toolkit_version="double",
        view_size=view_size,
    )
    forms = dict(meta.forms)
    forms[key] = form.model_dump(exclude_none=True)
    meta.model_copy(update={"forms": forms}).write(meta_path)
    return key
