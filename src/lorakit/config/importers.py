"""Convert kohya_ss GUI JSON and sd-scripts TOML (+ dataset TOML) configs into the lorakit config of the same run.

A GUI JSON first becomes the sd-scripts arguments kohya_ss launches with (import_gui.py); then every key is read as
sd-scripts reads it, and keys the file leaves out take sd-scripts' defaults. Every source key is accounted for:
mapped to a lorakit key, inert (it changes nothing kohya trains, with why) or unsupported (with what lorakit would
need).

This module holds the orchestration and the tables of inert and unsupported keys; the keys are read in
import_training.py (training keys), import_datasets.py (the dataset TOML), import_networks.py, import_checkpoints.py
and import_gui.py, into an ImportResult (import_result.py).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .import_checkpoints import STATE_KEYS, import_state_saving
from .import_datasets import apply_dataset_toml, flatten_tables, is_dataset_toml, unmasked
from .import_gui import gui_to_sd_scripts
from .import_networks import import_network
from .import_result import ImportResult, args_list, is_empty, number as read_number
from .import_traintrain import convert_traintrain, is_traintrain
from .import_training import (alpha_mask, bucket_steps, choice, family, gui_sample_prompts, known_scheduler_arguments,
                              learning_rates, needless_warmup, optimizer, resolution, sample_prompts_file,
                              sample_schedule, scheduler, token_length, warmup)
from .migrate import section_of
from .schema import LorakitConfig
from .sd_scripts_args import ARGUMENTS

PRECISIONS = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
INERT = {  # keys that change nothing kohya trains
    "logging_dir": "lorakit logs into the run folder (runs/<run_id>/)",
    "log_prefix": "lorakit logs into the run folder (runs/<run_id>/)",
    "log_with": "lorakit writes its own CSV log (train.log_with adds TensorBoard)",
    "log_config": "lorakit keeps the config in the run folder",
    "xformers": "the attention kernel (lorakit uses PyTorch SDPA)",
    "mem_eff_attn": "the attention kernel (lorakit uses PyTorch SDPA)",
    "sdpa": "the attention kernel (lorakit uses PyTorch SDPA)",
    "save_model_as": "lorakit always saves .safetensors (output.save_format picks kohya/peft)",
    "sample_sampler": "samples only: lorakit samples with the model's own scheduler",
    "persistent_data_loader_workers": "data-loading speed only",
    "vae_batch_size": "caching speed only", "highvram": "memory use only", "lowram": "memory use only",
    "no_half_vae": "lorakit keeps the VAE in fp32 where it must", "skip_cache_check": "caching speed only",
    "cache_text_encoder_outputs_to_disk": "caching only", "cache_info": "caching only",
    "output_dir": "lorakit writes under output.output_dir (set it on the command line or in your layers)",
    "dynamo_backend": "compilation speed only", "ddp_timeout": "multi-GPU only",
    "ddp_gradient_as_bucket_view": "multi-GPU only", "ddp_static_graph": "multi-GPU only",
    "debug_dataset": "a debugging aid", "no_metadata": "lorakit always writes metadata",
    "training_comment": "metadata only", "output_config": "a debugging aid",
    "num_cpu_threads_per_process": "an accelerate launch setting (CPU threads)",
    "sdxl_no_half_vae": "lorakit keeps the VAE in fp32 where it must", "comment": "a comment",
    "discrete_flow_shift": "Flux/SD3 only", "ggpo_beta": "Flux only", "ggpo_sigma": "Flux only",
    "weighting_scheme": "SD3/Flux only", "logit_mean": "SD3/Flux only", "logit_std": "SD3/Flux only",
    "mode_scale": "SD3/Flux only", "text_encoder_batch_size": "SD3/Flux only", "blocks_to_swap": "SD3/Flux only",
}
# sd-scripts' defaults of keys lorakit has no setting for: at these values they are off
OFF_VALUES = {"token_warmup_min": 1, "token_warmup_step": 0, "dataset_repeats": 1, "caption_dropout_every_n_epochs": 0,
              "huber_c": 0.1, "huber_scale": 1.0, "huber_schedule": "snr", "loss_type": "l2",
              "resize_interpolation": "lanczos"}
REASONS = {  # keys the run depends on that lorakit cannot reproduce
    "resume": "lorakit cannot continue an sd-scripts state folder (accelerate's format); continue from the LoRA "
              "with network.network_weights, or resume lorakit's own checkpoints with `lorakit train --resume`",
    "network_train_text_encoder_only": "lorakit always trains the UNet: a text-encoder-only LoRA needs a setting "
                                       "lorakit does not have",
    "stop_text_encoder_training_pct": "a percentage: set train.stop_text_encoder_training in steps",
    "loss_type": "lorakit trains the L2 (MSE) loss only; huber/smooth_l1/l1 are not implemented",
    "caption_dropout_every_n_epochs": "not implemented: use data.caption_dropout_rate",
    "weighted_captions": "attention-weighted captions are not implemented",
    "face_crop_aug_range": "face-crop augmentation is not implemented",
    "token_warmup_step": "token warm-up is not implemented", "token_warmup_min": "token warm-up is not implemented",
    "fp8_base_unet": "fp8 for the UNet alone is not implemented (train.fp8_base stores the UNet in fp8 too)",
    "base_weights": "merging base LoRAs before training is not implemented",
    "dim_from_weights": "set network.network_dim to the rank of network_weights",
    "train_inpainting": "inpainting training is not implemented",
}
GUI_ONLY = {
    "file_path", "save_as", "headless", "print_only", "model_list",
    "log_tracker_config", "log_tracker_name", "wandb_api_key", "wandb_run_name", "huggingface_repo_id",
    "huggingface_token", "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_path_in_repo",
    "save_state_to_huggingface", "resume_from_huggingface", "async_upload", "extra_accelerate_launch_args",
    "num_processes", "num_machines", "multi_gpu", "gpu_ids", "main_process_port", "dynamo_backend",
    "dynamo_mode", "dynamo_use_fullgraph", "dynamo_use_dynamic", "use_wandb", "training_comment",
    "metadata_author", "metadata_description", "metadata_license", "metadata_tags", "metadata_title",
}


def conversions(gui: bool) -> dict[str, Callable[[ImportResult, str, Any], None]]:
    """Source keys that need more than a copy."""

    def lr_args(dotted: str) -> Callable[[ImportResult, str, Any], None]:
        return lambda r, k, v: r.put(k, dotted, args_list(v)) if args_list(v) else r.skip(k, None, "")

    def number(dotted: str, zero_is_unset: bool = True) -> Callable:
        def convert(r: ImportResult, k: str, v: Any) -> None:
            n = read_number(v)
            if v in ("", None) or (zero_is_unset and n == 0):
                r.skip(k, None, "")
            else:
                r.put(k, dotted, v if n is None or isinstance(v, bool) else n)  # put() casts it, or says why not
        return convert

    table: dict[str, Callable[[ImportResult, str, Any], None]] = {
        "epoch": lambda r, k, v: r.inert(k, v, "not an sd-scripts argument: kohya_ss uses it only to compute the "
                                         "max_train_steps it writes beside it"),
        "max_train_epochs": number("train.max_train_epochs"),
        "max_train_steps": number("train.max_train_steps"),
        "max_resolution": resolution,
        "lr_scheduler_args": lr_args("train.lr_scheduler_args"),
        "lr_scheduler": scheduler,
        "lr_scheduler_type": lambda r, k, v: r.put(k, "train.lr_scheduler_type", v) if v else r.skip(k, v, ""),
        "max_token_length": token_length,
        "bucket_reso_steps": bucket_steps,
        "flip_aug": lambda r, k, v: r.put(k, "data.random_flip", v),
        "alpha_mask": alpha_mask,
        "loss_type": lambda r, k, v: r.skip(k, None, "") if v == "l2" else r.unsupported(k, v, REASONS[k]),
        "resolution": resolution,
        "lr_scheduler_num_cycles": number("train.lr_scheduler_num_cycles"),
        "mixed_precision": lambda r, k, v: choice(r, k, v, "train.mixed_precision"),
        "save_precision": lambda r, k, v: choice(r, k, v, "output.save_precision", PRECISIONS),
        "full_fp16": lambda r, k, v: r.put(k, "train.lora_precision", "fp16") if v else r.skip(k, v, ""),
        "full_bf16": lambda r, k, v: r.put(k, "train.lora_precision", "bf16") if v else r.skip(k, v, ""),
        "fp8_base": lambda r, k, v: r.put(k, "train.fp8_base", True) if v else r.skip(k, v, ""),
        "max_data_loader_n_workers": number("train.dataloader_workers", zero_is_unset=False),
        "min_snr_gamma": number("train.min_snr_gamma"),
        "save_every_n_epochs": number("output.save_every_n_epochs"),
        "save_last_n_epochs": number("output.save_last_n_epochs"),
        "save_last_n_steps": number("output.save_last_n_steps"),
        "clip_skip": lambda r, k, v: r.inert(k, v, "SDXL uses the penultimate layer whatever clip_skip says "
                                             "(sd-scripts warns)")
        if r.values.get("model", {}).get("family") == "sdxl" and read_number(v) not in (None, 0, 1)
        else number("train.clip_skip")(r, k, v),
        "multires_noise_iterations": number("train.multires_noise_iterations"),
        "ip_noise_gamma": number("train.ip_noise_gamma"),
        "adaptive_noise_scale": number("train.adaptive_noise_scale"),
        "v_pred_like_loss": number("train.v_pred_like_loss"),
        "scale_weight_norms": number("train.scale_weight_norms"),
        "noise_offset": number("train.noise_offset"),
        "min_timestep": number("train.min_timestep", zero_is_unset=False),
        "max_timestep": number("train.max_timestep"),
        "conditioning_data_dir": lambda r, k, v: r.inert(k, v, "train_network.py reads mask folders only from a "
                                                         "dataset config's subsets") if v else r.skip(k, v, ""),
        "save_every_n_steps": number("output.save_every_n_steps"),
        "network_weights": lambda r, k, v: r.put(k, "network.network_weights", v) if v else r.skip(k, v, ""),
        "vae": lambda r, k, v: r.put(k, "model.vae", v) if v else r.skip(k, v, ""),
        "prior_loss_weight": number("mode.prior_loss_weight"),
        "sample_prompts": gui_sample_prompts if gui else sample_prompts_file,
        "sample_every_n_steps": lambda r, k, v: r.put(k, "sample.every_n_steps", v) if v else r.skip(k, v, ""),
        "sample_every_n_epochs": lambda r, k, v: r.put(k, "sample.every_n_epochs", v) if v else r.skip(k, v, ""),
    }
    table["stop_text_encoder_training"] = lambda r, k, v: r.inert(
        k, v, "sd-scripts' LoRA training has no such argument (only train_db.py): the text encoder trains to the end")
    return table


GUI_MARKERS = {"LoRA_type", "epoch", "max_resolution", "optimizer", "lr_warmup", "noise_offset_type"}
HANDLED = {"learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only", "lr_warmup_steps", "sdxl",
           "v2", "dataset_config", "sample_at_first",  # sample_at_first: sample_schedule (import_training.py)
           "optimizer_type", "optimizer_args", "use_8bit_adam", "use_lion_optimizer",  # optimizer (import_training.py)
           *STATE_KEYS}  # import_state_saving (import_checkpoints.py)
# What sd-scripts uses for a key a config leaves out (train_util.py / train_network.py argparse defaults, kohya-ss
# sd-scripts 48d368f) where lorakit's own default differs: the import writes sd-scripts' value.
SD_SCRIPTS_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("save_precision", "output.save_precision", "fp32"),
    ("mixed_precision", "train.mixed_precision", "no"),  # lorakit's 'auto' would pick bf16 on a GPU
    ("max_data_loader_n_workers", "train.dataloader_workers", 8),  # None: the trained weights' own dtype, float32
    ("caption_extension", "data.caption_extension", ".caption"),
    ("enable_bucket", "data.enable_bucket", False),
    ("max_bucket_reso", "data.max_bucket_reso", 1024),
    ("min_bucket_reso", "data.min_bucket_reso", 256),
    ("bucket_reso_steps", "data.bucket_reso_steps", 64),
    ("cache_latents", "train.cache_latents", False),  # without a cache, each use draws a new VAE sample
    ("v_parameterization", "model.v_parameterization", False),  # sd-scripts predicts noise unless told
    ("seed", "train.seed", None),  # None: a random seed each run (lorakit keeps its fixed default)
)


def _sd_scripts_defaults(r: ImportResult, src: dict[str, Any]) -> None:
    """Keys the file leaves out (or the GUI drops as empty/0): sd-scripts' defaults, written out; the layout and
    the buckets are sd-scripts' (data.layout and data.bucket_mode = 'kohya')."""
    for key, dotted, value in SD_SCRIPTS_DEFAULTS:
        if src.get(key) not in ("", None) and src.get(key) is not False:
            continue
        section, name = dotted.split(".")
        if name in r.values.get(section, {}):
            continue
        if value is None:
            r.notes.append(f"{key} is not set: sd-scripts draws a random seed each run; lorakit uses train.seed "
                           f"= {LorakitConfig().train.seed}")
            continue
        r.values.setdefault(section, {})[name] = value
        r.defaults.append(f"{key} = {value!r}")
    train = r.values.setdefault("train", {})
    if "max_train_steps" not in train and "max_train_epochs" not in train:
        train["max_train_steps"] = 1600
        r.defaults.append("max_train_steps = 1600")
    data = r.values.setdefault("data", {})
    data.setdefault("layout", "kohya")
    data.setdefault("bucket_mode", "kohya")
    if "subsets" not in data:
        data.setdefault("class_tokens_from_folder", True)  # DreamBooth folders: `N_<class tokens>`


def convert(src: dict[str, Any], gui: bool) -> ImportResult:
    """Map kohya keys onto lorakit's schema: a GUI JSON first becomes the sd-scripts arguments kohya_ss launches
    with (import_gui.py), then every key is read as sd-scripts reads it."""
    r = ImportResult()
    labels: dict[str, str] = {}
    if gui:
        src, labels = gui_to_sd_scripts(src, r)
    r.source = src
    learning_rates(r, src)
    warmup(r, src)
    family(r, src)
    optimizer(r, src)
    network_keys = import_network(r, src, gui)  # network type, dims, network_args (import_networks.py)
    table = conversions(gui)
    for key, value in src.items():
        if key in HANDLED or key in network_keys or key in r.mapped:
            continue
        if value in ("", None):
            r.empty.append(key)
            continue
        if key in table:
            table[key](r, key, value)
        elif key in GUI_ONLY:
            r.inert(key, value, "a kohya_ss GUI setting, not a training parameter")
        elif key in INERT:
            r.inert(key, value, INERT[key])
        elif key.startswith("huber_") and src.get("loss_type", "l2") == "l2":
            r.inert(key, value, "used only with loss_type huber or smooth_l1")
        elif key not in ARGUMENTS and section_of(key) is None:
            r.inert(key, value, "not an argument of sd-scripts' SD/SDXL LoRA training (sd-scripts ignores it)")
        elif (section := section_of(key)) is not None and key not in REASONS:
            r.put(key, f"{section}.{key}", value)
        elif is_empty(value) or OFF_VALUES.get(key, object()) == value:
            r.empty.append(key)
        elif key in REASONS:
            r.unsupported(key, value, REASONS[key])
        else:
            r.unsupported(key, value, "an sd-scripts setting lorakit does not implement")
    train = r.values.get("train", {})
    if "max_train_epochs" in train and train.pop("max_train_steps", None) is not None:
        r.mapped["max_train_steps"] = "(dropped: max_train_epochs wins, as in sd-scripts)"
        r.notes.append(f"max_train_steps is ignored: sd-scripts trains max_train_epochs = "
                       f"{train['max_train_epochs']} epochs when both are set, and so does lorakit")
    sample_schedule(r, src)
    needless_warmup(r)
    known_scheduler_arguments(r)
    import_state_saving(r, src)
    if labels:
        _relabel(r, labels)
    return r


def _relabel(r: ImportResult, labels: dict[str, str]) -> None:
    """Report GUI JSON keys by their own names (the sd-scripts argument in brackets when it differs)."""
    def name(key: str) -> str:
        base = key.split(" ")[0]
        label = labels.get(base)
        return key if label is None or label == base else key.replace(base, f"{label} ({base})", 1)

    r.mapped = {name(k): v for k, v in r.mapped.items()}
    r.unmapped = [(name(k), v, why) for k, v, why in r.unmapped]
    r.inert_keys = [(name(k), v, why) for k, v, why in r.inert_keys]
    r.empty = [name(k) for k in r.empty]


def _drop_unused_prior_loss_weight(r: ImportResult) -> None:
    """kohya ignores prior_loss_weight without regularisation images; lorakit would refuse it (it does nothing)."""
    mode = r.values.get("mode", {})
    data = r.values.get("data", {})
    has_reg = data.get("reg_data_dir") or any(s.get("is_reg") for s in data.get("subsets", []))
    if "prior_loss_weight" in mode and not has_reg:
        weight = mode.pop("prior_loss_weight")
        if not mode:
            r.values.pop("mode")
        r.mapped.pop("prior_loss_weight", None)
        r.skip("prior_loss_weight", weight if weight != 1 else None,
               "kohya ignores it without regularisation images" if weight != 1 else "")


def import_file(path: Path, dataset_toml: Path | None = None) -> ImportResult:
    """Read a kohya_ss GUI .json, a TrainTrain .json or an sd-scripts .toml (and optional dataset .toml) into an
    ImportResult."""
    try:
        if path.suffix.lower() == ".json":
            src = json.loads(path.read_text(encoding="utf-8-sig"))
            gui = isinstance(src, dict) and bool(GUI_MARKERS & set(src))  # else sd-scripts' names in JSON
        else:
            raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
            if "version" in raw and {"train", "network", "data", "model"} & {k for k, v in raw.items()
                                                                          if isinstance(v, dict)}:
                raise ConfigError([f"{path}: this is already a lorakit config (it has `version` and lorakit's "
                                   "sections)"], f"use it as it is: lorakit plan {path}")
            if is_dataset_toml(raw):
                raise ConfigError([f"{path}: this is an sd-scripts dataset TOML ([general]/[[datasets]]), not a "
                                   "training config"], "import the training config and pass this file with "
                                  f"--dataset-toml {path}")
            src, gui = flatten_tables(raw), False
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read it as kohya_ss JSON or sd-scripts TOML: {exc}"]) from None
    if not isinstance(src, dict):
        raise ConfigError([f"{path}: expected a JSON object of settings"])
    if is_traintrain(src):  # TrainTrain's presets and saved settings name their keys after its UI
        if dataset_toml is not None:
            raise ConfigError([f"{path}: a TrainTrain file has no dataset TOML"], "run it without --dataset-toml")
        return convert_traintrain(src)
    result = convert(src, gui)
    if src.get("dataset_config"):
        result.mapped["dataset_config"] = "(the dataset TOML, read with it)"
    elif "dataset_config" in src:
        result.empty.append("dataset_config")
    if dataset_toml is None and src.get("dataset_config"):
        candidate = Path(str(src["dataset_config"]))
        if candidate.is_file():
            dataset_toml = candidate
        else:
            result.notes.append(f"dataset_config {candidate} not found; pass it with --dataset-toml")
    if dataset_toml is not None:
        try:
            dataset = tomllib.loads(Path(dataset_toml).read_text(encoding="utf-8-sig"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError([f"{dataset_toml}: cannot read the dataset TOML: {reason}"]) from None
        result.strict_source = str(dataset_toml)
        apply_dataset_toml(result, dataset)
        result.strict_source = None
        if result.errors:
            raise ConfigError(result.errors)
    _drop_unused_prior_loss_weight(result)  # after the dataset TOML, which may name the regularisation images
    unmasked(result)
    _sd_scripts_defaults(result, src)  # last: the dataset TOML may set some of them
    return result
