"""The HMI's model and login rules without a browser: fast, exact."""

from __future__ import annotations

import time

import numpy as np
from pathlib import Path
import pytest

from station.hmi.auth import AuthError, LoginThrottle, allows, check_password, check_username, hash_password, verify_password
from station.hmi.overlay import encode_jpeg
from station.hmi.state import HmiState, StationStatus
from station.inspection import Defect, Failure, Inspection, Outcome, RejectReason, Verdict, View
from tests.recipes import make_inspection
from tests.hmi.stand import make_station


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_throttle_locks_after_max_failures_and_doubles():
    clock = FakeClock()
    th = LoginThrottle(max_failures=3, window_s=60, lockout_s=10, max_lockout_s=35, clock=clock)
    assert [th.failure("user:a") for _ in range(2)] == [0.0, 0.0]
    assert th.wait_s("user:a") == 0
    assert th.failure("user:a") == 10
    assert th.wait_s("user:a") == 10
    assert th.failure("user:a") == 20
    assert th.failure("user:a") == 35  # capped
    clock.t += 36
    assert th.wait_s("user:a") == 0
    th.success("user:a")
    assert th.failure("user:a") == 0.0
    assert th.wait_s("user:b") == 0  # keys are independent


def test_throttle_failures_expire_and_memory_is_bounded():
    clock = FakeClock()
    th = LoginThrottle(max_failures=2, window_s=60, clock=clock, max_keys=100)
    th.failure("user:a")
    clock.t += 61
    assert th.failure("user:a") == 0.0  # the first failure left the window
    for i in range(500):
        th.failure(f"user:guess{i}")
        clock.t += 1
    assert len(th._failures) <= 161  # noqa: SLF001 (pruned to the keys failing within the window)


def test_roles_rank():
    assert allows("admin", "engineer") and allows("engineer", "operator") and allows("operator", "operator")
    assert not allows("operator", "engineer") and not allows("engineer", "admin")
    assert not allows(None, "operator") and not allows("root", "operator")


@pytest.mark.parametrize("name", ["a", "Bad Name", "x" * 65, "-lead", "<script>", "robert'); drop"])
def test_bad_usernames(name):
    with pytest.raises(AuthError):
        check_username(name.lower() if name != "Bad Name" else name)


@pytest.mark.parametrize("password,username", [("short", "x"), ("bobbybobby", "bobbybobby"), ("aaaaaaaaaaaa", "x"),
                                               ("x" * 2000, "x")])
def test_weak_passwords(password, username):
    with pytest.raises(AuthError):
        check_password(password, username)


def test_hash_round_trip_and_no_plaintext():
    h = hash_password("zürich-line-4")
    assert h.startswith("$argon2id$") and "zürich" not in h
    assert verify_password(h, "zürich-line-4")
    assert verify_password(h, "zu\u0308rich-line-4")  # NFC-normalised: the same password typed differently
    assert not verify_password(h, "zurich-line-4")
    assert not verify_password("not a hash", "x")


def _inspection(seq: int, passed: bool, image: np.ndarray | None = None) -> Inspection:
    img = image if image is not None else np.full((48, 64), 120, np.uint8)
    d = Defect("top", "scratch", 0.91, (5, 5, 20, 12), 80, mask=np.zeros(img.shape[:2], bool))
    v = Verdict(Outcome.PASS, "no defect") if passed else Verdict(Outcome.REJECT, "scratch", top_defect=d, plc_code=1)
    return make_inspection(seq, triggered_at_s=time.time(), views=[View("top", img)],
                           defects=[] if passed else [d], verdict=v, timings_ms={"total": 12.0})


def test_publish_never_blocks_and_skips_to_newest_under_load(tmp_path):
    st = make_station(tmp_path, history=False)
    state = HmiState(st, mailbox=2)  # renderer not started: the mailbox fills
    t0 = time.perf_counter()
    parts = [_inspection(i, passed=i % 3 != 0) for i in range(1, 101)]
    for insp in parts:
        state.publish(insp)
    per_call_ms = (time.perf_counter() - t0) * 10  # 100 calls -> ms per call
    assert per_call_ms < 50  # O(1) hand-off, no encoding on the publisher thread (loose bound: shared CI)
    for insp in parts:
        st.stats.record(insp)  # as the pipeline does for every part, before its sinks
    c = state.counters()  # every part counts, whatever the renderer skipped
    assert (c.parts, c.rejected, c.reject_classes["scratch"]) == (100, 33, 33)
    assert state.skipped == 98 and state.received == 100
    state.start()
    deadline = time.monotonic() + 10
    while state.rendered < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    state.stop()
    assert [r.sequence for r in state.strip()] == [100, 99]  # newest first; older ones skipped
    assert state.latest().image_jpeg[:2] == b"\xff\xd8"


def test_the_hmi_shows_the_overlay_drawn_once_with_the_parts_own_recipe(tmp_path):
    from station.hmi.overlay import encode_jpeg

    st = make_station(tmp_path, history=False)
    state = HmiState(st)
    insp = _inspection(1, passed=False)
    insp.overlay = np.full((48, 64, 3), 7, np.uint8)  # what the stages drew for this part
    assert state.render(insp).image_jpeg == encode_jpeg(insp.overlay, state.max_side_px, state.jpeg_quality)


def test_failsafe_reject_counts_by_reason(tmp_path):
    st = make_station(tmp_path, history=False)
    state = HmiState(st)
    insp = _inspection(1, passed=True)
    insp.verdict = Verdict.for_failure(Failure(RejectReason.TIMEOUT, "budget exceeded"))
    state.publish(insp)
    insp2 = _inspection(2, passed=True)
    insp2.verdict = None  # no verdict at all is a reject, never a pass
    state.publish(insp2)
    st.stats.record(insp)  # as the pipeline does for every part
    st.stats.record(insp2)
    c = state.counters()
    assert (c.parts, c.passed, c.rejected) == (2, 0, 2)
    assert c.reject_classes == {"timeout": 1, "no verdict": 1}
    assert state.render(insp2).outcome is Outcome.REJECT


def test_status_words(tmp_path):
    st = make_station(tmp_path, history=False)
    state = HmiState(st)
    assert state.status() is StationStatus.OFFLINE  # not started
    st.start()
    try:
        assert state.status() is StationStatus.READY
        st.pipeline.online.set_offline("operator", True, "olga")
        assert state.status() is StationStatus.OFFLINE
    finally:
        st.stop()


def test_overlay_draws_mask_and_box_in_recipe_colour():
    img = np.full((480, 640), 100, np.uint8)
    mask = np.zeros((480, 640), bool)
    mask[300:340, 300:400] = True
    from station.recipe import load_recipe
    from station.vision.overlay import render_overlay

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes/demo-part.toml").recipe  # crack is #ff9500
    out = render_overlay(img, [Defect("top", "crack", 0.8, (300, 300, 400, 340), 4000, mask=mask)], recipe)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    inside = out[320, 350]
    assert inside[0] > inside[2]  # tinted towards orange (R > B) inside the mask
    assert tuple(out[200, 200]) == (100, 100, 100)  # untouched inside the plate, away from the defect
    big = encode_jpeg(np.zeros((2000, 3000, 3), np.uint8), max_side_px=1024)
    import cv2

    decoded = cv2.imdecode(np.frombuffer(big, np.uint8), cv2.IMREAD_COLOR)
    assert max(decoded.shape[:2]) == 1024


def test_renderer_survives_a_bad_image(tmp_path):
    st = make_station(tmp_path, history=False)
    state = HmiState(st)
    bad = _inspection(1, passed=False, image=np.zeros((0, 0), np.uint8))
    state.start()
    try:
        state.publish(bad)
        state.publish(_inspection(2, passed=True))
        deadline = time.monotonic() + 10
        while state.rendered < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        state.stop()
    assert [r.sequence for r in state.strip()] == [2, 1]
    assert state.result(1).image_jpeg == b"" and state.result(1).outcome is Outcome.REJECT


def test_plc_status_from_a_real_plc_service(tmp_path):
    """The PLC badge reads PlcService.snapshot(): a server nobody polls is OFFLINE, in words."""
    import socket

    from station.config import PlcConfig
    from station.plc.service import PlcService

    st = make_station(tmp_path, history=False)
    st.start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = PlcConfig(mode="server", host="127.0.0.1", port=port, heartbeat_timeout_ms=200)
    plc = PlcService(config, st.pipeline, st.recipes, st.alarms, st.stats)
    plc.start()
    st.plc = plc
    state = HmiState(st)
    try:
        deadline = time.monotonic() + 10
        while state.plc_label()[0] and time.monotonic() < deadline:
            time.sleep(0.05)  # no PLC writes the heartbeat: the link goes offline after 200 ms
        online, text = state.plc_label()
        assert online is False and text.startswith(f"PLC: OFFLINE (server 127.0.0.1:{port})")
    finally:
        plc.stop()
        st.stop()
