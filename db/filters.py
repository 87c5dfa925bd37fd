"""Validated history filters: the only way user text reaches a query.

Every text field is checked against a strict pattern (clear error, not an empty result);
values then reach SQL only as bound parameters. Naive date/times are taken as the
station's local time (the ``zone`` given to ``parse``: the station file's ``[shifts] timezone``,
as exports, reports and shifts read it; else the operating system's); stored times are UTC.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

RECIPE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # as station.recipe.Recipe.name
# Defect class and station names: letters (any script), digits, space, . _ -
LABEL = re.compile(r"\w[\w .\-]{0,63}")


class FilterError(ValueError):
    """A filter the user gave is malformed or names something unknown; ``field`` says which."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


def _pattern(regex: re.Pattern, what: str):
    def check(v: str | None) -> str | None:
        if v is not None and not regex.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a valid {what} (allowed: {regex.pattern})")
        return v

    return AfterValidator(check)


def _aware(v: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
    if v is None:
        return None
    if v.tzinfo is None:
        zone = (info.context or {}).get("zone")
        v = v.replace(tzinfo=zone) if zone is not None else v.astimezone()
    return v.astimezone(dt.timezone.utc)


Timestamp = Annotated[dt.datetime | None, AfterValidator(_aware)]


class HistoryFilter(BaseModel):
    """Which inspections: all given conditions must hold. ``until`` is exclusive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    since: Timestamp = None
    until: Timestamp = None
    recipe: Annotated[str | None, _pattern(RECIPE_NAME, "recipe name")] = None
    verdict: Literal["pass", "reject", "review"] | None = None
    defect_class: Annotated[str | None, _pattern(LABEL, "defect class name")] = None
    part_id: int | None = Field(default=None, ge=0, le=2**63 - 1)
    station_id: Annotated[str | None, _pattern(LABEL, "station id")] = None

    @model_validator(mode="after")
    def _ordered(self) -> "HistoryFilter":
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) must be before until ({self.until.isoformat()})")
        return self

    @classmethod
    def parse(cls, zone: dt.tzinfo | None = None, **raw: Any) -> "HistoryFilter":
        """Build from user input (strings from a CLI or a form); empty strings mean "any"; a time
        without an offset is a local time in ``zone`` (the station's; else the system's).

        Raises FilterError naming the field and what is wrong.
        """
        data = {k: v for k, v in raw.items() if v is not None and v != ""}
        try:
            return cls.model_validate(data, context={"zone": zone})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"].startswith("datetime"):
                msg = f"{err.get('input')!r} is not a date/time; use ISO 8601, e.g. 2026-11-24T06:00:00Z ({msg})"
            elif field == "verdict":
                msg = f"{err.get('input')!r} is not a verdict; use pass, reject or review"
            raise FilterError(field, msg) from None
