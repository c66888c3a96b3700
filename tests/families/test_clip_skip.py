"""train.clip_skip: the text encoder's output N layers from the end, through its final LayerNorm.

Formula from sd-scripts `library/strategy_sd.py` SdTextEncodingStrategy.encode_tokens (and
train_util.get_hidden_states): None → text_encoder(ids)[0]; n → final_layer_norm(hidden_states[-n]). SDXL ignores it
(`library/sdxl_train_util.py` verify_sdxl_training_args only warns; the strategy always takes the penultimate layer).
Expected values come from transformers' `output_hidden_states` directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lorakit.config.schema import ModelSection
from lorakit.errors import ConfigError
from lorakit.families import ModelParts, get_family

CAPTIONS = ["a red cat", "blue dog on a mat"]


def tiny(family: str) -> ModelParts:
    name = {"sd1": "tiny-sd1", "sd2": "tiny-sd2-v", "sdxl": "tiny-sdxl"}[family]
    return get_family(family).load(ModelSection(pretrained_model_name_or_path=name))


def reference(parts: ModelParts) -> tuple[Any, torch.nn.Module]:
    """transformers' outputs of the (single) text encoder for CAPTIONS, padded to its window."""
    tok, te = parts.tokenizers[0], parts.text_encoders[0]
    ids = tok(CAPTIONS, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    return te(ids, output_hidden_states=True), te


@pytest.mark.parametrize("family", ["sd1", "sd2"])
@torch.no_grad()
def test_clip_skip_2_is_the_penultimate_layer_through_final_layer_norm(family: str) -> None:
    parts = tiny(family)
    out, te = reference(parts)
    parts.set_prompt_encoding(2, None)
    got = parts.family.encode_prompts(parts, CAPTIONS)["encoder_hidden_states"]
    torch.testing.assert_close(got, te.final_layer_norm(out.hidden_states[-2]))
    assert not torch.allclose(got, out.last_hidden_state)  # a different layer indeed


@pytest.mark.parametrize("clip_skip", [None, 1])
@torch.no_grad()
def test_clip_skip_1_or_unset_is_the_last_hidden_state(clip_skip: int | None) -> None:
    parts = tiny("sd1")
    out, te = reference(parts)
    parts.set_prompt_encoding(clip_skip, None)
    got = parts.family.encode_prompts(parts, CAPTIONS)["encoder_hidden_states"]
    torch.testing.assert_close(got, out.last_hidden_state)
    torch.testing.assert_close(got, te.final_layer_norm(out.hidden_states[-1]))


@torch.no_grad()
def test_clip_skip_3_of_a_2_layer_encoder_is_the_embeddings_output() -> None:
    parts = tiny("sd1")
    out, te = reference(parts)
    parts.set_prompt_encoding(3, None)
    got = parts.family.encode_prompts(parts, CAPTIONS)["encoder_hidden_states"]
    torch.testing.assert_close(got, te.final_layer_norm(out.hidden_states[0]))


def test_clip_skip_beyond_the_encoder_is_a_config_error() -> None:
    parts = tiny("sd1")
    parts.set_prompt_encoding(4, None)
    with pytest.raises(ConfigError, match="train.clip_skip = 4: the text encoder has only 2 layers"):
        parts.family.encode_prompts(parts, CAPTIONS)


@torch.no_grad()
def test_sdxl_ignores_clip_skip() -> None:
    parts = tiny("sdxl")
    plain = parts.family.encode_prompts(parts, CAPTIONS)
    parts.set_prompt_encoding(2, None)
    skipped = parts.family.encode_prompts(parts, CAPTIONS)
    for key in ("encoder_hidden_states", "text_embeds"):
        assert torch.equal(plain[key], skipped[key])
    out, _ = reference(parts)  # the first encoder's penultimate layer, no final LayerNorm
    torch.testing.assert_close(plain["encoder_hidden_states"][..., :32], out.hidden_states[-2])


def test_clip_skip_trains_through_the_chosen_layer() -> None:
    """With the text encoder trained, gradients reach the layers up to the chosen one, not the ones after it."""
    parts = tiny("sd1")
    parts.set_prompt_encoding(2, None)
    te = parts.text_encoders[0]
    te.requires_grad_(True)
    parts.family.encode_prompts(parts, CAPTIONS)["encoder_hidden_states"].sum().backward()
    layers = te.encoder.layers
    assert layers[0].mlp.fc1.weight.grad is not None and layers[0].mlp.fc1.weight.grad.abs().sum() > 0
    assert layers[1].mlp.fc1.weight.grad is None  # the last layer is skipped
    assert te.final_layer_norm.weight.grad is not None
