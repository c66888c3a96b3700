"""User-facing errors: every one names the file, key or image and says what to do.

The CLI turns a `LorakitError` into a message and exit status 2, never a traceback.
"""

from __future__ import annotations


class LorakitError(Exception):
    """An error caused by the user's input; `hint` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  → {self.hint}"


class ConfigError(LorakitError):
    """A config file or `--set` override is invalid. `problems` lists every issue found at once."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems), hint)


class DataError(LorakitError):
    """An image folder or image cannot be used for training."""


class ModelError(LorakitError):
    """A base model cannot be found, recognised or loaded."""
