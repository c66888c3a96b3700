"""Model families. A new family is one module and one line in `FAMILIES`."""

from __future__ import annotations

from pathlib import Path

from ..config.schema import ModelSection
from ..errors import ModelError
from .base import Family, ModelParts, model_not_found, read_model_index
from .random_init import RANDOM_MODELS
from .sd1 import SD1
from .sd2 import SD2
from .sdxl import SDXL

FAMILIES: dict[str, Family] = {f.name: f for f in (SD1(), SD2(), SDXL())}
TINY_MODELS: dict[str, str] = {f.tiny_name: f.name for f in FAMILIES.values()}
BUILTIN_MODELS: dict[str, str] = {**TINY_MODELS, **{name: fam for name, (fam, _) in RANDOM_MODELS.items()}}

__all__ = ["FAMILIES", "TINY_MODELS", "Family", "ModelParts", "detect_family", "get_family", "load_model"]


def detect_family(cfg: ModelSection) -> str:
    """The family named in the config, or detected from a tiny name, a diffusers folder or a single file."""
    source = cfg.pretrained_model_name_or_path
    if cfg.family != "auto":
        return cfg.family
    if source in BUILTIN_MODELS:
        return BUILTIN_MODELS[source]
    path = Path(source).expanduser()
    if path.is_dir():
        return _family_of_folder(path)
    if path.is_file():
        from .single_file import detect_family as detect_file

        return detect_file(path, allow_pickle=cfg.allow_pickle)
    raise model_not_found(source)


def _family_of_folder(path: Path) -> str:
    """SDXL has text-time conditioning; SD2 (unlike SD1) uses linear projections in its transformer blocks."""
    import json

    unet_config = path / "unet" / "config.json"
    if not read_model_index(path) or not unet_config.is_file():
        raise ModelError(f"{path} is not a diffusers model folder (no model_index.json / unet/config.json)",
                         "point model.pretrained_model_name_or_path at the folder that holds model_index.json")
    unet = json.loads(unet_config.read_text())
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if unet.get("use_linear_projection") else "sd1"


def get_family(name: str) -> Family:
    """The registered family called `name`."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family '{name}'", f"use one of: {', '.join(FAMILIES)}") from None


def load_model(cfg: ModelSection, dtype=None, skip_vae: bool = False) -> ModelParts:
    """Detect the family and load the model (without reading a folder's VAE when `skip_vae`)."""
    import torch

    return get_family(detect_family(cfg)).load(cfg, dtype or torch.float32, skip_vae)
