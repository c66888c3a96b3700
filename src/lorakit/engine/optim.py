"""Optimizers by name, with `key=value` extra arguments checked against the optimizer's real signature."""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import torch

from ..errors import ConfigError


def parse_args(items: list[str], key: str) -> dict[str, Any]:
    """`key=value` strings as keyword arguments; a malformed item is a ConfigError naming `key`."""
    from ..config.validate import parse_args_list

    kwargs, problems = parse_args_list(items)
    if problems:
        raise ConfigError([f"{key}: {p}" for p in problems])
    return kwargs


def _adamw8bit() -> Callable[..., torch.optim.Optimizer]:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(["train.optimizer_type = 'AdamW8bit' needs the bitsandbytes package"],
                          "pip install bitsandbytes (CUDA only), or use AdamW")
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit


def _adafactor() -> Callable[..., torch.optim.Optimizer]:
    from transformers.optimization import Adafactor

    def make(params: Any, lr: float, **kw: Any) -> torch.optim.Optimizer:
        kw.setdefault("relative_step", False)
        kw.setdefault("scale_parameter", False)
        kw.setdefault("warmup_init", False)
        return Adafactor(params, lr=lr, **kw)

    return make


OPTIMIZERS: dict[str, Callable[[], Callable[..., torch.optim.Optimizer]]] = {
    "AdamW": lambda: torch.optim.AdamW,
    "AdamW8bit": _adamw8bit,
    "Adafactor": _adafactor,
}


def optimizer_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer constructor for a config name (a clear error when its package is missing)."""
    return OPTIMIZERS[name]()


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float, args: list[str]) -> torch.optim.Optimizer:
    """An optimizer over parameter groups; AdamW is fused on CUDA (one kernel per step instead of per tensor).

    `args` were checked against the optimizer's signature by `config.validate.check_arguments` (the trainer
    calls it before anything loads).
    """
    ctor = optimizer_class(name)
    kwargs = parse_args(args, "train.optimizer_args")
    if name == "AdamW" and "fused" not in kwargs:
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        kwargs["fused"] = True if on_cuda else None
        kwargs["foreach"] = None if on_cuda else True
    return ctor(groups, lr=lr, **kwargs)
