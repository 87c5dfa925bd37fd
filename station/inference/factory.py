"""Load a model by name from the models directory with the configured backend.

Backends: ``onnxruntime`` (CPU), ``rknn`` (RK3588 NPU, one runtime per core, pooled),
``auto`` (rknn when the NPU is present and the model has an RKNN form, else onnxruntime,
logged with the reason), and ``sim-rk3588`` (the rknn path on the RKNNLite double with the
published RK3588 latencies, for benchmarks on a PC; like ``auto`` on a board, a model
without an RKNN form runs on onnxruntime). ``rknn`` and ``sim-rk3588`` take an
optional core count suffix, e.g. ``rknn:2``; the default is every core (3 on an RK3588).
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any, Callable

from station.inference.base import InferenceModel
from station.inference.metadata import ModelMetadata, resolve_model
from station.inference.onnx import OnnxModel
from station.inference.pool import CoreScheduler, ModelPool
from station.inference.rknn import SINGLE_CORE_MASKS, RknnModel, pick_form, resolve_form_file, rknn_forms
from station.inference.select import BackendChoice, NpuStatus, choose_backend, detect_npu

log = logging.getLogger("station.inference")

BACKENDS = ("onnxruntime", "rknn", "auto", "sim-rk3588")


def parse_backend(backend: str) -> tuple[str, int | None]:
    """``"rknn:2"`` -> ("rknn", 2); ``"auto"`` -> ("auto", None). Raises ValueError."""
    name, _, cores = backend.partition(":")
    if name not in BACKENDS:
        raise ValueError(f"unknown inference backend {backend!r} (one of {', '.join(BACKENDS)}, optionally ':N' cores)")
    if not cores:
        return name, None
    if name == "onnxruntime" or not cores.isdigit() or not 1 <= int(cores) <= 3:
        raise ValueError(f"backend {backend!r}: a core count 1..3 applies to rknn, auto and sim-rk3588 only")
    return name, int(cores)


@functools.lru_cache(maxsize=1)
def npu_status() -> NpuStatus:
    """detect_npu(), once per process (the hardware does not change while we run)."""
    return detect_npu()


_sim_lock = threading.Lock()
_sim_runtime: type | None = None


def simulated_rk3588_runtime() -> type:
    """The process-wide RKNNLite double with the published RK3588 latencies, and the backbone's derived
    one (rknn_double.RK3588_DERIVED_LATENCY_S_PER_MPX), on one simulated chip."""
    global _sim_runtime
    from station.inference import rknn_double

    with _sim_lock:
        if _sim_runtime is None:
            _sim_runtime = rknn_double.simulated(latency_s=dict(rknn_double.RK3588_PUBLISHED_LATENCY_S), memoize=True,
                                                 latency_s_per_mpx=rknn_double.RK3588_DERIVED_LATENCY_S_PER_MPX)
        return _sim_runtime


def load_rknn_pool(
    models_dir: Path,
    meta: ModelMetadata,
    cores: int,
    target: str = "rk3588",
    form_key: str | None = None,
    runtime_class: Callable[..., Any] | None = None,
    scheduler: CoreScheduler | None = None,
) -> InferenceModel:
    """One RknnModel per core (masks 1, 2, 4 up to ``cores``), pooled; one core gives a bare RknnModel."""
    key, form = pick_form(meta, target, form_key)
    path = resolve_form_file(models_dir, meta, form)
    masks = SINGLE_CORE_MASKS[:cores]

    def open_runtime(mask: int) -> RknnModel:
        return RknnModel(path, meta, form, core_mask=mask, runtime_class=runtime_class)

    log.info("model %s: %s (%s) on %d NPU core(s)", meta.name, key, path.name, cores)
    return ModelPool.load(meta.name, open_runtime, masks, scheduler=scheduler)


def load_model(
    models_dir: Path | str,
    name: str,
    backend: str = "onnxruntime",
    threads: int = 0,
    *,
    npu_cores: int | None = None,
    form: str | None = None,
    runtime_class: Callable[..., Any] | None = None,
    scheduler: CoreScheduler | None = None,
    status: NpuStatus | None = None,
) -> InferenceModel:
    """Resolve ``name`` (metadata + sha256 check) and open it with ``backend``. Raises ModelError.

    ``threads``: ONNX Runtime intra-op threads (0: all cores). ``npu_cores`` overrides the
    backend's core count. ``form`` picks an RKNN form by key (default fp16, else int8).
    ``runtime_class`` replaces ``rknnlite.api.RKNNLite`` (tests), ``status`` the NPU detection.
    """
    kind, cores = parse_backend(backend)
    cores = npu_cores or cores
    models_dir = Path(models_dir)
    meta, path = resolve_model(models_dir, name)
    if kind == "onnxruntime":
        return OnnxModel(path, meta, threads=threads)
    if kind == "sim-rk3588":
        if not rknn_forms(meta, "rk3588"):  # like auto on a board: what is not converted runs on the CPU
            log.warning("model %s: no RKNN form; runs on onnxruntime (CPU) in the simulated RK3588 station", name)
            return OnnxModel(path, meta, threads=threads)
        return load_rknn_pool(
            models_dir, meta, cores or 3, "rk3588", form, runtime_class or simulated_rk3588_runtime(), scheduler
        )
    if kind == "rknn":
        st = status or (npu_status() if runtime_class is None else None)
        target = (st.target if st and st.target else None) or "rk3588"
        n = cores or (st.cores if st and st.cores else 3)
        return load_rknn_pool(models_dir, meta, n, target, form, runtime_class, scheduler)
    # auto: the NPU when present (and its Python runtime importable), for models converted for it
    st = status or npu_status()
    if runtime_class is None:
        choice = choose_backend("auto", st)
    else:
        choice = BackendChoice("rknn" if st.present else "onnxruntime", f"auto: {st.reason}")
    if choice.backend != "rknn":
        log.info("model %s: onnxruntime (%s)", name, choice.reason)
        return OnnxModel(path, meta, threads=threads)
    target = st.target or "rk3588"
    if not rknn_forms(meta, target):
        log.warning(
            "model %s: onnxruntime although the NPU is present: no RKNN form for %s "
            "(run `station models convert --model %s --target %s`)", name, target, name, target,
        )
        return OnnxModel(path, meta, threads=threads)
    log.info("model %s: rknn (%s)", name, choice.reason)
    # A form that exists but does not load is an error, not a silent 7x slower CPU fallback.
    return load_rknn_pool(models_dir, meta, cores or st.cores or 3, target, form, runtime_class, scheduler)
