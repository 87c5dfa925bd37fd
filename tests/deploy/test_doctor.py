"""`station doctor` on this machine (x86-64, no NPU) and against look-alike board trees.

Real pieces throughout: the CLI in a subprocess, the GenTL simulator producer (viky.cti),
loopback TCP for the PLC, SQLite files migrated by the station's own migrations, the
LiteMedSAM ONNX files from ../shared with their sha256. Where a board is needed, a real
shared library carrying librknnrt's version banner is compiled (gcc) so that the NPU
detection's dlopen really succeeds; the NPU itself cannot be exercised here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from station.camera.discovery import simulator_cti
from station.doctor import HostPaths, run_doctor
from station.inference.metadata import ModelMetadata, sha256_file
from tests.conftest import pull_demo_models
from tests.deploy.conftest import write_compatible

REPO = Path(__file__).resolve().parents[2]
NO_BOARD = HostPaths(compatible=Path("/nonexistent/compatible"), rknpu_debugfs=Path("/nonexistent"), rknpu_module=Path("/nonexistent"))

RECIPE = """
name = "{name}"
plc_id = 1
time_budget_ms = 2000
[[cameras]]
name = "top"
{vision}
[[classes]]
name = "crack"
plc_code = 1
"""
VISION = {
    "threshold": '[vision]\nanalyzer = "threshold"\n[[vision.blobs]]\nclass = "crack"\npolarity = "dark"',
    # the SAM pair is named "encoder" (its decoder through its metadata); a trained proposal model of the repo
    "sam": '[vision]\nanalyzer = "sam"\nsegmentation = "encoder"\n[[vision.proposals]]\nkind = "pixel-mlp"\nmodel = "steel-strip-proposals"',
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_station(root: Path, *, camera: str = 'type = "simulated"', plc: str = "", inference: str = "", analyzer: str = "threshold", archive: str = "") -> Path:
    (root / "recipes").mkdir(exist_ok=True)
    (root / "recipes" / "part.toml").write_text(RECIPE.format(name="part", vision=VISION[analyzer]))
    if analyzer == "sam":
        (root / "models").mkdir(exist_ok=True)
        for suffix in (".json", ".onnx"):
            shutil.copyfile(REPO / "models" / "trained" / f"steel-strip-proposals{suffix}", root / "models" / f"steel-strip-proposals{suffix}")
    path = root / "station.toml"
    path.write_text(
        f"""
station_id = "doctor-test"
recipes_dir = "recipes"
active_recipe = "part"
models_dir = "models"
[[cameras]]
name = "top"
{camera}
[plc]
{plc or f'port = {free_port()}'}
[database]
url = "sqlite:///var/station.db"
[archive]
dir = "var/images"
{archive}
[inference]
{inference}
"""
    )
    return path


def doctor_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "station.cli", "doctor", *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_cli_reports_missing_npu_and_cpu_fallback(tmp_path: Path):
    station = write_station(tmp_path)
    result = doctor_cli("--config", str(station))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert lines["npu"].split()[0] == "WARN"
    assert "no NPU on this machine" in lines["npu"] and "inference runs on the CPU" in lines["npu"]
    assert "CPU backend: ONNX Runtime" in lines["inference_backend"] and "CPUExecutionProvider" in lines["inference_backend"]
    assert result.stdout.rstrip().endswith("warning(s))")
    assert result.stdout.splitlines()[-1].startswith("the station can run")

    as_json = json.loads(doctor_cli("--config", str(station), "--json").stdout)
    checks = {c["name"]: c for c in as_json["checks"]}
    assert as_json["ok"] is True
    assert checks["npu"]["details"]["present"] is False
    assert checks["inference_backend"]["details"]["backend"] == "onnxruntime"
    assert checks["inference_backend"]["details"]["threads"] >= 1


def test_backend_rknn_without_npu_cannot_run(tmp_path: Path):
    station = write_station(tmp_path, inference='backend = "rknn"')
    result = doctor_cli("--config", str(station))
    assert result.returncode == 1
    assert "FAIL  npu" in result.stdout and 'set backend = "auto"' in result.stdout
    assert "the station cannot run" in result.stdout


def test_invalid_or_missing_station_file(tmp_path: Path):
    bad = tmp_path / "station.toml"
    bad.write_text('active_recipe = "x"\n[[cameras]]\ntype = "simulated"\nexposure = 3\n')
    result = doctor_cli("--config", str(bad))
    assert result.returncode == 2
    assert "FAIL  config" in result.stdout and "exposure" in result.stdout
    # host checks still ran
    assert "npu" in result.stdout

    # no station file at all: the embedded demo station is checked (what `station demo` runs), and
    # on this working CPU-only machine that is no failure
    env = {k: v for k, v in os.environ.items() if k != "STATION_CONFIG"}
    if not Path("/etc/station/station.toml").exists():
        pull_demo_models(tmp_path)  # a machine where `station demo` has run: its models are there
        result = subprocess.run([sys.executable, "-m", "station.cli", "doctor"], capture_output=True, text=True, cwd=tmp_path,
                                env=env, timeout=120)
        assert result.returncode == 0, result.stdout
        assert f"checking the embedded demo station rooted at {tmp_path}" in result.stdout
        assert "FAIL" not in result.stdout and "active recipe demo-part" in result.stdout


def test_genicam_camera_found_or_not_with_simulator_producer(tmp_path: Path):
    cti = simulator_cti()
    assert cti is not None, "genicam package without viky.cti"
    station = write_station(tmp_path, camera=f'type = "genicam"\ncti = ["{cti}"]\ndevice = "1"')
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("gentl").status == "ok" and "viky.cti" in report.get("gentl").summary
    assert report.get("gentl_devices").summary.startswith("3 device(s)")
    assert report.get("camera:top").status == "ok" and "serial 1" in report.get("camera:top").summary

    station = write_station(tmp_path, camera=f'type = "genicam"\ncti = ["{cti}"]\ndevice = "SN-MISSING"')
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("camera:top").status == "fail" and "SN-MISSING" in report.get("camera:top").summary
    assert not report.ok

    station = write_station(tmp_path, camera=f'type = "genicam"\ncti = ["{tmp_path / "absent.cti"}"]')
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("gentl").status == "fail" and "absent.cti does not exist" in report.get("gentl").summary


def test_plc_reachability(tmp_path: Path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        station = write_station(tmp_path, plc=f'mode = "client"\nhost = "127.0.0.1"\nport = {port}')
        assert run_doctor(station, paths=NO_BOARD).get("plc").status == "ok"
        # server mode on a port someone holds: the station may already be running
        station = write_station(tmp_path, plc=f'mode = "server"\nhost = "127.0.0.1"\nport = {port}')
        plc = run_doctor(station, paths=NO_BOARD).get("plc")
        assert plc.status == "warn" and "in use" in plc.summary
    finally:
        listener.close()
    station = write_station(tmp_path, plc=f'mode = "client"\nhost = "127.0.0.1"\nport = {port}')
    plc = run_doctor(station, paths=NO_BOARD).get("plc")
    assert plc.status == "fail" and "unreachable" in plc.summary


def test_models_are_checked_by_sha256(tmp_path: Path, shared_dir: Path):
    models = tmp_path / "models"
    models.mkdir()
    sam = shared_dir / "models" / "mobilesam"
    for name, role, pair in (("encoder", "sam_encoder", "decoder"), ("decoder", "sam_decoder", "encoder")):
        src = sam / f"litemedsam_{name}.onnx"
        (models / src.name).symlink_to(src)
        ModelMetadata(name=name, role=role, file=src.name, sha256=sha256_file(src), pair=pair).write(models / f"{name}.json")
    station = write_station(tmp_path, analyzer="sam")
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("model:encoder").status == "ok" and "sha256" in report.get("model:encoder").summary
    assert report.get("model:decoder").status == "ok"  # found through the encoder's pair
    assert report.ok

    # a decoder file that is not what its metadata says
    (models / "litemedsam_decoder.onnx").unlink()
    shutil.copy(sam / "litemedsam_decoder.onnx", models / "litemedsam_decoder.onnx")
    with open(models / "litemedsam_decoder.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\0\1\2\3")
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("model:decoder").status == "fail" and "refusing to load" in report.get("model:decoder").summary
    assert not report.ok

    (models / "encoder.json").unlink()
    report = run_doctor(station, paths=NO_BOARD)
    assert report.get("model:encoder").status == "fail" and "not found" in report.get("model:encoder").summary


def test_database_health(tmp_path: Path):
    from station.db.engine import make_engine
    from station.db.migrate import upgrade

    station = write_station(tmp_path)
    check = run_doctor(station, paths=NO_BOARD).get("database")
    assert check.status == "ok" and "does not exist yet" in check.summary

    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'station.db'}")
    upgrade(engine)
    engine.dispose()
    check = run_doctor(station, paths=NO_BOARD).get("database")
    assert check.status == "ok" and "quick_check ok" in check.summary, check.summary

    (tmp_path / "var" / "station.db").write_bytes(b"this is not a database" * 100)
    check = run_doctor(station, paths=NO_BOARD).get("database")
    assert check.status == "fail" and "file is not a database" in check.summary


def test_archive_cap_larger_than_the_disk_is_a_warning(tmp_path: Path):
    total = shutil.disk_usage(tmp_path).total
    station = write_station(tmp_path, archive=f"max_bytes = {total * 4}")
    disk = run_doctor(station, paths=NO_BOARD).get("disk")
    assert disk.status == "warn" and "lower archive.max_bytes" in disk.summary


@pytest.fixture
def fake_board(tmp_path: Path) -> HostPaths:
    """An RK3588 board's files: device tree, rknpu debugfs, and a loadable librknnrt look-alike."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc (apt build-essential) needed to build the librknnrt look-alike")
    src = tmp_path / "fake_rknnrt.c"
    src.write_text('const char rknn_banner[] = "librknnrt version: 2.5.0 (0123abc@2025-04-01T10:00:00)";\n')
    lib = tmp_path / "librknnrt.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=60)
    debugfs = tmp_path / "debugfs"
    debugfs.mkdir()
    (debugfs / "version").write_text("RKNPU driver: v0.9.8\n")
    (debugfs / "load").write_text("NPU load:  Core0:  0%, Core1:  0%, Core2:  0%,\n")
    render = tmp_path / "renderD129"
    render.touch()
    return HostPaths(
        compatible=write_compatible(tmp_path / "compatible", "radxa,rock-5b", "rockchip,rk3588"),
        rknpu_debugfs=debugfs,
        rknpu_module=tmp_path / "nomodule",
        npu_devfreq=tmp_path / "devfreq",
        render_node=render,
        library_paths=(str(lib),),
    )


def test_board_lookalike_reports_soc_driver_runtime_and_cores(tmp_path: Path, fake_board: HostPaths):
    station = write_station(tmp_path)
    report = run_doctor(station, paths=fake_board)
    assert report.get("soc").status == "ok" and report.get("soc").summary == "rk3588 on radxa,rock-5b"
    npu = report.get("npu")
    assert npu.details["driver_version"] == "0.9.8"
    assert npu.details["runtime_version"] == "2.5.0"
    assert "driver 0.9.8" in npu.summary and "librknnrt 2.5.0" in npu.summary
    cores = report.get("npu_cores")
    assert cores.details["cores"] == 3 and "driver load report" in cores.summary
    backend = report.get("inference_backend")
    if npu.details["toolkit_lite2_version"] is None:
        # x86: the toolkit has no wheel, so the NPU is present but unusable: CPU fallback, warned
        assert npu.status == "warn" and "rknn-toolkit-lite2 not installed" in npu.summary
        assert backend.details["backend"] == "onnxruntime" and backend.status == "warn"
        assert report.ok


def add_rknn_form(models: Path, name: str, onnx: str, inputs: list[dict], outputs: list[str]) -> None:
    """A .rknn stand-in the RKNNLite double accepts (magic + bytes) and its form in the metadata.

    A real .rknn needs rknn-toolkit2's conversion; the double runs the form's ONNX instead.
    """
    rknn = models / f"{name}.rk3588.fp16.rknn"
    rknn.write_bytes(b"RKNN" + b"\0" * 64)
    meta = ModelMetadata.read(models / f"{name}.json")
    meta.forms["rknn-rk3588-fp16"] = {
        "file": rknn.name, "sha256": sha256_file(rknn), "target": "rk3588", "quant": "fp16",
        "onnx": onnx, "inputs": inputs, "outputs": outputs,
    }
    meta.write(models / f"{name}.json")


def write_tiny_classifier(path: Path) -> None:
    """A real, tiny ONNX model (Conv + ReLU, 1x3x16x16 -> 1x4x16x16): fast on any CPU."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_npu_probe_runs_one_runtime_per_core(tmp_path: Path, fake_board: HostPaths):
    from station.inference import rknn_double

    models = tmp_path / "models"
    models.mkdir()
    write_tiny_classifier(models / "encoder.onnx")
    ModelMetadata(name="encoder", role="sam_encoder", file="encoder.onnx", sha256=sha256_file(models / "encoder.onnx"),
                  pair="decoder").write(models / "encoder.json")
    write_tiny_classifier(models / "decoder.onnx")  # the SAM pair must be complete (station.recipe_models)
    ModelMetadata(name="decoder", role="sam_decoder", file="decoder.onnx", sha256=sha256_file(models / "decoder.onnx"),
                  pair="encoder").write(models / "decoder.json")
    add_rknn_form(models, "encoder", "encoder.onnx", [{"name": "x", "shape": [1, 3, 16, 16]}], ["y"])
    station = write_station(tmp_path, analyzer="sam", inference='backend = "rknn"')

    report = run_doctor(station, paths=fake_board, npu_runtime_class=rknn_double.simulated())
    probe = report.get("npu_probe")
    assert probe.status == "ok", probe.summary
    assert probe.details["usable"] == 3 and probe.summary.startswith("3/3 NPU core(s) ran encoder (rknn-rk3588-fp16)")
    assert report.get("model:encoder").status == "ok" and "rknn-rk3588-fp16" in report.get("model:encoder").summary

    # core 1 cannot take another runtime (e.g. memory): reported per core, the station degrades
    faulty = rknn_double.simulated(faults=rknn_double.Faults(init_cores={2}))
    probe = run_doctor(station, paths=fake_board, npu_runtime_class=faulty).get("npu_probe")
    assert probe.status == "warn" and probe.details["usable"] == 2
    assert "core 1: model encoder: RKNNLite.init_runtime failed" in probe.summary



def test_steel_strip_needs_no_sam_model_and_the_doctor_agrees(tmp_path: Path):
    """Regression: the doctor used to report `FAIL model:litemedsam … the station cannot run` for
    steel-strip, which outlines every class with its proposal regions and never loads SAM."""
    from station.models_store import ensure_recipe_models

    station = tmp_path / "station.toml"
    station.write_text(f'station_id = "steel"\nrecipes_dir = "{REPO / "recipes"}"\nactive_recipe = "steel-strip"\n'
                       f'models_dir = "models"\n[[cameras]]\ntype = "simulated"\nname = "top"\n[plc]\nport = {free_port()}\n')
    pulled = ensure_recipe_models(REPO / "recipes" / "steel-strip.toml", tmp_path / "models")
    assert {r.name for r in pulled} == {"efficientnet-lite0", "steel-strip-backbone-head"}
    report = run_doctor(station, paths=NO_BOARD)
    models = {c.name: c.status for c in report.checks if c.name.startswith("model")}
    assert models == {"model:efficientnet-lite0": "ok", "model:steel-strip-backbone-head": "ok"}, report.render()
    assert report.ok
