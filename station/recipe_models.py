"""Which models a recipe needs: the one rule used by the analyzer, `station models pull`,
`station doctor`, `station bench` and `station train`.

A threshold recipe needs none. A SAM recipe needs its proposal models, its classifier (when it
names one) and the SAM encoder (its decoder is named in the encoder's metadata, ``pair``) when
either a class is outlined by SAM (``mask_source = "sam"``) or a proposal model reads the SAM
encoder's embedding (kinds ``sam-head``, ``sam-context-head``). A backbone recipe needs its
backbone (pulled from the manifest), its head (trained), its classifier (when it names one) and
the SAM encoder when a class is outlined by SAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from station.recipe import SAM_EMBEDDING_KINDS, BackboneVision, ModelVision, ProposalEntry, Recipe, SamVision


@dataclass(frozen=True)
class RecipeModels:
    segmentation: str | None = None  # the SAM encoder, or None when nothing needs SAM
    proposals: list[list[ProposalEntry]] = field(default_factory=list)  # opinions of fused entries
    classifier: str | None = None
    backbone: str | None = None  # the frozen backbone (analyzer "backbone")
    head: str | None = None  # its trained per-cell head
    sam_reasons: tuple[str, ...] = ()  # why the SAM pair is needed, for messages

    @property
    def names(self) -> list[str]:
        """Every model loaded by name, SAM encoder first (its decoder follows from its metadata)."""
        out = [self.segmentation] if self.segmentation else []
        out += [name for name in (self.backbone, self.head) if name]
        out += [e.model for opinion in self.proposals for e in opinion]
        if self.classifier:
            out.append(self.classifier)
        return out


def recipe_models(recipe: Recipe) -> RecipeModels:
    """The models ``recipe`` loads at run time (see the module doc)."""
    vision = recipe.vision
    if not isinstance(vision, ModelVision):
        return RecipeModels()
    reasons = []
    outlined = [c.name for c in recipe.classes if c.mask_source == "sam"]
    if outlined:
        reasons.append("outlines " + ", ".join(outlined))
    if isinstance(vision, BackboneVision):
        return RecipeModels(segmentation=vision.segmentation if reasons else None, classifier=vision.classifier,
                            backbone=vision.backbone, head=vision.head, sam_reasons=tuple(reasons))
    assert isinstance(vision, SamVision)
    heads = [e.model for e in vision.proposals if e.kind in SAM_EMBEDDING_KINDS]
    if heads:
        reasons.append("embeddings for " + ", ".join(heads))
    return RecipeModels(
        segmentation=vision.segmentation if reasons else None,
        proposals=vision.opinions,
        classifier=vision.classifier,
        sam_reasons=tuple(reasons),
    )


@dataclass(frozen=True)
class ModelCheck:
    """One model a recipe loads, as found in a models directory: ``error`` is None when its
    metadata reads, its file is there and its sha256 matches (and, for the SAM encoder, its
    decoder is named and checks too)."""

    name: str
    key: str  # the recipe key that names it (the SAM decoder: the encoder's key)
    meta: object | None = None  # station.inference.metadata.ModelMetadata
    path: object | None = None  # pathlib.Path of the model file
    error: str | None = None


def check_recipe_models(recipe: Recipe, models_dir) -> list[ModelCheck]:
    """Every model ``recipe`` would load from ``models_dir`` (what a PLC LOAD_RECIPE loads),
    checked: metadata, file, sha256, the SAM pair. For `station recipes check` and `station doctor`."""
    from station.inference.metadata import ModelError, resolve_model

    need = recipe_models(recipe)
    keys: dict[str, str] = {}
    if need.segmentation:
        keys[need.segmentation] = "vision.segmentation"
    if isinstance(recipe.vision, SamVision):
        for i, entry in enumerate(recipe.vision.proposals):
            keys.setdefault(entry.model, f"vision.proposals[{i}].model")
    if need.classifier:
        keys.setdefault(need.classifier, "vision.classifier")
    if need.backbone:
        keys.setdefault(need.backbone, "vision.backbone")
    if need.head:
        keys.setdefault(need.head, "vision.head")
    checks: list[ModelCheck] = []
    queue = [(name, keys[name]) for name in need.names]
    seen: set[str] = set()
    while queue:
        name, key = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        try:
            meta, path = resolve_model(models_dir, name, verify=True)
        except ModelError as exc:
            checks.append(ModelCheck(name, key, error=str(exc)))
            continue
        if name == need.segmentation and not meta.pair:
            checks.append(ModelCheck(name, key, meta, path, f"SAM encoder {name} names no decoder (metadata 'pair'): "
                                                            "the SAM pair is incomplete"))
            continue
        if meta.pair:
            queue.append((meta.pair, f"{key} (its pair {meta.pair})"))
        checks.append(ModelCheck(name, key, meta, path))
    return checks
