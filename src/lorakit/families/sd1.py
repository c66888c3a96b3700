"""Stable Diffusion 1.x: one CLIP-L text encoder, epsilon prediction, 512 px."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from .base import Family, ModelParts
from .clip_text import join_windows, skipped_hidden_states
from .unet_layout import UnetShape
from .tiny import seeded, tiny_text_config, tiny_tokenizer, tiny_vae_config


def tiny_unet(cross_attention_dim: int = 32, **overrides: object) -> UNet2DConditionModel:
    """A small SD-style UNet: two levels, attention in both, 64 px images (8×8 latents).

    Its LoRA blocks (see `Family.block_names`): IN00 (conv_in), IN01–IN02 (level 0), IN03 (downsampler), IN04–IN05
    (level 1), MID, OUT00–OUT02 (level 0 of the up path, upsampler in OUT02), OUT03–OUT05; the same for the tiny
    SD2 and SDXL models, which use this UNet too.
    """
    cfg = dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=16,
    )
    cfg.update(overrides)
    return UNet2DConditionModel(**cfg)


def tiny_scheduler(prediction_type: str = "epsilon") -> EulerDiscreteScheduler:
    """The SD noise schedule (scaled linear, 1000 steps)."""
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=prediction_type,
        steps_offset=1,
        timestep_spacing="leading",
    )


class SD1(Family):
    name = "sd1"
    pipeline_class = StableDiffusionPipeline
    tiny_name = "tiny-sd1"
    # SD1.5 and SD2.x: four levels of 2 resnets; no attention at the deepest down / first up level, no
    # downsampler on the last down level, no upsampler on the last up level
    full_unet_shape = UnetShape(
        down=((2, True, True), (2, True, True), (2, True, True), (2, False, False)),
        up=((3, False, True), (3, True, True), (3, True, True), (3, True, False)),
        mid_attention=True,
    )

    def build_tiny(self, seed: int = 0) -> StableDiffusionPipeline:
        with seeded(seed):
            unet = tiny_unet()
            vae = AutoencoderKL(**tiny_vae_config())
            text_encoder = CLIPTextModel(tiny_text_config())
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tiny_tokenizer(),
            unet=unet,
            scheduler=tiny_scheduler(),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def encode_prompts(self, parts: ModelParts, captions: list[str]) -> dict[str, torch.Tensor]:
        """The text encoder's output (train.clip_skip layers from the end, through its final LayerNorm), each
        window of a long prompt encoded on its own and the windows joined (sd-scripts' SdTextEncodingStrategy)."""
        (ids,) = self.tokenize(parts, captions)
        te = parts.text_encoders[0]
        hidden = skipped_hidden_states(te, ids.flatten(0, 1).to(te.device), parts.prompt_encoding.clip_skip)
        return {"encoder_hidden_states": join_windows(hidden, len(captions))}

    def base_model_version(self, parts: ModelParts) -> str:
        return "sd_v1"

    def modelspec_architecture(self, parts: ModelParts) -> str:
        return "stable-diffusion-v1/lora"
