"""What a person sees on the console of `station demo` (a real subprocess with its HMI and PLC):
the HMI's address in a banner first, then summary lines every few seconds; the one-line-per-part
log only in var/station.log, or on the console with --verbose."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.request

from tests.hmi.browser import child_env, free_port

SUMMARY = re.compile(r"^\d\d:\d\d:\d\d  parts (\d+) \(\+\d+ in \d+ s\)  pass \d+  reject \d+  review \d+  yield ")
PARTS = 20


def run_demo(root, *extra: str) -> tuple[int, list[str], str, int]:
    """`station demo --parts 12` on free ports: (exit status, stdout lines, stderr, HTTP status of the
    address the banner printed, fetched while the demo ran)."""
    hmi_port, plc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "station.cli", "demo", "--recipe", "plate-threshold", "--parts", str(PARTS),
         "--interval-ms", "150", "--summary-every", "0.5", "--root", str(root), "--hmi-port", str(hmi_port),
         "--plc-port", str(plc_port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)
    drain.start()
    lines, http_status = [], 0
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            found = re.search(r"HMI:  (http://\S+)", line)
            if found:
                assert found.group(1) == f"http://127.0.0.1:{hmi_port}/"
                with urllib.request.urlopen(found.group(1), timeout=30) as r:  # the banner's address answers
                    http_status = r.status
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    drain.join(10)
    return proc.returncode, lines, "".join(stderr), http_status


def test_demo_prints_the_hmi_address_in_a_banner_then_summaries_not_a_line_per_part(tmp_path):
    code, out, err, http_status = run_demo(tmp_path)
    assert code == 0, err[-3000:]
    assert http_status == 200
    text = [line for line in out if line.strip()]
    # the banner comes first on stdout, framed
    assert set(text[0]) == {"="} and set(text[6]) == {"="}, out[:10]
    assert text[2].strip().startswith("HMI:  http://127.0.0.1:") and "no login" in text[2]
    assert "PLC:  Modbus TCP 127.0.0.1:" in text[3] and "station.log" in text[4] and f"after {PARTS} parts" in text[5]
    summaries = [line for line in text[7:] if SUMMARY.match(line)]
    assert len(summaries) >= 2, out
    assert "in all: parts" in text[-1] and f"parts {PARTS} " in text[-1]
    # no line per part anywhere on the console: after the banner, only summary lines
    assert all(SUMMARY.match(line) or "in all: parts" in line for line in text[7:]), text[7:]
    assert "station.parts" not in err and "verdict=" not in err
    part_lines = [line for line in (tmp_path / "var" / "station.log").read_text().splitlines() if "station.parts" in line]
    assert len(part_lines) == PARTS and all("verdict=" in line and "total_ms=" in line for line in part_lines)


def test_demo_verbose_shows_a_line_per_part_on_the_console(tmp_path):
    code, out, err, _ = run_demo(tmp_path, "--verbose")
    assert code == 0, err[-3000:]
    assert len([line for line in err.splitlines() if "station.parts" in line and "verdict=" in line]) == PARTS
    assert any(line.strip().startswith("HMI:  http://127.0.0.1:") for line in out)
