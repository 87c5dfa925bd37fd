"""One runtime per NPU core (core masks 1, 2, 4), used as one thread-safe InferenceModel.

A single RKNN runtime on all three cores barely speeds up; three runtimes, one per core,
with the work spread over them triple throughput. ``run`` takes a runtime whose core is
idle: the cores are tracked across every pool of the process (``CoreScheduler``), because
the encoder of part n and the decoder of part n+1 contend for the same core if both are
sent there, whichever model they belong to.

A model that cannot be loaded on every core (e.g. out of NPU memory) runs on fewer, logged.
A core whose runtime fails ``quarantine_after`` times in a row is taken out of the pool,
logged, while others remain; the failing call still raises ModelError (its part is REJECTed).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError, ModelMetadata
from station.inference.rknn import SINGLE_CORE_MASKS

log = logging.getLogger("station.inference.pool")


class CoreScheduler:
    """Which NPU cores are running something now. Shared by all pools of one chip."""

    def __init__(self) -> None:
        self._busy: dict[int, int] = {}  # core mask -> calls running on it
        self._last_used: dict[int, int] = {}  # core mask -> acquisition counter when last taken
        self._counter = 0
        self._cv = threading.Condition()

    def acquire(self, candidates: Sequence[int]) -> int:
        """Block until one of ``candidates`` (core masks) is idle; mark it busy and return it.

        Among idle cores the least recently used is taken, so work (and heat, and a failing
        core's errors) spreads evenly rather than piling onto core 0.
        """
        with self._cv:
            while True:
                idle = [m for m in candidates if not self._busy.get(m)]
                if idle:
                    mask = min(idle, key=lambda m: self._last_used.get(m, -1))
                    self._busy[mask] = 1
                    self._counter += 1
                    self._last_used[mask] = self._counter
                    return mask
                self._cv.wait()

    def release(self, mask: int) -> None:
        with self._cv:
            self._busy[mask] = max(0, self._busy.get(mask, 0) - 1)
            self._cv.notify_all()

    def busy(self) -> list[int]:
        with self._cv:
            return sorted(m for m, n in self._busy.items() if n)


# One RK3588 per board: every pool in the process shares this one unless given another.
NPU_CORES = CoreScheduler()

# Called with (model name, message) when a pool runs on fewer cores than asked (at load or
# after taking a failing core out). The station routes these to its AlarmBoard.
_degraded_listeners: list[Callable[[str, str], None]] = []


def on_degraded(listener: Callable[[str, str], None]) -> None:
    """Subscribe to "model X now runs on fewer NPU cores" events (e.g. raise a warning alarm)."""
    _degraded_listeners.append(listener)


def _degraded(name: str, message: str) -> None:
    for listener in list(_degraded_listeners):
        try:
            listener(name, message)
        except Exception:  # a broken listener must not break inference
            log.exception("NPU degraded listener failed")


class ModelPool(InferenceModel):
    """Several runtimes of one model, one per core mask; ``run`` is thread-safe."""

    def __init__(
        self,
        runtimes: dict[int, InferenceModel],
        scheduler: CoreScheduler | None = None,
        quarantine_after: int = 3,
    ):
        if not runtimes:
            raise ValueError("a pool needs at least one runtime")
        first = next(iter(runtimes.values()))
        self.metadata: ModelMetadata = first.metadata
        self.backend = first.backend
        self._runtimes = dict(runtimes)
        self._scheduler = scheduler or NPU_CORES
        self._quarantine_after = quarantine_after
        self._failures: dict[int, int] = {m: 0 for m in runtimes}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        name: str,
        open_runtime: Callable[[int], InferenceModel],
        core_masks: Sequence[int] = SINGLE_CORE_MASKS,
        scheduler: CoreScheduler | None = None,
        quarantine_after: int = 3,
    ) -> "ModelPool":
        """Open one runtime per core mask; keep those that load. Raises ModelError if none does."""
        runtimes: dict[int, InferenceModel] = {}
        errors: list[str] = []
        for mask in core_masks:
            try:
                runtimes[mask] = open_runtime(mask)
            except ModelError as exc:
                errors.append(f"core mask {mask}: {exc}")
        if not runtimes:
            raise ModelError(f"model {name}: no NPU runtime could be loaded ({'; '.join(errors)})")
        if errors:
            message = f"model {name}: runs on {len(runtimes)} of {len(core_masks)} NPU cores ({sorted(runtimes)}); " + "; ".join(errors)
            log.warning("%s", message)
            _degraded(name, message)
        else:
            log.info("model %s: one runtime on each of %d NPU cores (masks %s)", name, len(runtimes), sorted(runtimes))
        return cls(runtimes, scheduler=scheduler, quarantine_after=quarantine_after)

    def fixed_input_shape(self, name: str) -> list[int] | None:
        with self._lock:
            runtime = next(iter(self._runtimes.values()), None)
        return None if runtime is None else runtime.fixed_input_shape(name)

    @property
    def core_masks(self) -> list[int]:
        with self._lock:
            return sorted(self._runtimes)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            masks = list(self._runtimes)
        if not masks:
            raise ModelError(f"model {self.name}: every NPU runtime has been taken out after repeated failures")
        mask = self._scheduler.acquire(masks)
        try:
            with self._lock:
                runtime = self._runtimes.get(mask)
            if runtime is None:  # quarantined while we waited for its core
                raise ModelError(f"model {self.name}: runtime on core mask {mask} was taken out")
            try:
                out = runtime.run(inputs)
            except ModelError:
                self._note_failure(mask)
                raise
            with self._lock:
                self._failures[mask] = 0
            return out
        finally:
            self._scheduler.release(mask)

    def _note_failure(self, mask: int) -> None:
        with self._lock:
            self._failures[mask] = self._failures.get(mask, 0) + 1
            if self._failures[mask] < self._quarantine_after or len(self._runtimes) <= 1:
                return
            runtime = self._runtimes.pop(mask)
            left = sorted(self._runtimes)
        message = (
            f"model {self.name}: NPU runtime on core mask {mask} failed {self._quarantine_after} times in a row; "
            f"taken out, {len(left)} left (masks {left})"
        )
        log.error("%s", message)
        runtime.close()
        _degraded(self.name, message)

    def close(self) -> None:
        with self._lock:
            runtimes, self._runtimes = list(self._runtimes.values()), {}
        for rt in runtimes:
            rt.close()
