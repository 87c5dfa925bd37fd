"""SAM-assisted outlining for the review page: a box drawn on a stored image comes back as the
defect's outline.

``SamOutliner`` loads a SAM encoder/decoder pair once (pulled into the station's models
directory if missing: ``station.models_store``), encodes each archived image once (a small
LRU cache keyed by the image's archive id and the pair) and runs the decoder per box. It is
plain, thread-safe Python: the page calls it through ``nicegui.run.io_bound`` so the web
server's event loop never waits for a model (ONNX Runtime releases the GIL while it runs).

Which pair: the recipe's ``vision.segmentation`` (the one the recipe outlines with), else
``DEFAULT_SEGMENTATION`` for recipes without one (the threshold analyzer has no SAM pair).
Coordinates are view pixels, boxes (x0, y0, x1, y1) with x1/y1 exclusive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from station.recipe import Recipe, SamVision

DEFAULT_SEGMENTATION = "litemedsam"
MIN_BOX_PX = 3  # a smaller drag is a click


@dataclass(frozen=True)
class Outline:
    mask: np.ndarray  # bool HxW, the view's frame
    box: tuple[int, int, int, int]  # the mask's bounding box (the drawn box when the mask is empty)
    iou: float  # the decoder's own estimate of the mask's quality
    encoded_now: bool  # False: the image's embedding came from the cache


def segmentation_of(recipe: Recipe | None) -> str:
    """The SAM encoder a recipe's parts are outlined with."""
    if recipe is not None and isinstance(recipe.vision, SamVision):
        return recipe.vision.segmentation
    return DEFAULT_SEGMENTATION


def normalise_box(x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """A dragged rectangle (any corner order, image px) clipped to ``shape`` (H, W); None for a click."""
    h, w = shape
    a, b = sorted((x0, x1)), sorted((y0, y1))
    box = (max(0, int(a[0])), max(0, int(b[0])), min(w, int(np.ceil(a[1]))), min(h, int(np.ceil(b[1]))))
    if box[2] - box[0] < MIN_BOX_PX or box[3] - box[1] < MIN_BOX_PX:
        return None
    return box


class SamOutliner:
    """Box -> outline with a SAM pair, one encoder run per image (see the module doc)."""

    def __init__(self, models_dir: Path, *, cache_images: int = 8, backend: str = "onnxruntime"):
        self.models_dir = Path(models_dir)
        self.backend = backend
        self.cache_images = cache_images
        self._lock = threading.Lock()
        self._pairs: dict[str, object] = {}
        self._encoded: OrderedDict[tuple[str, str], object] = OrderedDict()
        self.encoder_runs = 0  # for tests and the page: how often an image was encoded

    def segmenter(self, name: str):
        """The SamSegmenter of encoder ``name`` (its decoder from its metadata), loaded once. Raises ModelError."""
        with self._lock:
            found = self._pairs.get(name)
        if found is not None:
            return found
        from station.inference.factory import load_model
        from station.inference.metadata import ModelMetadata
        from station.models_store import pull
        from station.vision.segmentation import SamSegmenter

        pull(name, self.models_dir)
        decoder = ModelMetadata.read(self.models_dir / f"{name}.json").pair
        seg = SamSegmenter(load_model(self.models_dir, name, self.backend, 0), load_model(self.models_dir, decoder, self.backend, 0))
        with self._lock:
            return self._pairs.setdefault(name, seg)

    def describe(self, name: str) -> str:
        """"name sha256-prefix" of the pair, stored with every label it outlined."""
        meta = self.segmenter(name).encoder.metadata
        return f"{meta.name} {meta.sha256[:12]}"

    def takes_points(self, name: str) -> bool:
        return "point" in self.segmenter(name).decoder.metadata.prompts

    def outline(self, name: str, image_key: str, image: np.ndarray, box: tuple[int, int, int, int]) -> Outline:
        """The defect's outline inside ``box`` on ``image`` (uint8 HxW or HxWx3), encoded once per ``image_key``."""
        seg = self.segmenter(name)
        key = (name, image_key)
        with self._lock:
            encoded = self._encoded.get(key)
            if encoded is not None:
                self._encoded.move_to_end(key)
        fresh = encoded is None
        if fresh:
            encoded = seg.encode(image)
            with self._lock:
                self.encoder_runs += 1
                self._encoded[key] = encoded
                while len(self._encoded) > self.cache_images:
                    self._encoded.popitem(last=False)
        mask, iou = seg.box_mask(encoded, box)
        x0, y0, x1, y1 = box
        inside = np.zeros_like(mask)
        inside[y0:y1, x0:x1] = True  # the defect is what the person boxed: nothing outside it
        mask = mask & inside
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else box
        return Outline(mask, bbox, iou, fresh)


def svg_path(mask: np.ndarray) -> str:
    """The outer outlines of ``mask`` as an SVG path (image px), empty for an empty mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    parts = []
    for c in contours:
        pts = c.reshape(-1, 2)
        if len(pts) < 2:
            continue
        parts.append("M" + " L".join(f"{x + 0.5:.1f} {y + 0.5:.1f}" for x, y in pts) + " Z")
    return " ".join(parts)


__all__ = ["SamOutliner", "Outline", "segmentation_of", "normalise_box", "svg_path", "DEFAULT_SEGMENTATION"]
