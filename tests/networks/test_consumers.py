"""Which adapted modules each consumer ignores: rules checked on kohya names written by hand from the consumers'
code (sd-scripts networks/lora.py, A1111 extensions-builtin/Lora/networks.py, ComfyUI comfy/lora.py, diffusers
lora_conversion_utils.py), the names a plan writes, and `--strict` refusing a run before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.networks.consumers import ignored_by_consumers, planned_kohya_names

SD1_ATTN = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
SD1_RESNET = "lora_unet_up_blocks_1_resnets_2_time_emb_proj"
SD1_SAMPLERS = ["lora_unet_down_blocks_0_downsamplers_0_conv", "lora_unet_up_blocks_0_upsamplers_0_conv"]
SDXL_ATTN = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
SDXL_BLOCKS = [SDXL_ATTN, "lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_3_0_op",
               "lora_unet_middle_block_1_proj_in", "lora_unet_output_blocks_2_2_conv",
               "lora_unet_output_blocks_0_0_skip_connection"]
TE = "lora_te_text_model_encoder_layers_{}_{}"


def test_sd1_top_level_layers_are_dropped_by_sd_scripts_and_old_diffusers() -> None:
    """sd-scripts builds no module outside Transformer2DModel/ResnetBlock2D/Down-/Upsample2D; diffusers < 0.39
    spells them conv.in, …; ComfyUI (UNET_MAP_BASIC) and A1111 (convert_diffusers_name_to_compvis) map them."""
    top = ["lora_unet_conv_in", "lora_unet_conv_out", "lora_unet_time_embedding_linear_1",
           "lora_unet_time_embedding_linear_2"]
    names = [*top, SD1_ATTN, SD1_RESNET, *SD1_SAMPLERS, TE.format(0, "self_attn_q_proj"), TE.format(11, "mlp_fc2")]
    assert ignored_by_consumers("sd1", names) == {"sd-scripts": sorted(top), "diffusers < 0.39": sorted(top)}


def test_sdxl_time_and_label_embeddings_conv_in_and_out() -> None:
    """SGM names: input_blocks_0_0 is conv_in, out_2 conv_out; every other input/middle/output block module is
    inside sd-scripts' target classes. A1111 and ComfyUI find every SGM name on the original UNet."""
    top = ["lora_unet_time_embed_0", "lora_unet_time_embed_2", "lora_unet_label_emb_0_0", "lora_unet_label_emb_0_2",
           "lora_unet_input_blocks_0_0", "lora_unet_out_2"]
    assert ignored_by_consumers("sdxl", [*top, *SDXL_BLOCKS]) == {"sd-scripts": sorted(top),
                                                                  "diffusers < 0.39": sorted(top)}
    assert ignored_by_consumers("sdxl", SDXL_BLOCKS) == {}


def test_sd2_text_encoder_attention_needs_q_k_v_and_out_in_a1111() -> None:
    """SD2's text encoder is OpenCLIP in A1111: a layer's attention is patched only with q, k, v and out."""
    q, v = TE.format(0, "self_attn_q_proj"), TE.format(0, "self_attn_v_proj")
    assert ignored_by_consumers("sd2", [q, v]) == {"A1111": [q, v]}
    full = [TE.format(0, f"self_attn_{p}_proj") for p in ("q", "k", "v", "out")]
    assert ignored_by_consumers("sd2", full) == {}
    # per layer: layer 1 lacks out_proj, layer 0 is whole; MLP layers count on their own
    partial = [TE.format(1, f"self_attn_{p}_proj") for p in ("q", "k", "v")]
    fc1 = TE.format(1, "mlp_fc1")
    assert ignored_by_consumers("sd2", [*full, *partial, fc1]) == {"A1111": sorted(partial)}
    # the same q/v-only names on SD1 (Hugging Face CLIP in A1111) are applied everywhere
    assert ignored_by_consumers("sd1", [q, v]) == {}


def test_sdxl_second_text_encoder_is_openclip_the_first_is_not() -> None:
    te1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    te2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    assert ignored_by_consumers("sdxl", [te1, te2, SDXL_ATTN]) == {"A1111": [te2]}


def test_text_projection_is_outside_every_consumers_clip_map() -> None:
    """No consumer maps a LoRA on SDXL's text_projection (sd-scripts: outside CLIPAttention/CLIPMLP; ComfyUI and
    diffusers: not in their CLIP maps; A1111: no OpenCLIP name for it)."""
    name = "lora_te2_text_model_text_projection"
    assert ignored_by_consumers("sdxl", [name]) == {c: [name] for c in ("sd-scripts", "A1111", "ComfyUI",
                                                                        "diffusers")}


def test_comfyui_maps_clip_layers_below_32_only() -> None:
    deep = "lora_te2_text_model_encoder_layers_32_mlp_fc1"
    assert ignored_by_consumers("sdxl", [deep])["ComfyUI"] == [deep]


def test_planned_names_are_the_familys_kohya_names_for_every_unet_layer() -> None:
    """planned_kohya_names rebuilds the SGM layout from layer paths alone; on tiny-sdxl it must name every
    Linear/Conv2d as the family does from the loaded UNet (conv_in → input_blocks_0_0, samplers → op/conv, …)."""
    from lorakit.families import get_family
    from lorakit.networks.targets import TargetPlan, describe

    family = get_family("sdxl")
    pipe = family.build_tiny()
    info = describe(family, pipe.unet, [pipe.text_encoder, pipe.text_encoder_2])
    te_path = info.text_encoders[1][0].path
    plan = TargetPlan({c.path: (4, 4.0) for c in info.unet}, [{}, {te_path: (4, 4.0)}], info)
    expected = family.kohya_unet_names(pipe.unet)
    assert planned_kohya_names(plan) == [expected[c.path] for c in info.unet] + [family.kohya_te_name(1, te_path)]
    assert "lora_unet_input_blocks_0_0" in planned_kohya_names(plan)


# -- the CLI: plan warns, --strict refuses ------------------------------------------------------------------------------
def _config(tmp_path: Path, image_dir: Path) -> Path:
    path = tmp_path / "conv_in.toml"
    path.write_text(f"""
[data]
train_data_dir = "{image_dir}"
resolution = 64
[train]
max_train_steps = 1
[network]
target_modules = ["to_q", "conv_in"]
[output]
output_dir = "{tmp_path / 'runs'}"
""", encoding="utf-8")
    return path


def test_train_strict_refuses_before_any_run_folder(cli, tmp_path: Path, image_dir: Path) -> None:
    cfg = _config(tmp_path, image_dir)
    code, out = cli("train", "--config", cfg, "--strict")
    assert code == 2, out
    assert "network: sd-scripts ignores 1 of" in out and "lora_unet_conv_in" in out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_config_validate_strict_refuses_plain_validate_passes(cli, tmp_path: Path, image_dir: Path) -> None:
    cfg = _config(tmp_path, image_dir)
    code, out = cli("config", "validate", cfg)
    assert code == 0, out
    code, out = cli("config", "validate", cfg, "--strict")
    assert code == 2 and "sd-scripts ignores 1 of" in out and "lora_unet_conv_in" in out


def test_the_runs_log_holds_the_warning(cli, tmp_path: Path, image_dir: Path) -> None:
    """Without --strict the run trains, and run.log keeps the plan's consumer warnings."""
    code, out = cli("train", "--config", _config(tmp_path, image_dir))
    assert code == 0, out
    (log,) = (tmp_path / "runs").glob("*/train/run.log")
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if "ignores" in line]
    assert any("warning: sd-scripts ignores 1 of" in line and "lora_unet_conv_in" in line for line in lines), lines
    assert any("warning: diffusers < 0.39 ignores 1 of" in line for line in lines), lines
    assert not any("ComfyUI" in line or "A1111" in line for line in lines), lines


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_no_consumer_ignores_kohyas_default_module_set(family: str) -> None:
    """The default selection (kohya's classes, text encoders trained) loads fully everywhere, as issue 8 found."""
    from lorakit.config.schema import LorakitConfig
    from lorakit.networks.targets import model_skeleton, select_targets

    model = {"sd1": "tiny-sd1", "sd2": "tiny-sd2-v", "sdxl": "tiny-sdxl"}[family]
    cfg = LorakitConfig.model_validate({"model": {"pretrained_model_name_or_path": model},
                                        "network": {"network_module": "locon", "train_text_encoder": True}})
    names = planned_kohya_names(select_targets(model_skeleton(cfg.model), cfg.network))
    assert len(names) > 20 and ignored_by_consumers(family, names) == {}
