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


def test_random_models_are_created_in_the_target_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fp32 copy first (random-sdxl would peak at ~10 GB): every part has its dtype before any cast."""
    seen: list[set[torch.dtype]] = []
    original = torch.nn.Module.to

    def record(self: torch.nn.Module, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append({p.dtype for p in self.parameters()})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", record)
    random_pipeline("random-sdxl", FAMILIES["sdxl"].pipeline_class, torch.bfloat16, device="meta")
    assert len(seen) >= 4 and all(dtypes == {torch.bfloat16} for dtypes in seen)  # unet, vae, 2 text encoders
    assert torch.get_default_dtype() == torch.float32


def test_default_dtype_is_restored_after_an_error() -> None:
    from lorakit.families.random_init import default_dtype

    with pytest.raises(RuntimeError), default_dtype(torch.float16):
        assert torch.nn.Linear(2, 2).weight.dtype == torch.float16
        raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float32
