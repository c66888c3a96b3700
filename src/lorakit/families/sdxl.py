"""SDXL: two text encoders (CLIP-L + OpenCLIP-bigG), pooled embeddings and size/crop micro-conditioning.

kohya/A1111/ComfyUI name SDXL UNet modules by the original (SGM) layout: `input_blocks.N.1`, `middle_block.1`,
`output_blocks.N.1`, `input_blocks.1.0.in_layers.2`, so diffusers paths are translated (see `unet_layout`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from .base import Family, ModelParts
from .clip_text import eos_pooled, join_windows
from .sd1 import tiny_scheduler, tiny_unet
from .tiny import seeded, tiny_text_config, tiny_tokenizer, tiny_vae_config
from .unet_layout import UnetShape


@functools.lru_cache(maxsize=4096)
def time_ids_of(values: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """One image's micro-conditioning (original size, crop, target size) on the device, built once per distinct
    value: a host-to-device copy each step would make the host wait for the GPU. fp32: in bf16 an original size of
    1365 would become 1368 (the UNet embeds it)."""
    return torch.tensor(values, dtype=torch.float32, device=device)


class SDXL(Family):
    name = "sdxl"
    pipeline_class = StableDiffusionXLPipeline
    tiny_name = "tiny-sdxl"
    text_encoder_attrs = ("text_encoder", "text_encoder_2")
    tokenizer_attrs = ("tokenizer", "tokenizer_2")
    kohya_te_prefixes = ("lora_te1", "lora_te2")
    kohya_sgm_names = True
    # three levels of 2 resnets; no attention at the first down / last up level
    full_unet_shape = UnetShape(
        down=((2, False, True), (2, True, True), (2, True, False)),
        up=((3, True, True), (3, True, True), (3, False, False)),
        mid_attention=True,
    )

    def build_tiny(self, seed: int = 0) -> StableDiffusionXLPipeline:
        with seeded(seed):
            unet = tiny_unet(
                cross_attention_dim=64,
                attention_head_dim=(2, 4),
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=6 * 8 + 32,
            )
            vae = AutoencoderKL(**tiny_vae_config())
            te1 = CLIPTextModel(tiny_text_config())
            te2 = CLIPTextModelWithProjection(tiny_text_config())
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=te1,
            text_encoder_2=te2,
            tokenizer=tiny_tokenizer(),
            tokenizer_2=tiny_tokenizer(pad_token="!"),
            unet=unet,
            scheduler=tiny_scheduler(),
        )

    def encode_prompts(self, parts: ModelParts, captions: list[str]) -> dict[str, torch.Tensor]:
        """Both encoders' penultimate layers (no final LayerNorm; train.clip_skip does not apply, as in
        sd-scripts), each window of a long prompt encoded on its own and the windows joined; the pooled embedding
        from the first window's EOS (sd-scripts' SdxlTextEncodingStrategy._get_hidden_states_sdxl)."""
        ids1, ids2 = (ids.flatten(0, 1) for ids in self.tokenize(parts, captions))
        te1, te2 = parts.text_encoders
        batch = len(captions)
        hidden1 = te1(ids1.to(te1.device), output_hidden_states=True).hidden_states[-2]
        out2 = te2(ids2.to(te2.device), output_hidden_states=True)
        pooled = eos_pooled(te2, out2.last_hidden_state, ids2, parts.tokenizers[1].eos_token_id)
        hidden = [join_windows(hidden1, batch), join_windows(out2.hidden_states[-2], batch)]
        return {
            "encoder_hidden_states": torch.cat(hidden, dim=-1),
            "text_embeds": pooled.reshape(batch, -1, pooled.shape[-1])[:, 0],  # the first window's
        }

    def sample_prompt_kwargs(self, parts: ModelParts, prompt: str, negative_prompt: str | None = None
                             ) -> dict[str, Any]:
        """The prompt encoded as training encodes it; without a negative prompt the pipeline keeps its own
        choice (zeros when `force_zeros_for_empty_prompt`, as before), else the negative is encoded here too."""
        cond = self.encode_prompts(parts, [prompt])
        out = {"prompt_embeds": cond["encoder_hidden_states"], "pooled_prompt_embeds": cond["text_embeds"]}
        if negative_prompt or not getattr(parts.pipeline.config, "force_zeros_for_empty_prompt", True):
            neg = self.encode_prompts(parts, [negative_prompt or ""])
            out |= {"negative_prompt_embeds": neg["encoder_hidden_states"],
                    "negative_pooled_prompt_embeds": neg["text_embeds"]}
        return out

    def unet_kwargs(self, cond: dict[str, torch.Tensor], sizes: list[dict[str, tuple[int, int]]]) -> dict[str, Any]:
        device = cond["text_embeds"].device
        time_ids = torch.stack([time_ids_of((*s["original_size"], *s["crop_top_left"], *s["target_size"]), device)
                                for s in sizes])
        return {
            "encoder_hidden_states": cond["encoder_hidden_states"],
            "added_cond_kwargs": {"text_embeds": cond["text_embeds"], "time_ids": time_ids},
        }

    def base_model_version(self, parts: ModelParts) -> str:
        return "sdxl_base_v1-0"

    def modelspec_architecture(self, parts: ModelParts) -> str:
        return "stable-diffusion-xl-v1-base/lora"
