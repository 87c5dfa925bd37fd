"""Defect finding on a frozen pretrained backbone: view -> backbone -> per-cell head -> class map.

Two models (``station.inference``), both plain ONNX with metadata:

- the **backbone** (role ``"backbone"``, e.g. ``efficientnet-lite0`` from ``station models pull``,
  exported by models/export/efficientnet.py): in ``image`` float32 [1, 3, H, W], H and W multiples
  of 32, scaled as its metadata ``input`` says ((x - 127) / 128 for EfficientNet-Lite); out the
  feature maps ``s8``, ``s16``, ``s32`` (strides 8, 16, 32);
- the **head** (role ``"proposals"``, ``extra.input = "backbone"``, trained by
  models/train/backbone_head.py): in ``s8``, ``s16``, ``s32``, out ``probs`` [1, K+1, H/8, W/8],
  class probabilities per stride-8 cell (0 = background). ``extra.backbone_sha256`` names the
  backbone it was trained on (another backbone's features mean nothing to it: refused), and
  ``extra.short_side`` the input size it was trained at.

The view's model input (``model_size``): resized (aspect kept) so that its short side is the
head's ``short_side`` px, each side then rounded to a multiple of 32; no padding, so the cell
grid covers exactly the view. On a line a camera's views have one size, so a recipe's model
input is one fixed shape (what the NPU needs). With ``extra.flip_tta`` the backbone also runs
on the mirrored view and the two feature maps are averaged before the head (measured on the
magnetic tiles: better ranked, at twice the backbone's cost).

``BackboneProposer`` is a ``Proposer`` (station.vision.proposals): ``probabilities`` gives float32
[K+1, H, W] over the view's own pixels, like ``ProposalStage.probabilities``, so the analyzer's
region, threshold and classifier code uses it unchanged; its ``find`` returns ``Finding``s
(``Proposal`` + region shape from ``skimage.measure.regionprops``) for area, extent, orientation
and eccentricity rules. ``view_score`` is the view's defect log-odds (the highest cell's), the
score grouped cross-validation ranked views by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage import measure

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError, ModelMetadata
from station.recipe import Preprocess
from station.vision.proposals import BACKGROUND, MIN_REGION_PX, Proposal, Proposer, _inner, outline
from station.vision.preprocess import model_view_settings
from station.vision.segmentation import EncodedView

OUTPUTS = ("s8", "s16", "s32")
CELL_PX = 8  # model px per cell of the head's map (the s8 grid)
MULTIPLE = 32  # model input sides are multiples of the coarsest stride
LOGIT_CLIP = 1e-6
TYPE_CELLS = 10  # a region is named by its most defective cells (grouped CV: better than all of its pixels)


def model_size(view_hw: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(H, W) model px for a view of ``view_hw`` px: short side scaled to ``short_side``, aspect
    kept, each side rounded to the nearest multiple of 32 (at least 32)."""
    h, w = view_hw
    s = short_side / min(h, w)
    return max(MULTIPLE, round(h * s / MULTIPLE) * MULTIPLE), max(MULTIPLE, round(w * s / MULTIPLE) * MULTIPLE)


@dataclass(frozen=True)
class BackboneFeatures:
    """One view through the backbone: its feature maps and the frames they live in."""

    maps: dict[str, np.ndarray]  # "s8", "s16", "s32": float32 [1, C, H/s, W/s]
    view_hw: tuple[int, int]  # the view, px
    model_hw: tuple[int, int]  # the resized view the backbone saw, model px (no padding)


class Backbone:
    """The backbone model behind one call: a grey view in, its feature maps out."""

    def __init__(self, model: InferenceModel):
        meta = model.metadata
        if meta.role != "backbone":
            raise ModelError(f"model {meta.name}: role {meta.role!r}, expected 'backbone'")
        spec = meta.input
        if spec is None or spec.normalization != "meanstd" or spec.channels != 3:
            raise ModelError(f"model {meta.name}: a backbone's metadata needs input.normalization 'meanstd' on 3 channels (has {spec})")
        outputs = set(meta.extra.get("outputs", {}))
        if not set(OUTPUTS) <= outputs:
            raise ModelError(f"model {meta.name}: a backbone must give the feature maps {list(OUTPUTS)} (metadata lists {sorted(outputs)})")
        self.model = model
        # an NPU form takes one input size (the camera's views at the head's short side): views that
        # need another are refused, never resized differently from what the conversion validated
        fixed = model.fixed_input_shape("image")
        self.fixed_hw: tuple[int, int] | None = (fixed[2], fixed[3]) if fixed and len(fixed) == 4 else None
        self.mean = np.float32(spec.mean[0])
        self.std = np.float32(spec.std[0])
        if len(set(spec.mean)) > 1 or len(set(spec.std)) > 1:
            raise ModelError(f"model {meta.name}: per-channel scaling differs ({spec.mean}, {spec.std}); "
                             "a grey view has one channel to scale")

    @property
    def sha256(self) -> str:
        return self.model.metadata.sha256

    def model_input(self, grey: np.ndarray, model_hw: tuple[int, int], flip: bool = False) -> np.ndarray:
        """float32 [1, 3, H, W]: the uint8 grey view resized to ``model_hw``, scaled, replicated to 3 channels."""
        h, w = grey.shape
        mh, mw = model_hw
        resized = cv2.resize(grey, (mw, mh), interpolation=cv2.INTER_AREA if mw < w else cv2.INTER_LINEAR)
        if flip:
            resized = resized[:, ::-1]
        x = (resized.astype(np.float32) - self.mean) / self.std
        return np.ascontiguousarray(np.broadcast_to(x, (1, 3, mh, mw)))

    def features(self, grey: np.ndarray, short_side: int, flip_tta: bool = False) -> BackboneFeatures:
        """The feature maps of a uint8 HxW grey view at ``short_side`` (see ``model_size``); with
        ``flip_tta`` averaged with those of the mirrored view (mirrored back)."""
        if grey.ndim != 2 or grey.dtype != np.uint8:
            raise ValueError(f"the backbone takes a uint8 HxW grey view (got {grey.dtype} {grey.shape})")
        model_hw = model_size(grey.shape, short_side)
        if self.fixed_hw is not None and model_hw != self.fixed_hw:
            h, w = grey.shape
            raise ModelError(
                f"model {self.model.metadata.name}: a {h}x{w} px view needs a {model_hw[0]}x{model_hw[1]} input at short side "
                f"{short_side}; its {self.model.backend} form takes {self.fixed_hw[0]}x{self.fixed_hw[1]} only (converted for "
                f"another view size): convert it for this camera (station models convert --view-size {h}x{w})")
        maps = self._run(self.model_input(grey, model_hw))
        if flip_tta:
            mirrored = self._run(self.model_input(grey, model_hw, flip=True))
            maps = {k: (v + mirrored[k][..., ::-1]) * np.float32(0.5) for k, v in maps.items()}
        return BackboneFeatures(maps, grey.shape, model_hw)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model.run({"image": x})
        h, w = x.shape[2:]
        maps = {}
        for name in OUTPUTS:
            m = out.get(name)
            stride = int(name[1:])
            if m is None or m.ndim != 4 or m.shape[2:] != (h // stride, w // stride):
                raise ModelError(f"model {self.model.metadata.name}: output {name} is {None if m is None else m.shape}, "
                                 f"expected [1, C, {h // stride}, {w // stride}] for a {h}x{w} input")
            maps[name] = m.astype(np.float32, copy=False)
        return maps


@dataclass(frozen=True)
class RegionShape:
    """Shape of a finding's region (``skimage.measure.regionprops``), view px and degrees."""

    extent: float  # area / box area
    eccentricity: float  # of the ellipse with the region's second moments: 0 disc, -> 1 line
    orientation_deg: float  # that ellipse's major axis against the view's x axis, -90..90, counter-clockwise
    major_axis_px: float
    minor_axis_px: float


@dataclass(frozen=True)
class Finding(Proposal):
    """A proposal with its region's shape."""

    shape: RegionShape | None = None


def region_shape(props) -> RegionShape:
    # regionprops' orientation is the angle between the row axis and the major axis
    orientation = 90.0 - float(np.degrees(props.orientation))
    orientation = (orientation + 90.0) % 180.0 - 90.0
    return RegionShape(float(props.extent), float(props.eccentricity), orientation,
                       float(props.axis_major_length), float(props.axis_minor_length))


class BackboneProposer(Proposer):
    """A per-cell head on a frozen backbone as a proposal stage (see the module doc)."""

    embedding_input = False  # what the SAM analyzer asks a Proposer before it runs it
    feature_input = False
    encoder_sha256 = None

    def __init__(self, backbone: Backbone, head: InferenceModel, recipe_classes: list[str], edge_cells: int = 0):
        meta = head.metadata
        if meta.role != "proposals" or meta.extra.get("input") != "backbone":
            raise ModelError(f"model {meta.name}: not a head on backbone features (role {meta.role!r}, input {meta.extra.get('input')!r})")
        if not meta.classes or meta.classes[0] != BACKGROUND or set(meta.classes[1:]) - set(recipe_classes):
            raise ModelError(f"model {meta.name}: classes {meta.classes} do not fit the recipe's {recipe_classes} "
                             f"(first must be {BACKGROUND!r})")
        trained_on = meta.extra.get("backbone_sha256")
        if trained_on != backbone.sha256:
            raise ModelError(
                f"model {meta.name} was trained on the features of backbone sha256 {str(trained_on)[:12]}…; "
                f"{backbone.model.metadata.name} has {backbone.sha256[:12]}…: retrain the head"
            )
        short_side = meta.extra.get("short_side")
        if not isinstance(short_side, int) or short_side < MULTIPLE:
            raise ModelError(f"model {meta.name}: extra.short_side {short_side!r} must be an integer >= {MULTIPLE} (model px)")
        fixed = backbone.fixed_hw
        if fixed is not None and min(fixed) != model_size((short_side, short_side), short_side)[0]:
            raise ModelError(
                f"model {backbone.model.metadata.name}: its {backbone.model.backend} form takes {fixed[0]}x{fixed[1]} (short side "
                f"{min(fixed)}), but {meta.name} runs views at short side {short_side}: no view can use it; convert the backbone "
                f"for this recipe (station models convert --recipe ... --view-size HxW)")
        self.backbone, self.head = backbone, head
        self.classes = meta.classes[1:]
        self.short_side = short_side
        self.flip_tta = bool(meta.extra.get("flip_tta", False))
        self.edge_cells = edge_cells  # no region seeded or scored in the outer cells (the view's border looks like a defect)

    def features(self, grey: np.ndarray) -> BackboneFeatures:
        return self.backbone.features(grey, self.short_side, self.flip_tta)

    def cell_probabilities(self, feats: BackboneFeatures) -> np.ndarray:
        """float32 [K+1, H/8, W/8]: the head's class probabilities per stride-8 cell of the model input."""
        out = self.head.run(feats.maps)
        probs = out.get("probs", next(iter(out.values())))
        mh, mw = feats.model_hw
        expected = (len(self.classes) + 1, mh // CELL_PX, mw // CELL_PX)
        if probs.ndim != 4 or probs.shape[1:] != expected:
            raise ModelError(f"model {self.head.metadata.name}: output {probs.shape}, expected [1, {', '.join(map(str, expected))}]")
        return probs[0]

    def probabilities(self, grey: np.ndarray, features: BackboneFeatures | None = None,
                      encoded: EncodedView | None = None) -> np.ndarray:
        """float32 [K+1, H, W] class probabilities over a uint8 HxW grey view's own pixels (cell map
        resized bilinearly: cell centres land on their view positions, each pixel still sums to 1).
        ``features``: the view's ``BackboneFeatures`` when already computed (one backbone run per view)."""
        feats = self.features(grey) if features is None else features
        return self._to_view(self.cell_probabilities(feats), feats.view_hw)

    @staticmethod
    def _to_view(cells: np.ndarray, view_hw: tuple[int, int]) -> np.ndarray:
        h, w = view_hw
        view = cv2.resize(np.ascontiguousarray(cells.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
        if view.ndim == 2:  # cv2 drops a channel axis of 1
            view = view[:, :, None]
        return np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32)

    @staticmethod
    def view_score(cells: np.ndarray, edge_cells: int = 0) -> float:
        """The view's defect log-odds: log((1 - p0) / p0) of its most defective cell, cells within
        ``edge_cells`` of the grid's edge left out (unless that would leave none)."""
        p0 = cells[0]
        e = min(edge_cells, (min(p0.shape) - 1) // 2)
        if e > 0:
            p0 = p0[e:-e, e:-e]
        p = float(np.clip(p0.min(), LOGIT_CLIP, 1 - LOGIT_CLIP))
        return float(np.log((1 - p) / p))

    def find(self, grey: np.ndarray, threshold: float, max_regions: int, roi: np.ndarray | None = None,
             features: BackboneFeatures | None = None, encoded: EncodedView | None = None,
             edge_margin_px: int = 0, outline_at_peak: float | None = None) -> list[Finding]:
        """Regions of defect probability: seeded above ``threshold`` (not within ``edge_margin_px``
        of the view's edge nor in its outer ``edge_cells`` cells, nor outside ``roi``), grown down
        to half of it; highest score first. A finding's mask, box, area and shape are its region's
        outline (``station.vision.proposals.outline``: with ``outline_at_peak``, its surer pixels).
        A region's class distribution: the summed class probabilities of its ``TYPE_CELLS`` most
        defective cells (cells whose centre lies in the region; the best-measured naming rule)."""
        feats = self.features(grey) if features is None else features
        cells = self.cell_probabilities(feats)
        probs = self._to_view(cells, feats.view_hw)
        p = 1.0 - probs[0]
        if roi is not None:
            p = np.where(roi, p, 0.0)
        (vh, vw), (mh, mw) = feats.view_hw, feats.model_hw
        edge_px = int(np.ceil(self.edge_cells * CELL_PX * max(vh / mh, vw / mw)))
        inner = _inner(p, max(edge_margin_px, edge_px))
        if not (inner > threshold).any():
            return []
        labels = measure.label(p > threshold / 2, connectivity=2)
        centres = _cell_centres(cells.shape[1:], feats.model_hw, feats.view_hw)  # view px (row, col) per cell
        cell_label = labels[centres[0], centres[1]]  # [h8, w8]: the region each cell's centre falls in
        cell_defect = 1.0 - cells[0]
        out = []
        for props in measure.regionprops(labels, intensity_image=inner):
            if props.area < MIN_REGION_PX or props.intensity_max <= threshold:  # not seeded
                continue
            mine = np.flatnonzero(cell_label.reshape(-1) == props.label)
            if mine.size == 0:  # a region smaller than a cell: the cell under its strongest pixel
                r, c = props.coords[np.argmax(p[props.coords[:, 0], props.coords[:, 1]])]
                mine = np.array([_nearest_cell((r, c), cells.shape[1:], feats.model_hw, feats.view_hw)])
            top = mine[np.argsort(-cell_defect.reshape(-1)[mine])[:TYPE_CELLS]]
            cls = cells[1:].reshape(len(self.classes), -1)[:, top].sum(axis=1)
            mask = outline(labels == props.label, p, outline_at_peak)
            drawn = props if outline_at_peak is None else measure.regionprops(mask.astype(np.uint8))[0]
            y0, x0, y1, x1 = drawn.bbox
            out.append(Finding(mask, (int(x0), int(y0), int(x1), int(y1)), int(drawn.area),
                               float(props.intensity_max), cls / max(float(cls.sum()), 1e-6), region_shape(drawn)))
        out.sort(key=lambda r: -r.score)
        return out[:max_regions]


def check_preprocess(head: ModelMetadata, preprocess: Preprocess) -> None:
    """ModelError naming the settings where the recipe's [preprocess] differs from what the head
    was trained on (its ``extra.preprocess``; a head without it predates the record: not checked,
    and a setting added to [preprocess] after the head was trained is not compared)."""
    trained = head.extra.get("preprocess")
    if not isinstance(trained, dict):
        return
    now = model_view_settings(preprocess)
    differ = {k: (v, now[k]) for k, v in sorted(trained.items()) if k in now and now[k] != v}
    if differ:
        said = ", ".join(f"{k} {was!r} (the recipe: {is_!r})" for k, (was, is_) in differ.items())
        raise ModelError(f"model {head.name} was trained on views preprocessed with {said}: retrain the head "
                         "with the recipe's [preprocess], or set it back")


def _cell_centres(grid_hw: tuple[int, int], model_hw: tuple[int, int], view_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """int row and column indices [h8, w8] of each cell's centre in the view (px)."""
    (gh, gw), (mh, mw), (vh, vw) = grid_hw, model_hw, view_hw
    rows = np.clip(((np.arange(gh) + 0.5) * CELL_PX * vh / mh).astype(int), 0, vh - 1)
    cols = np.clip(((np.arange(gw) + 0.5) * CELL_PX * vw / mw).astype(int), 0, vw - 1)
    return np.broadcast_to(rows[:, None], (gh, gw)), np.broadcast_to(cols[None, :], (gh, gw))


def _nearest_cell(rc: tuple[int, int], grid_hw: tuple[int, int], model_hw: tuple[int, int], view_hw: tuple[int, int]) -> int:
    """Flat index of the cell under view pixel ``rc``."""
    (gh, gw), (mh, mw), (vh, vw) = grid_hw, model_hw, view_hw
    r = min(gh - 1, int((rc[0] + 0.5) * mh / vh / CELL_PX))
    c = min(gw - 1, int((rc[1] + 0.5) * mw / vw / CELL_PX))
    return r * gw + c


def load_backbone_proposer(models_dir: Path | str, head_name: str, recipe_classes: list[str], backend: str = "onnxruntime",
                           threads: int = 0, edge_cells: int = 0,
                           preprocess: Preprocess | None = None) -> tuple[BackboneProposer, dict[str, str]]:
    """The head ``head_name`` and the backbone its metadata names (``extra.backbone``), loaded from
    ``models_dir`` with ``backend``; returns (proposer, {model name: sha256}) for the inspection
    record. With the recipe's ``preprocess``, the head's own (``extra.preprocess``, written by
    `station train`) must agree with it. Raises ModelError (missing, corrupt, mismatching models)."""
    from station.inference.factory import load_model

    # the head stays on the CPU whatever the backend: a finding counts from a confidence like 0.999976,
    # where int8 outputs step by 1/255 and fp16 by 4.9e-4 near 1, and it is a per-cell linear map (0.9 ms here)
    head = load_model(models_dir, head_name, "onnxruntime", threads)
    if preprocess is not None:
        check_preprocess(head.metadata, preprocess)
    backbone_name = head.metadata.extra.get("backbone")
    if not backbone_name:
        raise ModelError(f"model {head_name}: metadata names no backbone (extra.backbone)")
    backbone = Backbone(load_model(models_dir, backbone_name, backend, threads))
    proposer = BackboneProposer(backbone, head, recipe_classes, edge_cells)
    return proposer, {head_name: head.metadata.sha256, backbone_name: backbone.sha256}
