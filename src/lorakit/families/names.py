"""Family facts without importing torch (`config validate` reads them and must stay fast): the built-in models,
each family's block structure, a diffusers UNet config's family and the spelling of block names.

The family classes (`tiny_name`, `block_names`, `kohya_sgm_names`), `random_init` and `registry.detect_family`
agree with these tables; tests check it.
"""

from __future__ import annotations

import re

TINY_MODELS: dict[str, str] = {"tiny-sd1": "sd1", "tiny-sd2-v": "sd2", "tiny-sdxl": "sdxl"}  # name → family
RANDOM_MODELS: dict[str, tuple[str, str]] = {  # name → (family, shipped architecture config)
    "random-sd15": ("sd1", "sd15"),
    "random-sd21-v": ("sd2", "sd21-v"),
    "random-sdxl": ("sdxl", "sdxl-base"),
}
BUILTIN_MODELS: dict[str, str] = {**TINY_MODELS, **{name: fam for name, (fam, _) in RANDOM_MODELS.items()}}

# Full-size UNet block structure: (input blocks = output blocks, kohya names the UNet in the original SGM layout)
FAMILY_BLOCKS: dict[str, tuple[int, bool]] = {"sd1": (12, False), "sd2": (12, False), "sdxl": (9, True)}
BASE, MID = "BASE", "MID"
# kohya prefixes of OpenCLIP text encoders (SD2's only one, SDXL's second): A1111 runs them as one fused
# MultiheadAttention, unlike Hugging Face CLIP's separate q/k/v/out Linears (networks.consumers)
OPENCLIP_TE_PREFIXES: dict[str, tuple[str, ...]] = {"sd2": ("lora_te",), "sdxl": ("lora_te2",)}
_BLOCK_ALIAS = re.compile(r"^(IN|OUT|M|MID)(\d*)$")


def family_of_unet_config(unet: dict) -> str:
    """The family of a diffusers UNet config: SDXL has text-time conditioning; SD2 (unlike SD1) uses linear
    projections in its transformer blocks (robust for the tiny models too, unlike widths)."""
    if unet.get("addition_embed_type") == "text_time":
        return "sdxl"
    return "sd2" if unet.get("use_linear_projection") else "sd1"


def canonical_block(name: str) -> str:
    """A user's block name in lorakit's spelling: 'in4'/'IN4' → 'IN04', 'M00'/'M'/'mid' → 'MID', 'base' → 'BASE'.

    TrainTrain and LoRA Block Weight write the middle block 'M00' and SDXL blocks sometimes 'IN4'; a name that is
    no block at all comes back upper-cased for the caller to reject against the family's block names.
    """
    upper = name.strip().upper()
    m = _BLOCK_ALIAS.match(upper)
    if not m:
        return upper
    kind, digits = m.groups()
    if kind in ("M", "MID"):
        return MID if digits in ("", "0", "00") else upper
    return f"{kind}{int(digits):02d}" if digits else upper
