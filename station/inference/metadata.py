"""Model metadata: a ``NAME.json`` next to each model file in the models directory.

What differs between models of one role (input size, normalisation, padding, prompts,
mask head) lives here, not in code branches. The sha256 is checked before a model loads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ModelError(Exception):
    """A model cannot be used: missing, corrupt, checksum mismatch, or failing at run time."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(gt=0, description="square model input side, px")
    channels: int = 3
    resize: Literal["longest_side", "stretch"] = "longest_side"
    normalization: Literal["minmax", "meanstd", "scale"] = "minmax"
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])  # in 0..255 units
    std: list[float] = Field(default_factory=lambda: [255.0, 255.0, 255.0])
    pad: Literal["bottom_right_zero"] = "bottom_right_zero"


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # "backbone": a frozen feature extractor (station.vision.backbone); heads on it are "proposals"
    # with extra.input = "backbone"
    role: Literal["sam_encoder", "sam_decoder", "proposals", "classifier", "backbone"]
    file: str  # file name, relative to the metadata file
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int | None = None
    input: InputSpec | None = None
    prompts: list[Literal["box", "point"]] = Field(default_factory=lambda: ["box"])
    mask_index: int = 0  # which decoder mask head to use for a box prompt
    classes: list[str] = Field(default_factory=list)
    pair: str | None = None  # encoder <-> decoder partner name
    # other forms of this model (e.g. {"rknn-rk3588-fp16": {"file": ..., "sha256": ..., "parity": {...}}})
    forms: dict[str, dict] = Field(default_factory=dict)
    source: str = ""
    extra: dict = Field(default_factory=dict)

    @classmethod
    def read(cls, path: Path | str) -> "ModelMetadata":
        path = Path(path)
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ModelError(f"model metadata {path} not found (run `station models pull`)") from None
        except (json.JSONDecodeError, ValidationError, OSError) as exc:
            raise ModelError(f"model metadata {path} is invalid: {exc}") from None

    def write(self, path: Path | str) -> None:
        Path(path).write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verified_file(path: Path, model: str, sha256: str, missing_hint: str, verify: bool = True) -> Path:
    """``path`` if it exists and (with ``verify``) its sha256 is ``sha256``; else ModelError naming ``model``."""
    if not path.is_file():
        raise ModelError(f"model {model}: file {path} is missing ({missing_hint})")
    if verify:
        actual = sha256_file(path)
        if actual != sha256:
            raise ModelError(
                f"model {model}: {path} has sha256 {actual[:12]}…, metadata says {sha256[:12]}…; refusing to load"
            )
    return path


def resolve_model(models_dir: Path | str, name: str, verify: bool = True) -> tuple[ModelMetadata, Path]:
    """Find ``name.json`` in ``models_dir``, check its file's sha256, return (metadata, model path)."""
    models_dir = Path(models_dir)
    meta = ModelMetadata.read(models_dir / f"{name}.json")
    path = verified_file(models_dir / meta.file, name, meta.sha256, f"run `station models pull {name}`", verify)
    return meta, path
