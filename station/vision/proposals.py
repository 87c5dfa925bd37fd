"""The proposal stage: where on a view to look, and a first guess of what is there.

A proposal model (``role = "proposals"``) gives class probabilities [K+1, H, W] (0 =
background) at the view's native resolution. Its metadata says what it takes:

- ``extra.input = "grey"``: a fully convolutional network on the grey view itself, in
  ``image`` [1, 1, H, W] 0..1, H and W padded (reflected) up to a multiple of ``extra.stride``;
- ``extra.input = "sam_embedding"``: a head on the SAM encoder's embedding of the view, in
  ``image_embeddings`` [1, C, g, g], out [1, K+1, g, g] over the padded encoder input; mapped
  back to view px here. ``extra.encoder_sha256`` names the encoder it was trained on: another
  encoder's embeddings mean nothing to it, so the analyzer refuses the pair;
- otherwise ``extra.feature_set``: a per-pixel model on the filter-bank features of the grey
  view (``station.vision.features``), in ``features`` [1, F, H, W].

Several proposal models (``ProposalEnsemble``, recipe ``models.proposals`` a list) are fused
per pixel as a product of experts: the defect log-odds add up, ``d = sigmoid(sum_i logit d_i)``
with ``d_i = 1 - p_i(background)``, so what two models each half-believe becomes likely and a
confident finding of one is kept unless another is confident it is background; the class
distribution is the models' own, each weighted by its defect probability. Measured on the
magnetic tiles (grouped 3-fold, models/trained/README.md) the pixel MLP and the SAM-embedding
head miss different defects, and fused they find about twice as many at the same false-reject
rate as either alone.

Several such opinions (``ProposalOpinions``, recipe ``models.proposals`` a list of lists, each
one model or several fused as above) are combined per pixel by the surest: the defect
probability is the highest of the opinions', the class distribution that opinion's. A product
lets one model's confident "background" veto another's finding; a second opinion cannot be
vetoed, so a net that sees what the others miss (the context head on break, fray, uneven) adds
its findings, and only its own false positives cost false rejects (measured on the magnetic
tiles, models/trained/README.md).

Regions are hysteresis components of the defect probability ``1 - p(background)``: seeded
above ``threshold`` and grown down to half of it. Coordinates are view px. A region's outline
(its mask, box and area) is the whole region, or with ``outline_at_peak`` (recipe
``vision.outline_at_peak``) its pixels from that fraction of the region's peak probability on
(``outline``): the region decides whether there is a finding and its score, the outline only
where its edge is drawn.

``edge_margin_px`` (recipe ``vision.edge_margin_px``): no region is seeded, and no region's
score is taken, within that many px of the view's edge; a region seeded further in still grows
up to the edge. The filter bank and the networks see a view's edge as an edge (a crop's border,
the part's outline): on the magnetic tiles half of the good views that scored highest had
their maximum in the outer 2-3 px (measured, models/trained/README.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from station.inference.base import InferenceModel
from station.inference.metadata import ModelError
from station.vision.features import FEATURE_SET, pixel_features
from station.vision.regions import box_of, components
from station.vision.segmentation import EncodedView

BACKGROUND = "background"
SMOOTH_SIGMA_PX = 1.0
MIN_REGION_PX = 4
FUSION_CLIP = 1e-4  # defect probabilities clipped to [c, 1 - c] before their log-odds are added


@dataclass(frozen=True)
class Proposal:
    mask: np.ndarray  # bool HxW
    box: tuple[int, int, int, int]
    area_px: int
    score: float  # max defect probability in the region, 0..1
    class_probs: np.ndarray  # [K] mean class probabilities in the region, sums to 1


class Proposer(ABC):
    """What a single stage, an ensemble and opinions offer: ``probabilities`` and, from them, regions."""

    classes: list[str]

    @abstractmethod
    def probabilities(self, grey: np.ndarray, features: np.ndarray | None = None,
                      encoded: EncodedView | None = None) -> np.ndarray: ...

    def find(self, grey: np.ndarray, threshold: float, max_regions: int, roi: np.ndarray | None = None,
             features: np.ndarray | None = None, encoded: EncodedView | None = None,
             edge_margin_px: int = 0, outline_at_peak: float | None = None) -> list[Proposal]:
        probs = self.probabilities(grey, features, encoded)
        p = cv2.GaussianBlur(1.0 - probs[0], (0, 0), SMOOTH_SIGMA_PX)
        if roi is not None:
            p = np.where(roi, p, 0.0)
        inner = _inner(p, edge_margin_px)  # where seeds and scores are taken
        seeds = inner > threshold
        if not seeds.any():
            return []
        out = []
        for region in components(p > threshold / 2, MIN_REGION_PX):
            if not (seeds & region.mask).any():
                continue
            cls = probs[1:, region.mask].mean(axis=1)
            mask = outline(region.mask, p, outline_at_peak)
            out.append(Proposal(mask, box_of(mask), int(mask.sum()), float(inner[region.mask].max()), cls / max(cls.sum(), 1e-6)))
        out.sort(key=lambda r: -r.score)
        return out[:max_regions]


def outline(region: np.ndarray, p: np.ndarray, at_peak: float | None) -> np.ndarray:
    """The outline of a found region (bool HxW): its pixels whose defect probability ``p`` is at
    least ``at_peak`` times the region's highest; the whole region when that is None. Relative to
    each region's own peak, a weak region is drawn by its surer pixels as a strong one is (a
    fixed level left every region seeded below it at its whole grown extent; measured on the
    steel strip, models/trained/README.md). Never empty: the peak pixel is always in. The
    class's area rules (min_area_px, mm²) then judge the outline, as they judge a SAM outline."""
    if at_peak is None:
        return region
    return region & (p >= at_peak * float(p[region].max()))


def _inner(p: np.ndarray, margin_px: int) -> np.ndarray:
    """``p`` with its outer ``margin_px`` rows and columns set to 0 (a copy when there is a margin).
    On a view too small for the margin its centre row/column is kept: a view is never left uninspected."""
    margin_px = min(margin_px, (min(p.shape) - 1) // 2)
    if margin_px <= 0:
        return p
    out = np.zeros_like(p)
    out[margin_px:-margin_px, margin_px:-margin_px] = p[margin_px:-margin_px, margin_px:-margin_px]
    return out


class ProposalStage(Proposer):
    def __init__(self, model: InferenceModel, recipe_classes: list[str]):
        meta = model.metadata
        if meta.role != "proposals":
            raise ModelError(f"model {meta.name}: role {meta.role!r}, expected 'proposals'")
        if meta.extra.get("input") == "backbone":
            raise ModelError(f"model {meta.name} is a head on backbone features: "
                             "load it with station.vision.backbone (load_backbone_proposer)")
        self.grey_input = meta.extra.get("input") == "grey"
        self.embedding_input = meta.extra.get("input") == "sam_embedding"
        self.feature_input = not (self.grey_input or self.embedding_input)
        self.encoder_sha256 = meta.extra.get("encoder_sha256")
        self.stride = int(meta.extra.get("stride", 1))
        if self.grey_input and self.stride < 1:
            raise ModelError(f"model {meta.name}: stride {self.stride} must be >= 1")
        if self.embedding_input and not self.encoder_sha256:
            raise ModelError(f"model {meta.name}: a head on SAM embeddings must name its encoder (extra.encoder_sha256)")
        if self.feature_input and meta.extra.get("feature_set") != FEATURE_SET:
            raise ModelError(
                f"model {meta.name}: trained on features {meta.extra.get('feature_set')!r}, "
                f"this station computes {FEATURE_SET!r}; retrain it"
            )
        if not meta.classes or meta.classes[0] != BACKGROUND or set(meta.classes[1:]) - set(recipe_classes):
            raise ModelError(
                f"model {meta.name}: classes {meta.classes} do not fit the recipe's {recipe_classes} (first must be {BACKGROUND!r})"
            )
        self.model = model
        self.classes = meta.classes[1:]

    def probabilities(self, grey: np.ndarray, features: np.ndarray | None = None, encoded: EncodedView | None = None) -> np.ndarray:
        """float32 [K+1, H, W] class probabilities for a uint8 HxW grey view (or its precomputed
        features; a head on SAM embeddings needs the view's ``encoded``)."""
        if self.embedding_input:
            if encoded is None:
                raise ValueError(f"model {self.model.metadata.name} proposes from SAM embeddings: encode the view first")
            out = self.model.run({"image_embeddings": encoded.embedding.astype(np.float32, copy=False)})
            return embedding_map_to_view(next(iter(out.values()))[0], encoded)
        if self.grey_input:
            h, w = grey.shape
            ph, pw = -h % self.stride, -w % self.stride
            padded = cv2.copyMakeBorder(grey, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else grey
            out = self.model.run({"image": (padded.astype(np.float32) / 255.0)[None, None]})
            return next(iter(out.values()))[0][:, :h, :w]
        feats = pixel_features(grey) if features is None else features
        out = self.model.run({"features": feats[None].astype(np.float32)})
        return next(iter(out.values()))[0]


class _Combined(Proposer):
    """Proposers over the same classes (and, when they read SAM embeddings, the same encoder),
    their maps combined per pixel by ``combine``."""

    what = "proposers combined"

    def __init__(self, parts: list[Proposer]):
        if not parts:
            raise ValueError(f"{self.what} need at least one proposal stage")
        stages = [s for p in parts for s in _stages(p)]
        names = [s.model.metadata.name for s in stages]
        for s in stages[1:]:
            if s.classes != stages[0].classes:
                raise ModelError(f"proposal models {names} do not share their classes: {stages[0].classes} vs {s.classes}")
        encoders = {s.encoder_sha256 for s in stages if s.embedding_input}
        if len(encoders) > 1:
            raise ModelError(f"proposal models {names} were trained on the embeddings of different encoders")
        self.parts = parts
        self.classes = stages[0].classes
        self.feature_input = any(s.feature_input for s in stages)
        self.embedding_input = bool(encoders)
        self.encoder_sha256 = next(iter(encoders), None)

    @abstractmethod
    def combine(self, maps: list[np.ndarray]) -> np.ndarray: ...

    def probabilities(self, grey: np.ndarray, features: np.ndarray | None = None,
                      encoded: EncodedView | None = None) -> np.ndarray:
        if self.feature_input and features is None:  # the filter bank once per view, for every stage that reads it
            features = pixel_features(grey)
        return self.combine([p.probabilities(grey, features, encoded) for p in self.parts])


def _stages(p: Proposer) -> list[ProposalStage]:
    return [p] if isinstance(p, ProposalStage) else [s for part in p.parts for s in _stages(part)]


class ProposalEnsemble(_Combined):
    """Several proposal stages (``parts``) over the same classes, fused per pixel (product of experts, see the module doc)."""

    what = "proposal ensembles"

    def combine(self, maps: list[np.ndarray]) -> np.ndarray:
        return fuse(maps)


class ProposalOpinions(_Combined):
    """Several opinions (``parts``: a stage or an ensemble each), the surest counts per pixel (see the module doc)."""

    what = "proposal opinions"

    def combine(self, maps: list[np.ndarray]) -> np.ndarray:
        return surest(maps)


def proposer(opinions: list[list[ProposalStage]]) -> Proposer:
    """The proposal stage a recipe's ``models.proposals`` describes (opinions of fused stages), at its simplest."""
    parts = [group[0] if len(group) == 1 else ProposalEnsemble(group) for group in opinions]
    return parts[0] if len(parts) == 1 else ProposalOpinions(parts)


def fuse(maps: list[np.ndarray]) -> np.ndarray:
    """Product-of-experts fusion of [K+1, H, W] class probability maps (see the module doc)."""
    if len(maps) == 1:
        return maps[0]
    defect = [np.clip(1.0 - m[0], FUSION_CLIP, 1.0 - FUSION_CLIP) for m in maps]
    logit = sum(np.log(d / (1.0 - d)) for d in defect)
    fused = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    # each model's class distribution weighted by how sure it is that a defect is there
    weighted = sum(m[1:] for m in maps)
    classes = weighted / np.maximum(weighted.sum(axis=0, keepdims=True), 1e-6)
    return np.concatenate([(1.0 - fused)[None], fused[None] * classes]).astype(np.float32)


def surest(maps: list[np.ndarray]) -> np.ndarray:
    """Per pixel the [K+1] probabilities of the map with the highest defect probability (see the module doc)."""
    if len(maps) == 1:
        return maps[0]
    stacked = np.stack(maps)
    winner = np.argmin(stacked[:, 0], axis=0)  # least background = most defect
    return np.take_along_axis(stacked, winner[None, None], axis=0)[0].astype(np.float32, copy=False)


def embedding_map_to_view(grid: np.ndarray, encoded: EncodedView) -> np.ndarray:
    """[K+1, g, g] probabilities over the padded encoder input -> float32 [K+1, H, W] over the
    view: upsampled to the encoder's input size, cropped to the image's extent in it (the rest
    is padding), resized to the view."""
    size = encoded.input_size
    nh, nw = encoded.model_hw
    h, w = encoded.view_hw
    full = cv2.resize(np.ascontiguousarray(grid.transpose(1, 2, 0), np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    view = cv2.resize(np.ascontiguousarray(full.reshape(size, size, -1)[:nh, :nw]), (w, h), interpolation=cv2.INTER_LINEAR)
    return view.reshape(h, w, -1).transpose(2, 0, 1)
