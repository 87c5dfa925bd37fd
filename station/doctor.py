"""`station doctor`: can the station run on this machine with this station file, and if not, why.

Each check looks at one thing (SoC, NPU driver and runtime, inference backend, cameras, PLC,
disk, models, database, recipes) and returns a ``Check`` with a status:

- ``ok``: fine;
- ``warn``: the station runs, but not as well as it could (no NPU: CPU fallback; low disk);
- ``fail``: the station cannot run or cannot do its job (missing model, camera not found,
  PLC unreachable in client mode, database from a newer version).

``run_doctor`` never raises for a broken machine: every problem becomes a check. The pieces
other areas own (NPU detection, GenTL discovery, database migrations) are called where they
exist; a piece that cannot be imported gives a plain "not available" line, not a crash.
"""

from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import platform
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from station.ports import listen_error
from station.config import GenicamCameraConfig, ReplayCameraConfig, StationConfig
from station.config_errors import ConfigError
from station.paths import SHIPPED_RECIPES
from station.recipe_models import check_recipe_models, recipe_models

Status = Literal["ok", "warn", "fail"]
GIB = 1024**3
MIN_FREE_BYTES = 1 * GIB  # below this the archive and the database cannot keep up for long
DEFAULT_CONFIG_PATH = Path("/etc/station/station.toml")


@dataclass(frozen=True)
class HostPaths:
    """Where the board's facts live; tests point these at a look-alike tree."""

    compatible: Path = Path("/proc/device-tree/compatible")
    rknpu_debugfs: Path = Path("/sys/kernel/debug/rknpu")  # version, load (root only)
    rknpu_module: Path = Path("/sys/module/rknpu")
    npu_devfreq: Path = Path("/sys/class/devfreq/fdab0000.npu")
    render_node: Path = Path("/dev/dri/renderD129")
    library_paths: tuple[str, ...] | None = None  # librknnrt.so candidates; None: select.LIBRARY_PATHS


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    details: dict = field(default_factory=dict)


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    config_path: str | None = None

    @property
    def ok(self) -> bool:
        """The station can run: no check failed (warnings allowed)."""
        return not any(c.status == "fail" for c in self.checks)

    def get(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "config": self.config_path, "checks": [asdict(c) for c in self.checks]}, indent=2, default=str
        )

    def render(self) -> str:
        width = max((len(c.name) for c in self.checks), default=8)
        lines = [f"station doctor on {platform.node()} ({platform.machine()}), station file: {self.config_path or 'none'}"]
        for c in self.checks:
            lines.append(f"  {c.status.upper():<5} {c.name:<{width}}  {c.summary}")
        fails = [c for c in self.checks if c.status == "fail"]
        warns = sum(c.status == "warn" for c in self.checks)
        if fails:
            lines.append(f"the station cannot run: {len(fails)} problem(s): " + "; ".join(c.name for c in fails))
        else:
            lines.append("the station can run" + (f" ({warns} warning(s))" if warns else ""))
        return "\n".join(lines)


def _guard(name: str, fn: Callable[[], list[Check] | Check]) -> list[Check]:
    """Run one check; an unexpected exception is a failed check naming it, not a crash."""
    try:
        out = fn()
    except Exception as exc:  # the doctor must report, whatever the machine does
        return [Check(name, "fail", f"check crashed: {type(exc).__name__}: {exc}")]
    return out if isinstance(out, list) else [out]


# ---- platform and NPU --------------------------------------------------------------------------
def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_soc(paths: HostPaths) -> Check:
    from station.inference.select import read_soc

    raw = None
    try:
        raw = paths.compatible.read_bytes()
    except OSError:
        pass
    machine = platform.machine()
    if raw is None:
        return Check("soc", "warn", f"no device tree ({machine} machine): not an RK3588 board", {"machine": machine})
    entries = [e for e in raw.decode("ascii", "replace").split("\0") if e]
    soc = read_soc(paths.compatible)
    details = {"machine": machine, "compatible": entries, "soc": soc}
    if soc in ("rk3588", "rk3588s"):
        return Check("soc", "ok", f"{soc} on {entries[0]}", details)
    return Check("soc", "warn", f"{soc or 'unknown SoC'} on {entries[0] if entries else '?'}: not an RK3588", details)


def npu_driver_version(paths: HostPaths) -> str | None:
    """The rknpu kernel driver's version ("0.9.8"), from debugfs (root) or the module's sysfs."""
    for path in (paths.rknpu_debugfs / "version", paths.rknpu_module / "version"):
        text = _read_text(path)
        if text:
            m = re.search(r"v?(\d+\.\d+\.\d+)", text)
            return m.group(1) if m else text
    return None


def npu_cores_from_load(paths: HostPaths) -> int | None:
    """Cores the driver reports in its load line ("NPU load:  Core0:  0%, Core1:  0%, Core2:  0%,")."""
    text = _read_text(paths.rknpu_debugfs / "load")
    if not text:
        return None
    cores = re.findall(r"Core(\d+)", text)
    return len(set(cores)) or None


def check_npu(config: StationConfig | None, paths: HostPaths) -> list[Check]:
    """NPU presence, driver and runtime versions, cores; and the backend the station will use."""
    try:
        from station.inference.select import choose_backend, detect_npu, rknnlite_installed
    except ImportError as exc:
        return [Check("npu", "warn", f"NPU detection not available in this build ({exc})")]

    status = detect_npu(paths.compatible, paths.library_paths)
    driver = npu_driver_version(paths)
    toolkit = _package_version("rknn-toolkit-lite2")
    details = {
        "present": status.present,
        "reason": status.reason,
        "soc": status.soc,
        "driver_version": driver,
        "runtime_version": status.runtime_version,
        "toolkit_lite2_version": toolkit,
        "render_node": str(paths.render_node) if paths.render_node.exists() else None,
        "governor": _read_text(paths.npu_devfreq / "governor"),
        "frequency_hz": _read_text(paths.npu_devfreq / "cur_freq"),
    }
    wanted = config.inference.backend if config else "auto"
    checks: list[Check] = []

    if not status.present:
        plain = f"no NPU on this machine: {status.reason}"
        if wanted == "rknn":
            checks.append(Check("npu", "fail", plain + ': the station file asks for backend rknn; set backend = "auto" to use the CPU',
                                details))
        else:
            checks.append(Check("npu", "warn", plain + "; inference runs on the CPU", details))
    else:
        problems = []
        if not paths.render_node.exists():
            problems.append(f"{paths.render_node} missing (rknpu driver not loaded?)")
        elif not os.access(paths.render_node, os.R_OK | os.W_OK):
            problems.append(f"{paths.render_node} not accessible to this user (add it to group render)")
        if not toolkit:
            problems.append("rknn-toolkit-lite2 not installed in this Python")
        elif status.runtime_version and status.runtime_version.split()[0] != toolkit:
            problems.append(f"librknnrt {status.runtime_version} does not match rknn-toolkit-lite2 {toolkit}")
        summary = (
            f"{status.soc} NPU: driver {driver or 'unknown (read /sys/kernel/debug/rknpu/version as root)'}, "
            f"librknnrt {status.runtime_version or 'unknown'}, rknn-toolkit-lite2 {toolkit or 'missing'}"
        )
        if problems:
            bad: Status = "fail" if wanted == "rknn" else "warn"
            checks.append(Check("npu", bad, summary + "; " + "; ".join(problems), details))
        else:
            checks.append(Check("npu", "ok", summary, details))

        cores = npu_cores_from_load(paths)
        source = "driver load report"
        if cores is None:
            cores, source = status.cores, f"{status.soc} specification (load report needs root)"
        want_cores = config.inference.npu_cores if config else cores
        core_status: Status = "ok" if cores >= want_cores else ("fail" if wanted == "rknn" else "warn")
        checks.append(
            Check("npu_cores", core_status, f"{cores} NPU core(s) ({source}); station file asks for {want_cores}", {"cores": cores})
        )

    choice = choose_backend(wanted, status)
    backend_details = {"requested": wanted, "backend": choice.backend, "reason": choice.reason}
    if choice.backend == "onnxruntime":
        try:
            import onnxruntime as ort

            providers = ort.get_available_providers()
            threads = (config.inference.threads if config else 0) or os.cpu_count()
            backend_details.update(onnxruntime=ort.__version__, providers=providers, threads=threads)
            provider = "CPUExecutionProvider" if "CPUExecutionProvider" in providers else ", ".join(providers)
            why = "CPU fallback, no usable NPU" if wanted == "auto" else "configured"
            summary = f"CPU backend: ONNX Runtime {ort.__version__}, {provider}, {threads} threads ({why})"
            # The CPU is a fallback on a board that has an NPU, and the normal case elsewhere.
            backend_status: Status = "warn" if status.present and wanted == "auto" else "ok"
        except ImportError as exc:
            summary, backend_status = f"onnxruntime cannot be imported: {exc}", "fail"
    else:
        backend_status = "ok" if rknnlite_installed() else "fail"
        summary = f"RKNN on the NPU ({choice.reason})" + ("" if backend_status == "ok" else "; rknn-toolkit-lite2 missing")
    checks.append(Check("inference_backend", backend_status, summary, backend_details))
    return checks


# ---- cameras -------------------------------------------------------------------------------------
def check_cameras(config: StationConfig, enumerate_devices: bool = True) -> list[Check]:
    checks: list[Check] = []
    genicam = [c for c in config.cameras if isinstance(c, GenicamCameraConfig)]
    for cam in config.cameras:
        if isinstance(cam, ReplayCameraConfig):
            ok = cam.path.exists()
            checks.append(
                Check(f"camera:{cam.name}", "ok" if ok else "fail", f"replay from {cam.path}" + ("" if ok else ": not found"))
            )
        elif not isinstance(cam, GenicamCameraConfig):
            checks.append(Check(f"camera:{cam.name}", "ok", f"{cam.type} camera (no hardware)"))
    try:
        from station.camera.discovery import ProducerSet, check_producer, producer_paths
    except ImportError as exc:
        status: Status = "fail" if genicam else "warn"
        return checks + [Check("gentl", status, f"GenICam discovery not available in this build ({exc})")]

    configured = [p for cam in genicam for p in cam.cti]
    paths = producer_paths(configured)
    producers, broken = [], []
    for path in paths:
        try:
            check_producer(path)
            producers.append(str(path))
        except Exception as exc:
            broken.append(str(exc))
    summary = f"{len(producers)} GenTL producer(s): {', '.join(Path(p).name for p in producers) or 'none'}"
    if broken:
        summary += "; " + "; ".join(broken)
    if not genicam:
        checks.append(Check("gentl", "ok", summary + " (no GenICam camera configured)", {"producers": producers, "broken": broken}))
        return checks
    if not producers:
        checks.append(
            Check("gentl", "fail", summary + ": set cti in the station file or GENICAM_GENTL64_PATH", {"broken": broken})
        )
        return checks
    checks.append(Check("gentl", "warn" if broken else "ok", summary, {"producers": producers, "broken": broken}))
    if not enumerate_devices:
        return checks

    producer_set = ProducerSet()
    try:
        producer_set.ensure([Path(p) for p in producers])
        devices = producer_set.devices()
        listed = [f"{d.vendor} {d.model} serial {d.serial_number}".strip() for d in devices]
        checks.append(Check("gentl_devices", "ok" if devices else "fail", f"{len(devices)} device(s): {'; '.join(listed) or 'none'}",
                            {"devices": listed}))
        for cam in genicam:
            try:
                d = producer_set.find(cam.device)
                found = f"device {cam.device!r} found: {d.vendor} {d.model} serial {d.serial_number}"
                checks.append(Check(f"camera:{cam.name}", "ok", found))
            except Exception as exc:
                checks.append(Check(f"camera:{cam.name}", "fail", str(exc)))
    finally:
        producer_set.reset()
    return checks


# ---- PLC -------------------------------------------------------------------------------------------
def check_plc(config: StationConfig, connect_timeout_s: float = 2.0) -> Check:
    plc = config.plc
    if not plc.enabled:
        return Check("plc", "warn", "PLC link disabled in the station file: verdicts reach no PLC")
    where = f"{plc.host}:{plc.port}"
    if plc.mode == "client":
        t = time.monotonic()
        try:
            with socket.create_connection((plc.host, plc.port), timeout=connect_timeout_s):
                pass
        except OSError as exc:
            return Check("plc", "fail", f"PLC at {where} unreachable: {exc.strerror or exc}", {"mode": "client"})
        ms = (time.monotonic() - t) * 1000
        return Check("plc", "ok", f"PLC at {where} accepts TCP connections ({ms:.1f} ms)", {"mode": "client", "connect_ms": round(ms, 2)})

    exc = listen_error(plc.host, plc.port)
    if exc is not None:
        if exc.errno == errno.EADDRINUSE:
            return Check("plc", "warn", f"Modbus server port {where} is in use (the station already running? "
                                        "`systemctl status station`)", {"mode": "server"})
        if exc.errno == errno.EACCES:
            return Check(
                "plc", "warn",
                f"port {plc.port} needs CAP_NET_BIND_SERVICE: station.service grants it; as this user the bind is refused",
                {"mode": "server"},
            )
        return Check("plc", "fail", f"cannot listen on {where}: {exc.strerror or exc}", {"mode": "server"})
    allow = ", ".join(plc.allow) or "any client"
    return Check("plc", "ok", f"Modbus TCP server can listen on {where} (allowed: {allow})", {"mode": "server"})


# ---- disk --------------------------------------------------------------------------------------------
def _existing_ancestor(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def _tree_bytes(path: Path, limit_files: int = 2_000_000) -> int:
    total, seen = 0, 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
            seen += 1
            if seen >= limit_files:
                return total
    return total


def check_disk(config: StationConfig) -> Check:
    archive = config.archive
    base = _existing_ancestor(archive.dir)
    usage = shutil.disk_usage(base)
    used_by_archive = _tree_bytes(archive.dir) if archive.dir.is_dir() else 0
    details = {
        "archive_dir": str(archive.dir),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "archive_bytes": used_by_archive,
        "archive_max_bytes": archive.max_bytes,
    }
    room = usage.free + used_by_archive
    summary = (
        f"{usage.free / GIB:.1f} GiB free on {base} ({usage.total / GIB:.1f} GiB); archive uses "
        f"{used_by_archive / GIB:.2f} of its {archive.max_bytes / GIB:.1f} GiB cap"
    )
    writable = os.access(base, os.W_OK)
    details["writable"] = writable
    if usage.free < MIN_FREE_BYTES:
        return Check("disk", "fail", summary + f": under {MIN_FREE_BYTES / GIB:.0f} GiB free", details)
    if not writable:
        return Check("disk", "warn", summary + f"; {base} is not writable by this user", details)
    if room < archive.max_bytes:
        return Check("disk", "warn", summary + f"; the disk can hold only {room / GIB:.1f} GiB: lower archive.max_bytes", details)
    return Check("disk", "ok", summary, details)


# ---- models --------------------------------------------------------------------------------------------
def check_models(config: StationConfig, recipe, backend: str | None, npu_target: str | None) -> list[Check]:
    from station.inference.metadata import ModelError

    found = check_recipe_models(recipe, config.models_dir)
    if not found:
        return [Check("models", "ok", f"recipe {recipe.name} uses no model ({recipe.vision.analyzer} analyzer)")]
    checks = []
    for model in found:
        name, meta, path = model.name, model.meta, model.path
        if model.error is not None:
            checks.append(Check(f"model:{name}", "fail", model.error))
            continue
        summary = f"{path.name} sha256 {meta.sha256[:12]}… ok ({path.stat().st_size / 1e6:.1f} MB, {meta.role})"
        status: Status = "ok"
        if backend == "rknn" and npu_target:
            try:
                from station.inference.rknn import pick_form, resolve_form_file

                key, form = pick_form(meta, npu_target)
                rpath = resolve_form_file(config.models_dir, meta, form)
                summary += f"; {key}: {rpath.name} sha256 ok"
            except ModelError as exc:
                status, summary = "warn", summary + f"; runs on the CPU: {exc}"
            except ImportError as exc:
                status, summary = "warn", summary + f"; RKNN forms not checked ({exc})"
        checks.append(Check(f"model:{name}", status, summary, {"file": str(path), "sha256": meta.sha256}))
    return checks


def probe_npu_cores(
    config: StationConfig, recipe, target: str, cores: int, runtime_class: Callable | None = None
) -> Check:
    """Start one RKNN runtime per core (core masks 1, 2, 4) with the recipe's first model that
    has an RKNN form, and run one inference of zeros on each: the cores the station can use.

    ``runtime_class``: ``rknnlite.api.RKNNLite`` by default (on the board).
    """
    import numpy as np

    from station.inference.metadata import ModelError, resolve_model
    from station.inference.rknn import SINGLE_CORE_MASKS, RknnModel, pick_form, resolve_form_file

    queue, seen = recipe_models(recipe).names, set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            meta, _ = resolve_model(config.models_dir, name, verify=False)  # checksums: see check_models
        except ModelError:
            continue
        if meta.pair:
            queue.append(meta.pair)
        try:
            key, form = pick_form(meta, target)
            path = resolve_form_file(config.models_dir, meta, form)
        except ModelError:
            continue
        results, usable = [], 0
        for index, mask in enumerate(SINGLE_CORE_MASKS[:cores]):
            t = time.perf_counter()
            try:
                model = RknnModel(path, meta, form, core_mask=mask, runtime_class=runtime_class)
                try:
                    model.run({spec.name: np.zeros(spec.shape, dtype=spec.dtype) for spec in form.inputs})
                finally:
                    model.close()
            except ModelError as exc:
                results.append(f"core {index}: {exc}")
                continue
            usable += 1
            results.append(f"core {index}: {(time.perf_counter() - t) * 1000:.0f} ms")
        status: Status = "ok" if usable == cores else ("warn" if usable else "fail")
        return Check(
            "npu_probe", status, f"{usable}/{cores} NPU core(s) ran {name} ({key}): " + "; ".join(results),
            {"model": name, "form": key, "usable": usable, "results": results},
        )
    return Check("npu_probe", "warn", f"no model of recipe {recipe.name} has an RKNN form for {target}: cores not probed")


# ---- database ---------------------------------------------------------------------------------------------
def check_database(config: StationConfig) -> Check:
    url = config.database.url
    try:
        from station.db.engine import make_engine, sqlite_path
        from station.db.migrate import SchemaTooNew, check_known, head_revision
    except ImportError as exc:
        return Check("database", "warn", f"database checks not available in this build ({exc})")
    path = sqlite_path(url)
    if path is not None and not path.exists():
        parent = _existing_ancestor(path.parent)
        if not os.access(parent, os.W_OK):
            return Check("database", "warn", f"{path} does not exist yet and {parent} is not writable by this user")
        return Check("database", "ok", f"{path} does not exist yet: created and migrated at first start", {"url": url})
    if path is not None and not os.access(path, os.R_OK):
        return Check("database", "warn", f"{path} is not readable by this user (run as the station user or root)")
    engine = make_engine(url)
    try:
        try:
            rev = check_known(engine)
        except SchemaTooNew as exc:
            return Check("database", "fail", str(exc))
        head = head_revision()
        details = {"url": engine.url.render_as_string(hide_password=True), "revision": rev, "head": head}
        integrity = "n/a"
        if path is not None:
            from sqlalchemy import text

            with engine.connect() as conn:
                rows = [r[0] for r in conn.execute(text("PRAGMA quick_check"))]
            integrity = ", ".join(rows[:5])
            details["quick_check"] = rows[:5]
            if rows != ["ok"]:
                return Check("database", "fail", f"{path}: quick_check failed: {integrity} (restore a backup)", details)
        summary = f"{details['url']}: schema {rev or 'empty'} (this station: {head}), quick_check {integrity}"
        if rev != head:
            return Check("database", "warn", summary + "; migrated at start (or run `station db upgrade`)", details)
        return Check("database", "ok", summary, details)
    except Exception as exc:
        first_line = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return Check("database", "fail", f"{url}: cannot connect or read: {first_line} (restore a backup, see deploy/README.md)")
    finally:
        engine.dispose()


def check_history_record(config: StationConfig) -> Check:
    """What the station last said about its verdicts' records (db/writer.py's status file in the
    journal dir): verdicts given without a record, and whether triggers are refused for it."""
    from station.db.writer import read_status

    journal = config.database.journal_dir
    policy = config.database.on_history_full
    status = read_status(journal) if journal is not None else None
    if status is None:
        return Check("history_record", "ok", f"verdict journal {journal}: no status yet (written once the station runs); "
                                              f"on_history_full = {policy}")
    try:
        os.kill(int(status.get("pid", 0)), 0)
        when = "running"
    except PermissionError:
        when = "running"
    except (OSError, ValueError):
        when = f"last run, until {status.get('updated_at', '?')}"
    backlog, limit, unrecorded = status.get("backlog", 0), status.get("limit", 0), status.get("unrecorded", 0)
    if status.get("refusing_triggers"):
        return Check("history_record", "fail", f"station {when}: triggers refused: {status['refusing_triggers']}", status)
    if unrecorded:
        return Check("history_record", "warn", f"station {when}: {unrecorded} verdicts given without a record "
                                                f"(on_history_full = {status.get('on_history_full')}, backlog {backlog}/{limit}); "
                                                "see the alarm history_unrecorded", status)
    return Check("history_record", "ok", f"station {when}: every verdict recorded; backlog {backlog}/{limit} waiting for "
                                          f"the database, on_history_full = {policy}", status)


# ---- everything --------------------------------------------------------------------------------------------
def default_config_path() -> Path | None:
    env = os.environ.get("STATION_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def run_doctor(
    config_path: Path | None,
    *,
    paths: HostPaths = HostPaths(),
    enumerate_devices: bool = True,
    probe_npu: bool = True,
    npu_runtime_class: Callable | None = None,
) -> Report:
    """Every check, in the order an integrator fixes things: platform, config, hardware, data.

    ``probe_npu``: with the NPU present, run each core once (``npu_probe``). ``npu_runtime_class``
    replaces ``rknnlite.api.RKNNLite`` (tests, with station.inference.rknn_double).
    """
    from station.config import load_station_config

    report = Report(config_path=str(config_path) if config_path else None)
    add = report.checks.extend
    host = f"Python {platform.python_version()} on {platform.system()} {platform.release()} ({platform.machine()})"
    add(_guard("python", lambda: Check("python", "ok", host)))
    add(_guard("soc", lambda: check_soc(paths)))

    config: StationConfig | None = None
    if config_path is None:
        # what `station demo` runs: simulated camera, CPU inference, var/ under the working
        # directory, its copies of the recipes once it has run (else the shipped ones)
        demo_recipes = Path.cwd() / "var" / "recipes"
        config = StationConfig.embedded(Path.cwd(), recipes_dir=str(demo_recipes if demo_recipes.is_dir() else SHIPPED_RECIPES))
        report.checks.append(Check("config", "ok", f"no station file (--config, STATION_CONFIG or {DEFAULT_CONFIG_PATH}): "
                                                   f"checking the embedded demo station rooted at {Path.cwd()}",
                                   {"embedded": True}))
    else:
        try:
            config = load_station_config(config_path)
            report.checks.append(Check("config", "ok", f"{config_path} valid (station {config.station_id})"))
        except ConfigError as exc:
            report.checks.append(Check("config", "fail", str(exc), {"invalid": True}))

    npu_checks = _guard("npu", lambda: check_npu(config, paths))
    add(npu_checks)
    if config is None:
        return report

    backend_check = next((c for c in npu_checks if c.name == "inference_backend"), None)
    backend = backend_check.details.get("backend") if backend_check else None
    npu_check = next((c for c in npu_checks if c.name == "npu"), None)
    soc = npu_check.details.get("soc") if npu_check else None
    target = "rk3588" if soc and soc.startswith("rk3588") else soc

    recipe = None
    try:
        from station.recipe import RecipeBook

        book = RecipeBook(config.recipes_dir)
        for err in book.errors:
            report.checks.append(Check("recipes", "warn", f"bad recipe file (skipped): {err}"))
        try:
            recipe = book.get(config.active_recipe).recipe
            report.checks.append(Check("recipe", "ok", f"active recipe {recipe.name} v{recipe.version} "
                                                       f"({len(book.recipes)} recipe(s) in {config.recipes_dir})"))
        except KeyError as exc:
            report.checks.append(Check("recipe", "fail", str(exc.args[0])))
    except Exception as exc:
        report.checks.append(Check("recipe", "fail", f"recipes in {config.recipes_dir} cannot be read: {exc}"))

    add(_guard("cameras", lambda: check_cameras(config, enumerate_devices)))
    add(_guard("plc", lambda: check_plc(config)))
    add(_guard("disk", lambda: check_disk(config)))
    if recipe is not None:
        add(_guard("models", lambda: check_models(config, recipe, backend, target)))
        npu_present = bool(npu_check and npu_check.details.get("present"))
        if probe_npu and npu_present and target and (backend == "rknn" or npu_runtime_class is not None):
            cores = min(config.inference.npu_cores, 3)
            add(_guard("npu_probe", lambda: probe_npu_cores(config, recipe, target, cores, npu_runtime_class)))
    add(_guard("database", lambda: check_database(config)))
    add(_guard("history_record", lambda: check_history_record(config)))
    return report


__all__ = ["Check", "Report", "HostPaths", "run_doctor", "default_config_path"]
