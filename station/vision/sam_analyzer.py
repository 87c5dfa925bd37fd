"""The model pipeline (recipe ``vision.analyzer = "sam"`` or ``"backbone"``): propose, name, outline.

Per view: the proposal stage (``"sam"``: one model, several fused per pixel, or opinions of
such; ``"backbone"``: a per-cell head on a frozen pretrained backbone, station.vision.backbone) finds
candidate regions at native resolution; the classifier (when the recipe has one) names each
region and, unless the recipe's ``vision.classifier_role`` is ``"name"``, drops it as "not a
defect"; each kept region
is outlined either by the SAM decoder from its box (class ``mask_source = "sam"``; the view is
encoded once and reused by every prompt on it, or with ``vision.tile_px`` > 0 a window of that
many native pixels around each proposal is encoded, for views much larger than the encoder
input where small defects would vanish) or by the proposal's own region (``mask_source =
"proposal"``, better for diffuse defects). A proposal stage that is a head on the SAM embedding
(``extra.input = "sam_embedding"``) gets the view encoded first, and the outlines reuse that
encoding.

Confidence of a defect = sqrt(proposal score x (1 - p(not a defect))): both stages must agree
that something is there. Its class: the normalised product of the two stages' class
probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from station.inference.factory import load_model
from station.inference.metadata import ModelError, resolve_model
from station.inspection import Defect, View
from station.recipe import BackboneVision, ModelVision, Recipe
from station.recipe_models import recipe_models
from station.vision.classifier import RegionClassifier
from station.vision.preprocess import to_gray
from station.vision.proposals import ProposalStage, Proposer, proposer
from station.vision.regions import box_of, roi_mask
from station.vision.segmentation import SamSegmenter

BOX_MARGIN_PX = 2


class SamAnalyzer:
    def __init__(self, recipe: Recipe, proposals: Proposer, classifier: RegionClassifier | None,
                 segmenter: SamSegmenter | None, model_hashes: dict[str, str]):
        self.recipe = recipe
        self.vision: ModelVision = recipe.vision
        self.proposals = proposals
        self.classifier = classifier
        self.segmenter = segmenter
        self.model_hashes = model_hashes
        self.class_names = [c.name for c in recipe.classes]

    def _names(self, proposal_probs: np.ndarray, classifier_probs: np.ndarray | None) -> tuple[np.ndarray, float]:
        """(probabilities over the recipe's classes, p(not a defect); 0 unless the classifier may drop)."""
        probs = np.full(len(self.class_names), 1e-6)
        for i, name in enumerate(self.proposals.classes):
            probs[self.class_names.index(name)] += proposal_probs[i]
        p_not = 0.0
        if classifier_probs is not None:
            if self.vision.classifier_role == "name-and-drop":
                p_not = float(classifier_probs[-1])
            cls = np.full(len(self.class_names), 1e-6)
            for i, name in enumerate(self.classifier.classes):
                cls[self.class_names.index(name)] += classifier_probs[i]
            probs = np.sqrt(probs * cls / cls.sum())
        return probs / probs.sum(), p_not

    def _outline_from(self, cls) -> float:
        """The confidence from which a finding of ``cls`` matters: its review band's start, else its min_confidence."""
        review = self.recipe.review_at_of(cls)
        return self.recipe.min_confidence_of(cls) if review is None else review

    def _crop_mask(self, image: np.ndarray, box: tuple[int, int, int, int], side_px: int) -> np.ndarray:
        """SAM mask from an encoding of a native-resolution window around ``box`` (at least
        ``side_px`` square, grown to hold the box), pasted back into the view frame."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        side_x, side_y = min(w, max(side_px, x1 - x0)), min(h, max(side_px, y1 - y0))
        cx0 = int(np.clip((x0 + x1) // 2 - side_x // 2, 0, w - side_x))
        cy0 = int(np.clip((y0 + y1) // 2 - side_y // 2, 0, h - side_y))
        crop = image[cy0 : cy0 + side_y, cx0 : cx0 + side_x]
        sub, _ = self.segmenter.box_mask(self.segmenter.encode(crop), (x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0))
        out = np.zeros((h, w), bool)
        out[cy0 : cy0 + side_y, cx0 : cx0 + side_x] = sub
        return out

    def find(self, view: View) -> list[Defect]:
        vision = self.vision
        grey = to_gray(view.image)
        h, w = grey.shape
        roi = roi_mask(self.recipe.zones, view.camera, (h, w))
        # a proposal head on SAM embeddings needs the view encoded first; the outlines reuse it
        encoded = self.segmenter.encode(view.image) if self.proposals.embedding_input else None
        found = self.proposals.find(grey, vision.proposal_threshold, vision.max_proposals, roi, encoded=encoded,
                                    edge_margin_px=vision.edge_margin_px, outline_at_peak=vision.outline_at_peak)
        if not found:
            return []
        cls_probs = None
        if self.classifier is not None:
            cls_probs = self.classifier.classify(grey, [(p.mask, p.box) for p in found])
        defects = []
        for i, prop in enumerate(found):
            probs, p_not = self._names(prop.class_probs, None if cls_probs is None else cls_probs[i])
            if p_not >= 0.5:
                continue
            name = self.class_names[int(np.argmax(probs))]
            confidence = float(np.sqrt(prop.score * (1.0 - p_not)))
            mask = prop.mask
            cls = self.recipe.defect_class(name)
            # SAM only outlines defects that can count or send the part to review (the reject or
            # review band): below that the proposal's region is shown, and no encoder run is spent on it
            if self.segmenter is not None and cls.mask_source == "sam" and confidence >= self._outline_from(cls):
                x0, y0, x1, y1 = prop.box
                box = (max(0, x0 - BOX_MARGIN_PX), max(0, y0 - BOX_MARGIN_PX), min(w, x1 + BOX_MARGIN_PX), min(h, y1 + BOX_MARGIN_PX))
                if vision.tile_px:
                    sam_mask = self._crop_mask(view.image, box, vision.tile_px)
                else:
                    if encoded is None:
                        encoded = self.segmenter.encode(view.image)
                    sam_mask, _ = self.segmenter.box_mask(encoded, box)
                # the decoder may leak outside the prompt box; a defect stays where it was proposed
                clipped = np.zeros_like(sam_mask)
                clipped[box[1] : box[3], box[0] : box[2]] = sam_mask[box[1] : box[3], box[0] : box[2]]
                if clipped.any():
                    mask = clipped
            defects.append(Defect(view.camera, name, confidence, box_of(mask), int(mask.sum()), mask,
                                  proposal_score=prop.score))
        return defects


def load_sam_analyzer(recipe: Recipe, models_dir: Path, backend: str = "onnxruntime", threads: int = 0) -> SamAnalyzer:
    """Load the recipe's models once (``station.recipe_models``). Raises ModelError (missing,
    corrupt, mismatching, or not the kind the recipe says) or ValueError."""
    needed = recipe_models(recipe)
    names = [c.name for c in recipe.classes]
    hashes: dict[str, str] = {}

    def open_model(name: str):
        model = load_model(models_dir, name, backend, threads)
        hashes[name] = model.metadata.sha256
        return model

    def stage(entry) -> ProposalStage:
        model = open_model(entry.model)
        kind = model.metadata.extra.get("net")
        if kind != entry.kind:
            raise ModelError(f"model {entry.model}: the recipe names it a {entry.kind!r} proposal model, "
                             f"its metadata says {kind!r} (retrain it, or fix vision.proposals)")
        return ProposalStage(model, names)

    if isinstance(recipe.vision, BackboneVision):
        proposals = _backbone_proposer(recipe, models_dir, names, backend, threads, hashes)
    else:
        proposals = proposer([[stage(e) for e in opinion] for opinion in needed.proposals])
    classifier = RegionClassifier(open_model(needed.classifier), names) if needed.classifier else None
    segmenter = None
    if needed.segmentation:
        meta, _ = resolve_model(models_dir, needed.segmentation, verify=False)
        if not meta.pair:
            raise ModelError(f"model {needed.segmentation}: metadata names no decoder (pair)")
        segmenter = SamSegmenter(open_model(needed.segmentation), open_model(meta.pair))
    # an encoder exported here (station models pull) is not byte-identical to the copy a head was
    # trained on, but its export was checked numerically against the same checkpoint: its
    # metadata names the pinned copies it stands for
    encoder = segmenter.encoder.metadata if segmenter is not None else None
    same_encoder = encoder is not None and proposals.encoder_sha256 in {encoder.sha256, *encoder.extra.get("stands_for_sha256", [])}
    if proposals.embedding_input and not same_encoder:
        raise ModelError(
            f"proposal model(s) {', '.join(needed.names)} were trained on the embeddings of encoder "
            f"sha256 {proposals.encoder_sha256[:12]}…; the recipe's segmentation model {needed.segmentation} has "
            f"{segmenter.encoder.metadata.sha256[:12]}…: retrain it"
        )
    return SamAnalyzer(recipe, proposals, classifier, segmenter, hashes)


def _backbone_proposer(recipe: Recipe, models_dir: Path, names: list[str], backend: str, threads: int,
                       hashes: dict[str, str]):
    """The recipe's head on its backbone; the head must have been trained on that backbone at the
    recipe's short side, on views preprocessed as the recipe's."""
    from station.vision.backbone import load_backbone_proposer

    vision: BackboneVision = recipe.vision
    found, model_hashes = load_backbone_proposer(models_dir, vision.head, names, backend, threads, vision.edge_margin_cells,
                                                 recipe.preprocess)
    head = found.head.metadata
    if head.extra.get("backbone") != vision.backbone:
        raise ModelError(f"model {vision.head}: trained on backbone {head.extra.get('backbone')!r}, the recipe names "
                         f"{vision.backbone!r} (retrain it, or fix vision.backbone)")
    if found.short_side != vision.short_side:
        raise ModelError(f"model {vision.head}: trained at short side {found.short_side} px, the recipe says "
                         f"{vision.short_side} (retrain it, or fix vision.short_side)")
    hashes.update(model_hashes)
    return found
