"""The optimizer and scheduler arguments, checked without building anything: sd-scripts' optimizer table (where
each `train.optimizer_type` lives, what lorakit passes it, which find their own step size or need one rate), the
keyword parameters of an optimizer's constructor and of diffusers' or torch's schedules, `optimizer_args` and
`lr_scheduler_args` (key=value lists, parsed as kohya reads them) against those real signatures, and the optimizer's
rules beyond its signature. Torch-free apart from `scheduler_class`; `validate.check` calls `check_arguments` and
`check_optimizer`, and the engine builds its optimizer and schedule from the same table.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from .schema import LorakitConfig
from .validate import Finding

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
