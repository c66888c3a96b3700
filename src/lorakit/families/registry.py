"""The family registry: a new family is one module and one line in `FAMILIES` (and its built-in names in `names`).

Detecting the family of a model (built-in name, diffusers folder, single file, LoRA file) lives here too.
"""

from __future__ import annotations

import re

from pathlib import Path

from ..config.schema import ModelSection
from ..errors import ModelError
from .base import Family, ModelParts, model_not_found, read_model_index
from .names import BUILTIN_MODELS, family_of_unet_config
from .sd1 import SD1
from .sd2 import SD2
from .sdxl import SDXL

FAMILIES: dict[str, Family] = {f.name: f for f in (SD1(), SD2(), SDXL())}


def detect_family(cfg: ModelSection) -> str:
    """The family named in the config, or detected from a tiny name, a diffusers folder or a single file.

    A named family that contradicts what the model shows (a built-in name, a folder's config, a file's tensor
    names) is a ModelError; a model whose family cannot be read is taken to be the named one.
    """
    source = cfg.pretrained_model_name_or_path
    if cfg.family != "auto":
        try:
            actual = detect_family(cfg.model_copy(update={"family": "auto"}))
        except ModelError:  # not found here, or not recognisable: the named family decides (or load reports it)
            return cfg.family
        if actual != cfg.family:
            raise family_mismatch(source, actual, cfg.family)
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


def family_mismatch(source: str, actual: str, named: str) -> ModelError:
    """The error for a family setting that the model contradicts."""
    return ModelError(f"{source} is an {actual} model, not {named}",
                      f"drop --family (model.family = 'auto') or use {actual}")


# kohya `ss_base_model_version` / `modelspec.architecture` values, lower-cased with punctuation removed, → family.
# Trainers spell them differently: sd-scripts "sd_v1", "sd_v2_768_v", "sdxl_base_v1-0"; modelspec
# "stable-diffusion-v1/lora"; ai-toolkit "sd_1.5", "sd_2.1". Families lorakit lacks come back by their own name; a
# value nobody recognises is no evidence (the key names and widths decide).
_LORA_METADATA = ((re.compile(r"sdxl|stablediffusionxl"), "sdxl"), (re.compile(r"^(sd|stablediffusion)v?2"), "sd2"),
                  (re.compile(r"^(sd|stablediffusion)v?1"), "sd1"), (re.compile(r"^(sd|stablediffusion)v?3"), "sd3"),
                  (re.compile(r"flux"), "flux"), (re.compile(r"pixart"), "pixart"), (re.compile(r"auraflow"), "auraflow"),
                  (re.compile(r"hunyuan"), "hunyuan"), (re.compile(r"kolors"), "kolors"))
_TEXT_WIDTHS = {768: "sd1", 1024: "sd2"}  # CLIP-L (SD1) and OpenCLIP-H (SD2) text width = cross-attention width


def lora_family(shapes: dict[str, list[int]], metadata: dict[str, str]) -> tuple[str | None, str]:
    """(family, evidence) of a kohya LoRA file: its metadata, else its key names and text widths; (None, "")
    when nothing shows it (tiny models share their widths). A family lorakit lacks (sd3, flux, …) comes back by
    its own name."""
    for key in ("ss_base_model_version", "modelspec.architecture"):
        value = (metadata.get(key) or "").strip()
        plain = re.sub(r"[^a-z0-9]", "", value.lower())
        family = next((fam for pattern, fam in _LORA_METADATA if pattern.search(plain)), None)
        if family:
            return family, f"{key} = {value}"
    if any(k.startswith(("lora_te1_", "lora_te2_")) or "_input_blocks_" in k or "_output_blocks_" in k
           or "_middle_block_" in k for k in shapes):
        return "sdxl", "its key names: lora_te1_/lora_te2_/input_blocks are SDXL's"
    for key, shape in shapes.items():
        text_in = key.startswith("lora_te_") and "self_attn_q_proj.lora_down" in key
        cross = key.startswith("lora_unet_") and "attn2_to_k.lora_down" in key
        if (text_in or cross) and len(shape) == 2 and shape[1] in _TEXT_WIDTHS:
            return _TEXT_WIDTHS[shape[1]], f"its text width {shape[1]} ({key.split('.')[0]})"
    return None, ""


def _family_of_folder(path: Path) -> str:
    """SDXL has text-time conditioning; SD2 (unlike SD1) uses linear projections in its transformer blocks."""
    import json

    unet_config = path / "unet" / "config.json"
    if not read_model_index(path) or not unet_config.is_file():
        raise ModelError(f"{path} is not a diffusers model folder (no model_index.json / unet/config.json)",
                         "point model.pretrained_model_name_or_path at the folder that holds model_index.json")
    return family_of_unet_config(json.loads(unet_config.read_text()))


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
