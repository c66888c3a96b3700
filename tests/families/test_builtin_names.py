"""The torch-free table of built-in model names agrees with the families, and reading it does not import torch."""

from __future__ import annotations

import subprocess
import sys

from lorakit.families import BUILTIN_MODELS, FAMILIES, RANDOM_MODELS, TINY_MODELS
from lorakit.families import random_init


def test_tiny_names_are_the_families_tiny_models() -> None:
    assert TINY_MODELS == {f.tiny_name: f.name for f in FAMILIES.values()}
    assert random_init.RANDOM_MODELS is RANDOM_MODELS
    assert BUILTIN_MODELS == {"tiny-sd1": "sd1", "tiny-sd2-v": "sd2", "tiny-sdxl": "sdxl",
                              "random-sd15": "sd1", "random-sd21-v": "sd2", "random-sdxl": "sdxl"}


def test_validate_knows_every_builtin_model() -> None:
    from lorakit.config.validate import BUILTIN_FAMILIES

    assert BUILTIN_FAMILIES == BUILTIN_MODELS


def test_reading_the_names_does_not_import_torch() -> None:
    code = ("import sys, lorakit.config.validate as v, lorakit.families as f; "
            "assert v.BUILTIN_FAMILIES['random-sdxl'] == 'sdxl' and f.TINY_MODELS; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
