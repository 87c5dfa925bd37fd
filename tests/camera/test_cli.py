"""`station camera list` and `station camera grab` against the GenTL simulator."""

from __future__ import annotations

import cv2

from station.cli import main


def test_list_shows_producer_and_devices(capsys, viky_cti):
    assert main(["camera", "list", "--cti", str(viky_cti)]) == 0
    out = capsys.readouterr().out
    assert f"{viky_cti}  ok" in out
    assert "[0] Machine Vision Games Ltd. Viky serial '0'" in out
    assert "[2] Machine Vision Games Ltd. Viky serial '2'" in out


def test_list_json_with_a_broken_producer_beside(capsys, viky_cti, tmp_path):
    import json

    broken = tmp_path / "broken.cti"
    broken.write_bytes(b"junk")
    assert main(["camera", "list", "--simulator", "--cti", str(broken), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_path = {p["path"]: p for p in data["producers"]}
    assert by_path[str(viky_cti)]["ok"] is True
    assert by_path[str(broken)]["ok"] is False and "cannot be loaded" in by_path[str(broken)]["problem"]
    assert [d["serial_number"] for d in data["devices"]] == ["0", "1", "2"]


def test_list_with_only_a_missing_producer_fails_naming_it(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    missing = tmp_path / "gone.cti"
    assert main(["camera", "list", "--cti", str(missing)]) == 1
    assert f"GenTL producer {missing} does not exist" in capsys.readouterr().out


def test_grab_writes_pngs_and_prints_fps_and_drops(capsys, viky_cti, tmp_path):
    out_dir = tmp_path / "frames"
    rc = main(["camera", "grab", "--cti", str(viky_cti), "--device", "1", "--count", "25", "--out", str(out_dir),
               "--feature", "AcquisitionFrameRate=200", "--feature", "Width=200", "--feature", "Height=100",
               "--feature", "PixelFormat=RGBa8"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "serial '1'" in out and "grabbed 25 frames" in out and " fps; dropped " in out
    assert "streamed frame latency: median " in out and " ms, p99 " in out
    files = sorted(out_dir.glob("frame_*.png"))
    assert len(files) == 25
    img = cv2.imread(str(files[-1]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (100, 200, 3)


def test_grab_unknown_device_names_it(capsys, viky_cti, tmp_path):
    rc = main(["camera", "grab", "--cti", str(viky_cti), "--device", "SN-123", "--count", "1", "--out", str(tmp_path)])
    assert rc == 1
    assert "no device 'SN-123'" in capsys.readouterr().err


def test_grab_unknown_feature_warns_and_still_grabs(capsys, viky_cti, tmp_path):
    rc = main(["camera", "grab", "--simulator", "--count", "2", "--out", str(tmp_path), "--feature", "GainRaw=3"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "feature 'GainRaw' does not exist on the device" in captured.err
    assert len(list(tmp_path.glob("frame_*.png"))) == 2


def test_grab_per_part_measures_the_pipeline_path(capsys, viky_cti, tmp_path):
    rc = main(["camera", "grab", "--simulator", "--count", "10", "--out", str(tmp_path), "--per-part",
               "--feature", "AcquisitionFrameRate=200"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "per-part grab (flush, trigger, fresh frame) latency: median" in out
    # every per-part grab throws away at least the frame in flight (free-run on the simulator)
    assert int(out.split("stale discarded ")[1].split(";")[0]) >= 10


def test_no_producer_at_all_is_a_usage_error(capsys, monkeypatch):
    import pytest

    monkeypatch.delenv("GENICAM_GENTL64_PATH", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["camera", "list"])
    assert exit_info.value.code == 2
    assert "no GenTL producer: pass --cti PATH, set GENICAM_GENTL64_PATH, or use --simulator" in capsys.readouterr().err


def test_bad_feature_syntax_is_a_usage_error(capsys, tmp_path):
    import pytest

    with pytest.raises(SystemExit) as exit_info:
        main(["camera", "grab", "--simulator", "--count", "1", "--out", str(tmp_path), "--feature", "Width"])
    assert exit_info.value.code == 2
    assert "--feature 'Width': expected NAME=VALUE" in capsys.readouterr().err
