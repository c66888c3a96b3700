"""Model families: everything model-specific. The registry and detection are in `registry`.

Importing this package (or `lorakit.families.names`) does not import torch: `config validate` needs only the
built-in model names. The rest (`FAMILIES`, `Family`, `load_model`, …) is imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .names import BUILTIN_MODELS, RANDOM_MODELS, TINY_MODELS

_LAZY = {  # attribute → module that defines it (importing it imports torch and diffusers)
    **dict.fromkeys(("FAMILIES", "detect_family", "family_mismatch", "get_family", "load_model", "lora_family"),
                    ".registry"),
    **dict.fromkeys(("Family", "ModelParts", "model_not_found", "read_model_index"), ".base"),
}

__all__ = ["BUILTIN_MODELS", "FAMILIES", "RANDOM_MODELS", "TINY_MODELS", "Family", "ModelParts", "detect_family",
           "family_mismatch", "get_family", "load_model", "lora_family"]


def __getattr__(name: str) -> Any:
    """Import the heavy parts on first access (PEP 562) and keep them as ordinary module attributes."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
