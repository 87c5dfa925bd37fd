"""Issue 19.1: a broken image never gets a verdict.

Real files: a real magnetic-tile photo from ../shared/data cut to a third of its length (and the
same cut with an end-of-image marker appended, which every lenient decoder fills with grey),
a PNG whose IHDR announces 20000 x 20000 px in 48 KB, a PNG with one flipped byte (its IDAT CRC
fails). They go through the replay camera and the real pipeline to a PLC on real Modbus (result
code 0xFFFF, REJECT, an alarm, a history row with reason image_error), and through
`station inspect` and `station eval` (skipped rows with the reason).
"""

from __future__ import annotations

import csv
import json
import sqlite3
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.app import Station
from station.camera.pixels import PayloadSizeError, pack, to_station_image
from station.config import StationConfig
from station.images import ImageError, decode_image, read_image_file
from station.plc.registers import NO_RESULT, Out, Status
from tests.plc.conftest import PlcMaster, free_port, part_id_of
from tests.vision.conftest import BLOB_RECIPE

REPO_ROOT = Path(__file__).resolve().parents[2]
TILE = "magnetic-tile-train/MT_Free/Imgs/exp1_num_106151.jpg"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int = 20000) -> bytes:
    """A real PNG: IHDR announcing side x side 8-bit grey, the first 2500 rows of zeros, IEND (48 KB)."""
    rows = zlib.compress(b"".join(b"\0" * (side + 1) for _ in range(2500)), 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


@pytest.fixture
def broken(tmp_path, shared_dir) -> dict[str, Path]:
    """The intact tile and its broken copies, in replay order."""
    tile = (shared_dir / "data" / TILE).read_bytes()
    d = tmp_path / "images"
    d.mkdir()
    ok, png = cv2.imencode(".png", cv2.imread(str(shared_dir / "data" / TILE), cv2.IMREAD_GRAYSCALE))
    flipped = bytearray(png.tobytes())
    flipped[len(flipped) // 2] ^= 0xFF
    files = {
        "intact": ("1-intact.jpg", tile),
        "cut": ("2-cut-to-a-third.jpg", tile[: len(tile) // 3]),
        "cut_eoi": ("3-cut-then-eoi.jpg", tile[: len(tile) // 3] + b"\xff\xd9"),
        "bomb": ("4-20000x20000.png", bomb_png()),
        "flipped": ("5-flipped-byte.png", bytes(flipped)),
        "intact_again": ("6-intact.jpg", tile),
    }
    out = {}
    for key, (name, data) in files.items():
        (d / name).write_bytes(data)
        out[key] = d / name
    return out


def test_decoding_refuses_truncated_corrupt_and_oversized_files(broken):
    assert read_image_file(broken["intact"]).shape == (359, 248)
    # OpenCV fills the cut JPEG with grey and returns it: the behaviour this replaces
    assert cv2.imread(str(broken["cut"]), cv2.IMREAD_GRAYSCALE) is not None
    with pytest.raises(ImageError, match="truncated JPEG"):
        read_image_file(broken["cut"])
    with pytest.raises(ImageError, match="JPEG .*premature end of data segment"):
        read_image_file(broken["cut_eoi"])
    with pytest.raises(ImageError, match=r"header announces 400000000 px \(400.0 MP\), more than the limit of 40 MP"):
        read_image_file(broken["bomb"])
    with pytest.raises(ImageError, match="corrupt PNG .*checksum"):
        read_image_file(broken["flipped"])
    png = cv2.imencode(".png", read_image_file(broken["intact"]))[1].tobytes()
    with pytest.raises(ImageError, match="truncated PNG"):
        decode_image(png[: len(png) // 3])
    with pytest.raises(ImageError, match="more than the limit of 0.05 MP"):
        decode_image(png, max_pixels=50_000)  # 248 x 359 = 89,032 px


def test_the_oversized_png_is_refused_from_its_header_without_the_memory(broken):
    """Peak memory of a fresh process that refuses the 20000 x 20000 PNG: decoding it would
    need 400 MB for the pixels alone."""
    probe = (  # VmHWM: this process's own peak (ru_maxrss carries the forking parent's over exec)
        "import re, sys, time\n"
        "hwm = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) / 1024\n"
        "from station.images import read_image_file, ImageError\n"
        "base = hwm()\n"
        "t = time.perf_counter()\n"
        "try:\n    read_image_file(sys.argv[1])\nexcept ImageError as exc:\n    print(exc, file=sys.stderr)\n"
        "else:\n    sys.exit('decoded')\n"
        "print((time.perf_counter() - t) * 1000, hwm() - base, hwm())\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(broken["bomb"])], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ms, extra_mb, peak_mb = (float(v) for v in proc.stdout.split())
    assert extra_mb < 50, f"refusing the PNG grew the process by {extra_mb:.0f} MB"
    assert peak_mb < 200, f"the process peaked at {peak_mb:.0f} MB"  # its pixels alone are 400 MB
    assert "header announces 400000000 px" in proc.stderr


def test_genicam_payloads_of_the_wrong_size_are_image_errors():
    image = np.arange(48, dtype=np.uint8).reshape(6, 8)
    payload = pack(image, "Mono8")
    assert np.array_equal(to_station_image(payload, 8, 6, "Mono8"), image)
    for wrong in (payload[:-8], payload + b"\0" * 8):  # a line short; a line too many
        with pytest.raises(PayloadSizeError, match="Mono8 8x6 needs 48 bytes"):
            to_station_image(wrong, 8, 6, "Mono8")
    assert issubclass(PayloadSizeError, ImageError)


def station_config(tmp_path: Path, images: Path, port: int) -> StationConfig:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "blobs.toml").write_text(BLOB_RECIPE.format(extra=""), encoding="utf-8")
    return StationConfig.model_validate({
        "station_id": "broken-images",
        "recipes_dir": str(recipes),
        "active_recipe": "blobs",
        "models_dir": str(tmp_path / "models"),
        "cameras": [{"type": "replay", "name": "top", "path": str(images), "loop": False}],
        "plc": {"host": "127.0.0.1", "port": port},
        "database": {"url": f"sqlite:///{tmp_path / 'history.db'}"},
        "archive": {"dir": str(tmp_path / "archive")},
        "inference": {"backend": "onnxruntime"},
        "hmi": {"enabled": False},
    })


def test_broken_images_through_replay_pipeline_and_modbus_are_failsafe_rejects(tmp_path, broken):
    port = free_port()
    station = Station(station_config(tmp_path, broken["intact"].parent, port))
    station.start()
    plc = PlcMaster(port)
    seen = []
    try:
        for part in range(1, 7):
            answer = plc.trigger(part)
            assert answer[Out.STATUS] & Status.TRIGGER_ACK, answer
            out = plc.take_result()
            seen.append((part_id_of(out), out[Out.RESULT_CODE], bool(out[Out.STATUS] & Status.PASS),
                         bool(out[Out.STATUS] & Status.REJECT)))
        alarms = {a.key for a in station.alarms.all()}  # raised, and cleared by the next good part
        station.history.flush(10)
    finally:
        plc.close()
        station.stop()
    codes = {pid: code for pid, code, _, _ in seen}
    for pid in (2, 3, 4, 5):  # cut, cut + EOI, 20000 x 20000, flipped byte: never a verdict
        assert codes[pid] == NO_RESULT, seen
        assert seen[pid - 1][2:] == (False, True), seen
    for pid in (1, 6):  # the intact tile, before and after: inspected normally
        assert codes[pid] != NO_RESULT, seen
    assert "part_failed:image_error" in alarms
    with sqlite3.connect(tmp_path / "history.db") as db:
        rows = db.execute("SELECT part_id, reject_reason, plc_code, error FROM inspections ORDER BY part_id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
    for pid, reason, code, error in rows[1:5]:
        assert (reason, code) == ("image_error", NO_RESULT) and "camera top: image" in error, (pid, error)
    assert "truncated JPEG" in rows[1][3] and "400.0 MP" in rows[3][3]
    assert rows[0][1] != "image_error" and rows[5][1] != "image_error"


def test_station_inspect_and_eval_skip_broken_images_with_the_reason(tmp_path, broken):
    recipe = tmp_path / "blobs.toml"
    recipe.write_text(BLOB_RECIPE.format(extra=""), encoding="utf-8")
    paths = [str(broken[k]) for k in ("intact", "cut", "cut_eoi", "bomb", "flipped")]
    proc = subprocess.run([sys.executable, "-m", "station.cli", "inspect", "--recipe", str(recipe), "--json",
                           "--models-dir", str(tmp_path / "models"), *paths],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr  # some images were not inspected
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "verdict" in rows[0] and "skipped" not in rows[0]
    assert [("skipped" in r) for r in rows[1:]] == [True] * 4 and not any("verdict" in r for r in rows[1:])
    assert "truncated JPEG" in rows[1]["skipped"] and "400.0 MP" in rows[3]["skipped"]

    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "class"])
        for p in paths:
            w.writerow([p, "good"])
    proc = subprocess.run([sys.executable, "-m", "station.cli", "eval", "--recipe", str(recipe), "--data", str(manifest),
                           "--json", "--models-dir", str(tmp_path / "models")],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["images"] == 1 and m["skipped"] == 4
    assert m["skipped_reasons"] == {"truncated": 2, "corrupt": 1, "too many pixels": 1}, m["skipped_reasons"]
