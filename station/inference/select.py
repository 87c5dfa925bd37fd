"""Which inference backend to use here: the NPU when this board has one that works, else the CPU.

``detect_npu()`` looks at the device tree (an RK35xx SoC) and loads ``librknnrt.so``
(``LIBRKNNRT_PATH`` or the usual library paths), the two things the RKNN runtime needs.
``choose_backend("auto")`` turns that into a backend name plus the reason, which the
station logs at start and ``station doctor`` shows.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

COMPATIBLE_PATH = Path("/proc/device-tree/compatible")
LIBRARY_PATHS = (
    "/usr/lib/librknnrt.so",
    "/usr/lib64/librknnrt.so",
    "/usr/lib/aarch64-linux-gnu/librknnrt.so",
    "/usr/local/lib/librknnrt.so",
)
_SOC = re.compile(r"rockchip,(rk35\d\d[a-z]?)")
_VERSION = re.compile(rb"librknnrt version: ?([0-9][0-9A-Za-z.\-+]*)")
NPU_CORES_BY_SOC = {"rk3588": 3, "rk3588s": 3, "rk3576": 2, "rk3568": 1, "rk3566": 1, "rk3562": 1}


@dataclass(frozen=True)
class NpuStatus:
    present: bool
    reason: str
    soc: str | None = None
    runtime_version: str | None = None

    @property
    def cores(self) -> int:
        return NPU_CORES_BY_SOC.get(self.soc or "", 0)

    @property
    def target(self) -> str | None:
        """The conversion target for this SoC (rk3588s runs rk3588 models)."""
        if self.soc is None:
            return None
        return "rk3588" if self.soc.startswith("rk3588") else self.soc


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "onnxruntime" | "rknn"
    reason: str


def read_soc(compatible_path: Path = COMPATIBLE_PATH) -> str | None:
    """The rk35xx SoC named in the device tree's compatible list (NUL-separated), or None."""
    try:
        text = Path(compatible_path).read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    for entry in text.split("\0"):
        if m := _SOC.fullmatch(entry.strip()):
            return m.group(1)
    return None


def runtime_library_version(path: Path) -> str | None:
    """The version string librknnrt carries ("librknnrt version: 2.5.0 (...)"), if found."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    m = _VERSION.search(data)
    return m.group(1).decode() if m else None


def detect_npu(
    compatible_path: Path | str = COMPATIBLE_PATH,
    library_paths: list[str] | tuple[str, ...] | None = None,
) -> NpuStatus:
    """Is there a usable RK35xx NPU here? Never raises; the reason says what was found or missing."""
    soc = read_soc(Path(compatible_path))
    if soc is None:
        return NpuStatus(False, f"no rk35xx SoC in {compatible_path} (not a Rockchip RK35xx board)")
    if library_paths is None:
        env = os.environ.get("LIBRKNNRT_PATH")
        library_paths = ((env,) if env else ()) + LIBRARY_PATHS
    tried = []
    for lib in library_paths:
        if not Path(lib).is_file():
            tried.append(f"{lib}: not found")
            continue
        try:
            ctypes.CDLL(lib)
        except OSError as exc:
            tried.append(f"{lib}: {exc}")
            continue
        version = runtime_library_version(Path(lib))
        return NpuStatus(True, f"{soc} NPU, {lib} loads (version {version or 'unknown'})", soc, version)
    return NpuStatus(
        False,
        f"{soc} board but librknnrt.so does not load (set LIBRKNNRT_PATH or install it in /usr/lib): " + "; ".join(tried),
        soc,
        None,
    )


def rknnlite_installed() -> bool:
    return importlib.util.find_spec("rknnlite") is not None


def choose_backend(requested: str, status: NpuStatus | None = None) -> BackendChoice:
    """Resolve ``requested`` ("auto", "onnxruntime", "rknn") to a backend with the reason."""
    if requested == "onnxruntime":
        return BackendChoice("onnxruntime", "configured")
    if requested == "rknn":
        return BackendChoice("rknn", "configured")
    if requested != "auto":
        raise ValueError(f"unknown inference backend {requested!r} (auto, onnxruntime, rknn)")
    status = status or detect_npu()
    if not status.present:
        return BackendChoice("onnxruntime", f"auto: {status.reason}")
    if not rknnlite_installed():
        return BackendChoice("onnxruntime", f"auto: {status.reason}, but rknn-toolkit-lite2 is not installed")
    return BackendChoice("rknn", f"auto: {status.reason}")


__all__ = ["NpuStatus", "BackendChoice", "detect_npu", "choose_backend", "resolve_backend", "analyse_workers", "read_soc"]


def resolve_backend(backend: str, npu_cores: int = 3, status: NpuStatus | None = None) -> BackendChoice:
    """The backend string to hand ``load_model`` / ``build_inspector`` for a station's config, with the reason.

    ``backend``/``npu_cores`` are ``InferenceConfig.backend``/``.npu_cores``. With the NPU in use
    the string carries the core count ("rknn:3"); ``auto`` on a board stays ``auto:N`` so a
    model without an RKNN form runs on the CPU instead of failing (logged per model).
    """
    choice = choose_backend(backend, status)
    if choice.backend == "onnxruntime":
        return choice
    if backend == "auto":
        st = status or detect_npu()
        cores = min(npu_cores, st.cores or npu_cores)
        return BackendChoice(f"auto:{cores}", choice.reason + f"; {cores} NPU core(s)")
    return BackendChoice(f"rknn:{npu_cores}", choice.reason + f"; {npu_cores} NPU core(s)")


def analyse_workers(backend: str, configured: int = 1) -> int:
    """Analyse threads for the pipeline: with N NPU cores, N + 1, so every core has a part while one
    worker does its CPU share (pre/post-processing); measured with `station bench --backend sim-rk3588`:
    3 cores, 3 workers 22.8 parts/s, 4 workers 26.9 parts/s. ``configured`` wins when larger."""
    name, _, cores = backend.partition(":")
    if name in ("rknn", "auto", "sim-rk3588") and cores.isdigit():
        return max(configured, int(cores) + 1)
    return configured
