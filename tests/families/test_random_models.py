"""Full-size random models for real-size benchmarks: right classes and parameter counts (built on `meta`)."""

from __future__ import annotations

import pytest
import torch

from lorakit.config.schema import ModelSection
from lorakit.families import FAMILIES, detect_family
from lorakit.families.random_init import RANDOM_MODELS, random_pipeline

UNET_PARAMS = {"random-sd15": 859_520_964, "random-sd21-v": 865_910_724, "random-sdxl": 2_567_463_684}


@pytest.mark.parametrize("name", sorted(RANDOM_MODELS))
def test_random_model_has_the_real_architecture(name: str) -> None:
    family = FAMILIES[detect_family(ModelSection(pretrained_model_name_or_path=name))]
    pipe = random_pipeline(name, family.pipeline_class, torch.float16, device="meta")
    assert type(pipe) is family.pipeline_class
    assert sum(p.numel() for p in pipe.unet.parameters()) == UNET_PARAMS[name]
    assert all(p.dtype == torch.float16 for p in pipe.unet.parameters())
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    expected = "v_prediction" if name == "random-sd21-v" else "epsilon"
    assert pipe.scheduler.config.prediction_type == expected
