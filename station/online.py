"""Whether the station takes parts: the one place that decides ONLINE / OFFLINE.

Two sources may ask for the station to be offline: the PLC (its SET_OFFLINE bit, a level: the
station stays offline while it is high) and a person at the HMI (the online/offline switch of
the operator page). The station is offline while *any* source asks for it; each source can
only withdraw its own request, so an operator cannot put a station online that the PLC holds
offline, and the PLC dropping SET_OFFLINE does not undo an operator's "offline".

The pipeline refuses triggers while offline (``Pipeline.trigger``), the PLC link shows it in
STATUS (ONLINE low, READY low, error STATION_OFFLINE on a refused trigger) and the HMI header
shows who holds the station offline.

An operator's "offline" survives a restart (a station taken offline to clean the lens must not
come back taking parts on its own): with a ``state_file`` it is kept there. The PLC's request
is not kept: SET_OFFLINE is a level the PLC shows again when it reconnects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from station.state_file import write_json_atomically

log = logging.getLogger("station.online")

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

    KEPT = (OPERATOR,)  # sources whose request a restart reads back from the state file

    def __init__(self, state_file: Path | None = None) -> None:
        self.state_file = state_file
        self._lock = threading.Lock()
        self._requests: dict[str, OfflineRequest] = self._load()

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
            elif self._requests.pop(source, None) is None:
                return False
            if source in self.KEPT:
                self._save()
            return True

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

    # ---- the state file ---------------------------------------------------------------------
    def _load(self) -> dict[str, OfflineRequest]:
        if self.state_file is None or not self.state_file.exists():
            return {}
        try:
            kept = [OfflineRequest(**r) for r in json.loads(self.state_file.read_text())["offline"]]
            requests = {r.source: r for r in kept if r.source in self.KEPT}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring the online/offline state file %s: %s", self.state_file, exc)
            return {}
        for r in requests.values():
            log.warning("station stays offline after the restart: %s (%s) took it offline", r.source, r.by)
        return requests

    def _save(self) -> None:
        if self.state_file is None:
            return
        kept = [asdict(r) for r in self._requests.values() if r.source in self.KEPT]
        try:
            write_json_atomically(self.state_file, {"offline": kept})
        except OSError as exc:  # the switch itself still works; only a restart would forget it
            log.error("online/offline state not saved to %s: %s", self.state_file, exc)
