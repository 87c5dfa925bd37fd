"""One error type for every bad configuration or recipe file: names file, key and reason."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration or recipe file is unusable. ``str()`` is the one message for the user."""

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]):
        self.path = str(path)
        self.problems = problems
        lines = [f"{self.path}: {key}: {reason}" if key else f"{self.path}: {reason}" for key, reason in problems]
        super().__init__("\n".join(lines))


def _location(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts)


_UNION_TAGS = {"simulated", "replay", "genicam", "threshold", "sam"}


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        # drop the tag pydantic adds for discriminated unions (e.g. cameras[0].genicam.device)
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x in _UNION_TAGS))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "finite_number":
            msg = "must be a finite number"
        problems.append((_location(loc), msg))
    return problems


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def read_config_text(path: Path) -> str:
    """The text of a configuration file; a missing or unreadable file is a ConfigError."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [("", f"cannot read: {exc}")]) from None


def load_toml_model(path: Path, model: type[M], text: str | None = None) -> M:
    """Read a TOML file (or ``text`` claimed to come from it) and validate it into ``model``.
    Any problem becomes a ConfigError naming file, key and reason."""
    path = Path(path)
    raw = text if text is not None else read_config_text(path)
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [("", f"not valid TOML: {exc}")]) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, validation_problems(exc)) from None
