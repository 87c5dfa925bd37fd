"""A recipe: everything that is specific to one product. One TOML file per product in recipes/.

Validated once at load into these typed objects; the rest of the station trusts them.
Areas are px in the view's frame unless named ``_mm2``; ``mm_per_px`` converts.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from station.config_errors import ConfigError, StrictModel as Strict, load_toml_model, read_config_text

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


# names that reach the HMI, CSV exports, reasons and PLC texts: letters, digits, "_", "-", " ",
# starting with a letter or digit, so a name can never be read as a spreadsheet formula
# (=, +, -, @) or carry markup
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_ -]{0,39}$"
SafeName = Annotated[str, Field(pattern=SAFE_NAME)]

# result codes from 0xFFFD up are reserved (review, unknown class, no result: station.inspection,
# station.verdict); a class's PLC code stays below them
MAX_CLASS_PLC_CODE = 0xFFFC


class RecipeCamera(Strict):
    """A view of the part: which station camera, in which trigger mode, with which features."""

    name: SafeName
    trigger: Literal["software", "hardware", "freerun"] = "software"
    trigger_line: str = "Line0"
    # GenICam feature name -> value, applied on open (e.g. ExposureTime = 5000.0)
    features: dict[str, float | int | str | bool] = Field(default_factory=dict)


class Zone(Strict):
    """An inspection or ignore zone, as a rectangle (x0, y0, x1, y1) px or a polygon [[x, y], ...]."""

    name: SafeName
    kind: Literal["inspect", "ignore"] = "inspect"
    view: str | None = None  # None: every view
    rect: tuple[int, int, int, int] | None = None
    polygon: list[tuple[int, int]] | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> "Zone":
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of rect or polygon")
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            if x1 <= x0 or y1 <= y0:
                raise ValueError("rect must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
        if self.polygon is not None and len(self.polygon) < 3:
            raise ValueError("polygon needs at least 3 points")
        return self


class DefectClass(Strict):
    """A defect class: how it is shown, coded for the PLC, and when it rejects a part."""

    name: SafeName
    colour: str = "#ff0000"
    plc_code: int = Field(ge=1, le=MAX_CLASS_PLC_CODE)
    min_area_px: int = Field(default=0, ge=0)
    min_area_mm2: float | None = Field(default=None, ge=0)
    # None: the recipe's min_confidence (Recipe.min_confidence_of)
    min_confidence: float | None = Field(default=None, ge=0, le=1)
    # None: the recipe's review_at (Recipe.review_at_of)
    review_at: float | None = Field(default=None, ge=0, le=1)
    max_count: int = Field(default=0, ge=0, description="defects of this class tolerated before reject")
    # where a finding's outline comes from on a model analyzer: the SAM decoder prompted with
    # its box, or the region the proposal stage found (better for diffuse defects)
    mask_source: Literal["sam", "proposal"] = "sam"

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not HEX_COLOUR.match(v):
            raise ValueError("colour must be #rrggbb")
        return v.lower()


class Preprocess(Strict):
    """The view's preprocessing (station.vision.preprocess), in this order: grey, one contrast
    equalisation (OpenCV's CLAHE or scikit-image's ``exposure.equalize_adapthist``), denoise."""

    to_gray: bool = False
    clahe: bool = False
    clahe_clip: float = Field(default=2.0, gt=0)
    # scikit-image's contrast-limited adaptive histogram equalisation: clip limit as a share of
    # the histogram (0-1], tiles of kernel_px px (None: 1/8 of each side, scikit-image's default)
    equalize_adapthist: bool = False
    adapthist_clip_limit: float = Field(default=0.01, gt=0, le=1)
    adapthist_kernel_px: int | None = Field(default=None, ge=2)
    denoise_sigma: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _one_equalisation(self) -> "Preprocess":
        if self.clahe and self.equalize_adapthist:
            raise ValueError("clahe and equalize_adapthist are both set: choose one contrast equalisation")
        return self


# ---- the vision stage: settings typed per analyzer ----------------------------------------------
class BlobRule(Strict):
    """Threshold analyzer: which blobs are this class (dark or bright) and their shape (lines:
    thin; blobs: compact; any)."""

    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class")
    polarity: Literal["dark", "bright"]
    shape: Literal["any", "line", "blob"] = "any"


class ThresholdVision(Strict):
    """The classical analyzer: dark and bright blobs under fixed grey thresholds, no model
    (station.vision.threshold). Used by fast tests and recipes that want no model."""

    analyzer: Literal["threshold"]
    max_proposals: int = Field(default=8, ge=1)
    dark_threshold: int = Field(default=60, ge=0, le=255)
    bright_threshold: int = Field(default=200, ge=0, le=255)
    blobs: list[BlobRule] = Field(min_length=1)


ProposalNetKind = Literal["pixel-mlp", "unet", "sam-head", "sam-context-head"]
SAM_EMBEDDING_KINDS = ("sam-head", "sam-context-head")


class ProposalEntry(Strict):
    """One trained proposal model: its kind (what `station train` trains and what the model's
    metadata must say it is) and its name in the models directory. Entries of one ``opinion``
    are fused per pixel; of several opinions the surest counts (station.vision.proposals)."""

    kind: ProposalNetKind
    model: str
    opinion: int = Field(default=1, ge=1)


class ModelVision(Strict):
    """What the model analyzers share (station.vision.sam_analyzer): a proposal stage finds
    regions, the classifier (optional) names them, the SAM pair outlines those of
    ``mask_source = "sam"`` classes that can count."""

    segmentation: str = "litemedsam"  # the SAM encoder; its decoder is named in its metadata (pair)
    # what the region classifier does with each proposal: name it and drop it when it says "not
    # a defect" (its doubt also lowers the confidence), or only name it (the confidence is then
    # the proposal stage's alone)
    classifier: str | None = None
    classifier_role: Literal["name-and-drop", "name"] = "name-and-drop"
    max_proposals: int = Field(default=8, ge=1)
    proposal_threshold: float = Field(default=0.5, ge=0, le=1)
    # no proposal is seeded or scored this close to the view's edge (regions seeded further in
    # still reach it): a crop's border or the part's outline looks like a defect to the nets
    edge_margin_px: int = Field(default=0, ge=0)
    # 0: SAM encodes the whole view; else a window this many native px around each finding
    tile_px: int = Field(default=0, ge=0)
    # a region's own outline (classes with mask_source = "proposal"; the box SAM is prompted with
    # for the others) is its pixels of defect probability from this fraction of the region's
    # peak on; None: the whole region, grown down to half of proposal_threshold. Whether there is
    # a finding and its confidence come from the region either way; the area rules judge the
    # outline, as they judge a SAM outline
    outline_at_peak: float | None = Field(default=None, gt=0, lt=1)


class SamVision(ModelVision):
    """The model analyzer on trained proposal nets (grey view, filter bank or SAM embedding)."""

    analyzer: Literal["sam"]
    proposals: list[ProposalEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> "SamVision":
        names = [e.model for e in self.proposals]
        if len(set(names)) != len(names):
            raise ValueError(f"proposals: a model is named twice ({names})")
        return self

    @property
    def opinions(self) -> list[list[ProposalEntry]]:
        """The proposal entries grouped by opinion, in the order opinions first appear."""
        groups: dict[int, list[ProposalEntry]] = {}
        for e in self.proposals:
            groups.setdefault(e.opinion, []).append(e)
        return list(groups.values())

    @property
    def proposals_on_sam_embedding(self) -> bool:
        """Whether a proposal model reads the SAM encoder's embedding (the encoder then runs on every view)."""
        return any(e.kind in SAM_EMBEDDING_KINDS for e in self.proposals)


class BackboneVision(ModelVision):
    """The model analyzer on a frozen pretrained backbone (station.vision.backbone): the view,
    its short side resized to ``short_side`` px, runs once through ``backbone`` (from `station
    models pull`); the per-cell ``head`` (trained by `station train` from the recipe's masks at
    that size, on that backbone: both checked against its metadata at load) gives the regions
    and their class. The SAM encoder runs on a view only for a finding that can count (its
    confidence reaches its class's) of a ``mask_source = "sam"`` class: a good part costs one
    backbone run."""

    analyzer: Literal["backbone"]
    head: str
    backbone: Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"] = "efficientnet-lite0"
    short_side: int = Field(default=320, ge=64, le=2048, multiple_of=32)
    # no region is seeded or scored in this many outer cells of the head's grid (8 model px
    # each): like edge_margin_px, in the backbone's own units, so views of any size lose the
    # same share (2 measured best on the magnetic tiles)
    edge_margin_cells: int = Field(default=2, ge=0)


Vision = Annotated[Union[ThresholdVision, SamVision, BackboneVision], Field(discriminator="analyzer")]


class ImagePolicy(Strict):
    save_rejects: bool = True
    pass_sample_rate: float = Field(default=0.0, ge=0, le=1)


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: int = Field(default=1, ge=1)
    plc_id: int = Field(ge=1, le=0xFFFF)
    description: str = ""
    time_budget_ms: int = Field(gt=0, le=600_000)
    good_class: SafeName = "good"
    mm_per_px: float | None = Field(default=None, gt=0)
    # a finding counts from this confidence on (a class may set its own)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    # review band: a finding from this confidence on but below min_confidence sends the part to
    # a person (a REVIEW verdict, diverted like a reject) unless another finding rejects it; a
    # class may set its own; None: no band, such a finding passes
    review_at: float | None = Field(default=None, ge=0, le=1)
    cameras: list[RecipeCamera] = Field(min_length=1)
    preprocess: Preprocess = Preprocess()
    vision: Vision
    zones: list[Zone] = Field(default_factory=list)
    classes: Annotated[list[DefectClass], Field(min_length=1)]
    images: ImagePolicy = ImagePolicy()

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"defect class names repeat: {names}")
        codes = [c.plc_code for c in self.classes]
        if len(set(codes)) != len(codes):
            raise ValueError(f"defect class plc_code values repeat: {codes}")
        if self.good_class in names:
            raise ValueError(f"good_class {self.good_class!r} is also a defect class")
        cams = [c.name for c in self.cameras]
        if len(set(cams)) != len(cams):
            raise ValueError(f"camera names repeat: {cams}")
        for c in self.classes:
            if c.min_area_mm2 is not None and self.mm_per_px is None:
                raise ValueError(f"class {c.name!r} sets min_area_mm2 but the recipe has no mm_per_px")
            review, counts = self.review_at_of(c), self.min_confidence_of(c)
            if review is not None and review >= counts:
                whose = "its review_at" if c.review_at is not None else "the recipe's review_at"
                raise ValueError(f"class {c.name!r}: {whose} {review:g} must be below its min_confidence {counts:g} "
                                 "(the review band lies below the confidence that rejects)")
        if isinstance(self.vision, ThresholdVision):
            unknown = [b.class_name for b in self.vision.blobs if b.class_name not in names]
            if unknown:
                raise ValueError(f"vision.blobs name classes the recipe does not have: {unknown}")
        return self

    def defect_class(self, name: str) -> DefectClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def min_confidence_of(self, cls: DefectClass) -> float:
        """The confidence from which a finding of ``cls`` counts."""
        return self.min_confidence if cls.min_confidence is None else cls.min_confidence

    def review_at_of(self, cls: DefectClass) -> float | None:
        """The confidence from which a finding of ``cls`` sends the part to review (None: no band)."""
        return self.review_at if cls.review_at is None else cls.review_at


class LoadedRecipe(BaseModel):
    """A validated recipe with where it came from and a hash of its exact content."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    recipe: Recipe
    path: Path
    text: str
    content_hash: str


def load_recipe(path: Path | str, text: str | None = None) -> LoadedRecipe:
    """Load and validate a recipe file (or ``text`` claimed to come from ``path``). Raises ConfigError."""
    path = Path(path)
    if text is None:
        text = read_config_text(path)
    recipe = load_toml_model(path, Recipe, text=text)
    return LoadedRecipe(
        recipe=recipe, path=path, text=text, content_hash=hashlib.sha256(text.encode()).hexdigest()
    )


class RecipeBook:
    """The recipes of a directory, by name and by PLC ID. Bad files are reported, not fatal."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.recipes: dict[str, LoadedRecipe] = {}
        self.errors: list[ConfigError] = []
        self.reload()

    def reload(self) -> None:
        recipes, errors = {}, []
        for path in sorted(self.directory.glob("*.toml")):
            try:
                loaded = load_recipe(path)
            except ConfigError as exc:
                errors.append(exc)
                continue
            if loaded.recipe.name in recipes:
                errors.append(ConfigError(path, [("name", f"{loaded.recipe.name!r} already defined")]))
                continue
            recipes[loaded.recipe.name] = loaded
        self.recipes, self.errors = recipes, errors

    def get(self, name: str) -> LoadedRecipe:
        try:
            return self.recipes[name]
        except KeyError:
            known = ", ".join(sorted(self.recipes)) or "none"
            raise KeyError(f"no recipe named {name!r} in {self.directory} (known: {known})") from None

    def by_plc_id(self, plc_id: int) -> LoadedRecipe:
        for r in self.recipes.values():
            if r.recipe.plc_id == plc_id:
                return r
        raise KeyError(f"no recipe with plc_id {plc_id} in {self.directory}")
