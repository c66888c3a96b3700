"""Full-size models with random weights, built from the shipped architecture configs.

`random-sd15`, `random-sd21-v` and `random-sdxl` need no checkpoint and no hub: they exist to measure real-size
speed and memory (benchmarks on a GPU machine), where the weights' values do not matter.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Iterator

import diffusers
import torch
import transformers
from diffusers import DiffusionPipeline

from .names import RANDOM_MODELS
from .single_file import _scheduler_for, load_clip_tokenizer, shipped_config
from .tiny import seeded

__all__ = ["RANDOM_MODELS", "random_pipeline"]


def random_pipeline(name: str, pipeline_class: type[DiffusionPipeline], dtype: torch.dtype, seed: int = 0,
                    device: str | None = None) -> DiffusionPipeline:
    """A pipeline of the named architecture with random weights, built on the GPU when there is one (fast init)."""
    folder = shipped_config(RANDOM_MODELS[name][1])
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    parts: dict[str, object] = {}
    for component, spec in index.items():
        if not isinstance(spec, list):
            continue
        library, cls_name = spec
        if cls_name is None:
            parts[component] = None
        elif component.startswith("tokenizer"):
            parts[component] = load_clip_tokenizer(folder / component)
        elif component == "scheduler":
            parts[component] = _scheduler_for(folder, None)
        else:
            # models only (schedulers keep their tables on the CPU), created directly in `dtype`: building SDXL in
            # fp32 and casting afterwards would hold ~10 GB at once for a 5 GB bf16 model
            with seeded(seed), torch.device(device), default_dtype(dtype):
                if library == "diffusers":
                    cls = getattr(diffusers, cls_name)
                    model = cls.from_config(cls.load_config(folder / component))
                else:
                    cls = getattr(transformers, cls_name)
                    config = cls.config_class.from_pretrained(folder / component)
                    # transformers builds inner models in the config's dtype (fp32 in the shipped configs), which
                    # would override ours; the attribute is `dtype` since transformers 5, `torch_dtype` before
                    setattr(config, "dtype" if hasattr(config, "dtype") else "torch_dtype", dtype)
                    model = cls(config)
            parts[component] = model.to(dtype)
    return pipeline_class(**parts)


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create floating-point parameters in `dtype` inside the block (torch's default dtype, restored after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
