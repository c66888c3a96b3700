"""Tokenizers for the plan's caption check, without the model's weights (and without a hub for hub ids)."""

from __future__ import annotations

from lorakit.config.schema import ModelSection
from lorakit.families.tokenizers import model_tokenizers


def test_hub_model_uses_the_shipped_clip_vocabulary() -> None:
    (tok,) = model_tokenizers(ModelSection(pretrained_model_name_or_path="org/some-sd15", family="sd1"))
    assert tok.model_max_length == 77
    # CLIP BPE: "a photo of a cat" is 5 tokens between BOS (49406) and EOS (49407)
    ids = tok("a photo of a cat").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 7
    assert len(model_tokenizers(ModelSection(pretrained_model_name_or_path="org/some-sdxl", family="sdxl"))) == 2

