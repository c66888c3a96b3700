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
from typing import Any, Callable

import tomli_w
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ..errors import ConfigError
from .import_checkpoints import STATE_KEYS, import_state_saving
from .import_networks import import_network
from .migrate import section_of
from .schema import CONFIG_VERSION, LorakitConfig

PRECISIONS = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}
REASONS = {
    "logging_dir": "lorakit logs into the run folder (runs/<run_id>/)",
    "log_prefix": "lorakit logs into the run folder (runs/<run_id>/)",
    "log_with": "lorakit writes its own CSV log; trackers are not supported yet",
    "clip_skip": "not supported yet",
    "xformers": "lorakit uses PyTorch SDPA attention (train.sdpa)",
    "mem_eff_attn": "lorakit uses PyTorch SDPA attention (train.sdpa)",
    "save_model_as": "lorakit always saves .safetensors (output.save_format picks kohya/peft)",
    "resume": "lorakit cannot continue an sd-scripts state folder (accelerate's format); continue from the LoRA "
              "with network.network_weights, or resume lorakit's own checkpoints with `lorakit train --resume`",
    "network_train_text_encoder_only": "lorakit cannot train only the text encoder",
    "stop_text_encoder_training_pct": "",
    "full_fp16": "lorakit keeps LoRA weights in fp32 and autocasts (train.mixed_precision)",
    "full_bf16": "lorakit keeps LoRA weights in fp32 and autocasts (train.mixed_precision)",
    "sample_sampler": "lorakit samples with the model's own scheduler",
    "additional_parameters": "free-form command-line arguments cannot be mapped; set the keys individually",
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
    strict_source: str | None = None  # while set (reading a dataset TOML), an unreadable value is an error

    def put(self, source: str, dotted: str, value: Any) -> None:
        """Set lorakit key `dotted` from source key `source`, cast to the field's type; else record why not."""
        info = field_info(dotted)
        if info is None:
            self.skip(source, value, f"no lorakit setting {dotted} yet")
            return
        try:
            value = cast(value, info.annotation)
        except (TypeError, ValueError):
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
            head.append("# Not mapped (set these by hand if you need them):")
            head += [f"#   {k} = {v!r}: {why}" for k, v, why in self.unmapped]
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
    if len(set(sides)) > 1 and len(sides) == 2 and has_field("data.image_size"):
        r.put(key, "data.image_size", sides)  # the largest bucket, (width, height)
    elif len(set(sides)) > 1:
        r.notes.append(f"{key} {value!r} is not square: lorakit trains at {max(sides)} with aspect buckets")
        r.put(key, "data.resolution", max(sides))
    else:
        r.put(key, "data.resolution", sides[0])


def _choice(r: ImportResult, key: str, value: Any, dotted: str, table: dict[str, str] | None = None) -> None:
    """Map a named choice (optionally renamed through `table`) if lorakit offers it."""
    name = table.get(str(value), str(value)) if table else str(value)
    options = literal_values(dotted)
    if name in options:
        r.put(key, dotted, name)
    else:
        r.skip(key, value, f"lorakit's {dotted} offers {', '.join(map(str, options))}")


def _learning_rates(r: ImportResult, src: dict[str, Any], gui: bool) -> None:
    """learning_rate / unet_lr / text_encoder_lr and whether the text encoder trains.

    kohya: unet_lr (when set and non-zero) wins over learning_rate for the UNet; sd-scripts trains the text encoder
    unless network_train_unet_only; the kohya_ss GUI passes unet-only when text_encoder_lr is 0 and unet_lr is
    not (both 0: both train at learning_rate).
    """
    keys = ("learning_rate", "unet_lr", "text_encoder_lr")
    bad = _unreadable_numbers(r, src, keys, "train.learning_rate")
    lr, unet_lr, te_lr = (None if k in bad else _number(src.get(k)) for k in keys)
    if unet_lr:
        r.put("unet_lr", "train.learning_rate", unet_lr)
        if "learning_rate" in src:
            r.mapped["learning_rate"] = "train.learning_rate (unet_lr wins)"
    elif lr is not None:
        r.put("learning_rate", "train.learning_rate", lr)
        if "unet_lr" in src:
            r.mapped["unet_lr"] = "train.learning_rate (0 or empty = learning_rate)"
    train_te = not (gui and not te_lr and bool(unet_lr))
    if "network_train_unet_only" in src:
        try:
            train_te = not cast(src["network_train_unet_only"] or False, bool)
            r.mapped["network_train_unet_only"] = "network.train_text_encoder"
        except ValueError:
            r.bad("network_train_unet_only", src["network_train_unet_only"], "takes true or false")
    elif gui and te_lr and "unet_lr" in src and not unet_lr:
        r.notes.append("kohya_ss trains only the text encoder when unet_lr is 0 and text_encoder_lr is not; "
                       "lorakit always trains the UNet (at train.learning_rate)")
    if not gui and te_lr == 0:  # sd-scripts: text_encoder_lr = 0 (set, not empty) leaves the text encoder alone
        train_te = False
    r.values.setdefault("network", {})["train_text_encoder"] = train_te
    if te_lr and train_te:
        r.put("text_encoder_lr", "train.text_encoder_lr", te_lr)
    elif "text_encoder_lr" in src:
        r.mapped["text_encoder_lr"] = "network.train_text_encoder (0 = text encoder not trained)"
    for key in bad:
        r.mapped.pop(key, None)  # listed as unmapped instead


def _unreadable_numbers(r: ImportResult, src: dict[str, Any], keys: tuple[str, ...], dotted: str) -> set[str]:
    """The keys among `keys` whose value is set but not a number, listed as unmapped."""
    bad = {k for k in keys if src.get(k) not in ("", None) and (_number(src[k]) is None or isinstance(src[k], bool))}
    for key in sorted(bad):
        r.bad(key, src[key], f"{dotted} takes a number")
    return bad


def _warmup(r: ImportResult, src: dict[str, Any]) -> None:
    """GUI lr_warmup (percent) or sd-scripts lr_warmup_steps (a count, or a ratio when < 1)."""
    bad = _unreadable_numbers(r, src, ("lr_warmup", "lr_warmup_steps"), "the warm-up")
    if "lr_warmup" in src and "lr_warmup" not in bad:
        pct = _number(src["lr_warmup"]) or 0
        if pct:
            r.put("lr_warmup", "train.lr_warmup_ratio", pct / 100)
        else:
            r.skip("lr_warmup", None, "")
    steps = _number(src.get("lr_warmup_steps"))
    if "lr_warmup_steps" in src and "lr_warmup_steps" not in bad:
        if steps and steps < 1:
            r.put("lr_warmup_steps", "train.lr_warmup_ratio", steps)
        elif steps:
            r.put("lr_warmup_steps", "train.lr_warmup_steps", int(steps))
        else:
            r.skip("lr_warmup_steps", None, "")


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
    if "sample_at_first" in src and not unreadable:
        if at_first or not prompts:
            r.skip("sample_at_first", None, "")  # lorakit renders step 0 as well; or no samples at all
        else:
            r.unmapped.append(("sample_at_first", src["sample_at_first"], "lorakit always renders step 0"))


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
        "epoch": number("train.max_train_epochs"),
        "max_train_epochs": number("train.max_train_epochs"),
        "max_train_steps": number("train.max_train_steps"),
        "max_resolution": _resolution,
        "resolution": _resolution,
        "optimizer": lambda r, k, v: _choice(r, k, v, "train.optimizer_type"),
        "optimizer_type": lambda r, k, v: _choice(r, k, v, "train.optimizer_type"),
        "optimizer_args": lr_args("train.optimizer_args"),
        "lr_scheduler_args": lr_args("train.lr_scheduler_args"),
        "lr_scheduler": lambda r, k, v: _choice(r, k, v, "train.lr_scheduler"),
        "lr_scheduler_num_cycles": number("train.lr_scheduler_num_cycles"),
        "mixed_precision": lambda r, k, v: _choice(r, k, v, "train.mixed_precision"),
        "save_precision": lambda r, k, v: _choice(r, k, v, "output.save_precision", PRECISIONS),
        "min_snr_gamma": number("train.min_snr_gamma"),
        "save_every_n_steps": number("output.save_every_n_steps"),
        "network_weights": lambda r, k, v: r.put(k, "network.network_weights", v) if v else r.skip(k, v, ""),
        "vae": lambda r, k, v: r.put(k, "model.vae", v) if v else r.skip(k, v, ""),
        "prior_loss_weight": number("mode.prior_loss_weight"),
        "sample_prompts": _gui_sample_prompts if gui else _sample_prompts_file,
        "sample_every_n_steps": lambda r, k, v: r.put(k, "sample.every_n_steps", v) if v else r.skip(k, v, ""),
        "sample_every_n_epochs": lambda r, k, v: r.put(k, "sample.every_n_epochs", v) if v else r.skip(k, v, ""),
        "sdpa": lambda r, k, v: r.put(k, "train.sdpa", v),
    }
    if gui:
        table["stop_text_encoder_training"] = lambda r, k, v: r.skip(
            k, v, "the GUI gives a percentage; lorakit takes a step count: run `lorakit plan` and set "
            "train.stop_text_encoder_training")
        table["xformers"] = lambda r, k, v: r.put(k, "train.sdpa", v in ("sdpa", "xformers", True))
    else:
        table["stop_text_encoder_training"] = number("train.stop_text_encoder_training")
    return table


HANDLED = {"learning_rate", "unet_lr", "text_encoder_lr", "network_train_unet_only", "lr_warmup",
           "lr_warmup_steps", "sdxl", "v2", "dataset_config", "sample_at_first",  # sample_at_first: _sample_schedule
           *STATE_KEYS}  # import_state_saving (import_checkpoints.py)


def convert(src: dict[str, Any], gui: bool) -> ImportResult:
    """Map flat kohya keys (GUI or sd-scripts) onto lorakit's schema."""
    r = ImportResult()
    _learning_rates(r, src, gui)
    _warmup(r, src)
    _family(r, src)
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
            r.skip(key, value, "kohya_ss GUI setting, not a training parameter")
        elif key in REASONS:
            r.skip(key, value, REASONS[key] or "not supported")
        elif (section := section_of(key)) is not None:
            r.put(key, f"{section}.{key}", value)
        else:
            r.skip(key, value, "unknown to lorakit")
    train = r.values.get("train", {})
    if "max_train_epochs" in train and train.pop("max_train_steps", None) is not None:
        r.mapped["max_train_steps"] = "(dropped: max_train_epochs wins, as in kohya)"
        r.notes.append(f"max_train_steps is ignored: kohya trains for max_train_epochs = {train['max_train_epochs']} "
                       "when both are set, and so does lorakit")
    _sample_schedule(r, src)
    import_state_saving(r, src)
    return r


def _drop_unused_prior_loss_weight(r: ImportResult) -> None:
    """kohya ignores prior_loss_weight without regularisation images; lorakit would refuse it (it does nothing)."""
    mode = r.values.get("mode", {})
    if "prior_loss_weight" in mode and not r.values.get("data", {}).get("reg_data_dir"):
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


CLASS_TOKENS = ("kohya's caption for images without a caption file, not a trigger word; lorakit has no such "
                "setting (data.class_tokens_from_folder captions them with the folder name after 'N_')")


def _tables(value: Any, key: str, problems: list[str], many: bool) -> list[dict[str, Any]]:
    """A dataset TOML table (many=False) or array of tables (many=True) as a list of dicts; records what is not."""
    items = value if many and isinstance(value, list) else [value]
    if not all(isinstance(x, dict) for x in items):
        problems.append(f"{key} = {value!r}: expected {'[[' + key + ']] tables' if many else 'a [' + key + '] table'}")
        return []
    return [dict(x) for x in items]


def apply_dataset_toml(r: ImportResult, dataset: dict[str, Any]) -> None:
    """sd-scripts dataset TOML: [general], [[datasets]] and their [[datasets.subsets]].

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
    if len(datasets) > 1:
        r.notes.append(f"the dataset TOML has {len(datasets)} datasets; only the first was imported")
    settings = {**(general[0] if general else {}), **first}
    for key, value in settings.items():
        if key == "resolution":
            _resolution(r, f"dataset.{key}", value)
        elif key == "batch_size":
            r.put(f"dataset.{key}", "train.train_batch_size", value)
        elif key == "class_tokens":
            r.skip(f"dataset.{key}", value, CLASS_TOKENS)
        elif (section := section_of(key)) is not None:
            r.put(f"dataset.{key}", f"{section}.{key}", value)
        else:
            r.skip(f"dataset.{key}", value, "not supported by lorakit's data settings yet")
    train = [s for s in subsets if not s.get("is_reg")]
    reg = [s for s in subsets if s.get("is_reg")]
    for kind, group, target in (("train", train, "data.train_data_dir"), ("reg", reg, "data.reg_data_dir")):
        for i, subset in enumerate(group):
            _subset(r, f"dataset.subsets[{kind} {i}]", subset, target if i == 0 else None, len(group))


def _subset(r: ImportResult, label: str, subset: dict[str, Any], target: str | None, count: int) -> None:
    """One [[datasets.subsets]] entry: its folder, repeats and class tokens."""
    image_dir = subset.get("image_dir", "")
    if target is None:
        r.skip(f"{label}.image_dir", image_dir, f"lorakit takes one folder; put all {count} under one parent "
               "with N_name sub-folders and point the folder setting at it")
    else:
        r.put(f"{label}.image_dir", target, image_dir)
    for key, value in subset.items():
        if key in ("image_dir", "is_reg"):
            continue
        if key == "num_repeats":
            name = Path(str(image_dir)).name
            if has_field("data.num_repeats") and target == "data.train_data_dir":
                r.put(f"{label}.{key}", "data.num_repeats", value)
            else:
                r.skip(f"{label}.{key}", value, f"lorakit reads repeats from the folder name: name it "
                       f"'{value}_{name}' inside the training folder")
        elif key == "class_tokens":
            r.skip(f"{label}.{key}", value, CLASS_TOKENS)
        elif (section := section_of(key)) == "data" and target:
            r.put(f"{label}.{key}", f"data.{key}", value)
        else:
            r.skip(f"{label}.{key}", value, "per-folder settings are not supported yet")


def import_file(path: Path, dataset_toml: Path | None = None) -> ImportResult:
    """Read a kohya_ss GUI .json or sd-scripts .toml (and optional dataset .toml) into an ImportResult."""
    try:
        if path.suffix.lower() == ".json":
            src, gui = json.loads(path.read_text(encoding="utf-8-sig")), True
        else:
            src, gui = _flatten_tables(tomllib.loads(path.read_text(encoding="utf-8-sig"))), False
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
    return result
