"""Loading through the family contract: VAE override, diffusers folders, family detection, v-prediction flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.config.schema import ModelSection
from lorakit.errors import ModelError
from lorakit.families import detect_family, load_model


def test_vae_override_from_folder_and_single_file(tmp_path: Path) -> None:
    donor = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    with torch.no_grad():
        for p in donor.vae.parameters():
            p.add_(0.5)
    donor.vae.save_pretrained(tmp_path / "vae")
    save_file({k: v.contiguous() for k, v in donor.vae.state_dict().items()}, str(tmp_path / "vae.safetensors"))
    for source in (tmp_path / "vae", tmp_path / "vae.safetensors"):
        parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1", vae=str(source)))
        for (name, a), b in zip(donor.vae.state_dict().items(), parts.vae.state_dict().values()):
            assert torch.equal(a, b), (source.name, name)


@pytest.mark.parametrize("tiny,family", [("tiny-sd1", "sd1"), ("tiny-sd2-v", "sd2"), ("tiny-sdxl", "sdxl")])
def test_diffusers_folder_round_trip(tmp_path: Path, tiny: str, family: str) -> None:
    parts = load_model(ModelSection(pretrained_model_name_or_path=tiny))
    parts.pipeline.save_pretrained(tmp_path / "model")
    cfg = ModelSection(pretrained_model_name_or_path=str(tmp_path / "model"))
    assert detect_family(cfg) == family
    again = load_model(cfg)
    assert again.prediction_type == parts.prediction_type
    for (name, a), b in zip(parts.unet.state_dict().items(), again.unet.state_dict().values()):
        assert torch.equal(a, b), name


def test_v_parameterization_flag_overrides_the_model() -> None:
    assert load_model(ModelSection(pretrained_model_name_or_path="tiny-sd2-v")).prediction_type == "v_prediction"
    forced = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd2-v", v_parameterization=False))
    assert forced.prediction_type == "epsilon"


def test_missing_model_and_missing_vae(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model not found"):
        load_model(ModelSection(pretrained_model_name_or_path=str(tmp_path / "nothing")))
    with pytest.raises(ModelError, match="nothing.safetensors"):
        load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1", vae=str(tmp_path / "nothing.safetensors")))
