"""Optimizers by sd-scripts' names, built as its `get_optimizer` (library/train_util.py) builds them: the same
classes from the same packages, the same injected arguments. `key=value` extras were checked against the class's
real signature by `config.validate` before anything loads."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch


def parse_args(items: list[str], key: str) -> dict[str, Any]:
    """`key=value` strings as keyword arguments; a malformed item is a ConfigError naming `key`."""
    from ..config.optimizer_rules import parse_args_list

    kwargs, problems = parse_args_list(items)
    if problems:
        raise ConfigError([f"{key}: {p}" for p in problems])
    return kwargs


def optimizer_class(name: str) -> type:
    """The optimizer class for a config name (a ConfigError naming the package when it is missing)."""
    from ..config.optimizer_rules import OPTIMIZERS

    spec = OPTIMIZERS[name]
    try:
        return getattr(importlib.import_module(spec.module), spec.cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError([f"train.optimizer_type = '{name}' needs the {spec.package} package ({exc})"],
                          spec.install) from exc


def optimizer_kwargs(name: str, args: list[str]) -> dict[str, Any]:
    """The keyword arguments the optimizer is built with: lorakit's defaults, the user's, then fixed ones."""
    from ..config.optimizer_rules import OPTIMIZERS

    spec = OPTIMIZERS[name]
    return {**spec.defaults, **parse_args(args, "train.optimizer_args"), **spec.fixed}


def adafactor_relative(name: str, args: list[str]) -> bool:
    """Adafactor with relative_step=True: it finds its own step size (lorakit's default is False)."""
    return name == "Adafactor" and bool(optimizer_kwargs(name, args)["relative_step"])


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, args: list[str]) -> torch.optim.Optimizer:
    """An optimizer over parameter groups. AdamW is fused on CUDA (one kernel per step instead of per tensor).

    Adafactor with relative_step=True gets lr=None and groups without their rates, as in sd-scripts: it computes
    its step size from the step count, and transformers refuses a manual lr with it.
    """
    cls = optimizer_class(name)
    kwargs = optimizer_kwargs(name, args)
    if adafactor_relative(name, args):
        return cls([{k: v for k, v in g.items() if k != "lr"} for g in groups], lr=None, **kwargs)
    if name == "AdamW" and "fused" not in kwargs:
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        kwargs["fused"] = True if on_cuda else None
        kwargs["foreach"] = None if on_cuda else True
    return cls(groups, lr=lr, **kwargs)
