"""Setting a run up, before its stages: the accelerator (devices, precision, processes), the seeded RNGs, the
model in its precisions with the speed settings, the leftovers of interrupted saves, the optimizer's groups."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration

from ..config.optimizer_rules import check_arguments
from ..config.schema import LorakitConfig, NetworkSection, TrainSection
from ..config.validate import check_log_with
from ..data.cache import TensorCache, default_cache_dir, missing_examples
from ..data.pipeline import DatasetPlan
from ..errors import ConfigError
from ..families import ModelParts, detect_family, load_model
from ..families.base import model_identity
from ..io import remove_stale_temps, temps_under
from ..networks.attach import network_parameters
from ..networks.registry import ADAPTER
from . import device, distributed
from .encode import cache_model_id
from .events import Callback
from .speed import apply_speed_settings


def model_dtype(train: TrainSection) -> torch.dtype:
    """The frozen model's weights' dtype (train.model_precision; 'auto' = the compute precision)."""
    return device.model_dtype(train.mixed_precision, train.model_precision)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(cfg: LorakitConfig) -> Accelerator:
    """An Accelerator for the chosen precision ('auto' resolved for this machine), refused as validation refuses
    what the training device cannot run (engine/device.device_findings): a config may reach here unvalidated."""
    here = device.training_device()
    mp = device.resolve_auto(cfg, here).train.mixed_precision
    refused = [f for f in device.device_findings(cfg.train, here) if f.error]
    if refused:
        raise ConfigError([f"{f.key}: {f.message}" for f in refused])
    # Accelerate keeps process-wide state; a new run in the same process (tests, a notebook) starts afresh. Under a
    # launcher the process group stays (engine/distributed.py joined it before the run folder was chosen).
    launched = distributed.init_processes()
    AcceleratorState._reset_state(reset_partial_state=launched is None)
    GradientState._reset_state()
    # split_batches: lorakit's batches are already global (train_batch_size × processes), so the scheduler steps
    # once per optimizer step, not once per process (accelerate's AcceleratedScheduler)
    return Accelerator(mixed_precision=mp, cpu=launched is not None and launched.device.type == "cpu",
                       dataloader_config=DataLoaderConfiguration(split_batches=True))


def all_latents_cached(cfg: LorakitConfig, dataset: DatasetPlan, disk: Path | None) -> bool:
    """True when the disk cache holds every latent this run needs, so the VAE need not even be read."""
    if not (cfg.train.cache_latents and disk):
        return False
    model_id = cache_model_id(detect_family(cfg.model), model_identity(cfg.model), model_dtype(cfg.train))
    return not missing_examples(TensorCache(disk, "latents"), dataset.examples, model_id)


def prepare_model(cfg: LorakitConfig, accelerator: Accelerator,
                  skip_vae: bool = False) -> tuple[ModelParts, list[str]]:
    """Load the base model, cast the frozen parts to train.model_precision, apply the speed settings, move it to
    the device; also returns the speed settings' notices for the run log."""
    dtype = model_dtype(cfg.train)
    parts = load_model(cfg.model, dtype, skip_vae)
    parts.set_prompt_encoding(cfg.train.clip_skip, cfg.train.max_token_length)  # training, cache and samples
    # fp8_base (before the move: half the bytes travel), compile, channels_last, TF32: before any network attaches
    notices = apply_speed_settings(parts, cfg.train, accelerator.device)
    for module in parts.pipeline.components.values():  # the UNet follows once the caches are filled (train_stage):
        if isinstance(module, torch.nn.Module) and module is not parts.unet:  # caching's peak never holds it too
            module.to(accelerator.device)
    if parts.vae is not None and getattr(parts.vae.config, "force_upcast", False):
        parts.vae.to(torch.float32)  # e.g. the SDXL VAE overflows to NaN in fp16; latents are cast afterwards
    if not cfg.train.sdpa:
        from diffusers.models.attention_processor import AttnProcessor

        parts.unet.set_attn_processor(AttnProcessor())
    if cfg.train.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if cfg.network.train_text_encoder:
            for te in parts.text_encoders:
                te.gradient_checkpointing_enable()
    return parts, notices


def remove_interrupted_saves(output_dir: Path, cache_dir: Path | None) -> int:
    """Remove temporary files of interrupted saves whose writer is gone, in the run folders of `output_dir`
    (`<run>/`, `<run>/train/`, `<run>/train/<name>_peft/<part>/`, …) and in the disk cache; returns how many."""
    removed = remove_stale_temps(temps_under(output_dir, 4)) if output_dir.is_dir() else 0
    if cache_dir is not None and cache_dir.is_dir():
        removed += remove_stale_temps(temps_under(cache_dir, 3))  # <cache>/<namespace>/<xx>/<key>.safetensors
    return removed


def preflight(cfg: LorakitConfig, events: Callback) -> Path | None:
    """Before anything loads: arguments and loggers checked, leftovers of interrupted saves removed; returns the
    disk cache folder (None when latents are not cached on disk)."""
    errors = [f"{f.key}: {f.message}" for f in check_arguments(cfg) + check_log_with(cfg) if f.error]
    if errors:
        raise ConfigError(errors)
    disk = (Path(cfg.data.cache_folder) if cfg.data.cache_folder else default_cache_dir()) \
        if cfg.data.cache_latents_to_disk else None
    removed = remove_interrupted_saves(Path(cfg.output.output_dir), disk) if distributed.is_main_process() else 0
    if removed:
        events.on_notice(f"removed {removed} temporary file(s) left by interrupted saves")
    return disk


def param_groups(parts: ModelParts, train: TrainSection, network: NetworkSection,
                 adapter: str = ADAPTER) -> list[dict]:
    """Optimizer groups of `adapter`: the UNet's weights at train.learning_rate, the text encoders' at
    text_encoder_lr. A rate of 0 trains nothing (no gradients computed or kept for it); trainable weights are fp32
    whatever the compute precision."""
    groups = [{"params": network_parameters(parts.unet, adapter), "lr": train.learning_rate}]
    if network.train_text_encoder:
        te_lr = train.text_encoder_lr if train.text_encoder_lr is not None else train.learning_rate
        groups.append({"params": [p for te in parts.text_encoders for p in network_parameters(te, adapter)],
                       "lr": te_lr})
    for g in groups:
        if g["lr"] == 0:
            for p in g["params"]:
                p.requires_grad_(False)
    groups = [g for g in groups if g["params"] and g["lr"] > 0]
    for g in groups:
        for p in g["params"]:
            p.data = p.data.float()
    return groups


def warmup_steps(train: TrainSection, steps: int) -> int:
    """Warm-up steps of a stage of `steps` steps: lr_warmup_steps, or lr_warmup_ratio of the steps."""
    if train.lr_warmup_ratio is not None:
        return int(train.lr_warmup_ratio * steps)
    return min(train.lr_warmup_steps, steps)
