"""A simulated camera: synthetic part images with known defects and ground truth.

The part is a machined grey plate on a dark conveyor with a soft lighting gradient and
fine texture. A defective part carries one defect of a class chosen from the config:

- ``scratch``: a thin straight bright line (specular), 1–2 px wide, 40–140 px long;
- ``crack``: a dark jagged polyline, 1–3 px wide;
- ``stain``: a dark soft-edged elliptical blob, 6–22 px radius.

Images are deterministic in (seed, n) where n counts grabs from 0, so a run is reproducible.
Ground truth: ``View.ground_truth = {class: bool mask}`` and ``View.truth_class``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from station.camera.base import Camera
from station.config import SimulatedCameraConfig
from station.inspection import View

GOOD = "good"
PLATE_MARGIN = 0.12  # plate inset from the image border, as a share of the side


@dataclass(frozen=True)
class SyntheticPart:
    image: np.ndarray  # uint8 HxWx3 RGB
    truth_class: str  # GOOD or a defect class
    masks: dict[str, np.ndarray]  # class -> bool HxW


def plate_rect(width: int, height: int) -> tuple[int, int, int, int]:
    """The plate's rectangle (x0, y0, x1, y1) px: the inspection zone of the demo recipe."""
    mx, my = int(width * PLATE_MARGIN), int(height * PLATE_MARGIN)
    return mx, my, width - mx, height - my


def _plate(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w), 22.0, np.float32) + rng.normal(0, 2.0, (h, w)).astype(np.float32)
    x0, y0, x1, y1 = plate_rect(w, h)
    gx, gy = rng.uniform(-0.04, 0.04, 2)
    base = rng.uniform(140, 160)
    plate = base + gx * (xx - w / 2) + gy * (yy - h / 2)
    texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.2)
    plate = plate + texture
    img[y0:y1, x0:x1] = plate[y0:y1, x0:x1]
    return img


def _defect_mask(rng: np.random.Generator, cls: str, w: int, h: int) -> tuple[np.ndarray, float]:
    """Return (bool mask, grey level to paint) for one defect placed inside the plate."""
    x0, y0, x1, y1 = plate_rect(w, h)
    pad = 25
    cx, cy = int(rng.integers(x0 + pad, x1 - pad)), int(rng.integers(y0 + pad, y1 - pad))
    canvas = np.zeros((h, w), np.uint8)
    if cls == "scratch":
        length, angle = rng.uniform(40, 140), rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        p0 = (int(np.clip(cx - dx, x0 + 2, x1 - 3)), int(np.clip(cy - dy, y0 + 2, y1 - 3)))
        p1 = (int(np.clip(cx + dx, x0 + 2, x1 - 3)), int(np.clip(cy + dy, y0 + 2, y1 - 3)))
        cv2.line(canvas, p0, p1, 255, int(rng.integers(1, 3)), cv2.LINE_8)
        level = rng.uniform(225, 250)
    elif cls == "crack":
        n = int(rng.integers(5, 10))
        angle = rng.uniform(0, np.pi)
        pts = [(cx, cy)]
        for _ in range(n):
            angle += rng.normal(0, 0.5)
            step = rng.uniform(6, 14)
            px = int(np.clip(pts[-1][0] + np.cos(angle) * step, x0 + 2, x1 - 3))
            py = int(np.clip(pts[-1][1] + np.sin(angle) * step, y0 + 2, y1 - 3))
            pts.append((px, py))
        cv2.polylines(canvas, [np.array(pts, np.int32)], False, 255, int(rng.integers(1, 4)), cv2.LINE_8)
        level = rng.uniform(25, 45)
    elif cls == "stain":
        axes = (int(rng.integers(6, 23)), int(rng.integers(6, 23)))
        cv2.ellipse(canvas, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        level = rng.uniform(55, 80)
    else:
        raise ValueError(f"simulated camera cannot draw defect class {cls!r} (knows scratch, crack, stain)")
    return canvas > 0, level


def synthesize_part(seed: int, n: int, width: int, height: int, defect_rate: float, classes: list[str]) -> SyntheticPart:
    """The n-th part of a seeded sequence (deterministic)."""
    rng = np.random.default_rng([seed, n])
    img = _plate(rng, width, height)
    masks: dict[str, np.ndarray] = {}
    truth = GOOD
    if classes and rng.random() < defect_rate:
        truth = classes[int(rng.integers(len(classes)))]
        mask, level = _defect_mask(rng, truth, width, height)
        # soften the edge so the defect is not a perfect step
        core = mask.astype(np.float32)
        soft = np.maximum(core, cv2.GaussianBlur(core, (0, 0), 0.7))
        img = img * (1 - soft) + level * soft
        masks[truth] = mask
    img = np.clip(img + rng.normal(0, 1.5, img.shape), 0, 255).astype(np.uint8)
    rgb = np.repeat(img[:, :, None], 3, axis=2)
    return SyntheticPart(rgb, truth, masks)


class SimulatedCamera(Camera):
    """Delivers synthetic parts on demand; the grab is instant (no exposure time is simulated)."""

    def __init__(self, config: SimulatedCameraConfig):
        self.config = config
        self.name = config.name
        self._n = 0
        self._lock = threading.Lock()
        self._open = False

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open

    def grab(self, part_id: int, timeout_s: float) -> View:
        from station.camera.base import CameraError

        if not self._open:
            raise CameraError(f"camera {self.name} is not open")
        with self._lock:
            n = self._n
            self._n += 1
        c = self.config
        part = synthesize_part(c.seed, n, c.width, c.height, c.defect_rate, c.classes)
        return View(
            camera=self.name,
            image=part.image,
            frame_id=n,
            timestamp_s=time.time(),
            source=f"simulated:{c.seed}:{n}",
            ground_truth=part.masks,
            truth_class=part.truth_class,
        )

    def sample_view(self) -> View:
        c = self.config
        part = synthesize_part(c.seed + 1, 0, c.width, c.height, 1.0, c.classes)  # a defective one: every stage runs
        return View(camera=self.name, image=part.image, source="simulated:sample")

    def describe(self) -> dict:
        c = self.config
        return {"name": self.name, "type": "simulated", "model": f"synthetic {c.width}x{c.height}", "seed": c.seed}
