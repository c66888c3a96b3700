"""The base of every config section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    # strict: "yes" is not a bool and "16" not a number; a TOML value of the wrong type is an error, never coerced
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)
