"""The verdict journal: every verdict on disk before the PLC hears it, until the history has it.

One file (``verdicts.journal`` in ``[database] journal_dir``), zero-filled to its full size when
the station starts, so a disk that fills up later cannot refuse a record: the space is reserved
(``capacity_bytes``; the history writer sizes it from its backlog bound). Layout:

- header (16 bytes): magic ``SVJ1``, format version (u32), epoch (u64);
- records, one after the other: length (u32), CRC-32 of the epoch and the payload (u32),
  payload (UTF-8 JSON: the history row and its defects, see station.db.writer).

A record ends the valid part of the file if its length is 0, it runs past the end, or its CRC
does not match (a record torn by a crash, or one left from before the last rewind: the epoch
is part of its CRC). When every record in the file is in the history and the write position
is past a quarter of the file, the journal rewinds: a new epoch in the header, writing from
the start again. So the file never grows, and it holds at most the records since the last
rewind.

Durability: ``append`` writes the record with one ``pwrite`` before it returns, so it is in the
kernel's page cache: it survives the station process dying in any way (``kill -9``, OOM kill,
a crash in native code). A power cut or kernel crash keeps only what was flushed: a syncer
thread calls ``fdatasync`` every ``sync_interval_s`` (0.2 s) when something was written, off the
PLC's path (``fdatasync`` takes 6 ms median, 17-75 ms p99 on this machine's disk, more than the
5 ms the PLC answer may take). See db/README.md for what survives what.

Thread safety: ``append`` (pipeline publisher thread), ``settle`` (history writer thread) and the
syncer may run at once; one lock guards the write position and the counts.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("db.journal")

MAGIC = b"SVJ1"
VERSION = 1
HEADER = struct.Struct("<4sIQ")  # magic, version, epoch
RECORD = struct.Struct("<II")  # payload length, crc32(epoch + payload)
FILE_NAME = "verdicts.journal"
_ZEROS = b"\0" * (1 << 20)


class JournalError(Exception):
    """The journal cannot be opened or written (its directory, the disk, permissions)."""


class JournalFull(JournalError):
    """No room left in the journal file for this record."""


@dataclass(frozen=True)
class Recovered:
    """A record found in the journal at start-up: the history may or may not have it."""

    record_id: int
    payload: dict


class VerdictJournal:
    def __init__(self, directory: Path | str, capacity_bytes: int, *, sync_interval_s: float = 0.2):
        self.path = Path(directory) / FILE_NAME
        self.capacity_bytes = max(int(capacity_bytes), HEADER.size + 4096)
        self.sync_interval_s = sync_interval_s
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._epoch = 0
        self._pos = HEADER.size
        self._next_id = 1
        self._open_ids: set[int] = set()  # appended (or recovered), not yet settled
        self._dirty = False
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.syncs = 0
        self.sync_errors = 0

    # ---- lifecycle --------------------------------------------------------------------------
    def open(self) -> list[Recovered]:
        """Open (creating and reserving the file if needed) and return the records found in it,
        which stay open until settled. Raises JournalError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise JournalError(f"verdict journal {self.path} cannot be opened: {exc.strerror or exc}") from None
        try:
            recovered, end, epoch = self._scan(fd)
            self._reserve(fd)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"verdict journal {self.path} cannot be reserved ({self.capacity_bytes} bytes): "
                               f"{exc.strerror or exc}") from None
        with self._lock:
            self._fd, self._epoch, self._pos = fd, epoch, end
            self._next_id = len(recovered) + 1
            self._open_ids = {r.record_id for r in recovered}
            if not recovered:
                self._rewind()
        self._syncer = threading.Thread(target=self._sync_loop, name="journal-sync", daemon=True)
        self._syncer.start()
        if recovered:
            log.warning("verdict journal %s: %d verdicts found from before the last stop", self.path, len(recovered))
        return recovered

    def close(self) -> None:
        """Flush to disk and close. Records not settled stay in the file for the next start; with
        every record settled the file is rewound, so a clean stop leaves nothing to replay."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(5.0)
            self._syncer = None
        with self._lock:
            if self._fd is not None and not self._open_ids:
                try:
                    self._rewind()
                except OSError as exc:
                    log.error("verdict journal %s: not rewound at close: %s", self.path, exc)
            fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.error("verdict journal %s: final flush failed: %s", self.path, exc)
            os.close(fd)

    # ---- records --------------------------------------------------------------------------
    def append(self, payload: dict) -> int:
        """Write one record (the page cache has it when this returns); its id. Raises
        JournalFull (no room: the history is too far behind) or JournalError (the disk refused)."""
        data = json.dumps(payload, separators=(",", ":"), default=str).encode()
        with self._lock:
            if self._fd is None:
                raise JournalError("verdict journal is not open")
            if not self._open_ids and self._pos > self.capacity_bytes // 4:
                self._rewind()  # everything before is in the history
            end = self._pos + RECORD.size + len(data)
            if end + RECORD.size > self.capacity_bytes:  # keep room for the zero length that ends the file
                raise JournalFull(f"verdict journal {self.path} is full ({len(self._open_ids)} verdicts "
                                  f"not yet in the history, {self.capacity_bytes} bytes)")
            crc = zlib.crc32(data, zlib.crc32(struct.pack("<Q", self._epoch)))
            try:
                # the record and a zero length after it: a scan stops there even over old records
                os.pwrite(self._fd, RECORD.pack(len(data), crc) + data + b"\0\0\0\0", self._pos)
            except OSError as exc:
                raise JournalError(f"verdict journal {self.path}: write failed: {exc.strerror or exc}") from None
            record_id = self._next_id
            self._next_id += 1
            self._pos = end
            self._open_ids.add(record_id)
            self._dirty = True
        return record_id

    def settle(self, record_ids) -> None:
        """These records are in the history (or can never be): the space may be reused."""
        with self._lock:
            self._open_ids.difference_update(record_ids)

    @property
    def backlog(self) -> int:
        """Records written and not yet settled."""
        with self._lock:
            return len(self._open_ids)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._pos

    def probe(self) -> bool:
        """After a failed append: can the file be written again? (rewrites the end marker)"""
        with self._lock:
            if self._fd is None:
                return False
            try:
                os.pwrite(self._fd, b"\0\0\0\0", self._pos)
            except OSError:
                return False
        return True

    def sync(self) -> None:
        """fdatasync now if anything was written since the last one."""
        with self._lock:
            fd, dirty, self._dirty = self._fd, self._dirty, False
        if fd is None or not dirty:
            return
        try:
            os.fdatasync(fd)
            self.syncs += 1
        except OSError as exc:
            self.sync_errors += 1
            log.error("verdict journal %s: fdatasync failed: %s", self.path, exc)

    # ---- internals ------------------------------------------------------------------------
    def _rewind(self) -> None:
        """Start writing at the beginning under a new epoch (lock held, nothing open)."""
        self._epoch += 1
        os.pwrite(self._fd, HEADER.pack(MAGIC, VERSION, self._epoch) + b"\0\0\0\0", 0)
        self._pos = HEADER.size
        self._dirty = True

    def _reserve(self, fd: int) -> None:
        """Zero-fill the file to its capacity: written blocks, so overwriting them later needs no
        free space (posix_fallocate's unwritten extents would on some file systems)."""
        size = os.fstat(fd).st_size
        while size < self.capacity_bytes:
            n = min(len(_ZEROS), self.capacity_bytes - size)
            size += os.pwrite(fd, _ZEROS[:n], size)
        os.fsync(fd)

    def _scan(self, fd: int) -> tuple[list[Recovered], int, int]:
        """The valid records of an existing file, the position after them and its epoch."""
        head = os.pread(fd, HEADER.size, 0)
        if len(head) < HEADER.size:
            return [], HEADER.size, 0
        magic, version, epoch = HEADER.unpack(head)
        if magic != MAGIC or version != VERSION:
            if any(head):
                log.error("verdict journal %s has no valid header: not replayed, overwritten", self.path)
            return [], HEADER.size, epoch if magic == MAGIC else 0
        size = os.fstat(fd).st_size
        seed = zlib.crc32(struct.pack("<Q", epoch))
        found, pos = [], HEADER.size
        while pos + RECORD.size <= size:
            length, crc = RECORD.unpack(os.pread(fd, RECORD.size, pos))
            if length == 0 or pos + RECORD.size + length > size:
                break
            data = os.pread(fd, length, pos + RECORD.size)
            if zlib.crc32(data, seed) != crc:
                break  # torn by a crash, or left from before the last rewind
            try:
                found.append(Recovered(len(found) + 1, json.loads(data)))
            except ValueError:
                break
            pos += RECORD.size + length
        return found, pos, epoch

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_interval_s):
            self.sync()


__all__ = ["VerdictJournal", "JournalError", "JournalFull", "Recovered", "FILE_NAME"]
