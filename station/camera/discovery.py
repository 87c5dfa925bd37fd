"""GenTL producers (.cti files) and the devices they expose, through one shared Harvester.

A GenTL producer library can be opened once per process: a second Harvester on the same
.cti sees no devices (measured with the genicam package's viky.cti). So every GenICam camera
of the station shares one ``ProducerSet``; it only grows, and re-enumerating devices
(``refresh``) makes every open acquirer obsolete, which bumps ``generation`` so that each
camera knows to reopen its device.

Producers come from the camera config and from ``GENICAM_GENTL64_PATH`` (directories,
separated by ``os.pathsep``, whose ``*.cti`` files are producers, as the GenTL standard says).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from station.camera.base import CameraError

log = logging.getLogger("station.camera.discovery")

GENTL_PATH_VARIABLE = "GENICAM_GENTL64_PATH"


def simulator_cti() -> Path | None:
    """The GenTL simulator producer (viky.cti) shipped inside the ``genicam`` wheel, if installed."""
    try:
        import genicam
    except ImportError:
        return None
    path = Path(genicam.__file__).resolve().parent / "viky.cti"
    return path if path.is_file() else None


def producers_from_environment(environ: dict[str, str] | None = None) -> list[Path]:
    """The .cti files in the directories of GENICAM_GENTL64_PATH (sorted per directory)."""
    value = (os.environ if environ is None else environ).get(GENTL_PATH_VARIABLE, "")
    found: list[Path] = []
    for entry in filter(None, value.split(os.pathsep)):
        p = Path(entry)
        if p.is_file() and p.suffix == ".cti":
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.glob("*.cti")))
        else:
            log.warning("%s entry %s is neither a directory nor a .cti file", GENTL_PATH_VARIABLE, entry)
    return found


def producer_paths(configured: list[Path], environ: dict[str, str] | None = None) -> list[Path]:
    """Configured producers first, then those from the environment; duplicates removed."""
    out: list[Path] = []
    for p in [*configured, *producers_from_environment(environ)]:
        p = Path(p).expanduser().resolve()
        if p not in out:
            out.append(p)
    return out


def check_producer(path: Path) -> None:
    """Raise CameraError naming ``path`` when it is missing or not a loadable GenTL producer.

    dlopen is reference-counted, so loading the library here does not disturb a Harvester
    that already has it open (opening a second GenTL *producer* on it would).
    """
    if not path.exists():
        raise CameraError(f"GenTL producer {path} does not exist")
    if not path.is_file():
        raise CameraError(f"GenTL producer {path} is not a file")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise CameraError(f"GenTL producer {path} cannot be loaded: {exc}") from None
    if not hasattr(lib, "GCInitLib"):
        raise CameraError(f"GenTL producer {path} is a library but not a GenTL producer (no GCInitLib)")


@dataclass(frozen=True)
class DeviceFacts:
    """What a producer tells about a device before it is opened."""

    index: int
    id: str
    vendor: str
    model: str
    serial_number: str
    user_defined_name: str
    tl_type: str
    producer: str  # the .cti path

    def matches(self, key: str | int) -> bool:
        if isinstance(key, int):
            return self.index == key
        return key in (self.serial_number, self.user_defined_name, self.id)


def _fact(info, name: str) -> str:
    try:
        value = getattr(info, name)
    except Exception:  # producers raise NotAvailable for properties they do not implement
        return ""
    return "" if value is None else str(value)


class AcquirerGuard:
    """Readers-writer lock: many cameras may use their acquirers at once (``shared``), while
    re-enumeration, which destroys every acquirer, waits until none is in use (``exclusive``).

    Destroying an acquirer while another thread fetches from it crashes the process (measured:
    a segfault in harvesters reading a revoked buffer), hence this guard. ``exclusive`` is
    reentrant for its owner thread; ``shared`` inside ``exclusive`` is a no-op; a thread holding ``shared`` must not ask for
    ``exclusive``.
    """

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._users = 0
        self._owner: int | None = None
        self._depth = 0
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        if self._owner == threading.get_ident():  # already exclusive: nothing else can be in use
            yield
            return
        with self._cv:
            self._cv.wait_for(lambda: self._owner is None and not self._writers_waiting)
            self._users += 1
        try:
            yield
        finally:
            with self._cv:
                self._users -= 1
                self._cv.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cv:
            if self._owner != me:
                self._writers_waiting += 1
                self._cv.wait_for(lambda: self._owner is None and self._users == 0)
                self._writers_waiting -= 1
                self._owner = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cv:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._cv.notify_all()


class ProducerSet:
    """One Harvester holding every producer the station uses.

    Cameras fetch inside ``in_use()``; everything that changes the Harvester runs exclusively.
    """

    def __init__(self) -> None:
        from harvesters.core import Harvester  # imported here: only GenICam users need it

        self._harvester = Harvester()
        self._guard = AcquirerGuard()
        self.files: list[Path] = []
        self.problems: dict[Path, str] = {}  # producers that could not be loaded, and why
        self.generation = 0

    def in_use(self):
        """Context for using an acquirer (fetch, queue, stop/start); many may be in use at once."""
        return self._guard.shared()

    def exclusive(self):
        """Context in which no acquirer is in use: for re-enumeration and creating acquirers."""
        return self._guard.exclusive()

    def ensure(self, paths: list[Path]) -> list[str]:
        """Add the producers not loaded yet (re-enumerating if any was added).

        Returns one message per producer that is missing or broken; the others are used.
        """
        with self.exclusive():
            problems, added = [], False
            for path in paths:
                if path in self.files:
                    continue
                try:
                    check_producer(path)
                except CameraError as exc:
                    self.problems[path] = str(exc)
                    problems.append(str(exc))
                    continue
                self.problems.pop(path, None)
                self._harvester.add_file(str(path))
                self.files.append(path)
                added = True
            if added or self.generation == 0:
                self.refresh()
            return problems

    def refresh(self) -> None:
        """Re-enumerate devices. Every acquirer created before becomes obsolete."""
        with self.exclusive():
            self._harvester.update()
            self.generation += 1
            log.info("GenTL producers %s: %d devices", [str(f) for f in self.files], len(self.devices()))

    def devices(self) -> list[DeviceFacts]:
        with self.exclusive():
            out = []
            for i, info in enumerate(self._harvester.device_info_list):
                producer = ""
                try:
                    producer = str(info.parent.parent.parent.path_name)  # device → interface → system → producer
                except Exception:
                    pass
                out.append(
                    DeviceFacts(
                        index=i,
                        id=_fact(info, "id_"),
                        vendor=_fact(info, "vendor"),
                        model=_fact(info, "model"),
                        serial_number=_fact(info, "serial_number"),
                        user_defined_name=_fact(info, "user_defined_name"),
                        tl_type=_fact(info, "tl_type"),
                        producer=producer,
                    )
                )
            return out

    def find(self, key: str | int) -> DeviceFacts:
        """The device with serial number, user-defined name, device id, or index ``key``."""
        devices = self.devices()
        if isinstance(key, str) and key.isdigit() and not any(d.matches(key) for d in devices):
            key = int(key)  # "2" on the command line: an index when no serial is "2"
        hits = [d for d in devices if d.matches(key)]
        if len(hits) == 1:
            return hits[0]
        listed = "; ".join(f"[{d.index}] {d.vendor} {d.model} serial {d.serial_number!r}" for d in devices) or "none"
        if hits:
            raise CameraError(f"device {key!r} is ambiguous: {len(hits)} devices match (devices: {listed})")
        producer_problems = "; ".join(self.problems.values())
        extra = f"; producer problems: {producer_problems}" if producer_problems else ""
        raise CameraError(f"no device {key!r} among the GenTL devices (devices: {listed}){extra}")

    def create_acquirer(self, device: DeviceFacts):
        """Open the device; returns a harvesters ImageAcquirer (not started)."""
        with self.exclusive():
            info = self._harvester.device_info_list[device.index]
            return self._harvester.create(info)

    def reset(self) -> None:
        """Release every acquirer and producer (tests and the CLI; the station keeps its set)."""
        from harvesters.core import Harvester

        with self.exclusive():
            try:
                self._harvester.reset()
            except Exception:  # an acquirer half-destroyed by a lost device may object; drop it anyway
                log.exception("releasing GenTL producers")
            self._harvester = Harvester()  # reset() runs a finalizer, which works once: start afresh
            self.files.clear()
            self.problems.clear()
            self.generation += 1


_shared: ProducerSet | None = None
_shared_lock = threading.Lock()


def shared_producers() -> ProducerSet:
    """The process-wide ProducerSet."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ProducerSet()
        return _shared
