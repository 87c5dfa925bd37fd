"""The online/offline state (station.online): offline while any source asks; an operator's
request is kept across restarts in a state file, the PLC's is not (SET_OFFLINE is a level)."""

from __future__ import annotations

from station.online import OPERATOR, PLC, OnlineSwitch


def test_offline_while_any_source_asks_and_each_withdraws_only_its_own():
    switch = OnlineSwitch()
    assert switch.set_offline(PLC, True, "SET_OFFLINE") and switch.set_offline(OPERATOR, True, "olga")
    assert not switch.set_offline(OPERATOR, True, "emil")  # already held: the first request stands
    assert switch.set_offline(PLC, False) and switch.offline and switch.describe() == "offline: operator (olga)"
    assert not switch.set_offline(PLC, False)
    assert switch.set_offline(OPERATOR, False) and not switch.offline and switch.describe() == "online"


def test_only_the_operators_request_is_kept_for_a_restart(tmp_path):
    state = tmp_path / "var" / "online.json"
    switch = OnlineSwitch(state)
    switch.set_offline(PLC, True, "SET_OFFLINE")
    assert not state.exists() and not OnlineSwitch(state).offline
    switch.set_offline(OPERATOR, True, "olga")
    again = OnlineSwitch(state)
    assert again.offline and [(r.source, r.by) for r in again.requests()] == [(OPERATOR, "olga")]
    assert not list(state.parent.glob("*.tmp"))
    again.set_offline(OPERATOR, False)
    assert not OnlineSwitch(state).offline


def test_a_bad_state_file_is_named_and_the_station_starts_online(tmp_path, caplog):
    state = tmp_path / "online.json"
    for text in ("{half", '{"offline": [{"source": "operator"}]}', "[]"):
        state.write_text(text)
        assert not OnlineSwitch(state).offline, text
    assert caplog.text.count("online.json") == 3
