"""Whether the station takes parts: the one place that decides ONLINE / OFFLINE.

Two sources may ask for the station to be offline: the PLC (its SET_OFFLINE bit, a level: the
station stays offline while it is high) and a person at the HMI (the online/offline switch of
the operator page). The station is offline while *any* source asks for it; each source can
only withdraw its own request, so an operator cannot put a station online that the PLC holds
offline, and the PLC dropping SET_OFFLINE does not undo an operator's "offline".

The pipeline refuses triggers while offline (``Pipeline.trigger``), the PLC link shows it in
STATUS (ONLINE low, READY low, error STATION_OFFLINE on a refused trigger) and the HMI header
shows who holds the station offline.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

PLC = "plc"
OPERATOR = "operator"


@dataclass(frozen=True)
class OfflineRequest:
    """One source's request to keep the station offline; ``by`` says who (user name, "PLC")."""

    source: str
    by: str
    since_s: float  # epoch seconds


class OnlineSwitch:
    """Thread-safe set of offline requests, one per source. Offline while any is present."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, OfflineRequest] = {}

    @property
    def offline(self) -> bool:
        with self._lock:
            return bool(self._requests)

    def set_offline(self, source: str, offline: bool, by: str = "") -> bool:
        """Place (``offline``) or withdraw ``source``'s request; True if that changed anything."""
        with self._lock:
            if offline:
                if source in self._requests:
                    return False
                self._requests[source] = OfflineRequest(source, by or source, time.time())
                return True
            return self._requests.pop(source, None) is not None

    def requests(self) -> list[OfflineRequest]:
        """The requests now in force, oldest first."""
        with self._lock:
            return sorted(self._requests.values(), key=lambda r: r.since_s)

    def held_by(self, source: str) -> bool:
        with self._lock:
            return source in self._requests

    def describe(self) -> str:
        """'online', or who holds the station offline (for the HMI header and logs)."""
        held = self.requests()
        if not held:
            return "online"
        return "offline: " + ", ".join(f"{r.source} ({r.by})" if r.by != r.source else r.source for r in held)
