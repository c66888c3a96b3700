"""Names of the built-in models, without importing torch: `config validate` reads them and must stay fast.

The family classes (`tiny_name`) and `random_init` agree with these tables; a test checks it.
"""

from __future__ import annotations

TINY_MODELS: dict[str, str] = {"tiny-sd1": "sd1", "tiny-sd2-v": "sd2", "tiny-sdxl": "sdxl"}  # name → family
RANDOM_MODELS: dict[str, tuple[str, str]] = {  # name → (family, shipped architecture config)
    "random-sd15": ("sd1", "sd15"),
    "random-sd21-v": ("sd2", "sd21-v"),
    "random-sdxl": ("sdxl", "sdxl-base"),
}
BUILTIN_MODELS: dict[str, str] = {**TINY_MODELS, **{name: fam for name, (fam, _) in RANDOM_MODELS.items()}}
