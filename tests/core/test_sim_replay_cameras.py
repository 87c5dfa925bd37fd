"""Simulated and replay cameras: reproducible ground truth, real photos from shared/, bad input."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from station.alarms import AlarmBoard
from station.images import ImageError
from station.camera import CameraError, make_camera
from station.camera.simulated import plate_rect, synthesize_part
from station.config import ReplayCameraConfig, SimulatedCameraConfig


def test_simulated_parts_are_reproducible_and_cover_every_class():
    cfg = SimulatedCameraConfig(seed=3, defect_rate=0.8)
    a, b = make_camera(cfg, AlarmBoard()), make_camera(cfg, AlarmBoard())
    a.open(), b.open()
    views_a = [a.grab(i, 1.0) for i in range(40)]
    views_b = [b.grab(i, 1.0) for i in range(40)]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(views_a, views_b))
    classes = {v.truth_class for v in views_a}
    assert classes == {"good", "scratch", "crack", "stain"}
    for v in views_a:
        assert v.image.shape == (480, 640, 3) and v.image.dtype == np.uint8
        if v.truth_class == "good":
            assert v.ground_truth == {}
        else:
            mask = v.ground_truth[v.truth_class]
            x0, y0, x1, y1 = plate_rect(640, 480)
            ys, xs = np.nonzero(mask)
            assert mask.sum() > 10 and xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1
            grey = v.image[:, :, 0].astype(int)
            # the defect differs visibly from the plate around it
            assert abs(grey[mask].mean() - grey[y0:y1, x0:x1][~mask[y0:y1, x0:x1]].mean()) > 40


def test_different_seeds_give_different_parts():
    p1 = synthesize_part(1, 0, 320, 240, 1.0, ["stain"])
    p2 = synthesize_part(2, 0, 320, 240, 1.0, ["stain"])
    assert not np.array_equal(p1.image, p2.image)


def test_unknown_simulated_class_is_a_clear_error():
    with pytest.raises(ValueError, match="blob"):
        synthesize_part(1, 0, 320, 240, 1.0, ["blob"])


def test_replay_plays_real_tile_manifest_with_masks_and_loops(shared_dir, tmp_path):
    src = shared_dir / "data/magnetic-tile-train/manifest.csv"
    rows = list(csv.DictReader(open(src)))
    crack = [r for r in rows if r["class"] == "crack"][:2]
    free = [r for r in rows if r["class"] == "free"][:1]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "class"])
        for r in crack + free:
            w.writerow([str(src.parent / r["image"]), str(src.parent / r["mask"]), r["class"]])
    cam = make_camera(ReplayCameraConfig(path=manifest), AlarmBoard())
    cam.open()
    views = [cam.grab(i, 1.0) for i in range(4)]
    assert [v.truth_class for v in views] == ["crack", "crack", "free", "crack"]
    assert views[0].image.ndim == 2 and views[0].image.dtype == np.uint8
    assert views[0].ground_truth["crack"].shape == views[0].image.shape and views[0].ground_truth["crack"].any()
    assert np.array_equal(views[0].image, views[3].image)  # looped


def test_replay_folder_without_loop_ends_with_camera_error(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 30, 3), (10 * i, 50, 200), np.uint8))
    cam = make_camera(ReplayCameraConfig(path=tmp_path, loop=False), AlarmBoard())
    cam.open()
    first = cam.grab(1, 1.0)
    assert first.image.shape == (20, 30, 3) and tuple(first.image[0, 0]) == (200, 50, 0)  # RGB order
    cam.grab(2, 1.0)
    with pytest.raises(CameraError, match="end of replay"):
        cam.grab(3, 1.0)


def test_replay_bad_sources_name_the_problem(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cam = make_camera(ReplayCameraConfig(path=tmp_path), AlarmBoard())
    cam.open()
    # the camera delivered; what it delivered is not an image: image_error, not camera_error
    with pytest.raises(ImageError, match="broken.png.*unreadable"):
        cam.grab(1, 1.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="no images"):
        make_camera(ReplayCameraConfig(path=empty), AlarmBoard()).open()
    bad_manifest = tmp_path / "m.csv"
    bad_manifest.write_text("picture,class\na.png,free\n")
    with pytest.raises(CameraError, match="'image' column"):
        make_camera(ReplayCameraConfig(path=bad_manifest), AlarmBoard()).open()
