"""Set up a run from the config (data, model, adapter, optimizer), run the loop, save the LoRA."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from ..config.plan import build_plan, render_plan
from ..config.schema import LorakitConfig
from ..config.validate import check_arguments, check_log_with, weights_file
from ..data.cache import TensorCache, default_cache_dir, missing_examples
from ..data.pipeline import DatasetPlan, build_dataset
from ..errors import ConfigError, LorakitError
from ..io import check_free_space, remove_stale_temps, temps_under
from ..families import ModelParts, detect_family, load_model
from ..families.base import model_identity
from ..modes import MODES
from ..modes.base import Mode
from ..networks import formats
from .checkpoint import run_metadata, save_lora, save_size_estimate
from .encode import BatchEncoder, cache_model_id
from .events import Callback, CallbackList, Commands
from .loop import LoopSettings, train_loop
from .optim import build_optimizer
from .schedule import build_scheduler
from .validation import held_out_loss

WEIGHT_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    lora_path: Path
    steps: int
    stopped: bool
    checkpoints: list[Path] = field(default_factory=list)
    peft_dir: Path | None = None
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a callback that failed (the run went on)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_accelerator(cfg: LorakitConfig) -> Accelerator:
    """An Accelerator for the chosen precision; fp16 needs CUDA."""
    mp = cfg.train.mixed_precision
    if mp == "fp16" and not torch.cuda.is_available():
        raise ConfigError(["train.mixed_precision = 'fp16' needs a CUDA GPU"], "use 'bf16' or 'no' on this machine")
    # Accelerate keeps process-wide state; a new run in the same process (tests, a notebook) starts afresh.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=mp)
    if accelerator.num_processes > 1:
        raise ConfigError([f"{accelerator.num_processes} processes: lorakit trains on one GPU per run for now"],
                          "run `lorakit train` without `accelerate launch --num_processes`")
    return accelerator


def all_latents_cached(cfg: LorakitConfig, dataset: DatasetPlan, disk: Path | None) -> bool:
    """True when the disk cache holds every latent this run needs, so the VAE need not even be read."""
    if not (cfg.train.cache_latents and disk):
        return False
    model_id = cache_model_id(detect_family(cfg.model), model_identity(cfg.model),
                              WEIGHT_DTYPES[cfg.train.mixed_precision])
    return not missing_examples(TensorCache(disk, "latents"), dataset.examples, model_id)


def prepare_model(cfg: LorakitConfig, accelerator: Accelerator, skip_vae: bool = False) -> ModelParts:
    """Load the base model, cast the frozen parts to the compute precision, move it to the device."""
    dtype = WEIGHT_DTYPES[cfg.train.mixed_precision]
    parts = load_model(cfg.model, dtype, skip_vae)
    parts.pipeline.to(accelerator.device)
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
    return parts


def build_network(cfg: LorakitConfig, parts: ModelParts, encoder: BatchEncoder) -> tuple[Mode, list[dict]]:
    """Attach the adapter (seeded), check its file names, load resume weights; returns the mode and its groups."""
    torch.manual_seed(cfg.train.seed)  # the adapter's initial weights
    mode = MODES[cfg.mode.type](parts, cfg, encoder)
    formats.to_kohya(parts)  # every adapted module has a file name, before training
    if cfg.output.save_format != "kohya":  # the diffusers folder exists for LoRA/LoCon only
        formats.check_peft_format(parts)
    if cfg.network.network_weights:
        weights = weights_file(Path(cfg.network.network_weights))
        if weights is None:
            raise LorakitError(f"network.network_weights: no kohya .safetensors LoRA in {cfg.network.network_weights}",
                               "point it at a LoRA .safetensors file, or at a run saved with output.save_format = "
                               "'kohya' or 'both' (a diffusers folder alone cannot be resumed)")
        formats.load_kohya_weights(parts, weights)
    groups = mode.param_groups()
    for g in groups:  # trainable weights stay fp32 whatever the compute precision
        for p in g["params"]:
            p.data = p.data.float()
    return mode, groups


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
    removed = remove_interrupted_saves(Path(cfg.output.output_dir), disk)
    if removed:
        events.on_notice(f"removed {removed} temporary file(s) left by interrupted saves")
    return disk


def loop_settings(cfg: LorakitConfig, steps: int, text_encoder_stop: int | None, validation: bool) -> LoopSettings:
    """The loop's numbers from the config and the plan."""
    t = cfg.train
    return LoopSettings(
        total_steps=steps, accumulation=t.gradient_accumulation_steps, max_grad_norm=t.max_grad_norm,
        log_every=t.log_every_n_steps, save_every=cfg.output.save_every_n_steps,
        validate_every=t.validate_every_n_steps if validation else None, text_encoder_stop=text_encoder_stop,
    )


def train(
    cfg: LorakitConfig,
    run_dir: Path,
    callbacks: list[Callback] | None = None,
    commands: Commands | None = None,
    dataset: DatasetPlan | None = None,
) -> TrainResult:
    """Train a LoRA as configured, writing results into `run_dir/train/`."""
    t, out = cfg.train, cfg.output
    events = CallbackList(list(callbacks or []))
    disk = preflight(cfg, events)
    seed_everything(t.seed)
    dataset = dataset or build_dataset(cfg.data, t.train_batch_size, t.seed)
    accelerator = make_accelerator(cfg)
    parts = prepare_model(cfg, accelerator, skip_vae=all_latents_cached(cfg, dataset, disk))
    cache_text = t.cache_text_encoder_outputs and not cfg.network.train_text_encoder and not dataset.captions_vary
    encoder = BatchEncoder(parts, accelerator.device, WEIGHT_DTYPES[t.mixed_precision], t.cache_latents, cache_text,
                           t.seed, disk)
    mode, groups = build_network(cfg, parts, encoder)
    train_dir = run_dir / "train"  # before the first step: room for at least one save of the LoRA
    check_free_space(run_dir, save_size_estimate(groups, out.save_precision, out.save_format), "output folder")
    plan = build_plan(cfg, dataset, parts)
    steps = plan.steps.total_steps
    optimizer = build_optimizer(t.optimizer_type, groups, t.learning_rate, t.optimizer_args)
    scheduler = build_scheduler(t.lr_scheduler, optimizer, plan.steps.warmup_steps, steps, t.lr_scheduler_num_cycles,
                                t.lr_scheduler_args)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    events.on_plan(render_plan(plan))
    encoder.prefill(dataset.examples, t.train_batch_size, events.on_cache)

    result = TrainResult(run_dir, train_dir / f"{out.output_name}.safetensors", 0, False)
    tag_freq, started = dataset.tag_frequency, datetime.now(timezone.utc).isoformat(timespec="seconds")

    def epoch_of(step: int) -> int:
        return max(1, -(-step // max(1, plan.steps.steps_per_epoch)))

    run_meta = run_metadata(cfg, optimizer, epoch_of(steps))  # the same for every save

    def save(step: int, final: bool = False) -> Path:
        name = out.output_name if final else f"{out.output_name}-step{step:08d}"
        meta = formats.kohya_metadata(
            parts, name=name, resolution=cfg.data.max_size, steps=step, epochs=epoch_of(step),
            learning_rate=t.learning_rate, te_trained=cfg.network.train_text_encoder, seed=t.seed,
            tag_frequency=tag_freq, num_images=len(dataset.train), created=started,
        ) | run_meta
        saved = save_lora(parts, cfg, train_dir, name, meta)
        if final:
            result.peft_dir = saved.peft
        else:
            result.checkpoints.append(saved.main)
        events.on_save(step, saved.main)
        return saved.main

    def validate(step: int) -> None:
        with accelerator.autocast():
            loss = held_out_loss(mode, encoder, dataset.validation, t.train_batch_size)
        result.validation_losses.append((step, loss))
        events.on_validation(step, loss)

    settings = loop_settings(cfg, steps, plan.steps.text_encoder_stop, bool(dataset.validation))
    gen = torch.Generator(device=accelerator.device).manual_seed(t.seed)
    events.on_start(steps, {"run_dir": str(run_dir), "images": len(dataset.train)})
    try:
        result.steps, result.stopped = train_loop(
            mode, dataset.sampler, optimizer, scheduler, accelerator, settings, gen, events, commands or Commands(),
            lambda s: save(s), validate,
        )
        result.lora_path = save(result.steps, final=True)
    except BaseException as exc:
        events.on_error(str(exc) if isinstance(exc, LorakitError) else f"{type(exc).__name__}: {exc}")
        raise
    finally:
        events.on_end(result.steps, result.stopped)
        result.warnings = list(events.failures)
    return result
