"""Helpers the network tests share: a fixed UNet forward and the in-memory network's weight."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from lorakit.networks.attach import components
from lorakit.networks.registry import ADAPTER


@torch.no_grad()
def unet_output(parts) -> torch.Tensor:
    """UNet output on fixed latents, timesteps and prompts (through the text encoders)."""
    fam = parts.family
    cond = fam.encode_prompts(parts, ["a red cat", "blue dog"])
    sizes = [{"original_size": (64, 64), "crop_top_left": (0, 0), "target_size": (64, 64)}] * 2
    latents = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    return parts.unet(latents, torch.tensor([10, 600]), **fam.unet_kwargs(cond, sizes)).sample


def set_weight(parts, weight: float, adapter: str = ADAPTER) -> None:
    """The in-memory network at `weight` (peft scales each layer's alpha / r), UNet and text encoders."""
    for _, module in components(parts):
        for m in module.modules():
            if isinstance(m, BaseTunerLayer) and adapter in m.scaling:
                m.set_scale(adapter, weight)
