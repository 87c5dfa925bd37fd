"""The history writer: the pipeline's database sink, and the verdict's durable record.

The Station wires it before the PLC (station.app). ``publish`` (the pipeline's publisher
thread) writes the verdict to the verdict journal (db/journal.py: one ``pwrite`` into space
reserved at start-up, so it survives a crash of the station process before RESULT_VALID rises)
and puts it in a bounded queue; it never touches the database. At start-up the journal's records
are queued again and the ones the database does not have are stored (replay). One writer thread
takes batches from the queue, writes their archive images, then inserts each batch's
inspections with their defects and image rows in one transaction — so after a crash (even
``kill -9``) every stored inspection is complete.

A SQLite file found corrupt at start-up (not a database, truncated, failing quick_check), or
while running (a write fails with SQLite's "malformed" or "not a database" and quick_check
confirms it), is renamed aside next to itself (``db.quarantine``, never deleted) and a fresh
database is created; the HMI users and recipe versions that SQLite can still read in the old
file are carried over, and the results waiting are written to it. Alarm ``history_db_corrupt``
says where the old file went and what was carried over; it clears (and waits for
acknowledgement) once the fresh file takes a write.

When the database is locked, full or broken, the batch is retried with backoff while new
results wait in the queue and in the journal (the backlog, at most ``queue_size``); an alarm
says what is wrong. With the backlog full, ``on_history_full`` decides: ``"stop"`` refuses
triggers (``refusal()``, which the pipeline asks before taking a part; alarm ``history_full``)
until it drains, while the parts already triggered are still recorded (``HEADROOM``);
``"continue"`` takes parts on and counts each verdict it cannot record (``stats.unrecorded``,
alarm ``history_unrecorded``). A verdict the journal refuses (disk error) is unrecorded too.
Results the database refuses are dropped and counted (``stats.lost``). Images that cannot
be written (disk full) are counted per inspection (``images_dropped``) and raise an alarm;
the inspection row is still stored. Queued image memory is bounded too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, String, insert, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError

from station.db import rle
from station.db.archive import ImageArchive, apply_retention, reconcile
from station.db.journal import JournalError, VerdictJournal
from station.db.engine import WRITE, make_engine
from station.db.migrate import SchemaTooNew, upgrade
from station.db.models import DefectRow, ImageRow, InspectionRow, RecipeVersionRow
from station.db.quarantine import carry_over, corruption, says_corrupt, set_aside, sqlite_file
from station.alarms import AlarmBoard, Severity
from station.config import ArchiveConfig, DatabaseConfig
from station.inspection import Inspection, Outcome
from station.recipe import LoadedRecipe

log = logging.getLogger("db.writer")

ALARM_DB = "history_db"
ALARM_DB_CORRUPT = "history_db_corrupt"
ALARM_ARCHIVE = "archive_write"
ALARM_ARCHIVE_FULL = "archive_over_budget"
ALARM_BAD_RESULT = "history_bad_result"
ALARM_FULL = "history_full"  # stop mode: backlog full, triggers refused
ALARM_UNRECORDED = "history_unrecorded"  # verdicts given without a record

# parts already triggered when a stop-mode station starts refusing still get their record: the
# pipeline and the PLC buffer hold far fewer than this (queue_depth x 3 + workers + result_buffer)
HEADROOM = 256
JOURNAL_BYTES_PER_VERDICT = 4096  # reserved per verdict of backlog (a record is 0.5-3 KB)
STATUS_FILE = "history-status.json"  # in the journal dir, for `station doctor`
STATUS_BYTES = 4096



@dataclass
class HistoryStats:
    """Counters since start (read from any thread; updated by publish and the writer thread)."""

    published: int = 0  # handed to publish()
    written: int = 0  # committed
    lost: int = 0  # dropped: queue full, or still queued at close
    images_written: int = 0
    images_dropped: int = 0  # wanted by the image policy but not stored (memory bound, disk errors)
    failed_attempts: int = 0  # batch transactions that failed and were retried
    last_error: str = ""
    last_batch_ms: float = 0.0
    queue_depth: int = 0
    unrecorded: int = 0  # verdicts given without a durable record (backlog full in continue mode, journal failed)
    replayed: int = 0  # journal records stored at start-up (the history did not have them)


@dataclass
class _Pending:
    """One inspection waiting to be written; everything the writer needs, nothing mutable shared."""

    row: dict
    defects: list  # column dicts with "mask_crop", until prepared
    views: list  # (camera, image) of raw views to archive
    overlay: np.ndarray | None
    recipe: LoadedRecipe | None
    image_bytes: int = 0
    stored: list = field(default_factory=list)  # (view, kind, StoredImage) once written
    defect_rows: list = field(default_factory=list)  # column values, masks RLE-encoded, once prepared
    files_done: bool = False
    journal_id: int | None = None  # its record in the verdict journal, settled once stored
    replayed: bool = False  # from the journal at start-up: the database may have it already


_STOP = object()


class HistoryWriter:
    """Pipeline ResultSink that stores every verdict. ``start()`` migrates the schema (raises
    ``SchemaTooNew`` for a newer database); other database problems are alarms and retries.

    Each result carries the recipe it was inspected with (``Inspection.recipe``): its image
    policy, the thresholds stored on the row and the content stored in ``recipe_versions`` are
    that recipe's, never one looked up by name later.
    """

    def __init__(
        self,
        database: DatabaseConfig,
        archive: ArchiveConfig,
        alarms: AlarmBoard,
        station_id: str,
        *,
        engine: Engine | None = None,
        max_queued_image_bytes: int = 256 * 1024**2,
        maintenance_interval_s: float = 600.0,
        reconcile_grace_s: float = 300.0,
        retry_backoff_s: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0),
    ):
        self.database = database
        self.archive_config = archive
        self.alarms = alarms
        self.station_id = station_id
        self._owns_engine = engine is None
        self.engine = engine or make_engine(database.url)
        self.archive = ImageArchive(archive.dir)
        self.stats = HistoryStats()
        self.max_queued_image_bytes = max_queued_image_bytes
        self.maintenance_interval_s = maintenance_interval_s
        self.reconcile_grace_s = reconcile_grace_s
        self.retry_backoff_s = retry_backoff_s
        self.backlog_limit = database.queue_size
        self.on_full = database.on_history_full
        self._queue: queue.Queue = queue.Queue(maxsize=database.queue_size + HEADROOM)
        self.journal = None
        if database.journal_dir is not None:
            self.journal = VerdictJournal(database.journal_dir, (database.queue_size + HEADROOM) * JOURNAL_BYTES_PER_VERDICT)
        self._journal_failed = False
        self._status_written: tuple | None = None
        self._status_fd: int | None = None
        self._lock = threading.Lock()  # counters and queued image bytes
        self._done_cv = threading.Condition(self._lock)
        self._settled = 0  # written + lost after acceptance
        self._accepted = 0
        self._queued_image_bytes = 0
        self._sample_acc: dict[str, float] = {}
        self._known_recipes: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._migrated = False
        self._next_maintenance = time.monotonic() + min(60.0, maintenance_interval_s)
        self._attempt = 0  # consecutive failures, for the backoff
        self._maintenance_runs = 0
        self._in_hand: list = []  # the batch the writer thread holds (settled as lost if it crashes)
        self._fresh_after_set_aside = False  # a corrupt file was moved: clear its alarm at the first write
        self._set_aside: tuple[Path, str] | None = None  # (moved file, alarm text) until carried over

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Set a corrupt SQLite file aside, upgrade the schema and start the writer thread.
        Raises SchemaTooNew; a database that cannot be reached is an alarm, and the thread keeps trying.
        Opens the verdict journal (JournalError if it cannot: no verdict could be recorded) and
        queues the verdicts found in it; those the database does not have are stored."""
        self._set_aside_if_corrupt()
        self._try_migrate(raise_too_new=True)
        if self.journal is not None:
            self._replay(self.journal.open())
            self._status_fd = _reserve_status(self.journal.path.parent / STATUS_FILE)
            self._write_status(None)
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._thread.start()

    def _set_aside_if_corrupt(self) -> None:
        """A corrupt SQLite file would hold every result in memory until the queue overflows:
        move it aside (its data may be recoverable) and let the migration create a fresh one."""
        path = sqlite_file(self.engine)
        if path is None:
            return
        problem = corruption(path)
        if problem is None:
            return
        self.engine.dispose()  # no pooled connection may go on using the file being moved
        try:
            moved = set_aside(path)
        except OSError as exc:
            msg = (f"history database {path} is corrupt ({problem}) and could not be moved aside ({exc}): "
                   "results are held in memory; move or restore the file")
            log.error("%s", msg)
            self.alarms.raise_(ALARM_DB_CORRUPT, "database", msg)
            return
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        msg = (f"history database {path} was corrupt ({problem}): moved to {moved} (kept for recovery) "
               f"and a new, empty database started at {when}; history before then is in the moved file, "
               f"its images stay in {self.archive.directory} while the moved file is there")
        log.error("%s", msg)
        self.alarms.raise_(ALARM_DB_CORRUPT, "database", msg)
        self._fresh_after_set_aside = True
        self._set_aside = (moved, msg)

    def _replay(self, recovered) -> None:
        """Queue the journal's records again (the writer stores those the database lacks)."""
        for rec in recovered:
            try:
                pending = _from_journal(rec.payload)
            except Exception as exc:  # a record this version cannot read must not stop the station
                log.error("verdict journal record %d not replayed: %s: %s", rec.record_id, type(exc).__name__, exc)
                self.journal.settle([rec.record_id])
                continue
            pending.journal_id, pending.replayed = rec.record_id, True
            try:
                self._queue.put_nowait(pending)
            except queue.Full:  # a journal from a larger queue_size: the rest at the next start
                break
            with self._lock:
                self._accepted += 1

    def _carry_over(self) -> None:
        """Once the fresh file has its schema: the users and recipe versions from the moved file."""
        moved, msg = self._set_aside
        self._set_aside = None
        try:
            copied = carry_over(moved, sqlite_file(self.engine))
        except Exception as exc:  # carrying over is a courtesy: never stop the writer for it
            log.exception("carrying over from %s failed", moved)
            copied = {"users": f"{type(exc).__name__}: {exc}"}
        done = [f"{n} {table.replace('_', ' ')}" for table, n in copied.items() if isinstance(n, int)]
        failed = {table: why for table, why in copied.items() if not isinstance(why, int)}
        note = "carried over: " + (", ".join(done) if done else "nothing")
        if failed:
            note += "; not readable in the moved file: " + "; ".join(f"{t} ({why})" for t, why in failed.items())
            if "users" in failed:
                note += " — add the HMI users again with `station users add`"
        log.warning("history database set aside: %s", note)
        self.alarms.amend(ALARM_DB_CORRUPT, f"{msg}; {note}")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything published so far is written (or counted lost). False on timeout."""
        with self._done_cv:
            target = self._accepted
            return self._done_cv.wait_for(lambda: self._settled >= target, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush, stop the thread; what could not be written by then is counted lost."""
        if self._thread is not None:
            self.flush(timeout)
            self._stopping.set()
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                left += 1
        if left:
            where = "kept in the verdict journal, stored at the next start" if self.journal is not None else "lost"
            log.error("history writer closed with %d results unwritten (%s)", left, where)
            self._settle(deferred=left) if self.journal is not None else self._settle(lost=left)
        if self.journal is not None:
            self._status_written = None  # the last word for `station doctor`, whatever changed
            self._write_status(self.refusal())
            if self._status_fd is not None:
                os.close(self._status_fd)
                self._status_fd = None
            self.journal.close()
        if self._owns_engine:
            self.engine.dispose()

    # ---- the sink (pipeline publisher thread: must not block) --------------------------------
    def publish(self, inspection: Inspection) -> None:
        """Record the verdict (journal) and queue it for the database; returns before any database
        work. Called before the PLC hears the verdict (station.app wires the history first)."""
        try:
            pending = self._pending(inspection)
        except Exception as exc:  # a malformed result must not break the pipeline's publisher
            log.exception("history: cannot take result seq %s", getattr(inspection, "sequence", "?"))
            with self._lock:
                self.stats.published += 1
                self.stats.lost += 1
            self.alarms.raise_(ALARM_BAD_RESULT, "database", f"result not stored (malformed): {type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.stats.published += 1
            full = self._accepted - self._settled >= self.backlog_limit
        if full and self.on_full == "continue":
            self._unrecorded(inspection, f"history backlog full ({self.backlog_limit} verdicts waiting for the database)")
            return
        if self.journal is not None:
            try:
                pending.journal_id = self.journal.append(_to_journal(pending))
            except JournalError as exc:  # kept in memory below: it may still reach the database
                self._journal_failed = True
                self._unrecorded(inspection, str(exc), counted_only=True)
            else:
                self._journal_failed = False
        with self._lock:
            if pending.image_bytes and self._queued_image_bytes + pending.image_bytes > self.max_queued_image_bytes:
                pending.row["images_dropped"] += self._image_count(pending)
                self.stats.images_dropped += self._image_count(pending)  # counted like a failed write
                pending.views, pending.overlay, pending.image_bytes = [], None, 0
            self._queued_image_bytes += pending.image_bytes
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                self._queued_image_bytes -= pending.image_bytes
                dropped = True
            else:
                self._accepted += 1
                dropped = False
            self.stats.queue_depth = self._queue.qsize()
        if dropped:  # past the headroom: the journal may hold it, but this run will not store it
            if pending.journal_id is not None:
                self.journal.settle([pending.journal_id])
            self._unrecorded(inspection, f"history queue full ({self.database.queue_size} + {HEADROOM})")

    def _unrecorded(self, inspection: Inspection, why: str, counted_only: bool = False) -> None:
        """A verdict the PLC gets without a durable record: counted, alarm."""
        with self._lock:
            self.stats.unrecorded += 1
            if not counted_only:
                self.stats.lost += 1
            n = self.stats.unrecorded
        self.alarms.raise_(ALARM_UNRECORDED, "database",
                           f"{n} verdicts given without a record ({why}); last part {inspection.part_id}")

    @property
    def unrecorded(self) -> int:
        return self.stats.unrecorded

    @property
    def backlog(self) -> int:
        """Verdicts taken and not yet stored (queued, or in the writer's hands)."""
        with self._lock:
            return self._accepted - self._settled

    def refusal(self) -> str | None:
        """Why triggers must be refused now (stop mode: backlog full, or the journal cannot write),
        or None. The pipeline asks before it takes a part."""
        if self.on_full != "stop":
            return None
        backlog = self.backlog
        if backlog >= self.backlog_limit:
            return (f"history backlog full: {backlog} verdicts waiting for the database (limit {self.backlog_limit}, "
                    f"[database] queue_size); on_history_full = \"stop\" refuses parts until it drains")
        if self._journal_failed:
            return "verdict journal cannot be written: on_history_full = \"stop\" refuses parts that could not be recorded"
        return None

    def _pending(self, insp: Inspection) -> _Pending:
        v = insp.verdict
        outcome = v.outcome.value if v else Outcome.REJECT.value
        recipe = insp.recipe
        row = {
            "station_id": self.station_id,
            "sequence": insp.sequence,
            "part_id": insp.part_id,
            "triggered_at": dt.datetime.fromtimestamp(insp.triggered_at_s, dt.timezone.utc),
            "cameras": ",".join(vw.camera for vw in insp.views),
            "recipe_name": insp.recipe_name,
            "recipe_version": insp.recipe_version,
            "recipe_hash": insp.recipe_hash,
            "model_hashes": {str(k): str(v) for k, v in insp.model_hashes.items()},
            "outcome": outcome,
            "reason": v.reason if v else "no verdict",
            "reject_reason": v.reject_reason.value if v and v.reject_reason else None,
            "plc_code": v.plc_code if v else 0xFFFF,
            "top_class": v.top_defect.class_name if v and v.top_defect else None,
            "defect_count": len(insp.defects),
            "scores": {str(k): _number(s) for k, s in insp.scores.items()},
            "thresholds": _thresholds(recipe) if recipe is not None else {},
            "timings_ms": {str(k): _number(t, 3) for k, t in insp.timings_ms.items()},
            "error": None if insp.failure is None else insp.failure.text,
            "images_dropped": 0,
        }
        views, overlay = [], None
        if self._wants_images(outcome, recipe):
            views = [(vw.camera, vw.image) for vw in insp.views if vw.image is not None]
            overlay = insp.overlay
        # defects become rows now, each mask cut to its box: holding full-frame masks in a
        # queue of thousands would hold gigabytes; RLE encoding waits for the writer thread
        defects = [self._defect_row(d, row["triggered_at"]) for d in insp.defects]
        _fit(row, _INSPECTION_LENGTHS)  # the journal keeps the row as the database will
        p = _Pending(row, defects, views, overlay, recipe)
        p.image_bytes = sum(int(img.nbytes) for _, img in views) + (int(overlay.nbytes) if overlay is not None else 0)
        return p

    @staticmethod
    def _image_count(p: _Pending) -> int:
        return len(p.views) + (1 if p.overlay is not None else 0)

    def _wants_images(self, outcome: str, recipe: LoadedRecipe) -> bool:
        policy, name = recipe.recipe.images, recipe.recipe.name
        if outcome != Outcome.PASS.value:
            return policy.save_rejects
        # an exact share of passes, evenly spread: accumulate the rate, save when it crosses 1
        acc = self._sample_acc.get(name, 0.0) + policy.pass_sample_rate
        if acc >= 1.0 - 1e-9:
            self._sample_acc[name] = acc - 1.0
            return True
        self._sample_acc[name] = acc
        return False

    # ---- writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                self._loop()
                return
            except Exception as exc:  # the writer thread must outlive any bug in one batch
                log.exception("history writer loop failed; restarting it")
                in_hand, self._in_hand = self._in_hand, []
                lost = len(in_hand)
                self._settle(lost=lost, done=in_hand)
                self.alarms.raise_(ALARM_DB, "database", f"history writer error ({lost} results lost): {type(exc).__name__}: {exc}")
                self._stopping.wait(1.0)

    def _loop(self) -> None:
        batch: list[_Pending] = []
        while True:
            self._in_hand = batch
            if not batch:
                batch = self._take_batch()
                if batch is None:
                    return
                self._in_hand = batch
            self._update_state()
            if not self._migrated and not self._try_migrate(raise_too_new=False):
                self._backoff()
                if self._stopping.is_set():
                    self._leave(batch)
                    return
                continue
            if batch:
                batch = self._write(batch)
                if batch:
                    self._backoff()
                    if self._stopping.is_set():
                        self._leave(batch)
                        batch = []
                    continue
            self._maintain()

    def _leave(self, batch: list[_Pending]) -> None:
        """Stopping with ``batch`` unwritten: journaled results wait for the next start, the rest are lost."""
        journaled = sum(p.journal_id is not None for p in batch)
        self._settle(lost=len(batch) - journaled, deferred=journaled)

    def _update_state(self) -> None:
        """Between batches: the stop-mode alarm, a journal that failed tried again, the status file."""
        if self._journal_failed and self.journal is not None and self.journal.probe():
            self._journal_failed = False
        refusing = self.refusal()
        if refusing and not self.alarms.is_active(ALARM_FULL):
            log.error("%s", refusing)
            self.alarms.raise_(ALARM_FULL, "database", refusing)
        elif not refusing and self.alarms.is_active(ALARM_FULL):
            self.alarms.clear(ALARM_FULL)
        self._write_status(refusing)

    def _write_status(self, refusing: str | None) -> None:
        """``history-status.json`` in the journal dir when it changed (at most once a second), for
        `station doctor`: backlog, limit, policy, unrecorded, whether triggers are refused."""
        if self.journal is None:
            return
        with self._lock:
            state = (self._accepted - self._settled, self.stats.unrecorded, bool(refusing))
        now = time.monotonic()
        if self._status_written is not None and (state == self._status_written[0] or now - self._status_written[1] < 1.0):
            return
        self._status_written = (state, now)
        status = {"station_id": self.station_id, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                  "pid": os.getpid(), "backlog": state[0], "limit": self.backlog_limit, "on_history_full": self.on_full,
                  "unrecorded": state[1], "refusing_triggers": refusing}
        if self._status_fd is None:
            return
        data = json.dumps(status).encode()[: STATUS_BYTES - 1]
        try:  # in place, into blocks reserved at start: written even with the disk full
            os.pwrite(self._status_fd, data.ljust(STATUS_BYTES, b" "), 0)
        except OSError as exc:
            log.debug("history status file not written: %s", exc)

    def _take_batch(self) -> list[_Pending] | None:
        try:
            first = self._queue.get(timeout=0.5)
        except queue.Empty:
            return [] if not self._stopping.is_set() else None
        if first is _STOP:
            return None
        batch = [first]
        while len(batch) < self.database.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._stopping.set()
                break
            batch.append(item)
        return batch

    def _try_migrate(self, *, raise_too_new: bool) -> bool:
        try:
            before, after = upgrade(self.engine)
        except SchemaTooNew as exc:
            self.alarms.raise_(ALARM_DB, "database", str(exc))
            if raise_too_new:
                raise
            return False
        except (SQLAlchemyError, OSError) as exc:
            self._db_failed("cannot open or migrate the history database", exc)
            return False
        if before != after:
            log.info("history database migrated %s -> %s", before, after)
        if self._set_aside is not None:
            self._carry_over()
        self._migrated = True
        self._attempt = 0
        self.alarms.clear(ALARM_DB)
        return True

    def _backoff(self) -> None:
        delay = self.retry_backoff_s[min(self._attempt, len(self.retry_backoff_s) - 1)]
        self._attempt += 1
        self._stopping.wait(delay)

    def _db_failed(self, what: str, exc: BaseException) -> None:
        msg = f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        with self._lock:
            self.stats.failed_attempts += 1
            self.stats.last_error = msg
        log.error("%s", msg)
        held = f"queue {self._queue.qsize()}/{self.database.queue_size}"
        self.alarms.raise_(ALARM_DB, "database", msg + f" — results are held in memory ({held})")
        # a locked, full or corrupt file may need a fresh connection once the cause is fixed
        self.engine.dispose()

    def _write(self, batch: list[_Pending]) -> list[_Pending]:
        """Store ``batch`` in one transaction; returns what is left to retry after a transient failure.

        A permanent failure (the data itself is refused) is narrowed down to the offending
        results, which are dropped and counted, so one bad result never blocks the queue."""
        t0 = time.perf_counter()
        fresh = [p for p in batch if not p.files_done]
        for p in fresh:
            self._prepare(p)
        try:
            self.archive.sync_dirs([s.path for p in fresh for _v, _k, s in p.stored])
            inserted = self._insert(batch)
        except Exception as exc:
            if not _permanent(exc):
                self._db_failed(f"history batch of {len(batch)} not written", exc)
                if says_corrupt(exc):
                    self._set_aside_if_corrupt()
                # a file set aside, replaced or deleted needs its schema (created in a fresh
                # file) before the retry: the loop checks it first (cheap when it is there)
                self._migrated = False
                return batch
            if len(batch) > 1:
                for i, p in enumerate(batch):
                    if self._write([p]):
                        return batch[i:]
                return []
            first = batch[0].row
            msg = (f"result seq {first['sequence']} (part {first['part_id']}) refused by the database: "
                   f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            log.error("%s", msg)
            self.alarms.raise_(ALARM_BAD_RESULT, "database", msg)
            self._settle(lost=1, done=batch)
            return []
        with self._lock:
            self.stats.written += inserted
            self.stats.images_written += sum(len(p.stored) for p in batch)
            self.stats.last_batch_ms = (time.perf_counter() - t0) * 1000.0
            self.stats.queue_depth = self._queue.qsize()
        self._settle(written=len(batch), done=batch)
        if self._attempt:
            self._attempt = 0
            self.alarms.clear(ALARM_DB)
        if self._fresh_after_set_aside:
            self._fresh_after_set_aside = False
            self.alarms.clear(ALARM_DB_CORRUPT)  # stays listed until acknowledged; the moved file stays
        if self.alarms.is_active(ALARM_UNRECORDED):
            self.alarms.clear(ALARM_UNRECORDED)  # listed until acknowledged; the count stays in stats.unrecorded
        return []

    def _insert(self, batch: list[_Pending]) -> int:
        """Store ``batch`` in one transaction; the number of inspections inserted (replayed ones the
        database already has are left out)."""
        with self.engine.connect().execution_options(**WRITE) as conn, conn.begin():
            batch = self._not_stored_yet(conn, batch)
            if not batch:
                return 0
            self._store_recipes(conn, batch)
            ids = conn.execute(
                insert(InspectionRow.__table__).returning(InspectionRow.__table__.c.id, sort_by_parameter_order=True),
                [p.row for p in batch],
            ).scalars().all()
            defects, images = [], []
            for p, iid in zip(batch, ids):
                when = p.row["triggered_at"]
                defects.extend(dict(d, inspection_id=iid) for d in p.defect_rows)
                for view, kind, s in p.stored:
                    images.append(
                        {"inspection_id": iid, "view": view, "kind": kind, "path": s.path, "sha256": s.sha256, "bytes": s.bytes,
                         "created_at": when}
                    )
            if defects:
                conn.execute(insert(DefectRow.__table__), defects)
            if images:
                conn.execute(insert(ImageRow.__table__), images)
        return len(batch)

    def _not_stored_yet(self, conn, batch: list[_Pending]) -> list[_Pending]:
        """``batch`` without the replayed results the database already has (stored before the
        crash, after their journal record): same station, sequence and trigger time."""
        replayed = [p for p in batch if p.replayed]
        if not replayed:
            return batch
        t = InspectionRow.__table__.c
        times = [p.row["triggered_at"] for p in replayed]
        have = {
            (seq, _utc(at))
            for seq, at in conn.execute(
                select(t.sequence, t.triggered_at).where(
                    t.station_id == self.station_id, t.triggered_at >= min(times), t.triggered_at <= max(times)
                )
            )
        }
        keep = [p for p in batch if not (p.replayed and (p.row["sequence"], _utc(p.row["triggered_at"])) in have)]
        new = sum(p.replayed for p in keep)
        if new:
            with self._lock:
                self.stats.replayed += new
            log.warning("verdict journal: %d verdicts from before the last stop stored now (%d were stored already)",
                        new, len(replayed) - new)
        return keep

    def _settle(self, *, written: int = 0, lost: int = 0, deferred: int = 0, done=()) -> None:
        """Count results as written, lost or deferred (kept in the journal for the next start);
        ``done``: those stored or given up, whose journal records are released."""
        if self.journal is not None:
            ids = [p.journal_id for p in done if p.journal_id is not None]
            if ids:
                self.journal.settle(ids)
        with self._done_cv:
            self._settled += written + lost + deferred
            self.stats.lost += lost
            self._done_cv.notify_all()

    def _prepare(self, p: _Pending) -> None:
        """Archive the raw views and the overlay (failures are counted on the row, never fatal),
        then let go of the image memory. Runs once per result, before its first insert attempt."""
        row = p.row
        wanted = [(cam, "raw", img) for cam, img in p.views]
        if p.overlay is not None:
            wanted.append((p.views[0][0] if p.views else "overlay", "overlay", p.overlay))
        for view, kind, img in wanted:
            try:
                data = self.archive.encode(img)
                rel = self.archive.relative_path(row["triggered_at"], self.station_id, row["sequence"], view, kind)
                p.stored.append((view, kind, self.archive.write(rel, data)))
            except (OSError, ValueError) as exc:
                row["images_dropped"] += 1
                with self._lock:
                    self.stats.images_dropped += 1
                self.alarms.raise_(ALARM_ARCHIVE, "disk", f"image archive write failed ({self.archive.directory}): {exc}")
            else:
                if self.alarms.is_active(ALARM_ARCHIVE):
                    self.alarms.clear(ALARM_ARCHIVE)
        with self._lock:
            self._queued_image_bytes -= p.image_bytes
        p.views, p.overlay, p.image_bytes, p.files_done = [], None, 0, True
        _fit(row, _INSPECTION_LENGTHS)  # images_dropped and nothing textual changed since _pending: cheap
        for d in p.defects:
            crop = d.pop("mask_crop")
            d["mask_rle"] = None if crop is None else rle.encode(crop)
            p.defect_rows.append(_fit(d, _DEFECT_LENGTHS))
        p.defects = []

    @staticmethod
    def _defect_row(d, when: dt.datetime) -> dict:
        """Column values of a defect; ``mask_crop`` (a copy of the mask inside the box) is replaced
        by ``mask_rle`` in the writer thread."""
        x0, y0, x1, y1 = (int(v) for v in d.box)
        return {
            "triggered_at": when,
            "view": str(d.view),
            "class_name": str(d.class_name),
            "confidence": _number(d.confidence) or 0.0,
            "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "area_px": int(d.area_px),
            "area_mm2": _number(d.area_mm2),
            "proposal_score": _number(d.proposal_score) or 0.0,
            "zone": d.zone,
            "mask_crop": None if d.mask is None else rle.crop(d.mask, d.box).copy(),
        }

    def _store_recipes(self, conn, batch: list[_Pending]) -> None:
        t = RecipeVersionRow.__table__.c
        for p in batch:
            r = p.recipe
            if r is None or (r.recipe.name, r.content_hash) in self._known_recipes:
                continue
            key = (r.recipe.name, r.content_hash)
            exists = conn.scalar(select(t.id).where(t.name == key[0], t.content_hash == key[1]))
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(RecipeVersionRow.__table__).values(
                                name=r.recipe.name, version=r.recipe.version, content_hash=r.content_hash, content=r.text,
                                author="station", created_at=dt.datetime.now(dt.timezone.utc),
                            )
                        )
                except IntegrityError:
                    pass  # the HMI's recipe editor or another station stored this version first
            self._known_recipes.add(key)

    # ---- maintenance (writer thread, between batches) ---------------------------------------
    def _maintain(self) -> None:
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + self.maintenance_interval_s
        self.run_maintenance()

    RECONCILE_EVERY = 6  # maintenance runs: reconciliation walks the whole archive, so hourly is enough

    def run_maintenance(self, *, reconcile_now: bool | None = None) -> None:
        """Retention (every run) and reconciliation (the first and every RECONCILE_EVERY-th run)
        of this station's archive. Errors are alarms."""
        runs = self._maintenance_runs
        self._maintenance_runs += 1
        if reconcile_now is None:
            reconcile_now = runs % self.RECONCILE_EVERY == 0
        try:
            rep = apply_retention(self.engine, self.archive, self.archive_config, self.station_id)
            if rep.over_budget_young:
                self.alarms.raise_(
                    ALARM_ARCHIVE_FULL, "disk",
                    f"image archive holds {rep.total_bytes_after} bytes, over max_bytes {self.archive_config.max_bytes}, "
                    f"but everything left is younger than min_age_days {self.archive_config.min_age_days}",
                    Severity.WARNING,
                )
            else:
                self.alarms.clear(ALARM_ARCHIVE_FULL)
            if not reconcile_now:
                return
            rec = reconcile(self.engine, self.archive, self.station_id, grace_s=self.reconcile_grace_s)
            if not rec.clean:
                log.warning(
                    "archive reconciled: %d orphan files, %d rows without file, %d temp files removed; %d mismatched",
                    len(rec.orphan_files_removed), len(rec.dangling_rows_removed), len(rec.temp_files_removed), len(rec.mismatched),
                )
        except (SQLAlchemyError, OSError) as exc:
            log.error("archive maintenance failed: %s", exc)
            self.alarms.raise_("archive_maintenance", "disk", f"archive retention/reconciliation failed: {exc}", Severity.WARNING)


def _reserve_status(path: Path) -> int | None:
    """The status file, opened and filled to STATUS_BYTES so later writes need no free space."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size < STATUS_BYTES:
            os.pwrite(fd, b" " * STATUS_BYTES, 0)
        return fd
    except OSError as exc:
        log.warning("history status file %s cannot be written: %s", path, exc)
        return None


def read_status(journal_dir: Path | str) -> dict | None:
    """The history status a station (running or not) last wrote in its journal dir, or None."""
    path = Path(journal_dir) / STATUS_FILE
    for _ in range(3):  # written in place: a read may catch a write half done
        try:
            return json.loads(path.read_bytes().strip() or b"null")
        except FileNotFoundError:
            return None
        except ValueError:
            time.sleep(0.05)
    return None


def _utc(when: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite gives naive ones back), to the microsecond."""
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when.astimezone(dt.timezone.utc)


def _to_journal(p: _Pending) -> dict:
    """The journal record of a result: its row and defects as the database will get them,
    without masks and images (too slow to encode before the PLC answer)."""
    wanted = len(p.views) + (1 if p.overlay is not None else 0)
    defects = [{k: v for k, v in d.items() if k != "mask_crop"} for d in p.defects]
    return {"row": p.row, "defects": defects, "images_wanted": wanted}


def _from_journal(payload: dict) -> _Pending:
    """A journal record back as a result to store: its images were lost with the process."""
    row = dict(payload["row"])
    row["triggered_at"] = dt.datetime.fromisoformat(row["triggered_at"])
    row["images_dropped"] = int(row.get("images_dropped") or 0) + int(payload.get("images_wanted") or 0)
    defects = []
    for d in payload.get("defects", []):
        d = dict(d, mask_crop=None)
        d["triggered_at"] = dt.datetime.fromisoformat(d["triggered_at"])
        defects.append(d)
    return _Pending(row, defects, [], None, None)


def _number(value, digits: int | None = None) -> float | None:
    """A finite float for JSON/SQL (NaN and inf become None: PostgreSQL's json refuses them)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    return round(f, digits) if digits is not None else f


def _lengths(table) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}


_INSPECTION_LENGTHS = _lengths(InspectionRow.__table__)
_DEFECT_LENGTHS = _lengths(DefectRow.__table__)


def _fit(row: dict, lengths: dict[str, int]) -> dict:
    """Cut text to its column's length: PostgreSQL refuses longer values, SQLite would keep them."""
    for name, n in lengths.items():
        v = row.get(name)
        if isinstance(v, str) and len(v) > n:
            row[name] = v[: n - 1] + "…"
    return row


def _permanent(exc: BaseException) -> bool:
    """True if retrying cannot help (the data is refused, or a bug); False for a database that is
    locked, full, offline, corrupt or missing tables: those are held and retried."""
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    if isinstance(exc, (DBAPIError, OSError)):
        return False
    return True  # StatementError while binding, TypeError, ValueError, OverflowError, bugs


def _thresholds(loaded: LoadedRecipe) -> dict:
    return {
        c.name: {
            "min_confidence": loaded.recipe.min_confidence_of(c),
            "min_area_px": c.min_area_px,
            "min_area_mm2": c.min_area_mm2,
            "max_count": c.max_count,
        }
        for c in loaded.recipe.classes
    }
