"""Attach, scale and detach LoRA adapters with peft, through diffusers'/transformers' adapter mixins."""

from __future__ import annotations

import torch
from peft import LoraConfig

from ..config.schema import NetworkSection
from ..errors import ConfigError
from ..families import ModelParts

ADAPTER = "lorakit"


def _lora_config(cfg: NetworkSection, targets: list[str]) -> LoraConfig:
    return LoraConfig(
        r=cfg.network_dim,
        lora_alpha=cfg.network_alpha,
        lora_dropout=cfg.network_dropout,
        target_modules=targets,
        init_lora_weights=True,  # kaiming-uniform down, zero up: the initialisation kohya uses
    )


def _check_targets(module: torch.nn.Module, targets: list[str], key: str) -> None:
    names = [n for n, _ in module.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ConfigError([f"{key}: no module matches {missing}; e.g. to_q, to_k, to_v, to_out.0, proj_in, ff.net.2"])


def attach_lora(parts: ModelParts, cfg: NetworkSection) -> list[torch.nn.Parameter]:
    """Add a LoRA to the UNet (and the text encoders if asked); freeze the rest; return the trainable parameters.

    Down weights start kaiming-uniform and up weights at zero (as in kohya), so the untrained adapter changes nothing.
    """
    _check_targets(parts.unet, cfg.target_modules, "network.target_modules")
    for module in [m for m in (parts.unet, parts.vae, *parts.text_encoders) if m is not None]:
        module.requires_grad_(False)
    parts.unet.add_adapter(_lora_config(cfg, cfg.target_modules), adapter_name=ADAPTER)
    modules = [parts.unet]
    if cfg.train_text_encoder:
        for te in parts.text_encoders:
            _check_targets(te, cfg.text_encoder_target_modules, "network.text_encoder_target_modules")
            te.add_adapter(_lora_config(cfg, cfg.text_encoder_target_modules), adapter_name=ADAPTER)
            modules.append(te)
    params = []
    for module in modules:
        for name, p in module.named_parameters():
            if ".lora_" in name:
                p.requires_grad_(True)
                params.append(p)
    return params


def lora_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The LoRA parameters of a module (empty if it has no adapter)."""
    return [p for n, p in module.named_parameters() if ".lora_" in n]
