"""A recipe: everything that is specific to one product. One TOML file per product in recipes/.

Validated once at load into these typed objects; the rest of the station trusts them.
Areas are px in the view's frame unless named ``_mm2``; ``mm_per_px`` converts.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from station.config_errors import ConfigError, StrictModel as Strict, load_toml_model, read_config_text

HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class RecipeCamera(Strict):
    """A view of the part: which station camera, in which trigger mode, with which features."""

    name: str
    trigger: Literal["software", "hardware", "freerun"] = "software"
    trigger_line: str = "Line0"
    # GenICam feature name -> value, applied on open (e.g. ExposureTime = 5000.0)
    features: dict[str, float | int | str | bool] = Field(default_factory=dict)


class Zone(Strict):
    """An inspection or ignore zone, as a rectangle (x0, y0, x1, y1) px or a polygon [[x, y], ...]."""

    name: str
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

    name: str
    colour: str = "#ff0000"
    plc_code: int = Field(ge=1, le=0xFFFE)
    min_area_px: int = Field(default=0, ge=0)
    min_area_mm2: float | None = Field(default=None, ge=0)
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    max_count: int = Field(default=0, ge=0, description="defects of this class tolerated before reject")
    mask_source: Literal["sam", "proposal"] = "sam"
    # threshold analyzer only: which blobs are this class (dark/bright) and their shape
    polarity: Literal["dark", "bright"] | None = None
    shape: Literal["any", "line", "blob"] = "any"

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str) -> str:
        if not HEX_COLOUR.match(v):
            raise ValueError("colour must be #rrggbb")
        return v.lower()


class Preprocess(Strict):
    to_gray: bool = False
    clahe: bool = False
    clahe_clip: float = Field(default=2.0, gt=0)
    denoise_sigma: float = Field(default=0.0, ge=0)


ProposalNetKind = Literal["pixel-mlp", "unet", "sam-head", "sam-context-head"]


def _opinions(v):
    """A proposal field as opinions: "a" -> [["a"]], ["a", "b"] -> [["a", "b"]] (one opinion of
    two models, fused), [["a", "b"], ["c"]] stays (two opinions). Mixing names and lists is refused:
    whether ["a", ["b"]] meant "fused" or "separate" cannot be told."""
    if isinstance(v, str):
        return [[v]]
    if isinstance(v, list) and v and any(isinstance(x, list) for x in v):
        if not all(isinstance(x, list) for x in v):
            raise ValueError(f"{v}: write either a list of names (fused) or a list of lists (opinions), not both")
        return v
    return [v] if isinstance(v, list) and v else v


def _distinct_opinions(v: list[list]) -> list[list]:
    names = [n for opinion in v for n in opinion]
    if len(set(names)) != len(names):
        raise ValueError(f"{v}: an entry is named twice")
    if any(not opinion for opinion in v):
        raise ValueError(f"{v}: an opinion names no model")
    return v


T = TypeVar("T")
# a TOML field that names the proposal stage's models: one (a plain string), several fused per
# pixel (a list), or several opinions each fused on its own (a list of lists; see
# station.vision.proposals); normalised to the list of opinions, never one name twice
Opinions = Annotated[list[list[T]], BeforeValidator(_opinions), AfterValidator(_distinct_opinions)]


class ModelRefs(Strict):
    """Models by name in the models directory (each ``NAME.json`` next to its file, with sha256)."""

    segmentation: str = "litemedsam"
    # one proposal model, several whose evidence is fused per pixel, or several such opinions
    # of which the surest counts (station.vision.proposals)
    proposals: Opinions[str] = Field(default_factory=list)
    classifier: str | None = None

    @property
    def proposal_names(self) -> list[str]:
        """Every proposal model, in recipe order."""
        return [n for opinion in self.proposals for n in opinion]


class Vision(Strict):
    """How the vision stage looks at a view. Owned by station/vision/."""

    analyzer: Literal["sam", "threshold"] = "sam"
    tile_px: int = Field(default=0, ge=0, description="0: whole view; else square tiles at native resolution")
    tile_overlap_px: int = Field(default=0, ge=0)
    max_proposals: int = Field(default=8, ge=1)
    proposal_threshold: float = Field(default=0.5, ge=0, le=1)
    # no proposal is seeded or scored this close to the view's edge (regions seeded further in
    # still reach it): a crop's border or the part's outline looks like a defect to the nets
    edge_margin_px: int = Field(default=0, ge=0)
    # what `station train` trains as the proposal stage (the station runs whatever models the
    # recipe names: their metadata says what they take): a per-pixel MLP on a filter bank, a
    # small U-Net on the grey view, a per-location head on the SAM encoder's embedding of the
    # view (the encoder then runs on every view, not only on views with a candidate), or a
    # list of these, trained each on its own and fused per pixel at run time, or a list of such
    # lists (opinions: fused each on its own, the surest counts); "sam-context-head" is a head on
    # the embedding that also sees the cells around each one (dilated convolutions)
    proposal_net: Opinions[ProposalNetKind] = Field(default_factory=lambda: [["pixel-mlp"]], min_length=1)
    # what the region classifier (models.classifier) does with each proposal: name it and drop
    # it when it says "not a defect" (its doubt also lowers the confidence), or only name it
    # (the confidence is then the proposal stage's alone)
    classifier_role: Literal["name-and-drop", "name"] = "name-and-drop"
    # threshold analyzer (classical baseline, used for the simulated demo part)
    dark_threshold: int = Field(default=60, ge=0, le=255)
    bright_threshold: int = Field(default=200, ge=0, le=255)

    @property
    def proposal_net_kinds(self) -> list[str]:
        """Every proposal net `station train` trains, in recipe order."""
        return [k for opinion in self.proposal_net for k in opinion]

    @property
    def proposals_on_sam_embedding(self) -> bool:
        """Whether a proposal net reads the SAM encoder's embedding (the encoder then runs on every view)."""
        return any(k.startswith("sam-") for k in self.proposal_net_kinds)


class ImagePolicy(Strict):
    save_rejects: bool = True
    pass_sample_rate: float = Field(default=0.0, ge=0, le=1)


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: int = Field(default=1, ge=1)
    plc_id: int = Field(ge=1, le=0xFFFF)
    description: str = ""
    time_budget_ms: int = Field(gt=0, le=600_000)
    good_class: str = "good"
    mm_per_px: float | None = Field(default=None, gt=0)
    cameras: list[RecipeCamera] = Field(min_length=1)
    preprocess: Preprocess = Preprocess()
    models: ModelRefs = ModelRefs()
    vision: Vision = Vision()
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
        return self

    def defect_class(self, name: str) -> DefectClass:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)


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
