"""Write the adapter in the configured format(s); never overwrite an existing file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config.schema import LorakitConfig
from ..errors import LorakitError
from ..families import ModelParts
from ..networks import formats
from ..networks.registry import ADAPTER


@dataclass(frozen=True)
class SavedLora:
    """What one save wrote: the kohya file and/or the PEFT folder."""

    kohya: Path | None
    peft: Path | None

    @property
    def main(self) -> Path:
        """The file users load: the kohya file when there is one."""
        return self.kohya or self.peft  # type: ignore[return-value]


HEADER_BYTES_PER_TENSOR = 256  # a tensor's key, dtype, shape and offsets in the safetensors header (and its alpha)
METADATA_BYTES = 64 * 1024  # ss_* / modelspec.* metadata, tag frequencies included, with room to spare


def save_size_estimate(groups: list[dict], save_precision: str, save_format: str) -> int:
    """Bytes one save takes (an upper estimate): the trainable adapter parameters × the save precision's bytes,
    plus headers and metadata, twice for save_format = "both"."""
    params = [p for g in groups for p in g["params"]]
    itemsize = torch.empty((), dtype=formats.SAVE_DTYPES[save_precision]).element_size()
    one = sum(p.numel() for p in params) * itemsize + len(params) * HEADER_BYTES_PER_TENSOR + METADATA_BYTES
    return one * (2 if save_format == "both" else 1)


def run_metadata(cfg: LorakitConfig, optimizer: torch.optim.Optimizer, total_epochs: int) -> dict[str, str]:
    """The training settings sd-scripts records in a LoRA's metadata, in its spelling (train_network.py):
    `ss_optimizer` is the optimizer's module.class with the user's arguments, e.g.
    "torch.optim.adamw.AdamW(weight_decay=0.01)"; unset values are "None", as sd-scripts' str(None)."""
    from ..config.optimizer_rules import parse_args_list

    t, inner = cfg.train, getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
    kwargs, _ = parse_args_list(t.optimizer_args)
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    te_lr = t.text_encoder_lr if t.text_encoder_lr is not None else t.learning_rate
    return {
        "ss_sd_model_name": Path(cfg.model.pretrained_model_name_or_path).name,
        "ss_clip_skip": str(t.clip_skip),
        "ss_max_token_length": str(t.max_token_length),
        "ss_optimizer": f"{type(inner).__module__}.{type(inner).__name__}" + (f"({args})" if args else ""),
        "ss_mixed_precision": t.mixed_precision,
        "ss_full_fp16": str(t.lora_precision == "fp16"),  # sd-scripts' key for the network kept in fp16
        "ss_fp8_base": str(t.fp8_base),
        "ss_num_epochs": str(total_epochs),
        "ss_max_train_steps": str(t.max_train_steps) if t.max_train_steps else "None",
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_unet_lr": str(t.learning_rate),
        "ss_text_encoder_lr": str(te_lr) if cfg.network.train_text_encoder else "None",
        "ss_batch_size_per_device": str(t.train_batch_size),
        "ss_gradient_accumulation_steps": str(t.gradient_accumulation_steps),
        "ss_max_grad_norm": str(t.max_grad_norm),
        "ss_network_dropout": str(cfg.network.network_dropout),
        "ss_noise_offset": str(t.noise_offset) if t.noise_offset else "None",
        "ss_min_snr_gamma": str(t.min_snr_gamma) if t.min_snr_gamma else "None",
        "ss_gradient_checkpointing": str(t.gradient_checkpointing),
        "ss_cache_latents": str(t.cache_latents),
        "ss_multires_noise_iterations": str(t.multires_noise_iterations),
        "ss_multires_noise_discount": str(t.multires_noise_discount),
        "ss_adaptive_noise_scale": str(t.adaptive_noise_scale),
        "ss_zero_terminal_snr": str(t.zero_terminal_snr),
        "ss_scale_weight_norms": str(t.scale_weight_norms),
        "ss_ip_noise_gamma": str(t.ip_noise_gamma),
        "ss_debiased_estimation": str(t.debiased_estimation_loss),
        "ss_noise_offset_random_strength": str(t.noise_offset_random_strength),
        "ss_ip_noise_gamma_random_strength": str(t.ip_noise_gamma_random_strength),
    }


def save_lora(parts: ModelParts, cfg: LorakitConfig, folder: Path, name: str, metadata: dict[str, str],
              adapter: str = ADAPTER) -> SavedLora:
    """Save the network `adapter` as `<folder>/<name>.safetensors` (kohya) and/or `<folder>/<name>_peft/`, as
    `output.save_format` says."""
    fmt, dtype = cfg.output.save_format, formats.SAVE_DTYPES[cfg.output.save_precision]
    saved = SavedLora(folder / f"{name}.safetensors" if fmt in ("kohya", "both") else None,
                      folder / f"{name}_peft" if fmt in ("peft", "both") else None)
    for p in (saved.kohya, saved.peft):
        if p is not None and p.exists():
            raise LorakitError(f"{p} already exists; refusing to overwrite", "use a new run folder")
    if saved.kohya:
        formats.save_kohya(saved.kohya, formats.to_kohya(parts, dtype, adapter), metadata)
    if saved.peft:
        formats.save_peft(saved.peft, parts, dtype, adapter)
    return saved


def with_dropout_args(meta: dict[str, str], network: Any) -> dict[str, str]:
    """`ss_network_args` with network.rank_dropout / module_dropout when set, as sd-scripts records the network args
    it was given (strings, e.g. {"rank_dropout": "0.1"})."""
    extra = {k: str(getattr(network, k)) for k in ("rank_dropout", "module_dropout") if getattr(network, k)}
    if not extra:
        return meta
    return {**meta, "ss_network_args": json.dumps({**json.loads(meta.get("ss_network_args", "{}")), **extra})}
