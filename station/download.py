"""Download one file over HTTP(S), resumably, with progress, and install it only if its sha256 is right.

The bytes go to ``DEST.part`` next to the destination. A connection that breaks (a reset, a
timeout, a response shorter than announced) is retried from where it stopped with an HTTP
``Range`` request, a few times in one call; if every attempt breaks, ``DEST.part`` stays so that
the next call resumes instead of starting again. A server that ignores ``Range`` (answers 200)
restarts the file from zero. The sha256 is checked on the whole file before it is renamed into
place; a mismatch deletes the partial file (and a resumed file that mismatches is fetched once
more from scratch, in case the part came from another version of the file).
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from station.inference.metadata import ModelError, sha256_file
from station.progress import step

log = logging.getLogger("station.models")

TIMEOUT_S = 60.0
ATTEMPTS = 4
BLOCK = 1 << 16
# HTTP statuses worth another attempt: the server or a proxy is busy, not "this URL is wrong"
RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


class _Interrupted(Exception):
    """The connection broke mid-file; what arrived is in the .part file."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _fetch(url: str, part: Path, timeout_s: float, desc: str, expected_size: int | None) -> None:
    """One request appending to (or restarting) ``part``. Raises _Interrupted, urllib errors."""
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:  # not this file: start again
        part.unlink()
        have = 0
    headers = {"User-Agent": "inspection-station", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after `have`: the part is whole (the sha256 decides)
            exc.close()
            return
        raise
    with resp:
        resumed = have > 0 and resp.status == 206 and _content_range_start(resp.headers.get("Content-Range")) == have
        if have and not resumed:
            log.info("%s: the server did not resume at byte %d; starting again", desc, have)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected_size
        got = 0
        with step(desc, total=total, unit="B", initial=have) as p, open(part, "ab" if resumed else "wb") as out:
            try:
                while block := resp.read(BLOCK):
                    out.write(block)
                    got += len(block)
                    p.update(len(block))
            except (http.client.IncompleteRead, OSError) as exc:  # reset, timeout mid-body
                raise _Interrupted(f"{exc.__class__.__name__}: {exc}") from None
        if length is not None and got < int(length):
            raise _Interrupted(f"got {have + got} of {total} bytes")


def download(url: str, dest: Path, sha256: str, *, size: int | None = None, timeout_s: float = TIMEOUT_S,
             attempts: int = ATTEMPTS, desc: str | None = None, retry_pause_s: float = 1.0) -> None:
    """Fetch ``url`` into ``dest`` (resuming ``dest.part``), check sha256, rename into place. Raises ModelError."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    desc = desc or f"download {dest.name}"
    restarted = False
    attempt = 0
    while True:
        attempt += 1
        resumed_from = part.stat().st_size if part.exists() else 0
        try:
            _fetch(url, part, timeout_s, desc, size)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code not in RETRY_STATUSES or attempt >= attempts:
                raise ModelError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
            log.warning("%s: HTTP %s, trying again (%d/%d)", desc, exc.code, attempt, attempts)
            time.sleep(retry_pause_s * attempt)
            continue
        except (_Interrupted, urllib.error.URLError, OSError) as exc:  # refused, reset, timeout, DNS
            reason = getattr(exc, "reason", exc)
            have = part.stat().st_size if part.exists() else 0
            if attempt >= attempts:
                kept = f"; {have} bytes kept in {part}, run again to resume" if have else ""
                raise ModelError(f"{url}: download failed after {attempt} attempts: {reason}{kept}") from None
            what = f"interrupted at byte {have}" if have else "failed"
            log.warning("%s: %s (%s); trying again (%d/%d)", desc, what, reason, attempt, attempts)
            time.sleep(retry_pause_s * attempt)
            continue
        actual = sha256_file(part)
        if actual == sha256:
            os.replace(part, dest)
            return
        part.unlink()
        if resumed_from and not restarted:  # the kept part may be from another file: once more from zero
            log.warning("%s: sha256 mismatch after resuming at byte %d; downloading again from the start",
                        desc, resumed_from)
            restarted = True
            continue
        raise ModelError(f"{url}: sha256 {actual[:12]}… does not match the pinned {sha256[:12]}…")
