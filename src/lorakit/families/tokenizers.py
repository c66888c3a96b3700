"""A configured base model's tokenizers without its weights: the plan counts caption tokens with them.

Only tokenizer files are read (a diffusers folder's `tokenizer*/`, or the shipped CLIP vocabulary for built-in
models and single-file checkpoints, whose family is told by the file's header); nothing else of the model loads.
Tokenizers are cached per folder, so the plan and the run build each once per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..config.schema import ModelSection
from . import detect_family, get_family
from .base import model_not_found
from .random_init import RANDOM_MODELS
from .single_file import default_arch, load_clip_tokenizer, shipped_config
from .tiny import tiny_tokenizer


def model_tokenizers(cfg: ModelSection) -> tuple[Any, ...]:
    """The tokenizers the model of `cfg` encodes prompts with, in the family's order (SDXL: two).

    Raises `ModelError` when the model cannot be found or recognised (as loading it would)."""
    family = get_family(detect_family(cfg))
    source = cfg.pretrained_model_name_or_path
    if source == family.tiny_name:
        return _tiny(len(family.tokenizer_attrs))
    path = Path(source).expanduser()
    if source in RANDOM_MODELS:
        folder = shipped_config(RANDOM_MODELS[source][1])
    elif path.is_dir():
        folder = path
    elif path.is_file() or _looks_like_hub_id(source):
        # SD1/SD2/SDXL tokenizers are the shipped CLIP vocabularies: a single file or a hub model needs no download
        folder = shipped_config(default_arch(family.name, cfg.v_parameterization))
    else:
        raise model_not_found(source)
    return _folder_tokenizers(str(folder.resolve()), family.tokenizer_attrs)


def _looks_like_hub_id(value: str) -> bool:
    """'org/name' that is not a local path: a Hugging Face model id."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not Path(value).exists()


@lru_cache(maxsize=2)
def _tiny(count: int) -> tuple[Any, ...]:
    return tuple(tiny_tokenizer() for _ in range(count))


@lru_cache(maxsize=8)
def _folder_tokenizers(folder: str, attrs: tuple[str, ...]) -> tuple[Any, ...]:
    """`folder/<attr>` tokenizers (the shipped CLIP vocabulary where a folder has none of its own)."""
    return tuple(load_clip_tokenizer(Path(folder) / attr) for attr in attrs)
