"""The one rule for a page's queries that run off the event loop (``run.io_bound``): only the
answer to the latest request is shown. Without it a slow earlier query (a 7-day chart, a shift
report with pictures) that finishes after a quicker later one would replace what the later one
showed, and the page would show one choice under the controls of another."""

from __future__ import annotations


class LatestAnswer:
    """Tickets for one page element's requests: ``ticket()`` before a query, ``stale(t)`` after it
    (True when a later request was made meanwhile: drop the answer)."""

    def __init__(self) -> None:
        self._latest = 0

    def ticket(self) -> int:
        self._latest += 1
        return self._latest

    def stale(self, ticket: int) -> bool:
        return ticket != self._latest
