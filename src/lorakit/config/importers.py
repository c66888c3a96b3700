"""Convert kohya_ss GUI JSON and sd-scripts TOML (+ dataset TOML) configs into a lorakit config.

Every key of the source is accounted for: mapped to a lorakit key (directly, renamed, or converted), or listed
as unmapped with the reason. Keys with an empty/off value and no lorakit equivalent are listed separately, so the
interesting unmapped keys stand out.
"""

from __future__ import annotations

import json
import shlex
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

import tomli_w
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from ..errors import ConfigError
from .import_checkpoints import STATE_KEYS, import_state_saving
from .import_gui import gui_to_sd_scripts
from .sd_scripts_args import ARGUMENTS
from .import_networks import import_network
from .migrate import section_of
from .schema import CONFIG_VERSION, LorakitConfig

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
    "max_data_loader_n_workers": "data-loading speed only", "persistent_data_loader_workers": "data-loading speed only",
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
    "fp8_base": "fp8 base weights are not implemented", "fp8_base_unet": "fp8 base weights are not implemented",
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


@dataclass
class ImportResult:
    """The lorakit values, and every source key that did not become one (with why)."""

    values: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[tuple[str, Any, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    inert_keys: list[tuple[str, Any, str]] = field(default_factory=list)  # set, but changes nothing kohya trains
    defaults: list[str] = field(default_factory=list)  # keys the source leaves out, at sd-scripts' default
    source: dict[str, Any] = field(default_factory=dict)  # the sd-scripts arguments being read
    strict_source: str | None = None  # while set (reading a dataset TOML), an unreadable value is an error

    def inert(self, source: str, value: Any, why: str) -> None:
        """A source key that changes nothing the run trains (logging, attention kernel, GUI-only)."""
        self.inert_keys.append((source, value, why))

    def unsupported(self, source: str, value: Any, need: str) -> None:
        """A source key the run depends on that lorakit cannot reproduce (what lorakit would need)."""
        self.unmapped.append((source, value, need))

    def report(self) -> dict[str, list[tuple[str, Any, str]]]:
        """Every source key in one of three groups: mapped (key, lorakit key), inert (key, value, why) and
        unsupported (key, value, what lorakit would need); keys left empty/off are inert."""
        mapped = [(k, None, v) for k, v in self.mapped.items() if not v.startswith("(inert: ")]
        inert = [(k, None, v[len("(inert: "):-1]) for k, v in self.mapped.items() if v.startswith("(inert: ")]
        listed = {k for k, _, _ in mapped + inert + self.inert_keys + self.unmapped}
        inert += self.inert_keys + [(k, None, "empty or off") for k in dict.fromkeys(self.empty) if k not in listed]
        return {"mapped": mapped, "inert": inert, "unsupported": list(self.unmapped)}

    def put(self, source: str, dotted: str, value: Any) -> None:
        """Set lorakit key `dotted` from source key `source`, cast to the field's type; else record why not."""
        info = field_info(dotted)
        if info is None:
            self.skip(source, value, f"no lorakit setting {dotted} yet")
            return
        try:
            value = cast(value, info.annotation)
            kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            TypeAdapter(kind).validate_python(value, strict=False)
        except (TypeError, ValueError, ValidationError):
            from .loader import allowed

            self.bad(source, value, f"{dotted} takes {allowed(tuple(dotted.split('.')))}")
            return
        node = self.values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        self.mapped[source] = dotted

    def bad(self, source: str, value: Any, reason: str) -> None:
        """A value that cannot be read: unmapped with the reason, or an error while reading a dataset TOML."""
        if self.strict_source:
            self.errors.append(f"{self.strict_source}: {source} = {value!r}: {reason}")
        else:
            self.unmapped.append((source, value, reason))

    def skip(self, source: str, value: Any, reason: str) -> None:
        """Record a source key that is not mapped; empty/off values go to the short list."""
        if _is_empty(value):
            self.empty.append(source)
        else:
            self.unmapped.append((source, value, reason))

    def to_toml(self, source: str) -> str:
        """The lorakit TOML, with the unmapped keys listed in comments at the top."""
        head = [f"# Imported by `lorakit config import` from {source}."]
        if self.unmapped:
            head.append("# Unsupported: kohya would use these, lorakit cannot (the run differs there):")
            head += [f"#   {k} = {v!r}: {why}" for k, v, why in self.unmapped]
        if self.defaults:
            head.append("# Not in the file, so at sd-scripts' defaults: " + ", ".join(self.defaults))
        head += [f"# Note: {n}" for n in self.notes]
        return "\n".join(head) + "\n\n" + tomli_w.dumps({"version": CONFIG_VERSION, **self.values})


def _is_empty(value: Any) -> bool:
    """'' / None / False / 0 / [] — a key that was left off."""
    return value in ("", None, False, 0, [], {})


def field_info(dotted: str) -> FieldInfo | None:
    """The schema field `dotted` (e.g. 'data.reg_data_dir'), or None if lorakit has no such key."""
    from .loader import model_at

    *parents, leaf = dotted.split(".")
    model = model_at(tuple(parents))  # [mode] is lora's section: imported configs train kohya's train_network
    return model.model_fields.get(leaf) if model is not None else None


def has_field(dotted: str) -> bool:
    """True if `dotted` (e.g. 'data.reg_data_dir') is a key of the lorakit schema."""
    return field_info(dotted) is not None


def cast(value: Any, kind: Any) -> Any:
    """`value` as type `kind` (int, float, bool, str, optional, list or tuple of them); ValueError if it is not one.

    Numbers and booleans written as strings ("1234", "2e-4", "true") are read; a float is an int only when whole.
    Literal choices are left to the validator.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else cast(value, args[0]) if len(args) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError("not a list")
        args = typing.get_args(kind)
        if origin is tuple and len(args) != len(value):
            raise ValueError(f"expected {len(args)} values")
        return [cast(v, args[i] if origin is tuple else args[0]) for i, v in enumerate(value)]
    if isinstance(value, bool) and kind in (int, float):
        raise ValueError("a boolean is not a number")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError("not true or false")
        return str(value).strip().lower() in ("true", "1")
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int):
            return number
        raise ValueError("not a whole number")
    if kind is float:
        if not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        return float(value)
    if kind is str and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError("not text")
    return value


def literal_values(dotted: str) -> tuple[Any, ...]:
    """The allowed values of a Literal field (empty if it is not one)."""
    section, name = dotted.split(".")
    ann = LorakitConfig.model_fields[section].annotation.model_fields[name].annotation  # type: ignore[union-attr]
    return typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()


def _number(value: Any) -> float | None:
    """A float from a number or numeric string ('' and None → None)."""
    try:
        return float(value) if value not in ("", None) else None
    except (TypeError, ValueError):
        return None


def _args_list(value: Any) -> list[str]:
    """GUI 'a=1 b=2' strings or sd-scripts lists as a list of key=value strings."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return shlex.split(str(value)) if value else []


def _resolution(r: ImportResult, key: str, value: Any) -> None:
    """'512,512' / '512' / 512 / [512, 512] → data.resolution; '768,512' → data.image_size (the largest bucket)."""
    parts = value if isinstance(value, list) else str(value).replace("x", ",").split(",")
    try:
        sides = [cast(s, int) for s in parts if str(s).strip()]
    except (TypeError, ValueError):
        r.bad(key, value, "a resolution is a number of pixels or width,height")
        return
    if not sides:
        r.skip(key, value, "empty resolution")
        return
    if not _buckets_on(r) and any(side % 8 for side in sides):
        rounded = [side - side % 8 for side in sides]
        r.unsupported(key, value, f"without buckets sd-scripts trains every image at exactly this size; lorakit "
                      f"needs multiples of 8 and uses {','.join(map(str, rounded))}")
        sides = rounded
    _put_resolution(r, key, value, sides)
    if any(k == key for k, _, _ in r.unmapped):
        r.mapped.pop(key, None)  # listed once, as unsupported


def _buckets_on(r: ImportResult) -> bool:
    """Whether sd-scripts buckets: the dataset TOML's enable_bucket if it set one, else the training config's."""
    return bool(r.values.get("data", {}).get("enable_bucket", r.source.get("enable_bucket")))


def _put_resolution(r: ImportResult, key: str, value: Any, sides: list[int]) -> None:
    """data.resolution for a square, data.image_size (the largest bucket) for width,height."""
    if len(set(sides)) > 1 and len(sides) == 2 and has_field("data.image_size"):
        r.put(key, "data.image_size", sides)  # the largest bucket, (width, height)
    elif len(set(sides)) > 1:
        r.notes.append(f"{key} {value!r} is not square: lorakit trains at {max(sides)} with aspect buckets")
        r.put(key, "data.resolution", max(sides))
    else:
        r.put(key, "data.resolution", sides[0])


def _bucket_steps(r: ImportResult, key: str, value: Any) -> None:
    """bucket_reso_steps counts only with buckets on; there sd-scripts stops at launch unless it divides 64 (32 for
    SDXL: train_network.py / sdxl_train_network.py assert_extra_args → verify_bucket_reso_steps)."""
    n = _number(value)
    need = 32 if r.values.get("model", {}).get("family") == "sdxl" else 64
    if not _buckets_on(r):
        r.inert(key, value, "buckets are off (enable_bucket)")
    elif n is None or not n.is_integer() or n <= 0 or n % need:
        r.unsupported(key, value, f"sd-scripts stops at launch: with buckets it must be divisible by {need}; "
                      "lorakit keeps its default 64")
    else:
        r.put(key, "data.bucket_reso_steps", int(n))


def _choice(r: ImportResult, key: str, value: Any, dotted: str, table: dict[str, str] | None = None) -> None:
    """Map a named choice (optionally renamed through `table`) if lorakit offers it."""
    name = table.get(str(value), str(value)) if table else str(value)
    options = literal_values(dotted)
    if name in options:
        r.put(key, dotted, name)
    else:
        r.skip(key, value, f"lorakit's {dotted} offers {', '.join(map(str, options))}")


def _learning_rates(r: ImportResult, src: dict[str, Any]) -> None:
    """learning_rate / unet_lr / text_encoder_lr and whether the text encoder trains, as sd-scripts reads them.

    sd-scripts (train_network.py): the UNet trains at unet_lr when set, else learning_rate (default 2e-6); the
    text encoders at text_encoder_lr (one value, or one per encoder) when set, else learning_rate; a
    text_encoder_lr of 0 or network_train_unet_only leaves them untrained.
    """
    keys = ("learning_rate", "unet_lr")
    bad = _unreadable_numbers(r, src, keys, "train.learning_rate")
    lr, unet_lr = (None if k in bad else _number(src.get(k)) for k in keys)
    if unet_lr:
        r.put("unet_lr", "train.learning_rate", unet_lr)
        if "learning_rate" in src:
            r.mapped["learning_rate"] = "train.learning_rate (unet_lr wins for the UNet)"
    elif unet_lr == 0 and "unet_lr" in src:
        r.unsupported("unet_lr", src["unet_lr"], "0 leaves the UNet untrained; lorakit always trains it")
    if not unet_lr and lr is not None:
        r.put("learning_rate", "train.learning_rate", lr)
    elif not unet_lr and "learning_rate" not in bad:
        r.values.setdefault("train", {})["learning_rate"] = 2e-6
        r.defaults.append("learning_rate = 2e-06")
    train_te = True
    if src.get("network_train_unet_only") not in ("", None):
        try:
            train_te = not cast(src["network_train_unet_only"], bool)
            r.mapped["network_train_unet_only"] = f"network.train_text_encoder = {train_te}"
        except ValueError:
            r.bad("network_train_unet_only", src["network_train_unet_only"], "takes true or false")
    te = src.get("text_encoder_lr")
    te_values = te if isinstance(te, list) else [te] if te not in ("", None) else []
    numbers = [_number(v) for v in te_values]
    if None in numbers or any(isinstance(v, bool) for v in te_values):
        r.bad("text_encoder_lr", te, "train.text_encoder_lr takes a number")
    elif numbers and all(n == 0 for n in numbers):
        train_te = False
        r.mapped["text_encoder_lr"] = "network.train_text_encoder = False (0: the text encoder is not trained)"
    elif numbers and len(set(numbers)) > 1:
        r.unsupported("text_encoder_lr", te, "one learning rate per text encoder; lorakit has one for both")
    elif numbers and train_te:
        r.put("text_encoder_lr", "train.text_encoder_lr", numbers[0])
    elif numbers:
        r.inert("text_encoder_lr", te, "the text encoder is not trained (network_train_unet_only)")
    r.values.setdefault("network", {})["train_text_encoder"] = train_te


def _unreadable_numbers(r: ImportResult, src: dict[str, Any], keys: tuple[str, ...], dotted: str) -> set[str]:
    """The keys among `keys` whose value is set but not a number, listed as unmapped."""
    bad = {k for k in keys if src.get(k) not in ("", None) and (_number(src[k]) is None or isinstance(src[k], bool))}
    for key in sorted(bad):
        r.bad(key, src[key], f"{dotted} takes a number")
    return bad


def _warmup(r: ImportResult, src: dict[str, Any]) -> None:
    """lr_warmup_steps as sd-scripts reads it: an int is steps, a float a fraction of the steps
    (get_scheduler_fix); on the command line (int_or_float) 'N%' is a percentage and a number ≥ 1 an int."""
    key, raw = "lr_warmup_steps", src.get("lr_warmup_steps")
    if isinstance(raw, str) and raw.strip().endswith("%") and _number(raw.strip()[:-1]) is not None:
        raw = float(raw.strip()[:-1]) / 100
    if raw in ("", None) or key in _unreadable_numbers(r, {key: raw}, (key,), "the warm-up"):
        if key in src and raw in ("", None):
            r.skip(key, None, "")
        return
    if isinstance(raw, str):
        raw = float(raw) if float(raw) < 1 else int(float(raw))
    if isinstance(raw, float) and raw >= 1:
        r.unsupported(key, raw, f"sd-scripts reads a float as a fraction of the steps: a warm-up of {raw} × the "
                      "run; lorakit's train.lr_warmup_ratio is below 1 (set train.lr_warmup_steps)")
    elif isinstance(raw, float) and raw > 0:
        r.put(key, "train.lr_warmup_ratio", raw)
    elif raw:
        r.put(key, "train.lr_warmup_steps", int(raw))
    else:
        r.skip(key, None, "")


def _family(r: ImportResult, src: dict[str, Any]) -> None:
    """sdxl / v2 checkboxes → model.family (both off: left to auto-detection)."""
    if src.get("sdxl"):
        r.put("sdxl", "model.family", "sdxl")
    elif src.get("v2"):
        r.put("v2", "model.family", "sd2")
    for key in ("sdxl", "v2"):
        if key in src and key not in r.mapped:
            r.mapped[key] = "model.family (auto)"


PROMPT_FORMAT = "lorakit reads kohya's .txt prompt format; convert it to one prompt per line"
NO_SCHEDULE = "kohya renders no samples without sample_every_n_steps/epochs"


def _gui_sample_prompts(r: ImportResult, key: str, value: Any) -> None:
    """kohya_ss GUI: `sample_prompts` is the prompt text itself (the GUI writes it to a file for sd-scripts), one
    prompt per line; blank lines and '#' lines are skipped, as sd-scripts reads that file."""
    if not isinstance(value, str):
        r.bad(key, value, "sample.prompts takes the prompt text, one prompt per line")
        return
    prompts = [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]
    if prompts:
        r.put(key, "sample.prompts", prompts)
    else:
        r.skip(key, None, "")


def _sample_prompts_file(r: ImportResult, key: str, value: Any) -> None:
    """sd-scripts: `sample_prompts` is a path; lorakit reads the .txt format (sd-scripts also reads .toml/.json)."""
    suffix = Path(str(value)).suffix.lower()
    if suffix == ".txt":
        r.put(key, "sample.prompts_file", value)
    elif suffix in (".toml", ".json"):
        r.skip(key, value, PROMPT_FORMAT)
    else:
        r.skip(key, value, "sd-scripts reads a .txt, .toml or .json prompt file; " + PROMPT_FORMAT)


def _sample_schedule(r: ImportResult, src: dict[str, Any]) -> None:
    """kohya's sampling rules, applied once every key is read (their order in the file is arbitrary).

    sd-scripts renders at step 0 only with sample_at_first, then every sample_every_n_epochs epochs, else every
    sample_every_n_steps steps (the steps are ignored when the epochs are set); with neither, nothing after step 0.
    lorakit renders its prompts at step 0, on the schedule and at the end.
    """
    sample = r.values.get("sample", {})
    if not any(dotted in ("sample.prompts", "sample.prompts_file") for dotted in r.mapped.values()):
        for name in ("every_n_steps", "every_n_epochs"):
            if sample.pop(name, None) is not None:
                key = f"sample_{name}"
                r.mapped.pop(key, None)
                r.inert(key, src[key], "no sample prompts lorakit reads, so it renders none (samples never "
                        "change training)")
    if sample.get("every_n_epochs") and sample.pop("every_n_steps", None) is not None:
        r.mapped.pop("sample_every_n_steps", None)
        r.unmapped.append(("sample_every_n_steps", src["sample_every_n_steps"],
                           "kohya ignores sample_every_n_steps when sample_every_n_epochs is set"))
    at_first, unreadable = False, False
    if src.get("sample_at_first") not in ("", None):
        try:
            at_first = cast(src["sample_at_first"], bool)
        except ValueError:
            r.bad("sample_at_first", src["sample_at_first"], "takes true or false")
            unreadable = True
    prompts = [k for k, dotted in r.mapped.items() if dotted in ("sample.prompts", "sample.prompts_file")]
    if prompts and not (sample.get("every_n_epochs") or sample.get("every_n_steps")):
        if at_first:
            r.notes.append("kohya renders the sample prompts only at step 0 (sample_at_first without "
                           "sample_every_n_steps/epochs); lorakit renders them at the end too")
        else:
            for key in prompts:
                sample.pop(r.mapped.pop(key).split(".", 1)[1], None)
                r.unmapped.append((key, src[key], NO_SCHEDULE + " (lorakit would render them at step 0 and the "
                                   "end)"))
            prompts = []
    if "sample" in r.values and not sample:
        del r.values["sample"]
    if not unreadable and (prompts and not at_first or "sample_at_first" in src):
        if at_first or not prompts:
            r.skip("sample_at_first", None, "")  # lorakit renders step 0 as well; or no samples at all
        else:  # samples never change what is trained
            r.inert("sample_at_first", src.get("sample_at_first", False), "kohya renders no samples at step 0; "
                    "lorakit always does (a sample never changes training)")


def _optimizer(r: ImportResult, src: dict[str, Any]) -> None:
    """optimizer_type (any case; use_8bit_adam / use_lion_optimizer; empty = AdamW) and optimizer_args, as
    sd-scripts' get_optimizer reads them; Adafactor's defaults written out (sd-scripts: relative_step=True, then
    its own 'adafactor' schedule; transformers: scale_parameter=True, warmup_init=False)."""
    name = str(src.get("optimizer_type") or "")
    label = "optimizer_type"
    for flag, implied in (("use_8bit_adam", "AdamW8bit"), ("use_lion_optimizer", "Lion")):
        if src.get(flag) not in ("", None, False):
            name, label = name or implied, flag
            r.mapped[flag] = f"train.optimizer_type = {implied!r}"
    options = {o.lower(): o for o in literal_values("train.optimizer_type")}
    chosen = {"dadaptadampreprint": "DAdaptation"}.get(name.lower(), options.get((name or "AdamW").lower()))
    if chosen is None:
        r.unsupported(label, name, f"lorakit's train.optimizer_type offers {', '.join(options.values())}")
        chosen = None
    elif name:
        r.put(label, "train.optimizer_type", chosen)
    args = _args_list(src.get("optimizer_args"))
    if chosen == "Adafactor":
        flags = {a.partition("=")[0].strip(): a.partition("=")[2].strip().lower() for a in args}
        if flags.get("warmup_init") == "true" and flags.get("relative_step") == "false":
            args = [a for a in args if a.partition("=")[0].strip() != "relative_step"] + ["relative_step=True"]
            r.notes.append("Adafactor warmup_init=True needs relative_step: sd-scripts turns it on, and so does the "
                           "import")
        given = {a.partition("=")[0].strip() for a in args}
        added = [f"{k}={v}" for k, v in (("relative_step", "True"), ("scale_parameter", "True"),
                                         ("warmup_init", "False")) if k not in given]
        if added:
            r.notes.append(f"Adafactor: sd-scripts/transformers defaults written out: {' '.join(added)}")
        args += added
        relative = any(a.replace(" ", "").lower() == "relative_step=true" for a in args)
        if relative:
            r.values.setdefault("train", {})["lr_scheduler"] = "adafactor"
            r.notes.append("Adafactor with relative_step: sd-scripts replaces the schedule with Adafactor's own "
                           "(lr_scheduler = 'adafactor'; learning_rate is its initial value)")
    if chosen is not None:
        args = _known_arguments(r, chosen, args)
    if args:
        r.put("optimizer_args", "train.optimizer_args", args)
    elif "optimizer_args" in src:
        r.empty.append("optimizer_args")


def _known_arguments(r: ImportResult, optimizer: str, args: list[str]) -> list[str]:
    """The optimizer_args the optimizer's class takes; sd-scripts passes the others on and stops with a TypeError,
    so each is listed as unsupported and left out."""
    from .validate import optimizer_parameters

    known = optimizer_parameters(optimizer)
    if known is None or any(p == "kwargs" for p in known):
        return args
    kept = []
    for item in args:
        name = item.partition("=")[0].strip()
        if name in known:
            kept.append(item)
        else:
            r.unsupported("optimizer_args", item, f"{optimizer} takes no '{name}': sd-scripts would stop with a "
                          "TypeError; left out")
    return kept


def _alpha_mask(r: ImportResult, key: str, value: Any) -> None:
    """alpha_mask: sd-scripts weights the loss by the alpha channel whenever the batch has alpha masks, with or
    without masked_loss (train_network.py process_batch); lorakit needs both keys."""
    r.put(key, "data.alpha_mask", value)
    if r.values.get("data", {}).get("alpha_mask") is True:
        r.values.setdefault("train", {})["masked_loss"] = True
        r.notes.append("alpha_mask: sd-scripts masks the loss by the alpha channel even without masked_loss; "
                       "train.masked_loss = true does the same here")


def _scheduler(r: ImportResult, key: str, value: Any) -> None:
    """lr_scheduler by sd-scripts' name; 'adafactor' comes from the Adafactor optimizer (see _optimizer);
    schedules lorakit lacks are unsupported."""
    if r.values.get("train", {}).get("lr_scheduler") == "adafactor":
        r.mapped[key] = "train.lr_scheduler = 'adafactor' (Adafactor's relative step replaces it, as sd-scripts)"
    elif str(value).startswith("adafactor"):
        r.put(key, "train.lr_scheduler", "adafactor")
    elif str(value) in literal_values("train.lr_scheduler"):
        r.put(key, "train.lr_scheduler", str(value))
    else:
        offers = ", ".join(literal_values("train.lr_scheduler"))
        r.unsupported(key, value, f"lorakit's train.lr_scheduler offers {offers}"
                      " (or name any torch scheduler class with train.lr_scheduler_type)")


def _token_length(r: ImportResult, key: str, value: Any) -> None:
    """max_token_length: 150 / 225 are kohya's long prompts; 75 (what the GUI writes by default) is sd-scripts'
    unset."""
    n = _number(value)
    if n in (75, None) and value not in (True, False):
        r.skip(key, None, "")
    else:
        r.put(key, "train.max_token_length", int(n) if n is not None and n.is_integer() else value)


def _conversions(gui: bool) -> dict[str, Callable[[ImportResult, str, Any], None]]:
    """Source keys that need more than a copy."""

    def lr_args(dotted: str) -> Callable[[ImportResult, str, Any], None]:
        return lambda r, k, v: r.put(k, dotted, _args_list(v)) if _args_list(v) else r.skip(k, None, "")

    def number(dotted: str, zero_is_unset: bool = True) -> Callable:
        def convert(r: ImportResult, k: str, v: Any) -> None:
            n = _number(v)
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
        "max_resolution": _resolution,
        "lr_scheduler_args": lr_args("train.lr_scheduler_args"),
        "lr_scheduler": _scheduler,
        "lr_scheduler_type": lambda r, k, v: r.put(k, "train.lr_scheduler_type", v) if v else r.skip(k, v, ""),
        "max_token_length": _token_length,
        "bucket_reso_steps": _bucket_steps,
        "flip_aug": lambda r, k, v: r.put(k, "data.random_flip", v),
        "alpha_mask": _alpha_mask,
        "loss_type": lambda r, k, v: r.skip(k, None, "") if v == "l2" else r.unsupported(k, v, REASONS[k]),
        "resolution": _resolution,
        "lr_scheduler_num_cycles": number("train.lr_scheduler_num_cycles"),
        "mixed_precision": lambda r, k, v: _choice(r, k, v, "train.mixed_precision"),
        "save_precision": lambda r, k, v: _choice(r, k, v, "output.save_precision", PRECISIONS),
        "min_snr_gamma": number("train.min_snr_gamma"),
        "save_every_n_epochs": number("output.save_every_n_epochs"),
        "save_last_n_epochs": number("output.save_last_n_epochs"),
        "save_last_n_steps": number("output.save_last_n_steps"),
        "clip_skip": lambda r, k, v: r.inert(k, v, "SDXL uses the penultimate layer whatever clip_skip says "
                                             "(sd-scripts warns)")
        if r.values.get("model", {}).get("family") == "sdxl" and _number(v) not in (None, 0, 1)
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
        "sample_prompts": _gui_sample_prompts if gui else _sample_prompts_file,
        "sample_every_n_steps": lambda r, k, v: r.put(k, "sample.every_n_steps", v) if v else r.skip(k, v, ""),
        "sample_every_n_epochs": lambda r, k, v: r.put(k, "sample.every_n_epochs", v) if v else r.skip(k, v, ""),
    }
    table["stop_text_encoder_training"] = lambda r, k, v: r.inert(
        k, v, "sd-scripts' LoRA training has no such argument (only train_db.py): the text encoder trains to the end")
    return table


GUI_MARKERS = {"LoRA_type", "epoch", "max_resolution", "optimizer", "lr_warmup", "noise_offset_type"}
HANDLED = {"learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only", "lr_warmup_steps", "sdxl",
           "v2", "dataset_config", "sample_at_first",  # sample_at_first: _sample_schedule
           "optimizer_type", "optimizer_args", "use_8bit_adam", "use_lion_optimizer",  # _optimizer
           *STATE_KEYS}  # import_state_saving (import_checkpoints.py)
# What sd-scripts uses for a key a config leaves out (train_util.py / train_network.py argparse defaults, kohya-ss
# sd-scripts 48d368f) where lorakit's own default differs: the import writes sd-scripts' value.
SD_SCRIPTS_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("save_precision", "output.save_precision", "fp32"),  # None: the trained weights' own dtype, float32
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


def is_dataset_toml(values: dict[str, Any]) -> bool:
    """An sd-scripts dataset TOML ([general] / [[datasets]] tables, nothing else that trains)."""
    return "datasets" in values and isinstance(values["datasets"], list) or (
        set(values) <= {"general", "datasets"} and bool(values))


def convert(src: dict[str, Any], gui: bool) -> ImportResult:
    """Map kohya keys onto lorakit's schema: a GUI JSON first becomes the sd-scripts arguments kohya_ss launches
    with (import_gui.py), then every key is read as sd-scripts reads it."""
    r = ImportResult()
    labels: dict[str, str] = {}
    if gui:
        src, labels = gui_to_sd_scripts(src, r)
    r.source = src
    _learning_rates(r, src)
    _warmup(r, src)
    _family(r, src)
    _optimizer(r, src)
    network_keys = import_network(r, src, gui)  # network type, dims, network_args (import_networks.py)
    table = _conversions(gui)
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
        elif _is_empty(value) or OFF_VALUES.get(key, object()) == value:
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
    _sample_schedule(r, src)
    _needless_warmup(r)
    _known_scheduler_arguments(r)
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


def _known_scheduler_arguments(r: ImportResult) -> None:
    """lr_scheduler_args the schedule takes; sd-scripts passes the others on and stops with a TypeError, so each
    is listed as unsupported and left out (arguments lorakit sets itself are checked by config validate)."""
    import inspect

    from .validate import scheduler_class, scheduler_parameters

    train = r.values.get("train", {})
    args = train.get("lr_scheduler_args")
    if not args:
        return
    if train.get("lr_scheduler_type"):
        cls, _ = scheduler_class(train["lr_scheduler_type"])
        params = dict(inspect.signature(cls).parameters) if cls is not None else None
        owner = train["lr_scheduler_type"]
    else:
        owner = train.get("lr_scheduler", "constant")
        params = scheduler_parameters(owner)
    if params is None or "kwargs" in params:
        return
    kept = [a for a in args if a.partition("=")[0].strip() in params]
    for item in args:
        if item not in kept:
            r.unsupported("lr_scheduler_args", item, f"{owner} takes no '{item.partition('=')[0].strip()}': "
                          "sd-scripts would stop with a TypeError; left out")
    if kept:
        train["lr_scheduler_args"] = kept
    else:
        train.pop("lr_scheduler_args")
        r.mapped.pop("lr_scheduler_args", None)


def _needless_warmup(r: ImportResult) -> None:
    """sd-scripts' get_scheduler_fix stops at launch on a warm-up with 'constant', Adafactor's own schedule or a
    scheduler class (wrap_check_needless_num_warmup_steps); lorakit would quietly warm up: listed, left out."""
    train = r.values.get("train", {})
    schedule = train.get("lr_scheduler_type") or train.get("lr_scheduler", "constant")
    keys = [k for k in ("lr_warmup_steps", "lr_warmup_ratio") if train.get(k)]
    if not keys or schedule not in ("constant", "adafactor") and not train.get("lr_scheduler_type"):
        return
    for key in keys:
        value = train.pop(key)
        for source in [s for s, dotted in r.mapped.items() if dotted.startswith(f"train.{key}")]:
            r.mapped.pop(source)
            r.unsupported(source, value, f"sd-scripts stops at launch: {schedule} takes no warm-up; left out")


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


def _flatten_tables(values: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads every table of its config TOML as one flat namespace; do the same."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten_tables(value))
        else:
            flat[key] = value
    return flat


SUBSET_KEYS = {"image_dir", "num_repeats", "is_reg", "class_tokens"}  # data.subsets' own fields
DATASET_KEYS = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                "bucket_reso_steps", "bucket_no_upscale", "prior_loss_weight", "network_multiplier"}


def _tables(value: Any, key: str, problems: list[str], many: bool) -> list[dict[str, Any]]:
    """A dataset TOML table (many=False) or array of tables (many=True) as a list of dicts; records what is not."""
    items = value if many and isinstance(value, list) else [value]
    if not all(isinstance(x, dict) for x in items):
        problems.append(f"{key} = {value!r}: expected {'[[' + key + ']] tables' if many else 'a [' + key + '] table'}")
        return []
    return [dict(x) for x in items]


def apply_dataset_toml(r: ImportResult, dataset: dict[str, Any]) -> None:
    """sd-scripts dataset TOML ([general], [[datasets]], [[datasets.subsets]]; library/config_util.py): each subset
    becomes a data.subsets entry; a setting is looked up in the subset, then its dataset, then [general], then the
    training config's own arguments (sd-scripts' fallback order). The training config's train_data_dir and
    reg_data_dir are ignored, as sd-scripts ignores them beside a dataset config.

    A value that cannot be read, or a table that is not one, is an error (ConfigError from import_file).
    """
    source = r.strict_source or "dataset TOML"
    problems: list[str] = []
    general = _tables(dataset.get("general", {}), "general", problems, many=False)
    datasets = _tables(dataset.get("datasets", []), "datasets", problems, many=True)
    first = datasets[0] if datasets else {}
    subsets = _tables(first.pop("subsets", []), "datasets.subsets", problems, many=True)
    r.errors += [f"{source}: {p}" for p in problems]
    if problems:
        return
    for extra in datasets[1:]:
        r.unsupported("datasets", f"{len(datasets)} datasets", "lorakit trains one dataset (one resolution and "
                      "batch size); only the first was imported")
        break
    data = r.values.setdefault("data", {})
    for key in ("train_data_dir", "reg_data_dir"):
        if data.pop(key, None) is not None:
            r.mapped.pop(key, None)
            r.inert(key, r.source.get(key), "sd-scripts ignores it beside a dataset config")
    shared = {**(general[0] if general else {}), **first}  # the dataset's settings over [general]
    for key, value in sorted(shared.items(), key=lambda kv: kv[0] != "enable_bucket"):  # buckets decide the rest
        if key in SUBSET_KEYS or key in DATASET_KEYS or section_of(key) is not None or key == "caption_extention":
            if key not in SUBSET_KEYS:
                _dataset_setting(r, f"dataset.{key}", key, value)
        else:
            r.unsupported(f"dataset.{key}", value, "not a dataset setting lorakit knows")
    entries = []
    per_subset: dict[str, set[str]] = {}
    for i, subset in enumerate(subsets):
        label = f"dataset.subsets[{i}]"
        if not subset.get("image_dir"):
            r.unsupported(f"{label}.image_dir", subset.get("image_dir"), "lorakit reads image folders only "
                          "(metadata_file fine-tuning subsets are not supported)")
            continue
        entry = {k: subset[k] for k in ("image_dir", "num_repeats", "is_reg", "class_tokens") if k in subset}
        entries.append(entry)
        r.mapped[f"{label}.image_dir"] = f"data.subsets[{len(entries) - 1}]"
        for key, value in subset.items():
            if key not in SUBSET_KEYS and key != "conditioning_data_dir":
                per_subset.setdefault(key, set()).add(repr(value))
                _dataset_setting(r, f"{label}.{key}", key, value)
    _mask_folders(r, subsets)
    for key, values in per_subset.items():
        if len(values) > 1 or len(subsets) > sum(1 for s in subsets if key in s):
            r.unsupported(f"dataset.subsets[*].{key}", ", ".join(sorted(values)), "differs between subsets; "
                          "lorakit applies one value to every folder (the last one read)")
    if entries:
        data["subsets"] = entries


def _mask_folders(r: ImportResult, subsets: list[dict[str, Any]]) -> None:
    """conditioning_data_dir: sd-scripts builds a masked (ControlNet) dataset only when every subset names one
    (config_util.py BlueprintGenerator); lorakit has one mask folder for all."""
    folders = [s.get("conditioning_data_dir") for s in subsets]
    named = [(i, f) for i, f in enumerate(folders) if f is not None]
    if not named:
        return
    if len(named) < len(folders):
        for i, folder in named:
            r.inert(f"dataset.subsets[{i}].conditioning_data_dir", folder, "sd-scripts uses mask folders only when "
                    "every subset has one")
    elif len(set(folders)) > 1:
        r.unsupported("dataset.subsets[*].conditioning_data_dir", ", ".join(map(str, folders)), "one mask folder "
                      "per subset; lorakit has one for all (data.conditioning_data_dir)")
    else:
        for i, folder in named:
            r.mapped[f"dataset.subsets[{i}].conditioning_data_dir"] = "data.conditioning_data_dir"
        r.values.setdefault("data", {})["conditioning_data_dir"] = folders[0]


def _unmasked(r: ImportResult) -> None:
    """masked_loss without alpha_mask or a mask folder: sd-scripts' apply_masked_loss finds no mask in the batch and
    trains unmasked; lorakit would refuse the pair, so the key is left out as inert."""
    data, train = r.values.get("data", {}), r.values.get("train", {})
    if train.get("masked_loss") and not data.get("alpha_mask") and not data.get("conditioning_data_dir"):
        train.pop("masked_loss")
        for source in [k for k, v in r.mapped.items() if v == "train.masked_loss"]:
            r.mapped.pop(source)
            r.inert(source, True, "no alpha_mask and no mask folder in every subset: sd-scripts trains unmasked")


def _dataset_setting(r: ImportResult, label: str, key: str, value: Any) -> None:
    """One dataset/subset setting: as the same key of a training config, or the dataset-only names."""
    if key == "batch_size":
        r.put(label, "train.train_batch_size", value)
    elif key == "caption_extention":  # sd-scripts' old spelling
        r.put(label, "data.caption_extension", value)
    elif key == "resolution":
        _resolution(r, label, value)
    elif key in _conversions(False):
        _conversions(False)[key](r, label, value)
    elif key == "network_multiplier":
        r.skip(label, None if value == 1 else value, "" if value == 1 else "LoRA multiplier during training")
    elif (section := section_of(key)) is not None:
        r.put(label, f"{section}.{key}", value)
    else:
        r.unsupported(label, value, "not a dataset setting lorakit knows")


def import_file(path: Path, dataset_toml: Path | None = None) -> ImportResult:
    """Read a kohya_ss GUI .json or sd-scripts .toml (and optional dataset .toml) into an ImportResult."""
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
            src, gui = _flatten_tables(raw), False
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read it as kohya_ss JSON or sd-scripts TOML: {exc}"]) from None
    if not isinstance(src, dict):
        raise ConfigError([f"{path}: expected a JSON object of settings"])
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
    _unmasked(result)
    _sd_scripts_defaults(result, src)  # last: the dataset TOML may set some of them
    return result
