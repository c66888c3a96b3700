"""Stable Diffusion 2.x: OpenCLIP-H text encoder, linear projections; 512 epsilon or 768 v-prediction."""

from __future__ import annotations

from diffusers import AutoencoderKL, StableDiffusionPipeline
from transformers import CLIPTextModel

from .base import ModelParts
from .sd1 import SD1, tiny_scheduler, tiny_unet
from .tiny import seeded, tiny_text_config, tiny_tokenizer, tiny_vae_config


class SD2(SD1):
    """Same encoding as SD1; differs in architecture details, prediction type and metadata."""

    name = "sd2"
    tiny_name = "tiny-sd2-v"

    def build_tiny(self, seed: int = 0) -> StableDiffusionPipeline:
        with seeded(seed):
            unet = tiny_unet(use_linear_projection=True, attention_head_dim=(2, 4))
            vae = AutoencoderKL(**tiny_vae_config())
            text_cfg = tiny_text_config()
            text_cfg.hidden_act = "gelu"
            text_encoder = CLIPTextModel(text_cfg)
        return StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tiny_tokenizer(pad_token="!"),
            unet=unet,
            scheduler=tiny_scheduler("v_prediction"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    def base_model_version(self, parts: ModelParts) -> str:
        return "sd_v2_v" if parts.prediction_type == "v_prediction" else "sd_v2"

    def modelspec_architecture(self, parts: ModelParts) -> str:
        if parts.prediction_type == "v_prediction":
            return "stable-diffusion-v2-768-v/lora"
        return "stable-diffusion-v2-512/lora"
