"""A replay camera: plays images from a folder or a manifest CSV, in order, looping.

Manifest CSV columns: ``image`` (path relative to the manifest), optional ``mask`` (same
size, >=128 means defect), optional ``class``; extra columns are kept in ``View.source``
only as the image path. Mono images are delivered as HxW uint8, colour as HxWx3 RGB (16-bit
files keep their high byte).
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.camera.base import Camera, CameraError
from station.config import ReplayCameraConfig
from station.images import DEFAULT_MAX_PIXELS, read_image_file
from station.inspection import View

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class ReplayItem:
    image: Path
    mask: Path | None = None
    truth_class: str | None = None


def read_manifest(path: Path) -> list[ReplayItem]:
    """Rows of a manifest CSV, paths resolved against its folder. Raises ValueError if unusable."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise ValueError(f"{path}: manifest needs an 'image' column (has {reader.fieldnames})")
        items = []
        for row in reader:
            mask = (row.get("mask") or "").strip()
            items.append(
                ReplayItem(
                    image=(path.parent / row["image"].strip()),
                    mask=(path.parent / mask) if mask else None,
                    truth_class=(row.get("class") or "").strip() or None,
                )
            )
    return items


def list_items(source: Path) -> list[ReplayItem]:
    if source.is_dir():
        return [ReplayItem(p) for p in sorted(source.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if source.suffix.lower() == ".csv":
        return read_manifest(source)
    raise ValueError(f"{source}: replay source must be a folder of images or a manifest .csv")


class ReplayCamera(Camera):
    """Images are decoded by ``station.images.read_image_file``: a truncated, corrupt or oversized
    file raises ImageError (the pipeline rejects the part as image_error), not CameraError."""

    def __init__(self, config: ReplayCameraConfig, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.config = config
        self.max_pixels = max_pixels
        self.name = config.name
        self._items: list[ReplayItem] = []
        self._n = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        try:
            items = list_items(self.config.path)
        except (OSError, ValueError) as exc:
            raise CameraError(f"camera {self.name}: {exc}") from None
        if not items:
            raise CameraError(f"camera {self.name}: no images in {self.config.path}")
        if self.config.shuffle_seed is not None:
            order = np.random.default_rng(self.config.shuffle_seed).permutation(len(items))
            items = [items[i] for i in order]
        self._items = items

    def close(self) -> None:
        self._items = []

    @property
    def connected(self) -> bool:
        return bool(self._items)

    def grab(self, part_id: int, timeout_s: float) -> View:
        with self._lock:
            if not self._items:
                raise CameraError(f"camera {self.name} is not open")
            if self._n >= len(self._items) and not self.config.loop:
                raise CameraError(f"camera {self.name}: end of replay ({len(self._items)} images)")
            n = self._n
            item = self._items[n % len(self._items)]
            self._n += 1
        image = read_image_file(item.image, max_pixels=self.max_pixels)  # ImageError: not an image to inspect
        try:
            truth = None
            if item.mask is not None:
                mask = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
                if mask is None or mask.shape[:2] != image.shape[:2]:
                    raise ValueError(f"{item.mask}: unreadable or not the size of its image")
                if item.truth_class:
                    truth = {item.truth_class: mask >= 128}
        except ValueError as exc:
            raise CameraError(f"camera {self.name}: {exc}") from None
        return View(
            camera=self.name,
            image=image,
            frame_id=n,
            timestamp_s=time.time(),
            source=str(item.image),
            ground_truth=truth,
            truth_class=item.truth_class,
        )

    def sample_view(self) -> View | None:
        """The first image of the replay (the replay's position does not move)."""
        if not self._items:
            return None
        try:
            image = read_image_file(self._items[0].image, max_pixels=self.max_pixels)
            return View(camera=self.name, image=image, source=str(self._items[0].image))
        except ValueError:
            return None

    def describe(self) -> dict:
        return {"name": self.name, "type": "replay", "source": str(self.config.path), "images": len(self._items)}
