"""`station plc map / status / bench` through the real command line."""

from __future__ import annotations

import json

from station.cli import main
from station.plc.registers import ERROR_TEXT, INPUT_MAP, OUTPUT_MAP, ErrorCode, Out


def test_plc_map_lists_every_register_and_error(capsys):
    assert main(["plc", "map"]) == 0
    text = capsys.readouterr().out
    for r in INPUT_MAP + OUTPUT_MAP:
        assert r.name in text
    for code in ErrorCode:
        assert f"{int(code):>3}  {code.name}" in text and ERROR_TEXT[code] in text
    assert "107–108" in text and "114–115" in text


def test_plc_map_json_covers_0_to_3_and_100_to_119(capsys):
    assert main(["plc", "map", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    covered = lambda block: sorted(a for r in block for a in range(r["address"], r["address"] + r["width"]))  # noqa: E731
    assert covered(doc["input"]) == [0, 1, 2, 3]
    assert covered(doc["output"]) == list(range(100, 120))


def test_plc_status_decodes_a_running_station(make_rig, capsys):
    rig = make_rig()
    plc = rig.master()
    plc.beat()
    plc.wait(lambda o: o[Out.ACTIVE_RECIPE] == 7)
    assert main(["plc", "status", "--port", str(rig.port)]) == 0
    text = capsys.readouterr().out
    assert "READY" in text and "ONLINE" in text
    assert any(line.split()[:3] == ["102", "ACTIVE_RECIPE", "7"] for line in text.splitlines())


def test_plc_status_without_station_fails_cleanly(capsys):
    from tests.plc.conftest import free_port

    assert main(["plc", "status", "--port", str(free_port())]) == 1
    assert "cannot connect" in capsys.readouterr().err


def test_plc_bench_reports_percentiles(capsys):
    assert main(["plc", "bench", "--parts", "30", "--poll-ms", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["in_order_none_lost"] is True and r["parts"] == 30
    for key in ("trigger_to_ack_seen_by_plc_ms", "decision_to_valid_seen_by_plc_ms", "decision_to_valid_in_station_ms"):
        assert r[key]["n"] == 30 and 0 <= r[key]["p50"] <= r[key]["p99"] <= r[key]["max"]


def test_docs_list_every_register_and_error_code(repo_root):
    doc = (repo_root / "docs" / "plc.md").read_text(encoding="utf-8")
    for r in INPUT_MAP + OUTPUT_MAP:
        addr = str(r.address) if r.width == 1 else f"{r.address}–{r.address + r.width - 1}"
        assert f"| {addr} | {r.name} |" in doc, r.name
    for code in ErrorCode:
        assert f"| {int(code)} | `{code.name}` | {ERROR_TEXT[code]} |" in doc, code.name
