"""Progress of a long step: a redrawn bar on a terminal, periodic plain log lines elsewhere."""

from __future__ import annotations

import io
import logging
import os
import select
import time

import pytest

from station.progress import step


def test_without_a_terminal_a_step_logs_start_periodic_lines_and_end(caplog):
    with caplog.at_level(logging.INFO, logger="station.progress"):
        with step("download x.pt", total=4_000_000, unit="B", stream=io.StringIO(), interval_s=0.05) as p:
            p.update(1_000_000)
            time.sleep(0.3)
            p.update(3_000_000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "download x.pt: started, 4.0 MB"
    assert any(line.startswith("download x.pt: still running (1.0 MB of 4.0 MB (25 %)") for line in lines[1:-1])
    assert lines[-1].startswith("download x.pt: done (4.0 MB of 4.0 MB (100 %)")


def test_a_silent_step_still_says_it_is_alive(caplog):
    with caplog.at_level(logging.INFO, logger="station.progress"):
        with step("export encoder", stream=io.StringIO(), interval_s=0.05):
            time.sleep(0.3)  # torch.onnx.export gives no news while it runs
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "export encoder: started" and lines[-1].startswith("export encoder: done (")
    assert sum(line.startswith("export encoder: still running (") for line in lines) >= 2


def test_a_failing_step_says_it_stopped(caplog):
    with caplog.at_level(logging.INFO, logger="station.progress"), pytest.raises(RuntimeError):
        with step("export decoder", stream=io.StringIO(), interval_s=10):
            raise RuntimeError("boom")
    assert caplog.records[-1].getMessage().startswith("export decoder: stopped (")


def test_on_a_terminal_it_draws_a_bar():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            with step("download x.pt", total=2_000_000, unit="B", stream=tty) as p:
                p.update(2_000_000)
            tty.flush()
        out = b""
        while select.select([master], [], [], 0.2)[0]:
            out += os.read(master, 65536)
        out = out.decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "download x.pt: 100%" in out and "|" in out and "1.91M/1.91M" in out
