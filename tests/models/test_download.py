"""Resumable downloads against a real loopback HTTP server: a connection cut mid-file is resumed
with HTTP Range (in the same call, and in a later call from the kept .part file), a server that
ignores Range restarts cleanly, and a wrong sha256 never installs anything."""

from __future__ import annotations

import hashlib
import logging

import pytest

from station.download import download, part_path
from station.inference.metadata import ModelError

from .http_files import FileServer

BODY = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    with FileServer() as s:
        s.state.files["/ck.pt"] = BODY
        yield s


def test_a_cut_connection_is_resumed_with_range_in_the_same_call(tmp_path, server, caplog):
    server.state.cut_after = [300_000]
    dest = tmp_path / "ck.pt"
    with caplog.at_level(logging.INFO):
        download(f"{server.url}/ck.pt", dest, SHA, size=len(BODY), retry_pause_s=0)
    assert dest.read_bytes() == BODY and not part_path(dest).exists()
    assert server.state.requests == [("/ck.pt", None), ("/ck.pt", "bytes=300000-")]
    assert "interrupted at byte 300000" in caplog.text and "trying again (1/4)" in caplog.text


def test_a_download_that_keeps_failing_leaves_its_part_and_the_next_call_resumes(tmp_path, server):
    server.state.cut_after = [100_000, 0]
    dest = tmp_path / "ck.pt"
    with pytest.raises(ModelError, match=r"after 2 attempts.*100000 bytes kept .* run again to resume"):
        download(f"{server.url}/ck.pt", dest, SHA, attempts=2, retry_pause_s=0)
    assert part_path(dest).stat().st_size == 100_000 and not dest.exists()
    download(f"{server.url}/ck.pt", dest, SHA, retry_pause_s=0)
    assert dest.read_bytes() == BODY
    assert server.state.requests[-1] == ("/ck.pt", "bytes=100000-")


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path, server):
    server.state.cut_after = [200_000]
    server.state.ignore_range = True
    dest = tmp_path / "ck.pt"
    download(f"{server.url}/ck.pt", dest, SHA, retry_pause_s=0)
    assert dest.read_bytes() == BODY  # not 200 kB of head + the whole file again


def test_a_stale_part_of_another_file_is_detected_and_fetched_again(tmp_path, server):
    dest = tmp_path / "ck.pt"
    part_path(dest).write_bytes(b"x" * 5000)  # left by some other version of the file
    download(f"{server.url}/ck.pt", dest, SHA, retry_pause_s=0)
    assert dest.read_bytes() == BODY
    assert [r for _, r in server.state.requests] == ["bytes=5000-", None]


def test_a_whole_part_is_checked_not_fetched_again(tmp_path, server):
    dest = tmp_path / "ck.pt"
    part_path(dest).write_bytes(BODY)  # a run that died between the last byte and the rename
    download(f"{server.url}/ck.pt", dest, SHA, retry_pause_s=0)
    assert dest.read_bytes() == BODY and server.state.requests == [("/ck.pt", f"bytes={len(BODY)}-")]  # 416


def test_wrong_sha_installs_nothing_and_a_missing_file_is_not_retried(tmp_path, server):
    dest = tmp_path / "ck.pt"
    with pytest.raises(ModelError, match="does not match the pinned"):
        download(f"{server.url}/ck.pt", dest, "0" * 64, retry_pause_s=0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ModelError, match="HTTP 404"):
        download(f"{server.url}/nope.pt", dest, SHA, retry_pause_s=0)
    assert len(server.state.requests) == 2  # one GET each: a 404 is an answer, not a fault


def test_nothing_listening_is_a_clear_error(tmp_path):
    with FileServer() as s:
        url = s.url
    with pytest.raises(ModelError, match="download failed after 2 attempts"):
        download(f"{url}/ck.pt", tmp_path / "ck.pt", SHA, attempts=2, retry_pause_s=0, timeout_s=5)


def test_a_file_url_serves_a_checkpoint_brought_in_by_hand(tmp_path):
    src = tmp_path / "usb" / "ck.pt"
    src.parent.mkdir()
    src.write_bytes(BODY)
    dest = tmp_path / "models" / "ck.pt"
    download(src.as_uri(), dest, SHA)
    assert dest.read_bytes() == BODY
