"""Semantic checks the schema cannot express: argument lists against real signatures, cross-field rules, paths.

`check(config)` returns (errors, warnings). Errors stop a run; warnings are shown by `config validate`, `plan`
and at the start of a run. Decision: a text-encoder learning rate with a frozen text encoder is a *warning*, not
an error, because a TOML layer cannot unset a key: a preset that sets `text_encoder_lr` must stay usable with
`--set network.train_text_encoder=false`. The warning names both keys, so the value is never silently ignored.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .schema import LorakitConfig

@dataclass(frozen=True)
class OptimizerSpec:
    """Where an optimizer of sd-scripts' name lives and what lorakit passes it besides the user's arguments."""

    module: str
    cls: str
    package: str  # the pip package
    defaults: dict[str, Any] = field(default_factory=dict)  # used unless optimizer_args sets them
    fixed: dict[str, Any] = field(default_factory=dict)  # always passed; optimizer_args may not set them

    @property
    def install(self) -> str:
        return f"pip install '{BNB_REQUIREMENT}'" if self.package == "bitsandbytes" else f"pip install {self.package}"


BNB_REQUIREMENT = "bitsandbytes>=0.50.2"  # the first release lorakit saw run its 8-bit optimizers on the CPU too
_BNB, _DADAPT = "bitsandbytes.optim", "dadaptation"
_NESTEROV = {"defaults": {"momentum": 0.9}, "fixed": {"nesterov": True}}  # sd-scripts: SGD(nesterov=True), momentum 0.9
# sd-scripts' get_optimizer (library/train_util.py): the same classes from the same packages (docs/decisions.md)
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "AdamW": OptimizerSpec("torch.optim", "AdamW", "torch"),
    "AdamW8bit": OptimizerSpec(_BNB, "AdamW8bit", "bitsandbytes"),
    "PagedAdamW8bit": OptimizerSpec(_BNB, "PagedAdamW8bit", "bitsandbytes"),
    "Lion": OptimizerSpec("lion_pytorch", "Lion", "lion-pytorch"),
    "Lion8bit": OptimizerSpec(_BNB, "Lion8bit", "bitsandbytes"),
    "PagedLion8bit": OptimizerSpec(_BNB, "PagedLion8bit", "bitsandbytes"),
    "SGDNesterov": OptimizerSpec("torch.optim", "SGD", "torch", **_NESTEROV),
    "SGDNesterov8bit": OptimizerSpec(_BNB, "SGD8bit", "bitsandbytes", **_NESTEROV),
    "Prodigy": OptimizerSpec("prodigyopt", "Prodigy", "prodigyopt"),
    "DAdaptation": OptimizerSpec("dadaptation.experimental", "DAdaptAdamPreprint", "dadaptation"),
    "DAdaptAdam": OptimizerSpec(_DADAPT, "DAdaptAdam", "dadaptation"),
    "DAdaptAdaGrad": OptimizerSpec(_DADAPT, "DAdaptAdaGrad", "dadaptation"),
    "DAdaptLion": OptimizerSpec(_DADAPT, "DAdaptLion", "dadaptation"),
    "DAdaptSGD": OptimizerSpec(_DADAPT, "DAdaptSGD", "dadaptation"),
    # lorakit's defaults (a fixed learning rate); sd-scripts' and transformers' are relative_step and
    # scale_parameter True: the importer writes them when a kohya config leaves them out
    "Adafactor": OptimizerSpec("transformers.optimization", "Adafactor", "transformers",
                               {"relative_step": False, "scale_parameter": False, "warmup_init": False}),
}
EIGHT_BIT_FALLBACK = {"AdamW8bit": "AdamW", "PagedAdamW8bit": "AdamW", "Lion8bit": "Lion", "PagedLion8bit": "Lion",
                      "SGDNesterov8bit": "SGDNesterov"}
# They find the step size themselves; learning_rate multiplies it (sd-scripts warns below 0.1, recommends 1.0).
ADAPTIVE = ("Prodigy", "DAdaptation", "DAdaptAdam", "DAdaptAdaGrad", "DAdaptLion", "DAdaptSGD")
# Their step() raises when parameter groups have different non-zero rates (all but DAdaptAdaGrad).
ONE_RATE = ("Prodigy", "DAdaptation", "DAdaptAdam", "DAdaptLion", "DAdaptSGD")
# Arguments lorakit fills in itself, with the setting to use instead.
RESERVED_OPTIMIZER = {"params": "the LoRA parameters", "lr": "train.learning_rate"}
RESERVED_SCHEDULER = {
    "optimizer": "the optimizer",
    "num_warmup_steps": "train.lr_warmup_steps or train.lr_warmup_ratio",
    "num_training_steps": "train.max_train_steps or train.max_train_epochs",
    "last_epoch": "resuming",
}
# built-in model → family; a torch-free module, so validation does not import torch
from ..families.names import BUILTIN_MODELS as BUILTIN_FAMILIES  # noqa: E402


@dataclass
class Finding:
    """One problem: the dotted key it is about and what to do."""

    key: str
    message: str
    error: bool = True


def parse_args_list(items: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`["weight_decay=0.01", "betas=(0.9,0.99)"]` → ({"weight_decay": 0.01, ...}, problems).

    Values are Python literals (as kohya reads them); a value that is not one stays a string.
    """
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            problems.append(f"{item!r} is not key=value (e.g. 'weight_decay=0.01')")
            continue
        raw = raw.strip()
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            if any(c in raw for c in "()[]{},'\""):  # meant as a literal (a tuple, a list, a quoted string)
                why = exc.msg if isinstance(exc, SyntaxError) and exc.msg else "not a Python literal"
                problems.append(f"{item!r}: the value is not a valid Python literal ({why}); "
                                f"write it as e.g. 'betas=(0.9,0.99)'")
            else:  # a bare word such as mode=fast is a string, as kohya reads it
                out[key] = raw
    return out, problems


@functools.lru_cache(maxsize=None)
def optimizer_parameters(name: str) -> dict[str, Any] | None:
    """Keyword parameters (name → default) of an optimizer's constructor; None when it cannot be imported."""
    if name not in OPTIMIZERS:
        return None
    spec = OPTIMIZERS[name]
    try:
        cls = getattr(importlib.import_module(spec.module), spec.cls)
    except (ImportError, AttributeError):
        return None
    return {p.name: p.default for p in inspect.signature(cls).parameters.values()}


@functools.lru_cache(maxsize=None)
def scheduler_parameters(name: str) -> dict[str, Any] | None:
    """Keyword parameters of diffusers' schedule function for `name`; None when it cannot be imported."""
    try:
        from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

        fn = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    except (ImportError, KeyError, ValueError):
        return None
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


@functools.lru_cache(maxsize=None)
def scheduler_class(name: str) -> tuple[type | None, str]:
    """(class, "") for `train.lr_scheduler_type` as sd-scripts resolves it (a bare name is a class of
    torch.optim.lr_scheduler, a dotted one module.Class), or (None, what is wrong)."""
    import difflib

    import torch.optim.lr_scheduler as torch_schedulers

    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else torch_schedulers
    except ImportError as exc:
        return None, f"'{name}': cannot import {module_name} ({exc}); name a torch.optim.lr_scheduler class " \
                     "('CosineAnnealingLR') or module.Class of an installed package"
    cls = getattr(module, attr, None)
    if cls is None:
        known = [k for k, v in vars(torch_schedulers).items()
                 if isinstance(v, type) and issubclass(v, torch_schedulers.LRScheduler) and not k.startswith("_")]
        close = difflib.get_close_matches(attr, known, 3) if not module_name else []
        return None, f"'{name}': {module.__name__} has no class '{attr}'" + (
            f" (did you mean {', '.join(close)}?)" if close else "")
    if not (isinstance(cls, type) and issubclass(cls, torch_schedulers.LRScheduler)):
        return None, f"'{name}' is not a learning-rate scheduler (a torch.optim.lr_scheduler.LRScheduler subclass)"
    if "metrics" in inspect.signature(cls.step).parameters:
        return None, f"'{name}' needs a metric at every step; lorakit steps the schedule without one"
    return cls, ""


def _check_args(key: str, items: list[str], params: dict[str, Any] | None, owner: str, reserved: dict) -> list:
    """Findings for one key=value list against the parameters of `owner`."""
    values, problems = parse_args_list(items)
    found = [Finding(key, p) for p in problems]
    if params is None:
        return found + ([Finding(key, f"cannot check arguments: {owner} is not installed", False)] if values else [])
    for name, value in values.items():
        if name in reserved:
            found.append(Finding(key, f"'{name}' is set by lorakit from {reserved[name]}; remove it here"))
        elif name not in params:
            valid = sorted(k for k in params if k not in reserved and not k.startswith("_"))
            found.append(Finding(key, f"{owner} has no parameter '{name}' (it accepts: {', '.join(valid)})"))
        else:
            default = params[name]
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            if numeric and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                found.append(Finding(key, f"'{name}={value!r}' should be a number like {default!r}"))
            elif isinstance(default, bool) and not isinstance(value, bool):
                found.append(Finding(key, f"'{name}={value!r}' should be True or False"))
    return found


def check_arguments(cfg: LorakitConfig) -> list[Finding]:
    """optimizer_args and lr_scheduler_args against the chosen optimizer's and scheduler's real parameters."""
    t = cfg.train
    found = []
    if t.optimizer_args:
        spec = OPTIMIZERS[t.optimizer_type]
        fixed = {k: f"optimizer_type '{t.optimizer_type}' (always {k}={v!r}, as sd-scripts)"
                 for k, v in spec.fixed.items()}
        found += _check_args("train.optimizer_args", t.optimizer_args, optimizer_parameters(t.optimizer_type),
                             t.optimizer_type, {**RESERVED_OPTIMIZER, **fixed})
    key = "train.lr_scheduler_args"
    if t.lr_scheduler_type:
        cls, problem = scheduler_class(t.lr_scheduler_type)
        if cls is None:
            return found + [Finding("train.lr_scheduler_type", problem)]
        signature = inspect.signature(cls).parameters.values()
        params = {p.name: p.default for p in signature if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        reserved = {"optimizer": "the optimizer", "last_epoch": "resuming"}
        found += _check_args(key, t.lr_scheduler_args, params, cls.__name__, reserved)
        given, _ = parse_args_list(t.lr_scheduler_args)
        missing = [n for n, d in params.items()
                   if d is inspect.Parameter.empty and n not in reserved and n not in given]
        if missing:
            found.append(Finding(key, f"{cls.__name__} needs {', '.join(missing)}: add e.g. '{missing[0]}=…' here "
                                      "(sd-scripts passes only lr_scheduler_args to a lr_scheduler_type class)"))
    elif t.lr_scheduler == "adafactor":
        if t.lr_scheduler_args:
            found.append(Finding(key, "the 'adafactor' schedule takes no arguments; remove them"))
    elif t.lr_scheduler_args:
        reserved = dict(RESERVED_SCHEDULER)
        if t.lr_scheduler == "cosine_with_restarts":
            reserved["num_cycles"] = "train.lr_scheduler_num_cycles"
        if t.lr_scheduler == "polynomial":
            reserved["power"] = "train.lr_scheduler_power"
        owner = f"scheduler '{t.lr_scheduler}'"
        found += _check_args(key, t.lr_scheduler_args, scheduler_parameters(t.lr_scheduler), owner, reserved)
    return found


def check_optimizer(cfg: LorakitConfig) -> list[Finding]:
    """The optimizer's rules beyond its signature (sd-scripts' get_optimizer and get_scheduler_fix): learning-rate
    free optimizers at lr ~1, one rate for all groups, Adafactor's relative step with its schedule, no warm-up
    where sd-scripts refuses one."""
    t, name = cfg.train, cfg.train.optimizer_type
    values, _ = parse_args_list(t.optimizer_args)
    found = []
    te_lr = t.text_encoder_lr if t.text_encoder_lr is not None else t.learning_rate
    if name in ADAPTIVE and 0 < t.learning_rate <= 0.1:
        found.append(Finding("train.learning_rate", f"{t.learning_rate} is low for {name}, which finds the step "
                             "size itself and multiplies it by learning_rate; sd-scripts and the optimizer's authors "
                             "recommend about 1.0", False))
    if name in ONE_RATE and cfg.network.train_text_encoder and te_lr not in (0, t.learning_rate) \
            and t.learning_rate > 0:
        found.append(Finding("train.text_encoder_lr", f"{te_lr} differs from learning_rate ({t.learning_rate}), "
                             f"and {name} refuses different rates per parameter group: set it equal to "
                             "learning_rate, or 0 to keep the text encoder frozen"))
    relative = name == "Adafactor" and bool(values.get("relative_step", False))
    if name == "Adafactor" and values.get("warmup_init") is True and not relative:
        found.append(Finding("train.optimizer_args", "'warmup_init=True' needs 'relative_step=True' (sd-scripts turns "
                                                     "it on for warmup_init); add it, or remove warmup_init"))
    if relative:
        if t.lr_scheduler_type or t.lr_scheduler != "adafactor":
            found.append(Finding("train.lr_scheduler", "Adafactor with relative_step=True sets its own step size: "
                                 "set train.lr_scheduler = 'adafactor' (what sd-scripts switches to)"
                                 + (" and remove train.lr_scheduler_type" if t.lr_scheduler_type else "")))
        if t.text_encoder_lr is not None and cfg.network.train_text_encoder and t.text_encoder_lr > 0:
            found.append(Finding("train.text_encoder_lr", "is not used: Adafactor with relative_step=True finds its "
                                                          "own step size for every group", False))
    elif t.lr_scheduler == "adafactor" and not t.lr_scheduler_type:
        found.append(Finding("train.lr_scheduler", "'adafactor' is the schedule of Adafactor's relative step: set "
                             "optimizer_type = 'Adafactor' with 'relative_step=True' in optimizer_args, or choose "
                             "another schedule"))
    if t.lr_scheduler_type or t.lr_scheduler == "adafactor":
        what = "lr_scheduler_type" if t.lr_scheduler_type else "lr_scheduler = 'adafactor'"
        for key, value in (("lr_warmup_steps", t.lr_warmup_steps), ("lr_warmup_ratio", t.lr_warmup_ratio)):
            if value:
                found.append(Finding(f"train.{key}", f"train.{what} has no warm-up (sd-scripts refuses one with "
                                                     "it); remove this setting"))
    return found


def _dry_run(cfg: LorakitConfig) -> list[Finding]:
    """Build the optimizer and the schedule on a one-element parameter, so that a value the signature accepts
    but the constructor refuses (betas out of range, a negative eps, ...) is an error now, not mid-run.
    Only with user arguments or a scheduler class: the defaults always build, and torch and diffusers take
    seconds to import."""
    t = cfg.train
    if not (t.optimizer_args or t.lr_scheduler_args or t.lr_scheduler_type):
        return []
    import torch

    from ..engine.optim import build_optimizer
    from ..errors import ConfigError

    try:
        optimizer = build_optimizer(t.optimizer_type, [{"params": [torch.nn.Parameter(torch.zeros(1))]}],
                                    t.learning_rate or 1e-4, t.optimizer_args)
    except ConfigError:
        return []  # the package is missing: check_environment says so
    except Exception as exc:  # noqa: BLE001 - any constructor error is the user's value
        return [Finding("train.optimizer_args", f"{t.optimizer_type} refuses these arguments: {exc}")]
    if t.lr_scheduler_args or t.lr_scheduler_type:
        from ..engine.schedule import build_scheduler  # diffusers: seconds to import, only when needed

        own = t.lr_scheduler_type or t.lr_scheduler == "adafactor"  # no warm-up there
        try:
            build_scheduler(t.lr_scheduler, optimizer, 0 if own else 1, 10, t.lr_scheduler_num_cycles,
                            t.lr_scheduler_args, power=t.lr_scheduler_power, scheduler_type=t.lr_scheduler_type,
                            initial_lr=t.learning_rate)
        except Exception as exc:  # noqa: BLE001
            owner = t.lr_scheduler_type or f"scheduler '{t.lr_scheduler}'"
            return [Finding("train.lr_scheduler_args", f"{owner} refuses these arguments: {exc}")]
    return []


def _gpu_driver_present() -> bool:
    """False when no CUDA (or ROCm) driver is installed, found without importing torch; True when unsure."""
    if not sys.platform.startswith("linux"):
        return sys.platform != "darwin"  # macOS has no CUDA; Windows: ask torch
    return any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))


def _cuda() -> bool:
    """Whether torch sees a CUDA device (torch is imported only when a driver could be there)."""
    if not _gpu_driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def check_optimizer_package(cfg: LorakitConfig) -> list[Finding]:
    """The optimizer's package is installed; an 8-bit one without CUDA needs a bitsandbytes that runs on the CPU."""
    name = cfg.train.optimizer_type
    spec = OPTIMIZERS[name]
    instead = f", or use '{EIGHT_BIT_FALLBACK[name]}'" if name in EIGHT_BIT_FALLBACK else ""
    module = spec.module.split(".")[0]
    if not package_installed(module):
        return [Finding("train.optimizer_type", f"'{name}' needs the {spec.package} package, which is not installed: "
                                                f"{spec.install}{instead}")]
    if spec.package == "bitsandbytes" and not _cuda():
        from importlib.metadata import version

        from packaging.requirements import Requirement

        have = version("bitsandbytes")
        if not Requirement(BNB_REQUIREMENT).specifier.contains(have, prereleases=True):
            return [Finding("train.optimizer_type", f"'{name}' on a machine without CUDA needs {BNB_REQUIREMENT} "
                                                    f"(installed: {have}, which runs it on CUDA GPUs only): "
                                                    f"{spec.install}{instead}")]
    return []


def check_environment(cfg: LorakitConfig) -> list[Finding]:
    """What this machine must have for the run: CUDA for fp16, bf16 support, the optimizer's package."""
    found, cuda = [], False
    mp = cfg.train.mixed_precision
    if mp != "no":  # torch takes seconds to import: only when CUDA could be there
        cuda = _cuda()
    if mp == "fp16" and not cuda:
        found.append(Finding("train.mixed_precision", "'fp16' needs a CUDA GPU and this machine has none; "
                             "use 'bf16' (works on CPU) or 'no'"))
    if mp == "bf16" and cuda:
        import torch

        if not torch.cuda.is_bf16_supported():
            found.append(Finding("train.mixed_precision", f"'bf16' is not supported by "
                                                          f"{torch.cuda.get_device_name()}; use 'fp16' or 'no'"))
    return found + check_optimizer_package(cfg) + check_log_with(cfg)


def package_installed(name: str) -> bool:
    """Whether a package can be imported, found without importing it."""
    return importlib.util.find_spec(name) is not None


def check_log_with(cfg: LorakitConfig) -> list[Finding]:
    """`train.log_with` names a logger whose package is installed."""
    if cfg.train.log_with == "tensorboard" and not package_installed("tensorboard"):
        return [Finding("train.log_with", "'tensorboard' needs the tensorboard package, which is not installed: "
                        "run `pip install tensorboard` (or `pip install lorakit[tensorboard]`), or set "
                        "train.log_with = 'none'")]
    return []


def check_output_names(cfg: LorakitConfig) -> list[Finding]:
    """The longest file name a run writes (a step checkpoint) fits the output file system. (Temporary names keep
    at most 100 bytes of the target's name, so they always fit.)"""
    out = cfg.output
    probe = Path(out.output_dir)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    copy = "_copy" if cfg.mode.type == "difference" else ""  # Difference's copy machine: <name>_copy-step…
    names = {"output.output_name": (out.output_name, f"{out.output_name}{copy}-step00000000.safetensors")}
    if out.run_id:
        names["output.run_id"] = (out.run_id, out.run_id)
    found = []
    for key, (value, name) in names.items():
        length = len(name.encode("utf-8"))
        if length > limit:
            shown = value if len(value) <= 40 else value[:40] + "…"
            found.append(Finding(key, f"{shown!r} makes file names of {length} bytes, longer than the {limit} "
                                      f"this file system allows in {probe}; shorten it by {length - limit} bytes"))
    return found


# Settings whose feature has not landed yet: a value other than the default is refused, never silently ignored.
NOT_YET = "is not implemented yet"
UNIMPLEMENTED_SECTIONS = {
    "bench": "the benchmark (`lorakit bench`)",
    "storage": "remote storage (`lorakit batch`)",
}
UNIMPLEMENTED_FIELDS = {  # section → {field: feature}; the section's other fields work
    "batch": {f: "unattended batches (`lorakit batch`)" for f in
              ("working_dir", "stage_dir", "add", "oom_retries", "cleanup_on_success")},
}


def check_unimplemented(cfg: LorakitConfig) -> list[Finding]:
    """A setting of a feature that has not landed yet, changed from its default, is an error that says so."""
    found = []
    fields = {**{s: {f: feature for f in type(getattr(cfg, s)).model_fields}
                 for s, feature in UNIMPLEMENTED_SECTIONS.items()}, **UNIMPLEMENTED_FIELDS}
    for section, names in fields.items():
        current, default = getattr(cfg, section), type(getattr(cfg, section))()
        for name, feature in names.items():
            if getattr(current, name) != getattr(default, name):
                found.append(Finding(f"{section}.{name}", f"{feature} {NOT_YET}; remove this setting "
                                     f"(default: {getattr(default, name)!r})"))
    return found


def check_training(cfg: LorakitConfig) -> list[Finding]:
    """Cross-field rules of the training settings."""
    t, n = cfg.train, cfg.network
    found = []
    if t.lr_warmup_ratio is not None and t.lr_warmup_steps > 0:
        found.append(Finding("train.lr_warmup_ratio", "set either lr_warmup_steps or lr_warmup_ratio, not both"))
    for key, precision in (("full_fp16", "fp16"), ("full_bf16", "bf16")):
        if getattr(t, key) and t.mixed_precision != precision:
            found.append(Finding(f"train.{key}", f"needs train.mixed_precision = '{precision}' (the network is kept "
                                 f"in {precision}; now '{t.mixed_precision}')"))
    if t.full_fp16 and t.full_bf16:
        found.append(Finding("train.full_bf16", "set full_fp16 or full_bf16, not both"))
    if not n.train_text_encoder:
        if t.text_encoder_lr is not None:
            found.append(Finding("train.text_encoder_lr", "is set but network.train_text_encoder is false: "
                                 "the text encoder stays frozen and this value is not used", False))
        if t.stop_text_encoder_training is not None:
            found.append(Finding("train.stop_text_encoder_training", "is set but network.train_text_encoder is "
                                 "false: the text encoder is frozen from the start", False))
    every = cfg.output.save_every_n_steps
    if t.max_train_steps is not None and every and every > t.max_train_steps:
        found.append(Finding("output.save_every_n_steps", f"{every} is more than max_train_steps "
                             f"({t.max_train_steps}): no intermediate checkpoint", False))
    bucket_step = getattr(cfg.data, "bucket_reso_steps", getattr(cfg.data, "bucket_step", 1))
    if bucket_step is not None and bucket_step < 1:
        found.append(Finding("data.bucket_reso_steps", f"{bucket_step}: the bucket step must be ≥ 1"))
    if not 0 <= t.noise_offset <= 1:
        found.append(Finding("train.noise_offset", f"{t.noise_offset}: must be in [0, 1]"))
    has_reg = bool(cfg.data.reg_data_dir) or any(s.is_reg for s in cfg.data.subsets)
    if cfg.mode.type in ("lora", "dreambooth") and cfg.mode.prior_loss_weight != 1 and not has_reg:
        found.append(Finding("mode.prior_loss_weight", "weights regularisation images, but data.reg_data_dir is "
                                                       "not set: set it, or remove prior_loss_weight"))
    return found


def check_family(cfg: LorakitConfig) -> list[Finding]:
    """Model family against the chosen model, the network and the resolution."""
    m = cfg.model
    found = []
    known = BUILTIN_FAMILIES.get(m.pretrained_model_name_or_path)
    family = m.family if m.family != "auto" else known
    if known and m.family not in ("auto", known):
        found.append(Finding("model.family", f"'{m.family}' but {m.pretrained_model_name_or_path} is {known}"))
    if family == "sd1" and m.v_parameterization:
        found.append(Finding("model.v_parameterization", "SD 1.x models predict noise, not v", False))
    res = cfg.data.resolution
    if family == "sdxl" and res < 768 and not known:
        found.append(Finding("data.resolution", f"{res} is low for SDXL (trained at 1024)", False))
    if family == "sd1" and res > 768 and not known:
        found.append(Finding("data.resolution", f"{res} is high for SD 1.x (trained at 512)", False))
    if family == "sdxl" and cfg.train.clip_skip not in (None, 1):  # as sdxl_train_util.verify_sdxl_training_args
        found.append(Finding("train.clip_skip", "SDXL always uses the penultimate layer of both text encoders: "
                             "clip_skip changes nothing (remove it)", False))
    return found


MAX_HEADER_BYTES = 100 * 1024 * 1024  # as safetensors itself allows


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a .safetensors header (reads only the header); ValueError if it is not one."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"header length {size} is larger than {MAX_HEADER_BYTES} bytes")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    shapes = {k: v.get("shape") if isinstance(v, dict) else None for k, v in header.items() if k != "__metadata__"}
    for name, shape in shapes.items():
        if not (isinstance(shape, list) and all(isinstance(n, int) for n in shape)):
            raise ValueError(f"tensor {name!r} has no list of sizes as its shape")
    return shapes  # type: ignore[return-value]


def weights_file(path: Path) -> Path | None:
    """A kohya LoRA file: the path itself, or the one a folder (a run, its train/, a checkpoint folder) holds.

    In a folder: the final `<name>.safetensors` (newest if several), else the checkpoint with the highest step
    (`<name>-step00000100.safetensors`). `train/` is searched before the folder itself; PEFT folders (`*_peft/`,
    `adapter_model.safetensors`) are never chosen: they are not kohya files.
    """
    import re

    if path.is_file():
        return path
    if not path.is_dir():
        return None

    def kohya(files: list[Path], base: Path) -> list[Path]:
        return [f for f in files if f.is_file() and f.name != "adapter_model.safetensors"
                and not any(part.endswith("_peft") for part in f.relative_to(base).parts[:-1])]

    step = re.compile(r"-step(\d+)$")
    for files in (kohya(sorted((path / "train").glob("*.safetensors")), path),
                  kohya(sorted(path.glob("*.safetensors")), path),
                  kohya(sorted(path.rglob("*.safetensors")), path)):
        finals = [f for f in files if not step.search(f.stem)]
        if finals:
            return max(finals, key=lambda f: f.stat().st_mtime)
        if files:
            return max(files, key=lambda f: (int(step.search(f.stem).group(1)), f.stat().st_mtime))
    return None


def network_type_of(names: list[str]) -> str | None:
    """The adapter type a file's tensor names show: loha (hada_*), lokr (lokr_*), dora (dora_scale), lora."""
    for marker, kind in (("hada_w1", "loha"), ("lokr_w1", "lokr"), ("dora_scale", "dora"),
                         ("lora_down", "lora"), ("lora_A", "lora")):
        if any(marker in n for n in names):
            return kind
    return None


def check_model(cfg: LorakitConfig) -> list[Finding]:
    """A local model's real family (read from its folder or file header) against model.family."""
    m = cfg.model
    if m.family == "auto" or not Path(m.pretrained_model_name_or_path).exists():
        return []
    from ..errors import LorakitError
    from ..families import detect_family

    try:
        detected = detect_family(m.model_copy(update={"family": "auto"}))
    except LorakitError as exc:
        return [Finding("model.pretrained_model_name_or_path", exc.message)]
    if detected != m.family:
        return [Finding("model.family", f"'{m.family}' but {m.pretrained_model_name_or_path} is an {detected} "
                                        "model; set model.family = 'auto' or the right family")]
    return []


def check_resume(cfg: LorakitConfig, key: str, value: str, rank: bool = True) -> list[Finding]:
    """A LoRA to start from must be of the configured network type, fit the model family and (`rank`) have the
    configured rank."""
    file = weights_file(Path(value))
    if file is None:
        return [Finding(key, f"{value}: no .safetensors LoRA file found there")]
    try:
        shapes = _safetensors_shapes(file)
    except (OSError, ValueError, struct.error) as exc:
        return [Finding(key, f"{file}: not a readable .safetensors file ({exc})")]
    found = []
    kind = network_type_of(list(shapes))
    if kind and kind != cfg.network.network_module:
        found.append(Finding(key, f"{file} is a {kind} network but network.network_module is "
                                  f"'{cfg.network.network_module}'"))
    ranks = {s[0] for k, s in shapes.items() if k.endswith((".lora_down.weight", ".lora_A.weight")) and s}
    if rank and ranks and ranks != {cfg.network.network_dim}:
        found.append(Finding(key, f"{file} has rank {sorted(ranks)} but network.network_dim is "
                                  f"{cfg.network.network_dim}; set network.network_dim to match"))
    sdxl = any(k.startswith(("lora_te1_", "lora_te2_")) or "input_blocks" in k for k in shapes)
    family = cfg.model.family if cfg.model.family != "auto" else BUILTIN_FAMILIES.get(
        cfg.model.pretrained_model_name_or_path)
    if family and sdxl != (family == "sdxl"):
        found.append(Finding(key, f"{file} is an {'SDXL' if sdxl else 'SD 1/2'} LoRA but model.family is {family}"))
    return found


def _writable(path: Path) -> bool:
    """True if `path` exists as a writable folder or could be created (checked without creating anything)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def looks_like_hub_id(value: str) -> bool:
    """'org/name' with no file extension: a Hugging Face model id rather than a local path."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and "\\" not in value and not Path(value).suffix


def check_paths(cfg: LorakitConfig) -> list[Finding]:
    """Every input path exists and is readable; every output folder exists writable or is creatable."""
    from .mode_rules import check_mode_inputs  # imports Finding from here

    found = []

    def need(key: str, value: str | None, folder: bool | None) -> None:
        if not value:
            return
        p = Path(value)
        if not p.exists():
            found.append(Finding(key, f"{value}: not found"))
        elif folder is True and not p.is_dir():
            found.append(Finding(key, f"{value}: is a file, expected a folder"))
        elif folder is False and not p.is_file():
            found.append(Finding(key, f"{value}: is a folder, expected a file"))
        elif not os.access(p, os.R_OK):
            found.append(Finding(key, f"{value}: not readable"))

    model = cfg.model.pretrained_model_name_or_path
    if model not in BUILTIN_FAMILIES and not (looks_like_hub_id(model) and not Path(model).exists()):
        need("model.pretrained_model_name_or_path", model, None)
    if cfg.model.vae and not looks_like_hub_id(cfg.model.vae):
        need("model.vae", cfg.model.vae, None)
    found += check_mode_inputs(cfg)
    for name in type(cfg.data).model_fields:
        value = getattr(cfg.data, name)
        if name.endswith("_dir") and isinstance(value, str):
            need(f"data.{name}", value, True)
    for i, subset in enumerate(getattr(cfg.data, "subsets", [])):  # sd-scripts' dataset subsets, one folder each
        need(f"data.subsets[{i}].image_dir", subset.image_dir, True)
    metadata = getattr(cfg.data, "caption_metadata", "")
    if metadata and not (Path(cfg.data.train_data_dir) / metadata).is_file():  # relative to the images is fine
        need("data.caption_metadata", metadata, False)
    need("network.network_weights", cfg.network.network_weights, None)
    for key in ("original_image", "target_image", "first_pass_file"):  # Difference's inputs
        need(f"mode.{key}", getattr(cfg.mode, key, None), False)
    need("batch.oom_file", cfg.batch.oom_file, False)
    need("sample.prompts_file", cfg.sample.prompts_file, False)
    outputs = [("output.output_dir", cfg.output.output_dir), ("batch.stage_dir", cfg.batch.stage_dir),
               ("data.cache_folder", getattr(cfg.data, "cache_folder", ""))]
    for key, value in outputs:
        if value and not _writable(Path(value)):
            found.append(Finding(key, f"{value}: cannot be created or written (check the folder's permissions)"))
    return found


def check_samples(cfg: LorakitConfig, paths: bool = False) -> list[Finding]:
    """Sample prompts that cannot be rendered as written (each line named), and sample settings without prompts.
    The prompts file's lines are read only with `paths` (and when the file is there)."""
    from ..engine.sample_prompts import file_problem, line_problems, prompt_lines  # torch-free

    s = cfg.sample
    if not (s.prompts or s.prompts_file):
        default = type(s)()
        return [Finding(f"sample.{name}", "is set but there are no sample prompts: add sample.prompts or "
                                          "sample.prompts_file, or remove it")
                for name in type(s).model_fields if getattr(s, name) != getattr(default, name)]
    found = [Finding("sample.prompts", p) for p in line_problems(prompt_lines(s.prompts, None))]
    problem = file_problem(s.prompts_file) if s.prompts_file else None
    if problem:
        return found + [Finding("sample.prompts_file", problem)]
    if paths and s.prompts_file and Path(s.prompts_file).is_file() and os.access(s.prompts_file, os.R_OK):
        try:
            lines = prompt_lines([], s.prompts_file)
        except UnicodeDecodeError as exc:
            return found + [Finding("sample.prompts_file", f"{s.prompts_file}: not UTF-8 text ({exc.reason})")]
        found += [Finding("sample.prompts_file", p) for p in line_problems(lines)]
        if not lines and not s.prompts:
            found.append(Finding("sample.prompts_file", f"{s.prompts_file}: holds no prompt (only empty or '#' "
                                                        "lines)"))
    return found


def check(cfg: LorakitConfig, paths: bool = False, machine: str = "error") -> tuple[list[Finding], list[Finding]]:
    """All semantic checks; returns (errors, warnings).

    `paths` adds the checks of this machine: files and folders, and what the run needs here (CUDA for fp16,
    packages, file-name limits, the optimizer built once). `machine = "warn"` reports the latter as warnings
    (`lorakit plan` of a config meant for another machine)."""
    from ..networks.findings import network_findings  # torch-free: network type combinations
    from ..networks.targets import selection_findings  # torch-free: blocks, element, per-block dims
    from .data_rules import check_data_options  # imports Finding from here
    from .loss_rules import check_loss_options  # imports Finding from here
    from .mode_rules import check_mode  # imports Finding from here

    found = check_unimplemented(cfg) + check_mode(cfg) + check_training(cfg) + check_family(cfg) + check_arguments(cfg)
    found += check_data_options(cfg) + check_loss_options(cfg)
    found += check_optimizer(cfg)
    found += selection_findings(cfg) + network_findings(cfg)
    found += check_samples(cfg, paths)
    if paths:
        found += check_paths(cfg) + check_model(cfg)
        resume_keys = [("network.network_weights", cfg.network.network_weights),
                       ("train.resume", getattr(cfg.train, "resume", None)),
                       ("mode.first_pass_file", getattr(cfg.mode, "first_pass_file", None))]
        for key, value in resume_keys:
            if value and Path(value).exists():  # a copy machine keeps its own rank: only type and family
                found += check_resume(cfg, key, value, rank=key != "mode.first_pass_file")
        here = check_environment(cfg) + check_output_names(cfg)
        if not any(f.error for f in found if f.key.startswith("train.")):
            here += _dry_run(cfg)
        if machine == "warn":
            here = [Finding(f.key, f"{f.message} (on this machine)", False) for f in here]
        found += here
    return [f for f in found if f.error], [f for f in found if not f.error]
