"""A GenICam camera (GigE Vision, USB3 Vision, ...) through a GenTL producer and ``harvesters``.

Lifecycle: ``open()`` finds the device (serial number, user-defined name, device id or
index) among the producers' devices, applies the recipe camera (features, trigger mode) and
starts streaming; ``configure(recipe_camera)`` re-applies when another recipe is loaded;
``grab(part_id, timeout_s)`` returns the frame for one part; ``close()`` releases the device.

Which frame belongs to a part (never a stale frame from an earlier trigger):

- ``software``: queued frames are discarded, ``TriggerSoftware`` executed, the next frame
  returned;
- ``hardware`` (``trigger_line``, rising edge): queued frames are discarded and the next
  frame returned, so the line edge must come after the station accepted the part (the PLC
  handshake's trigger acknowledge); an edge before that ends in a timeout, a fail-safe
  reject, never another part's image;
- ``freerun``: queued frames are discarded and so is the frame in flight (its exposure began
  before the trigger); the one after is returned. A device without the trigger nodes a mode
  needs falls back to free-run, with the reason logged and shown by ``describe()``.

Buffers are fetched with a timeout, copied out (station/camera/pixels.py) and queued back
to the producer at once. A device that fails or times out ``lost_after_timeouts`` times in
a row is declared lost: alarm ``camera_lost:<name>``, acquirer destroyed, and a background
thread recreates it with the configured backoff; parts grabbed meanwhile get CameraError
(the pipeline rejects them as camera_error). On recovery the alarm clears by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

import numpy as np

from station.alarms import AlarmBoard, Severity
from station.camera.base import Camera, CameraError
from station.camera.discovery import DeviceFacts, ProducerSet, producer_paths, shared_producers
from station.camera.features import ADAPTER_OWNED, FeatureReport, apply_features, setup_trigger
from station.camera.pixels import FORMATS as PIXEL_FORMATS
from station.camera.pixels import PixelFormatError, to_station_image
from station.config import GenicamCameraConfig
from station.images import DEFAULT_MAX_PIXELS, ImageError, check_pixel_count
from station.inspection import View
from station.recipe import RecipeCamera

log = logging.getLogger("station.camera.genicam")


@dataclass
class CameraCounters:
    """Per camera since construction; read by the HMI and `station doctor`."""

    frames: int = 0  # images handed to the station
    incomplete: int = 0  # buffers the producer delivered incomplete (discarded)
    dropped: int = 0  # frame-id gaps while every frame was expected (trigger modes, streaming)
    stale_discarded: int = 0  # frames thrown away because they predate the trigger
    timeouts: int = 0
    losses: int = 0  # times the device was declared lost
    reconnects: int = 0  # successful recoveries

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class _IncompleteCounter:
    """harvesters Callback: counts incomplete buffers (harvesters already discards them)."""

    def __init__(self, counters: CameraCounters):
        self.counters = counters

    def emit(self, context=None) -> None:
        self.counters.incomplete += 1


class _FetchTimeout(Exception):
    pass


class GenicamCamera(Camera):
    """A GenICam device as a station camera. See the module docstring for the frame rules."""

    def __init__(self, config: GenicamCameraConfig, alarms: AlarmBoard, producers: ProducerSet | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.config = config
        self.max_pixels = max_pixels
        self.name = config.name
        self.alarms = alarms
        self.producers: ProducerSet | None = producers  # None: the process-wide set, taken on open
        self.recipe_camera = RecipeCamera(name=config.name)
        self.counters = CameraCounters()
        self.report = FeatureReport()
        self.device: DeviceFacts | None = None
        self._ia = None
        self._generation = -1
        self._lock = threading.RLock()
        self._state = "closed"  # closed | open | down
        self._down_reason = ""
        self._last_frame_id: int | None = None
        self._failures_in_a_row = 0
        self._stop = threading.Event()
        self._reconnector: threading.Thread | None = None
        self._alarm_lost = f"camera_lost:{self.name}"
        self._alarm_features = f"camera_features:{self.name}"
        self._alarm_producer = f"camera_producer:{self.name}"
        self._alarm_format = f"camera_format:{self.name}"
        self._format_alarmed = False

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Open and start the device. On failure raises CameraError (naming the producer or
        device at fault) and keeps retrying in the background until ``close()``."""
        with self._lock:
            if self._state == "open":
                return
            self._stop.clear()
            try:
                self._connect()
            except CameraError as exc:
                self._declare_lost(str(exc))
                raise

    def close(self) -> None:
        self._stop.set()
        t = self._reconnector
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)
        with self._lock:
            self._release()
            self._state = "closed"
        for key in (self._alarm_lost, self._alarm_features, self._alarm_producer, self._alarm_format):
            self.alarms.clear(key)

    @property
    def connected(self) -> bool:
        return self._state == "open"

    def configure(self, recipe_camera: RecipeCamera) -> FeatureReport:
        """Apply a recipe's camera settings (features, trigger). Never raises: problems are
        reported in the returned FeatureReport and as a warning alarm. When the device is down
        (or fails now) the settings are kept and applied on reconnect."""
        with self._lock:
            self.recipe_camera = recipe_camera
            if self._state != "open":
                return self.report
            try:
                self._ensure_current()
                with self.producers.in_use():
                    if self._generation == self.producers.generation:  # else the reopen applies it
                        self._ia.stop()  # most devices lock geometry and pixel format while streaming
                        self._apply_recipe()
                        self._ia.start()
            except CameraError:
                pass  # down: _ensure_current declared it lost; the reconnect applies the settings
            except Exception as exc:
                self._declare_lost(f"camera {self.name}: configure failed: {type(exc).__name__}: {exc}")
            return self.report

    # ---- acquisition -----------------------------------------------------------------------
    def grab(self, part_id: int, timeout_s: float) -> View:
        """The frame for this part, uint8 HxW or HxWx3 RGB. Raises CameraError.

        Waits at most ``min(timeout_s, config.timeout_ms)``."""
        limit_s = min(timeout_s, self.config.timeout_ms / 1000.0)
        return self._acquire(f"the frame of part {part_id}", limit_s, fresh=True)

    def frames(self, count: int, timeout_s: float | None = None):
        """Consecutive frames as they stream (no flush, nothing skipped), for the CLI and soak
        tests; a software-triggered device is triggered once per frame."""
        limit_s = self.config.timeout_ms / 1000.0 if timeout_s is None else timeout_s
        for n in range(count):
            yield self._acquire(f"streamed frame {n}", limit_s, fresh=False)

    def _acquire(self, what: str, limit_s: float, fresh: bool) -> View:
        with self._lock:
            deadline = time.monotonic() + limit_s
            try:
                while True:
                    self._ensure_current()
                    with self.producers.in_use():
                        if self._generation != self.producers.generation:
                            continue  # re-enumerated between the check and here: reopen first
                        return self._fetch_view(deadline, fresh)
            except (CameraError, ImageError):  # ImageError: a frame came, but not one to inspect (image_error)
                raise
            except _FetchTimeout:
                self._on_failure(f"no frame within {limit_s * 1000:.0f} ms")
                raise CameraError(f"camera {self.name}: timeout waiting for {what}") from None
            except PixelFormatError as exc:  # the device works; its format does not: no reconnect
                message = f"camera {self.name}: {exc}"
                self.alarms.raise_(self._alarm_format, "camera", message)
                self._format_alarmed = True
                raise CameraError(message) from None
            except Exception as exc:  # the producer failed: the device is gone or broken
                self._on_failure(f"{type(exc).__name__}: {exc}", fatal=True)
                raise CameraError(f"camera {self.name}: acquisition failed: {type(exc).__name__}: {exc}") from exc

    def _fetch_view(self, deadline: float, fresh: bool) -> View:
        mode = self.report.trigger_effective
        if fresh:
            self._flush()
        if mode == "software":
            self._ia.remote_device.node_map.TriggerSoftware.execute()
        skip = 1 if fresh and mode == "freerun" else 0
        view = self._next_view(deadline, skip=skip, count_gaps=not fresh or mode != "freerun")
        self._failures_in_a_row = 0
        if self._format_alarmed:
            self._format_alarmed = False
            self.alarms.clear(self._alarm_format)
        return view

    def describe(self) -> dict:
        d = self.device
        return {
            "name": self.name,
            "type": type(self).__name__,
            "state": self._state,
            "down_reason": self._down_reason,
            "vendor": d.vendor if d else "",
            "model": d.model if d else "",
            "serial": d.serial_number if d else "",
            "device_id": d.id if d else "",
            "producer": d.producer if d else "",
            "trigger": self.report.trigger_effective,
            "trigger_note": self.report.trigger_note,
            "features_applied": dict(self.report.applied),
            "feature_problems": self.report.problems(),
            "counters": self.counters.as_dict(),
        }

    # ---- internals (called with self._lock held) ------------------------------------------------
    def _connect(self) -> None:
        """Find, open, configure and start the device; raises CameraError."""
        from harvesters.core import ImageAcquirer

        if self.producers is None:
            self.producers = shared_producers()
        paths = producer_paths(self.config.cti)
        if not paths:
            raise CameraError(
                f"camera {self.name}: no GenTL producer: set cti in the camera config or GENICAM_GENTL64_PATH"
            )
        problems = self.producers.ensure(paths)
        if problems:
            self.alarms.raise_(self._alarm_producer, "camera", f"camera {self.name}: " + "; ".join(problems), Severity.WARNING)
        else:
            self.alarms.clear(self._alarm_producer)
        if not self.producers.files:
            raise CameraError(f"camera {self.name}: no usable GenTL producer: " + "; ".join(problems))
        with self.producers.exclusive():
            try:
                device = self.producers.find(self.config.device)
            except CameraError:
                self.producers.refresh()  # a device plugged in since the last enumeration
                try:
                    device = self.producers.find(self.config.device)
                except CameraError as exc:
                    raise CameraError(f"camera {self.name}: {exc}") from None
            try:
                ia = self.producers.create_acquirer(device)
            except Exception as exc:
                raise CameraError(
                    f"camera {self.name}: cannot open device {device.serial_number or device.id!r}: {type(exc).__name__}: {exc}"
                ) from None
            self._generation = self.producers.generation
            self._ia, self.device = ia, device
            # set up in the same exclusive section: a re-enumeration in between would destroy it
            try:
                ia.num_buffers = self.config.num_buffers
                ia.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _IncompleteCounter(self.counters))
                self._apply_recipe()
                ia.start()
            except Exception as exc:
                self._release()
                raise CameraError(f"camera {self.name}: cannot start device: {type(exc).__name__}: {exc}") from None
        self._state, self._down_reason = "open", ""
        self._last_frame_id = None
        self._failures_in_a_row = 0
        self.alarms.clear(self._alarm_lost)  # before the lock is released: connected implies no alarm
        log.info("camera %s: %s %s serial %s open, trigger %s", self.name, device.vendor, device.model,
                 device.serial_number, self.report.trigger_effective)

    def _apply_recipe(self) -> None:
        rc = self.recipe_camera
        node_map = self._ia.remote_device.node_map
        wanted, refused = {}, {}
        for name, value in rc.features.items():
            if name in ADAPTER_OWNED:
                refused[name] = "driven by the camera adapter (use the recipe's trigger and trigger_line)"
            elif name == "PixelFormat" and str(value) not in PIXEL_FORMATS:
                refused[name] = f"the station cannot convert {value!r} (it converts {', '.join(PIXEL_FORMATS)})"
            else:
                wanted[name] = value
        report = apply_features(node_map, wanted)
        effective, note = setup_trigger(node_map, rc.trigger, rc.trigger_line)
        self.report = replace(report, refused={**report.refused, **refused}, trigger_requested=rc.trigger,
                              trigger_effective=effective, trigger_note=note)
        problems = self.report.problems()
        if problems:
            msg = f"camera {self.name}: " + "; ".join(problems)
            log.warning(msg)
            self.alarms.raise_(self._alarm_features, "camera", msg, Severity.WARNING)
        else:
            self.alarms.clear(self._alarm_features)

    def _ensure_current(self) -> None:
        if self._state == "closed":
            raise CameraError(f"camera {self.name} is not open")
        if self._state != "open":
            raise CameraError(f"camera {self.name} is down ({self._down_reason}); reconnecting")
        if self._generation != self.producers.generation:
            # the device list was re-enumerated (another camera reconnecting): our acquirer is obsolete
            log.info("camera %s: producers re-enumerated; reopening", self.name)
            self._release()
            try:
                self._connect()
            except CameraError as exc:
                self._declare_lost(str(exc))
                raise

    def _flush(self) -> None:
        """Give back every frame already queued: they were exposed before this trigger."""
        for _ in range(self.config.num_buffers + 8):
            before = self.counters.incomplete
            buf = self._ia.try_fetch(timeout=0.0005)
            if buf is None:
                if self.counters.incomplete == before:
                    return
                continue
            self._note_frame_id(buf, count_gaps=False)
            buf.queue()
            self.counters.stale_discarded += 1

    def _next_view(self, deadline: float, skip: int, count_gaps: bool) -> View:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _FetchTimeout()
            buf = self._ia.try_fetch(timeout=remaining)
            if buf is None:
                continue  # an incomplete buffer (counted) or the deadline: the loop decides
            try:
                frame_id = self._note_frame_id(buf, count_gaps=count_gaps and skip == 0)
                if skip > 0:
                    skip -= 1
                    self.counters.stale_discarded += 1
                    continue
                image = self._copy_image(buf, self.max_pixels)
            finally:
                buf.queue()  # back to the producer at once: the image is a copy
            self.counters.frames += 1
            return View(camera=self.name, image=image, frame_id=frame_id, timestamp_s=time.time(),
                        source=f"genicam:{self.device.serial_number or self.device.id}")

    def _note_frame_id(self, buf, count_gaps: bool) -> int:
        try:
            frame_id = int(buf.module.frame_id)
        except Exception:  # producers may not implement frame ids; then gaps cannot be counted
            return 0
        last = self._last_frame_id
        if count_gaps and last is not None and frame_id > last + 1:
            self.counters.dropped += frame_id - last - 1
        self._last_frame_id = frame_id
        return frame_id

    @staticmethod
    def _copy_image(buf, max_pixels: int) -> np.ndarray:
        """The buffer's image, copied. ImageError (PayloadSizeError) if it announces more than
        ``max_pixels`` or its size does not match width x height x pixel format."""
        component = buf.payload.components[0]
        try:
            padding = int(component.x_padding)
        except Exception:
            padding = 0
        data = component.data
        if data is None:
            raise PixelFormatError("buffer carries no image data")
        width, height = int(component.width), int(component.height)
        check_pixel_count(width, height, max_pixels, "frame")
        return to_station_image(data.view(np.uint8), width, height, str(component.data_format), padding)

    def _on_failure(self, reason: str, fatal: bool = False) -> None:
        if not fatal:
            self.counters.timeouts += 1
        self._failures_in_a_row += 1
        if fatal or self._failures_in_a_row >= self.config.lost_after_timeouts:
            self._declare_lost(f"camera {self.name}: {reason}" + ("" if fatal else f" ({self._failures_in_a_row} in a row)"))

    def _declare_lost(self, reason: str) -> None:
        self.counters.losses += 1
        self._release()
        self._state, self._down_reason = "down", reason
        self.alarms.raise_(self._alarm_lost, "camera", reason)
        if not self._stop.is_set() and (self._reconnector is None or not self._reconnector.is_alive()):
            self._reconnector = threading.Thread(target=self._reconnect_loop, name=f"camera-{self.name}-reconnect", daemon=True)
            self._reconnector.start()

    def _release(self) -> None:
        ia, self._ia = self._ia, None
        if ia is None:
            return
        with self.producers.in_use():  # not while a re-enumeration destroys every acquirer
            for step in (ia.stop, ia.destroy):
                try:
                    step()
                except Exception as exc:  # the device may already be gone; nothing more to release
                    log.debug("camera %s: %s while releasing: %s", self.name, step.__name__, exc)

    def _reconnect_loop(self) -> None:
        backoff = self.config.reconnect_backoff_ms or [1000]
        attempt = 0
        while not self._stop.wait(backoff[min(attempt, len(backoff) - 1)] / 1000.0):
            attempt += 1
            with self._lock:
                if self._state != "down" or self._stop.is_set():
                    return
                try:
                    self._connect()
                except CameraError as exc:
                    self._down_reason = str(exc)
                    log.info("camera %s: reconnect attempt %d failed: %s", self.name, attempt, exc)
                    continue
                self.counters.reconnects += 1
            log.warning("camera %s: reconnected after %d attempt(s)", self.name, attempt)
            return
