"""The saved kohya file is the product: diffusers' own loader must reproduce the trained model exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lorakit.config.schema import ModelSection, NetworkSection
from lorakit.errors import LorakitError
from lorakit.families import FAMILIES, load_model
from lorakit.networks import formats
from lorakit.networks.attach import adapter_layers, attach_network, components

from .helpers import set_weight, unet_output

TINY = [f.tiny_name for f in FAMILIES.values()]


def trained_parts(name: str, train_te: bool):
    """A tiny model with a LoRA whose weights are random (as if trained: up weights non-zero)."""
    parts = load_model(ModelSection(pretrained_model_name_or_path=name))
    torch.manual_seed(0)
    params = attach_network(parts, NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=train_te))
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.2)
    return parts


@pytest.mark.parametrize("train_te", [False, True], ids=["unet", "unet+te"])
@pytest.mark.parametrize("name", TINY)
def test_kohya_file_loads_in_diffusers_with_same_output(name: str, train_te: bool, tmp_path: Path) -> None:
    parts = trained_parts(name, train_te)
    base = unet_output(load_model(ModelSection(pretrained_model_name_or_path=name)))
    expected = unet_output(parts)
    assert (expected - base).abs().max() > 1e-3  # the adapter really changes the output

    path = formats.save_kohya(tmp_path / "x.safetensors", formats.to_kohya(parts), {"ss_network_dim": "4"})
    fresh = load_model(ModelSection(pretrained_model_name_or_path=name))
    fresh.pipeline.load_lora_weights(str(path), adapter_name="loaded")
    assert (unet_output(fresh) - expected).abs().max() <= 1e-5

    set_weight(parts, 0.5)
    fresh.pipeline.set_adapters(["loaded"], adapter_weights=[0.5])
    half = unet_output(parts)
    assert (half - expected).abs().max() > 1e-4  # scaling matters
    assert (unet_output(fresh) - half).abs().max() <= 1e-5


def test_key_names_follow_kohya(tmp_path: Path) -> None:
    sd1 = formats.to_kohya(trained_parts("tiny-sd1", True))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in sd1
    assert "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in sd1
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in sd1
    assert sd1["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"].item() == 2.0

    xl = formats.to_kohya(trained_parts("tiny-sdxl", True))
    names = {k.split(".")[0] for k in xl}
    # layers_per_block=2: down block 1 layer 0 is input_blocks.4; up block 0 layer 0 is output_blocks.0
    assert "lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k" in names
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_v" in names
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_q" in names
    assert any(n.startswith("lora_te1_text_model_encoder_layers_") for n in names)
    assert any(n.startswith("lora_te2_text_model_encoder_layers_") for n in names)
    assert not any("down_blocks" in n or "up_blocks" in n for n in names)


def test_unmatched_key_is_an_error() -> None:
    parts = trained_parts("tiny-sd1", False)
    sd = formats.to_kohya(parts)
    sd["lora_unet_down_blocks_9_attentions_0_proj_in.lora_down.weight"] = torch.zeros(4, 4)
    with pytest.raises(LorakitError, match="lora_unet_down_blocks_9_attentions_0_proj_in"):
        formats.check_kohya_keys(sd, parts)


@pytest.mark.parametrize("name,version,arch", [
    ("tiny-sd1", "sd_v1", "stable-diffusion-v1/lora"),
    ("tiny-sd2-v", "sd_v2_v", "stable-diffusion-v2-768-v/lora"),
    ("tiny-sdxl", "sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
])
def test_metadata_and_hash(name: str, version: str, arch: str, tmp_path: Path) -> None:
    parts = trained_parts(name, False)
    meta = formats.kohya_metadata(parts, name="x", resolution=(64, 64), steps=10, epochs=1,
                                  learning_rate=1e-4, te_trained=False, seed=1, tag_frequency={"a": {"cat": 2}},
                                  num_images=3, created="2026-01-01T00:00:00+00:00")
    sd = formats.to_kohya(parts, torch.float16)
    path = formats.save_kohya(tmp_path / "x.safetensors", sd, meta)
    with safe_open(str(path), "pt") as f:
        saved = f.metadata()
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    assert saved["ss_base_model_version"] == version
    assert saved["modelspec.architecture"] == arch
    assert saved["ss_network_dim"] == "4" and saved["ss_network_alpha"] == "2.0"
    assert saved["ss_tag_frequency"] == '{"a": {"cat": 2}}'
    # sshs_model_hash is the sha256 of the tensor bytes after the header, recomputable from the file
    import hashlib
    import struct

    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    assert saved["sshs_model_hash"] == hashlib.sha256(blob[8 + n :]).hexdigest()


def test_legacy_hash_and_resolution_follow_kohya(tmp_path: Path) -> None:
    import hashlib

    from safetensors.torch import save

    parts = trained_parts("tiny-sd1", False)
    sd = formats.to_kohya(parts)
    meta = {"ss_network_dim": "4", "modelspec.title": "x"}
    path = formats.save_kohya(tmp_path / "x.safetensors", sd, meta)
    with safe_open(str(path), "pt") as f:
        saved = f.metadata()
    blob = save(sd, {"ss_network_dim": "4"})  # kohya hashes the file as written with only the ss_* metadata
    assert saved["sshs_legacy_hash"] == hashlib.sha256(blob[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]


def test_key_check_names_a_count_and_a_few_examples() -> None:
    parts = trained_parts("tiny-sd1", False)
    sd = formats.to_kohya(parts)
    bad = [f"lora_unet_down_blocks_9_attentions_{i}_proj_in" for i in range(40)]
    for name in bad:
        sd[f"{name}.lora_down.weight"] = torch.zeros(4, 4)
    with pytest.raises(LorakitError) as exc:
        formats.check_kohya_keys(sd, parts)
    assert exc.value.message == (f"40 LoRA key(s) match no module of the sd1 model: {', '.join(sorted(bad)[:3])} "
                                 "and 37 more")


def test_resume_mismatch_is_a_count_and_three_examples(tmp_path: Path) -> None:
    """An SDXL file resumed into an SD1 network: every module differs; the message stays a few lines."""
    xl = trained_parts("tiny-sdxl", True)
    path = formats.save_kohya(tmp_path / "xl.safetensors", formats.to_kohya(xl), {})
    sd1 = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    attach_network(sd1, NetworkSection(network_dim=4, network_alpha=2, train_text_encoder=True))
    with pytest.raises(LorakitError) as exc:
        formats.load_kohya_weights(sd1, path)
    mine = {formats._prefix(n) for n in formats.kohya_module_names(sd1)}
    network = sum(len(adapter_layers(m)) for _, m in components(sd1))
    theirs = len({k.split(".")[0] for k in formats.to_kohya(xl)})
    assert mine == {"lora_unet", "lora_te"}
    # the SD1 UNet modules are missing from the file (it has a UNet part); its te modules are not checked (no
    # lora_te_ part: a new text-encoder LoRA starts fresh); every SDXL module is extra
    te = sum(len(adapter_layers(te)) for te in sd1.text_encoders)
    differ = (network - te) + theirs
    assert exc.value.message.startswith(f"network.network_weights {path} does not fit this network: {differ} "
                                        "module(s) differ, e.g. ")
    assert exc.value.message.count("; ") == 2 and len(exc.value.message) < 600
