"""Backend selection: device tree + runtime library -> rknn or onnxruntime, with the reason."""

from __future__ import annotations

import ctypes.util
import shutil
from pathlib import Path

import pytest

from station.inference import rknn_double
from station.inference.factory import load_model, parse_backend
from station.inference.onnx import OnnxModel
from station.inference.pool import CoreScheduler, ModelPool
from station.inference.select import NpuStatus, choose_backend, detect_npu, resolve_backend

RK3588_COMPATIBLE = b"rockchip,rk3588-orangepi-5-plus\x00rockchip,rk3588\x00"


def _compatible(tmp_path, data: bytes) -> Path:
    p = tmp_path / "compatible"
    p.write_bytes(data)
    return p


def _loadable_library(tmp_path) -> Path:
    """A real shared object of this machine with librknnrt's version string appended (trailing bytes are ignored by the loader)."""
    found = ctypes.util.find_library("m")
    candidates = [Path(p) for p in (f"/lib/x86_64-linux-gnu/{found}", f"/usr/lib/x86_64-linux-gnu/{found}") if found]
    src = next((p for p in candidates if p.is_file()), None)
    if src is None:
        pytest.fail(f"no libm found to stand in for librknnrt ({found})")
    lib = tmp_path / "librknnrt.so"
    shutil.copyfile(src, lib)
    with open(lib, "ab") as f:
        f.write(b"\x00librknnrt version: 2.5.0 (5f1a0a2bd@2025-04-21T10:00:00)\x00")
    return lib


def test_not_a_rockchip_board(tmp_path):
    st = detect_npu(_compatible(tmp_path, b"qemu,virt\x00"), library_paths=[])
    assert not st.present and st.soc is None and "no rk35xx SoC" in st.reason
    st = detect_npu(tmp_path / "missing", library_paths=[])
    assert not st.present and "no rk35xx SoC" in st.reason


def test_rk3588_without_runtime_library(tmp_path):
    st = detect_npu(_compatible(tmp_path, RK3588_COMPATIBLE), library_paths=[str(tmp_path / "librknnrt.so")])
    assert not st.present and st.soc == "rk3588" and st.cores == 3
    assert "librknnrt.so does not load" in st.reason and "not found" in st.reason


def test_rk3588_with_a_library_that_does_not_load(tmp_path):
    bad = tmp_path / "librknnrt.so"
    bad.write_bytes(b"\x7fELF truncated")
    st = detect_npu(_compatible(tmp_path, RK3588_COMPATIBLE), library_paths=[str(bad)])
    assert not st.present and str(bad) in st.reason


def test_rk3588_with_loadable_runtime(tmp_path, monkeypatch):
    lib = _loadable_library(tmp_path)
    monkeypatch.setenv("LIBRKNNRT_PATH", str(lib))
    st = detect_npu(_compatible(tmp_path, RK3588_COMPATIBLE))
    assert st == NpuStatus(True, st.reason, "rk3588", "2.5.0")
    assert "rk3588 NPU" in st.reason and st.target == "rk3588"


def test_rk3588s_and_rk3566_targets(tmp_path):
    st = detect_npu(_compatible(tmp_path, b"rockchip,rk3588s\x00"), library_paths=[])
    assert st.soc == "rk3588s" and st.target == "rk3588" and st.cores == 3
    st = detect_npu(_compatible(tmp_path, b"radxa,zero3\x00rockchip,rk3566\x00"), library_paths=[])
    assert st.soc == "rk3566" and st.cores == 1


def test_choose_backend_reasons():
    absent = NpuStatus(False, "no rk35xx SoC in /proc/device-tree/compatible")
    c = choose_backend("auto", absent)
    assert c.backend == "onnxruntime" and "no rk35xx SoC" in c.reason
    present = NpuStatus(True, "rk3588 NPU, /usr/lib/librknnrt.so loads", "rk3588", "2.5.0")
    c = choose_backend("auto", present)  # this x86 machine has no rknn-toolkit-lite2
    assert c.backend == "onnxruntime" and "rknn-toolkit-lite2 is not installed" in c.reason
    assert choose_backend("rknn").backend == "rknn"
    assert choose_backend("onnxruntime").backend == "onnxruntime"
    with pytest.raises(ValueError, match="unknown inference backend"):
        choose_backend("tpu")


def test_parse_backend():
    assert parse_backend("rknn:2") == ("rknn", 2)
    assert parse_backend("sim-rk3588") == ("sim-rk3588", None)
    for bad in ("onnxruntime:2", "rknn:4", "rknn:x", "cuda"):
        with pytest.raises(ValueError):
            parse_backend(bad)


def test_auto_loads_rknn_pool_when_present_and_converted(models_dir):
    present = NpuStatus(True, "rk3588 NPU", "rk3588", "2.5.0")
    absent = NpuStatus(False, "no rk35xx SoC")
    cls = rknn_double.simulated()
    # not converted yet: the NPU is there but the model runs on the CPU (logged)
    assert isinstance(load_model(models_dir, "tiny", "auto", status=present, runtime_class=cls), OnnxModel)
    rknn_double.add_simulated_form(models_dir, "tiny")
    m = load_model(models_dir, "tiny", "auto", status=present, runtime_class=cls, scheduler=CoreScheduler())
    assert isinstance(m, ModelPool) and m.backend == "rknn" and m.core_masks == [1, 2, 4]
    assert isinstance(load_model(models_dir, "tiny", "auto", status=absent, runtime_class=cls), OnnxModel)
    # this machine: no NPU, so auto is onnxruntime
    assert isinstance(load_model(models_dir, "tiny", "auto"), OnnxModel)


def test_resolve_backend_for_the_station_config(monkeypatch):
    import station.inference.select as sel

    absent = NpuStatus(False, "no rk35xx SoC")
    assert resolve_backend("auto", 3, absent).backend == "onnxruntime"
    assert resolve_backend("onnxruntime", 3).backend == "onnxruntime"
    assert resolve_backend("rknn", 2).backend == "rknn:2"
    rk3566 = NpuStatus(True, "rk3566 NPU", "rk3566", "2.5.0")
    monkeypatch.setattr(sel, "rknnlite_installed", lambda: True)
    c = resolve_backend("auto", 3, rk3566)
    assert c.backend == "auto:1" and "1 NPU core" in c.reason  # a one-core SoC gets one runtime
    assert parse_backend(c.backend) == ("auto", 1)


def test_analyse_workers_cover_every_npu_core():
    from station.inference.select import analyse_workers

    assert analyse_workers("rknn:3", 1) == 4 and analyse_workers("auto:1", 1) == 2
    assert analyse_workers("onnxruntime", 1) == 1 and analyse_workers("rknn:2", 6) == 6
