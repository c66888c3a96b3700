"""Model families. A new family is one module and one line in `FAMILIES`."""

from __future__ import annotations

from pathlib import Path

from ..config.schema import ModelSection
from ..errors import ModelError
from .base import Family, ModelParts, read_model_index
from .sd1 import SD1
from .sd2 import SD2
from .sdxl import SDXL

FAMILIES: dict[str, Family] = {f.name: f for f in (SD1(), SD2(), SDXL())}
TINY_MODELS: dict[str, str] = {f.tiny_name: f.name for f in FAMILIES.values()}

__all__ = ["FAMILIES", "TINY_MODELS", "Family", "ModelParts", "detect_family", "get_family", "load_model"]


def detect_family(cfg: ModelSection) -> str:
    """The family named in the config, or detected from a tiny name, a diffusers folder or a single file."""
    source = cfg.pretrained_model_name_or_path
    if cfg.family != "auto":
        return cfg.family
    if source in TINY_MODELS:
        return TINY_MODELS[source]
    path = Path(source).expanduser()
    if path.is_dir():
        index = read_model_index(path)
        if "XL" in index.get("_class_name", ""):
            return "sdxl"
        te_config = path / "text_encoder" / "config.json"
        if te_config.is_file() and '"hidden_size": 1024' in te_config.read_text():
            return "sd2"
        if index:
            return "sd1"
        raise ModelError(f"{path} is not a diffusers model folder (no model_index.json)", "set model.family")
    if path.is_file():
        from .single_file import detect_family as detect_file

        return detect_file(path)
    raise ModelError(
        f"model not found: {source}",
        "set model.pretrained_model_name_or_path to a diffusers folder, a .safetensors checkpoint or one of "
        + ", ".join(TINY_MODELS),
    )


def get_family(name: str) -> Family:
    """The registered family called `name`."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family '{name}'", f"use one of: {', '.join(FAMILIES)}") from None


def load_model(cfg: ModelSection, dtype=None) -> ModelParts:
    """Detect the family and load the model."""
    import torch

    return get_family(detect_family(cfg)).load(cfg, dtype or torch.float32)
