"""PLC link benchmark: handshake latencies over loopback with a PLC polling every N ms.

Runs the real PlcService (server mode) over a real Pipeline with a trivial camera and
inspector (the vision is not what is measured here), and a timed PLC: a pymodbus master
that polls the status block every ``poll_ms`` and triggers the next part once the previous
result is acknowledged (one part at a time, so queueing does not hide in the latencies), at
most ``rate`` parts per second when given. With ``history`` (the default) the result sinks are
the station's (station.app.result_sinks): the real HistoryWriter with its verdict journal and
a SQLite file in a temporary directory first, then the PLC, so "decision → RESULT_VALID" includes
making the verdict's record durable. Reports, in ms (p50 / p99 / max):

- trigger → TRIGGER_ACK as the PLC sees it (TRIGGER write sent → first poll showing the ACK);
- TRIGGER write round trip (the station sets TRIGGER_ACK before it answers the write);
- decision → RESULT_VALID as the PLC sees it (pipeline decided → first poll showing VALID);
- decision → RESULT_VALID inside the station (registers written when ``publish`` returns);
- trigger → RESULT_VALID as the PLC sees it: the handshake cycle of one part (TRIGGER write
  sent → first poll showing that part's verdict).

With polling, "as the PLC sees it" is dominated by the poll period: expect about one period.
``crowd=N`` adds N other Modbus clients polling at full speed from another process
(``benchmarks/modbus_crowd.py``) for the whole run, to see what they cost the real PLC.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from pymodbus.client import ModbusTcpClient

from station.alarms import AlarmBoard
from station.benchmarks.recipes import threshold_recipe_text
from station.camera.base import Camera
from station.app import result_sinks
from station.config import ArchiveConfig, DatabaseConfig, PlcConfig
from station.inspection import Defect, Inspection, Outcome, RejectReason, Verdict, View
from station.pipeline import Findings, Pipeline
from station.plc.registers import OUTPUT_BASE, OUTPUT_WORDS, Control, Out, Status, join_u32, split_u32
from station.plc.service import PlcService
from station.recipe import RecipeBook
from station.recipe_switch import RecipeSwitcher
from station.stats import StationStats


class _BlankCamera(Camera):
    name = "top"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def grab(self, part_id: int, timeout_s: float) -> View:
        return View(camera="top", image=np.zeros((4, 4), np.uint8), frame_id=part_id)


class _EveryThirdRejects:
    """Rejects every third part ID so both PASS and REJECT paths are exercised."""

    model_hashes: dict = {}

    def preprocess(self, views: list[View]) -> list[View]:
        return views

    def find_defects(self, views: list[View]) -> Findings:
        if views[0].frame_id % 3 == 0:
            return Findings([Defect("top", "mark", 0.9, (0, 0, 1, 1), 1)], {})
        return Findings([], {})

    def decide(self, defects: list[Defect]) -> Verdict:
        if defects:
            return Verdict(Outcome.REJECT, "mark", RejectReason.DEFECT, top_defect=defects[0], plc_code=1)
        return Verdict(Outcome.PASS, "no defect")


class _Clock:
    """A result sink that notes when each sequence passed it (time.monotonic seconds)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def publish(self, inspection: Inspection) -> None:
        self.at[inspection.sequence] = time.monotonic()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    arr = np.asarray(values)
    return {
        "n": int(arr.size),
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "max": round(float(arr.max()), 3),
    }


class TimedPlc:
    """A PLC polling every ``poll_s``: triggers when READY, acknowledges every result, notes times."""

    def __init__(self, port: int, parts: int, poll_s: float, rate: float | None = None):
        self.port, self.parts, self.poll_s = port, parts, poll_s
        self.period_s = 1.0 / rate if rate else 0.0
        self.trigger_seen_ms: list[float] = []
        self.trigger_rtt_ms: list[float] = []
        self.trigger_sent_s: dict[int, float] = {}  # part ID -> TRIGGER write sent
        self.valid_seen_s: dict[int, float] = {}  # sequence -> first poll that showed RESULT_VALID
        self.results: list[tuple[int, int, bool]] = []  # (sequence, part ID, passed)
        self.refused = 0
        self.cycles = 0
        self.elapsed_s = 0.0

    def run(self, timeout_s: float) -> None:
        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2, retries=0)
        if not client.connect():
            raise RuntimeError(f"cannot connect to the station on 127.0.0.1:{self.port}")
        started = time.monotonic()
        try:
            self._loop(client, started + timeout_s)
        finally:
            self.elapsed_s = time.monotonic() - started
            client.write_register(0, 0, device_id=1)
            client.close()

    def run_elsewhere(self, timeout_s: float) -> None:
        """``run`` in a process of its own, as a real PLC is: the station's threads and this
        PLC must not take turns at one interpreter lock. Its notes are copied back here."""
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        rate = 1.0 / self.period_s if self.period_s else None
        proc = ctx.Process(target=_run_timed_plc, args=(self.port, self.parts, self.poll_s, timeout_s, queue, rate),
                           name="timed-plc", daemon=True)
        proc.start()
        try:
            notes, error = queue.get(timeout=timeout_s + 60)
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        self.__dict__.update(notes)
        if error:
            raise RuntimeError(f"the timed PLC failed: {error}")

    def _loop(self, client: ModbusTcpClient, deadline: float) -> None:
        control, part, sent_s = 0, 1, None
        next_poll = last_beat = started = time.monotonic()
        while len(self.results) < self.parts:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.results)} of {self.parts} results after the time limit")
            rr = client.read_holding_registers(OUTPUT_BASE, count=OUTPUT_WORDS, device_id=1)
            now = time.monotonic()
            if rr.isError():
                raise RuntimeError(f"status read refused: {rr}")
            out = rr.registers
            st = Status(out[Out.STATUS])
            self.cycles += 1
            new = control
            if now - last_beat > 0.1:
                new ^= Control.HEARTBEAT
                last_beat = now
            if sent_s is None:
                # one part at a time: the next trigger only after the last result is acknowledged
                # and released, so the figures are link latency, not queueing behind the PLC
                idle = len(self.results) == part - 1 and not control & Control.RESULT_ACK
                due = now >= started + (part - 1) * self.period_s
                if st & Status.READY and part <= self.parts and idle and due:
                    new |= Control.TRIGGER
            elif st & Status.TRIGGER_ACK:
                self.trigger_seen_ms.append((now - sent_s) * 1000.0)
                part += 1
                new &= ~Control.TRIGGER
            elif st & Status.TRIGGER_FAILED:
                self.refused += 1
                new &= ~Control.TRIGGER
            if st & Status.RESULT_VALID and not control & Control.RESULT_ACK:
                seq = out[Out.SEQUENCE]
                self.valid_seen_s[seq] = now
                self.results.append((seq, join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO]), bool(st & Status.PASS)))
                new |= Control.RESULT_ACK
            elif control & Control.RESULT_ACK and not st & Status.RESULT_VALID:
                new &= ~Control.RESULT_ACK
            if new != control:
                if new & Control.TRIGGER and not control & Control.TRIGGER:
                    hi, lo = split_u32(part)
                    sent_s = time.monotonic()
                    self.trigger_sent_s[part] = sent_s
                    client.write_registers(0, [new, 0, hi, lo], device_id=1)
                    self.trigger_rtt_ms.append((time.monotonic() - sent_s) * 1000.0)
                else:
                    client.write_register(0, new, device_id=1)
                    if not new & Control.TRIGGER:
                        sent_s = None
                control = new
            next_poll += self.poll_s
            now = time.monotonic()
            next_poll = max(next_poll, now)
            time.sleep(next_poll - now)


def _run_timed_plc(port: int, parts: int, poll_s: float, timeout_s: float, queue, rate: float | None = None) -> None:
    plc = TimedPlc(port, parts, poll_s, rate)
    error = None
    try:
        plc.run(timeout_s)
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        error = f"{type(exc).__name__}: {exc}"
    queue.put(({k: v for k, v in vars(plc).items()}, error))


def run_bench(parts: int = 200, poll_ms: float = 10.0, result_buffer: int = 8, timeout_s: float = 300.0,
              crowd: int = 0, reader_interval_ms: float | None = None, rate: float | None = None,
              history: bool = True) -> dict:
    """Run the benchmark; returns the figures (ms) and the integrity check of the results.

    ``crowd``: other clients polling at full speed meanwhile (the server's connection cap is
    raised to let them all in); ``reader_interval_ms``: the server's pacing of clients that only
    read (default: the station's); ``rate``: at most this many parts per second; ``history``: the
    station's sinks (journal + SQLite history before the PLC) instead of the PLC alone."""
    from station.benchmarks.modbus_crowd import ModbusCrowd

    with tempfile.TemporaryDirectory(prefix="plc-bench-") as tmp:
        (Path(tmp) / "plc-bench.toml").write_text(threshold_recipe_text("plc-bench", ["mark"], budget_ms=2000))
        book = RecipeBook(tmp)
        alarms, stats = AlarmBoard(), StationStats()
        pipeline = Pipeline({"top": _BlankCamera()}, lambda loaded: _EveryThirdRejects(), alarms, stats=stats)
        pipeline.load_recipe(book.get("plc-bench"))
        port = _free_port()
        pacing = {} if reader_interval_ms is None else {"reader_interval_ms": reader_interval_ms}
        config = PlcConfig(host="127.0.0.1", port=port, result_buffer=result_buffer,
                           max_connections=max(PlcConfig().max_connections, crowd + 4), **pacing)
        service = PlcService(config, pipeline, RecipeSwitcher(book, pipeline, alarms), alarms, stats)
        writer = None
        if history:
            from station.db.writer import HistoryWriter

            writer = HistoryWriter(
                DatabaseConfig(url=f"sqlite:///{Path(tmp) / 'history.db'}", journal_dir=Path(tmp) / "journal"),
                ArchiveConfig(dir=Path(tmp) / "images"), alarms, "plc-bench",
            )
            writer.start()
            pipeline.record_keeper = writer
        before, after = _Clock(), _Clock()  # decision; RESULT_VALID written (right after the PLC sink)
        sinks = result_sinks(writer, service, None)
        plc_at = sinks.index(service) + 1
        pipeline.sinks = (before, *sinks[:plc_at], after, *sinks[plc_at:])
        pipeline.start()
        service.start()
        plc = TimedPlc(port, parts, poll_ms / 1000.0, rate)
        crowd_runner = ModbusCrowd("127.0.0.1", port, crowd) if crowd else None
        try:
            with crowd_runner or contextlib.nullcontext():
                plc.run_elsewhere(timeout_s)
        finally:
            service.stop()
            pipeline.stop()
            if writer is not None:
                writer.flush(30)
                stored = writer.stats.written
                writer.close()
    seen = [(plc.valid_seen_s[seq] - before.at[seq]) * 1000.0 for seq in plc.valid_seen_s if seq in before.at]
    inside = [(after.at[seq] - before.at[seq]) * 1000.0 for seq in after.at if seq in before.at]
    cycle = [(plc.valid_seen_s[seq] - plc.trigger_sent_s[part]) * 1000.0
             for seq, part, _ in plc.results if seq in plc.valid_seen_s and part in plc.trigger_sent_s]
    part_ids = [p for _, p, _ in plc.results]
    elapsed = plc.elapsed_s
    return {
        "parts": parts,
        "poll_ms": poll_ms,
        "crowd": crowd,
        "crowd_requests_per_s": round(crowd_runner.requests_per_s) if crowd_runner else 0,
        "reader_interval_ms": config.reader_interval_ms,
        "rate": rate,
        "sinks": "history (journal + SQLite), PLC" if history else "PLC only",
        "stored": stored if history else None,
        "elapsed_s": round(elapsed, 2),
        "parts_per_s": round(parts / elapsed, 1) if elapsed else 0.0,
        "plc_cycles": plc.cycles,
        "trigger_refused": plc.refused,
        "in_order_none_lost": part_ids == list(range(1, parts + 1)),
        "trigger_to_ack_seen_by_plc_ms": _stats(plc.trigger_seen_ms),
        "trigger_write_round_trip_ms": _stats(plc.trigger_rtt_ms),
        "decision_to_valid_seen_by_plc_ms": _stats(seen),
        "decision_to_valid_in_station_ms": _stats(inside),
        "trigger_to_valid_seen_by_plc_ms": _stats(cycle),
    }


def crowd_ratio(quiet: dict, crowded: dict) -> float | None:
    """Median handshake cycle (trigger → RESULT_VALID seen by the PLC) crowded / quiet."""
    q, c = quiet["trigger_to_valid_seen_by_plc_ms"], crowded["trigger_to_valid_seen_by_plc_ms"]
    if not q.get("n") or not c.get("n") or not q["p50"]:
        return None
    return round(c["p50"] / q["p50"], 2)


def format_report(r: dict) -> str:
    def line(label: str, s: dict) -> str:
        if not s.get("n"):
            return f"  {label:<46} no samples"
        return f"  {label:<46} p50 {s['p50']:7.2f}  p99 {s['p99']:7.2f}  max {s['max']:7.2f}  (n={s['n']})"

    return "\n".join(
        [
            f"PLC link benchmark: {r['parts']} parts, PLC polling every {r['poll_ms']:g} ms, Modbus TCP over loopback, "
            f"{'at most ' + format(r['rate'], 'g') + ' parts/s' if r['rate'] else 'as fast as the handshake goes'}; "
            f"sinks: {r['sinks']}" + (f" ({r['stored']} stored)" if r["stored"] is not None else "")
            + (f"; {r['crowd']} other clients polling at full speed ({r['crowd_requests_per_s']} requests/s answered; "
               f"readers paced at {r['reader_interval_ms']:g} ms)" if r.get("crowd") else ""),
            line("trigger → TRIGGER_ACK, seen by the PLC (ms)", r["trigger_to_ack_seen_by_plc_ms"]),
            line("TRIGGER write round trip (ms)", r["trigger_write_round_trip_ms"]),
            line("decision → RESULT_VALID, seen by the PLC (ms)", r["decision_to_valid_seen_by_plc_ms"]),
            line("decision → RESULT_VALID, in the station (ms)", r["decision_to_valid_in_station_ms"]),
            line("trigger → RESULT_VALID, seen by the PLC (ms)", r["trigger_to_valid_seen_by_plc_ms"]),
            f"  {r['parts_per_s']} parts/s over {r['elapsed_s']} s; {r['plc_cycles']} PLC cycles; "
            f"{r['trigger_refused']} triggers refused; results in order, none lost: {r['in_order_none_lost']}",
        ]
    )


__all__ = ["run_bench", "crowd_ratio", "format_report", "TimedPlc"]
