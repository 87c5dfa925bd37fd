"""PLC test rig: a real Pipeline (tiny camera/inspector), the real PlcService on a free
loopback port, and a PLC played by a pymodbus client."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from station.alarms import AlarmBoard
from station.config import PlcConfig
from station.recipe_switch import RecipeSwitcher
from station.pipeline import Pipeline
from station.plc.registers import OUTPUT_BASE, OUTPUT_WORDS, Control, Out, Status, join_u32, split_u32
from station.plc.service import PlcService
from station.recipe import RecipeBook
from station.stats import StationStats
from station.benchmarks.recipes import threshold_recipe_text
from tests.plc.parts import TinyCamera, TinyInspector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Rig:
    service: PlcService
    pipeline: Pipeline
    alarms: AlarmBoard
    stats: StationStats
    recipes: RecipeBook
    port: int
    inspector: TinyInspector
    masters: list = field(default_factory=list)

    def master(self, **kw) -> "PlcMaster":
        m = PlcMaster(self.port, **kw)
        self.masters.append(m)
        return m

    def close(self) -> None:
        for m in self.masters:
            m.close()
        self.service.stop()
        self.pipeline.stop()


def write_recipes(directory: Path, recipes: list[tuple[str, int, int]]) -> RecipeBook:
    directory.mkdir(parents=True, exist_ok=True)
    for name, plc_id, budget in recipes:
        text = threshold_recipe_text(name, {"dent": 2, "scratch": 3}, plc_id=plc_id, budget_ms=budget)
        (directory / f"{name}.toml").write_text(text)
    return RecipeBook(directory)


@pytest.fixture
def make_rig(tmp_path):
    rigs: list[Rig] = []

    def build(
        inspector: TinyInspector | None = None,
        budget_ms: int = 2000,
        queue_depth: int = 8,
        recipes: list[tuple[str, int, int]] | None = None,
        build_inspector: Callable | None = None,
        camera: TinyCamera | None = None,
        **plc,
    ) -> Rig:
        inspector = inspector or TinyInspector()
        book = write_recipes(tmp_path / "recipes", recipes or [("widget", 7, budget_ms)])
        alarms, stats = AlarmBoard(), StationStats()
        pipeline = Pipeline(
            {"top": camera or TinyCamera()}, build_inspector or (lambda loaded: inspector), alarms, queue_depth=queue_depth, stats=stats
        )
        pipeline.load_recipe(book.get((recipes or [("widget",)])[0][0]))
        pipeline.start()
        port = plc.pop("port", None) or free_port()
        config = PlcConfig(port=port, **plc)
        service = PlcService(config, pipeline, RecipeSwitcher(book, pipeline, alarms), alarms, stats)
        pipeline.sinks = [service]
        service.start()
        rig = Rig(service, pipeline, alarms, stats, book, port, inspector)
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.close()


class PlcMaster:
    """The PLC, played by a pymodbus client: writes registers 0–3, reads 100–117."""

    def __init__(self, port: int, host: str = "127.0.0.1", unit: int = 1, poll_s: float = 0.001):
        self.client = ModbusTcpClient(host, port=port, timeout=2, retries=0)
        assert self.client.connect(), f"cannot connect to {host}:{port}"
        self.unit = unit
        self.poll_s = poll_s
        self.control = 0

    def close(self) -> None:
        self.client.close()

    def outputs(self) -> list[int]:
        rr = self.client.read_holding_registers(OUTPUT_BASE, count=OUTPUT_WORDS, device_id=self.unit)
        assert not rr.isError(), rr
        return list(rr.registers)

    def write_control(self, control: int) -> None:
        self.control = control & 0xFFFF
        rr = self.client.write_register(0, self.control, device_id=self.unit)
        assert not rr.isError(), rr

    def set(self, bits: int) -> None:
        self.write_control(self.control | bits)

    def drop(self, bits: int) -> None:
        self.write_control(self.control & ~bits)

    def beat(self) -> None:
        """Toggle the PLC heartbeat bit."""
        self.write_control(self.control ^ Control.HEARTBEAT)

    def wait(self, predicate: Callable[[list[int]], bool], timeout_s: float = 5.0, beat: bool = True) -> list[int]:
        end = time.monotonic() + timeout_s
        last_beat = time.monotonic()
        while True:
            out = self.outputs()
            if predicate(out):
                return out
            if time.monotonic() > end:
                raise AssertionError(f"timed out; status {Status(out[Out.STATUS])!r} outputs {out}")
            if beat and time.monotonic() - last_beat > 0.1:
                self.beat()
                last_beat = time.monotonic()
            time.sleep(self.poll_s)

    def trigger(self, part_id: int, timeout_s: float = 5.0) -> list[int]:
        """Write the part ID, raise TRIGGER, wait for ACK or FAILED, drop TRIGGER; returns the answer."""
        hi, lo = split_u32(part_id)
        rr = self.client.write_registers(2, [hi, lo], device_id=self.unit)
        assert not rr.isError(), rr
        self.set(Control.TRIGGER)
        answer = self.wait(lambda o: bool(o[Out.STATUS] & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED)), timeout_s)
        self.drop(Control.TRIGGER)
        self.wait(lambda o: not o[Out.STATUS] & (Status.TRIGGER_ACK | Status.TRIGGER_FAILED), timeout_s)
        return answer

    def take_result(self, timeout_s: float = 5.0) -> list[int]:
        """Wait for RESULT_VALID, acknowledge, wait for it to drop, release ACK; returns the result block."""
        out = self.wait(lambda o: bool(o[Out.STATUS] & Status.RESULT_VALID), timeout_s)
        self.set(Control.RESULT_ACK)
        self.wait(lambda o: not o[Out.STATUS] & Status.RESULT_VALID, timeout_s)
        self.drop(Control.RESULT_ACK)
        return out


def part_id_of(out: list[int]) -> int:
    return join_u32(out[Out.PART_ID_HI], out[Out.PART_ID_LO])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.01) -> None:
    """Poll ``predicate`` until true; fail after ``timeout_s`` (a bound for loaded CI machines)."""
    end = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(step_s)
