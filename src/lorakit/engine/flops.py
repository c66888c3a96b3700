"""What one training step costs, measured on the meta device (no weights, no real compute): FLOPs and bytes.

FLOPs (`count_training_flops`, `training_flops_per_image`) are the MFU convention's "model FLOPs": the work a
training step has to do, not what an implementation happens to do. For LoRA training on a frozen UNet that is

- the UNet's forward, every matmul and convolution at 2·m·n·k (counted by `torch.utils.flop_counter`, which sees
  `mm`/`addmm`/`bmm`/`convolution`/scaled-dot-product attention; elementwise work, norms and softmax are not FLOPs
  in this convention);
- the backward through the frozen model with input gradients only: the base weights are frozen, so each Linear
  and convolution computes dX (1× its forward) and no dW (the other 1×); attention's two activation × activation
  matmuls need a gradient for both operands (2× their forward), except the cross-attention keys/values of the
  cached (frozen) text, which need none;
- no recompute: gradient checkpointing's second forward and flash attention's backward recompute are time the
  hardware spends, not model FLOPs (`estimate` adds the checkpointing forward to its time model separately).

The LoRA's own work is left out: with rank r on an in → out layer it adds 2·tokens·r·(in + out) to the forward and
twice that to the backward (input and weight gradients), about 2 % of the UNet's work at rank 16 with kohya's
default targets, SD1.5 at 512 px as SDXL at 1024 (`lora_flops_per_image`, which `estimate` adds to the time, not to
MFU's model FLOPs). The backward is measured to the UNet's input latent; with the default (attention-only) targets
autograd stops at the first adapted layer, a couple of percent less.

Bytes (`probe_memory`, below): what a step holds beyond its weights, measured on meta tensors.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

# SD1/SD2/SDXL VAEs downsample by 8 (2 ** (4 levels − 1)); the UNet config does not say it
LATENT_SCALE = 8
# ops whose both operands are activations (attention scores and their weighting); everything else is a weight op
_ATTENTION_OPS = ("bmm", "baddbmm", "scaled_dot_product")


@dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of one training image through the UNet: forward, input-gradient backward, and the forward's share
    in attention's activation × activation matmuls (part of `forward`)."""

    forward: float
    backward: float
    attention: float
    # {module path: rows it processed} for each Linear/Conv2d (tokens × batch, or output pixels × batch): what the
    # LoRA FLOPs and activation estimates scale with
    rows: tuple[tuple[str, int], ...] = ()

    @property
    def total(self) -> float:
        """Forward + backward: the MFU numerator per image."""
        return self.forward + self.backward


def meta_component(folder: Path, attr: str) -> torch.nn.Module:
    """One model of a diffusers-layout folder (`unet`, `vae`, `text_encoder`, …) built from its config.json on the
    meta device: full size, no memory, no weights read."""
    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    library, cls_name = index[attr]
    with torch.device("meta"):
        if library == "diffusers":
            cls = getattr(diffusers, cls_name)
            return cls.from_config(cls.load_config(folder / attr))
        cls = getattr(transformers, cls_name)
        return cls(cls.config_class.from_pretrained(folder / attr))


def meta_unet(arch: str) -> torch.nn.Module:
    """The full-size UNet of a shipped architecture config (`sd15`, `sd21-base`, `sd21-v`, `sdxl-base`) on the meta
    device: what `random-sd15` / `random-sdxl` build with weights (families.random_init), in no time."""
    from ..families.single_file import shipped_config

    return meta_component(shipped_config(arch), "unet")


def training_flops_per_image(unet: torch.nn.Module, height: int, width: int, text_len: int = 77) -> float:
    """Model FLOPs (forward + input-gradient backward, no recompute) of one training image of `height`×`width`
    pixels through `unet` (a diffusers UNet2DConditionModel, real or on the meta device; never run for real)."""
    return count_training_flops(unet, height, width, text_len).total


def count_training_flops(unet: torch.nn.Module, height: int, width: int, text_len: int = 77) -> TrainingFlops:
    """`training_flops_per_image` with its parts (cached per architecture and size)."""
    config = getattr(unet, "config", None)
    if config is None:
        raise TypeError("count_training_flops needs a diffusers UNet (with .config); use measure_flops for others")
    key = json.dumps({k: v for k, v in dict(config).items() if not k.startswith("_")}, sort_keys=True, default=str)
    return _cached_count(type(unet), key, height, width, text_len)


@functools.lru_cache(maxsize=32)
def _cached_count(cls: type, config_json: str, height: int, width: int, text_len: int) -> TrainingFlops:
    with torch.device("meta"):
        unet = cls.from_config(json.loads(config_json))
    return measure_flops(unet, unet_inputs(unet.config, height, width, text_len), grad_inputs=("sample",))


def unet_inputs(config: Any, height: int, width: int, text_len: int) -> dict[str, Any]:
    """Meta-device inputs of one image for a UNet2DConditionModel (SDXL's text-time conditioning included)."""
    meta = {"device": "meta"}
    h, w = height // LATENT_SCALE, width // LATENT_SCALE
    inputs: dict[str, Any] = {
        "sample": torch.empty(1, config.in_channels, h, w, **meta),
        "timestep": torch.zeros(1, dtype=torch.long, **meta),
        "encoder_hidden_states": torch.empty(1, text_len, config.cross_attention_dim, **meta),
    }
    if config.get("addition_embed_type") == "text_time":
        time_dim = config.addition_time_embed_dim
        pooled = config.projection_class_embeddings_input_dim - 6 * time_dim  # 6 time ids (sizes, crop, target)
        inputs["added_cond_kwargs"] = {"text_embeds": torch.empty(1, pooled, **meta),
                                       "time_ids": torch.empty(1, 6, **meta)}
    return inputs


def measure_flops(module: torch.nn.Module, inputs: dict[str, Any], grad_inputs: tuple[str, ...]) -> TrainingFlops:
    """Forward and backward FLOPs of `module(**inputs)` with frozen weights: the backward computes gradients for
    the named inputs only (those are made to require grad). A module with real weights is copied to the meta
    device first, so nothing is computed. Attention rows and per-layer rows are recorded along the way."""
    if any(p.device.type != "meta" for p in module.parameters()):
        module = copy.deepcopy(module).to("meta")
    module.requires_grad_(False)
    inputs = {k: (v.detach().to("meta").requires_grad_(k in grad_inputs) if isinstance(v, torch.Tensor) else v)
              for k, v in inputs.items()}
    rows: dict[str, int] = {}
    hooks = [m.register_forward_hook(functools.partial(_record_rows, rows, name))
             for name, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    try:
        forward = FlopCounterMode(display=False)
        with forward:
            out = module(**inputs)
        out = out.sample if hasattr(out, "sample") else out
        backward = FlopCounterMode(display=False)
        with backward:
            out.float().sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    counts = forward.get_flop_counts()["Global"]
    attention = sum(v for op, v in counts.items() if any(a in str(op) for a in _ATTENTION_OPS))
    return TrainingFlops(float(forward.get_total_flops()), float(backward.get_total_flops()), float(attention),
                         tuple(rows.items()))


def _record_rows(rows: dict[str, int], name: str, module: torch.nn.Module, args: tuple, output: Any) -> None:
    """Rows a Linear (tokens × batch) or Conv2d (output pixels × batch) processed, summed over its calls."""
    if isinstance(module, torch.nn.Linear):
        count = output.numel() // module.out_features
    else:
        count = output.numel() // module.out_channels
    rows[name] = rows.get(name, 0) + int(count)


def lora_flops_per_image(flops: TrainingFlops, unet: torch.nn.Module, targets: dict[str, int]) -> float:
    """FLOPs a LoRA of {module path: rank} adds per image: forward 2·rows·r·(in·k² + out) per adapted layer (down
    is the layer's shape at rank r, up a 1×1 / Linear), backward twice that (input and weight gradients)."""
    modules = dict(unet.named_modules())
    rows = dict(flops.rows)
    total = 0.0
    for path, rank in targets.items():
        layer = getattr(modules.get(path), "base_layer", modules.get(path))  # a peft-wrapped layer's own
        if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) or path not in rows:
            continue
        if isinstance(layer, torch.nn.Linear):
            fan_in, fan_out = layer.in_features, layer.out_features
        else:
            fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
            fan_out = layer.out_channels
        total += 3 * 2 * rows[path] * rank * (fan_in + fan_out)
    return total


# -- memory ---------------------------------------------------------------------------------------------------------
# Activation bytes are measured, not guessed: the step runs on meta tensors (shapes and dtypes, no data) while a
# dispatch mode adds up every storage the ops create and subtracts it when it is freed. Autograd keeps exactly what
# it keeps on a GPU (which inputs each op saves depends on which of them need a gradient), gradient checkpointing
# drops and recomputes what it does on a GPU. Two GPU behaviours are emulated because the meta device has neither:
# CUDA autocast (the casts it makes are saved for the backward: the compute-precision copy of an fp32 or fp8 weight,
# the float32 copy of a normalisation's input) and fused attention (flash / memory-efficient kernels keep q, k, v,
# the output and a log-sum-exp, never the L × S score matrix).

# ops CUDA autocast runs in the compute dtype, and in float32 (torch's autocast_mode.cpp CUDA lists, the ones a
# UNet and CLIP call), emulated above autograd so that the copies autograd saves are the real ones
_LOWER = (F.linear, F.conv1d, F.conv2d, torch.matmul, torch.Tensor.__matmul__, torch.bmm, torch.baddbmm, torch.mm,
          torch.addmm, F.scaled_dot_product_attention)
_FLOAT32 = (F.group_norm, F.layer_norm, F.softmax, F.log_softmax, torch.softmax)


class _Autocast(TorchFunctionMode):
    """CUDA autocast's casts on any device (the meta device has no autocast of its own); `dtype` None = off."""

    def __init__(self, dtype: torch.dtype | None) -> None:
        super().__init__()
        self.dtype = dtype

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = self.dtype if func in _LOWER else torch.float32 if func in _FLOAT32 else None
        if self.dtype is not None and target is not None:
            args = tuple(_cast(a, target) for a in args)
            kwargs = {k: _cast(v, target) for k, v in kwargs.items()}
        if func is F.scaled_dot_product_attention:
            return _FusedAttention.apply(*args[:3])
        return func(*args, **kwargs)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype not in (dtype, torch.float64):
        return value.to(dtype)
    return value


class _FusedAttention(torch.autograd.Function):
    """Scaled-dot-product attention as a fused CUDA kernel keeps it for the backward (shapes only)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty((*q.shape[:-1], v.shape[-1]))
        ctx.save_for_backward(q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class _LiveBytes(TorchDispatchMode):
    """Bytes of the storages the ops create, alive at each moment: batch-scaled ones (activations) and fixed ones
    (computed from weights alone: cast copies of weights, DoRA's weight norms), which do not grow with the batch."""

    def __init__(self, persistent: set[int]) -> None:
        super().__init__()
        self.persistent = persistent  # weights and buffers: counted by the caller
        self.sizes: dict[int, tuple[int, bool]] = {}  # storage → (bytes, fixed)
        self.scaled = self.fixed = 0
        self.points: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        fixed = bool(inputs) and all(self._is_fixed(t) for t in inputs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t, fixed)
        self.points.append((self.scaled, self.fixed))
        return out

    def _is_fixed(self, t: torch.Tensor) -> bool:
        key = _storage_key(t)
        return key in self.persistent or self.sizes.get(key, (0, False))[1]

    def _add(self, t: torch.Tensor, fixed: bool) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self.sizes or key in self.persistent:
            return
        size = storage.nbytes()
        self.sizes[key] = (size, fixed)
        self._count(size, fixed)
        weakref.finalize(storage, self._release, key)

    def _count(self, size: int, fixed: bool) -> None:
        if fixed:
            self.fixed += size
        else:
            self.scaled += size

    def _release(self, key: int) -> None:
        size, fixed = self.sizes.pop(key, (0, False))
        self._count(-size, fixed)

    def forget(self, t: torch.Tensor) -> None:
        """A parameter's gradient: the caller counts gradients itself."""
        key = _storage_key(t)
        if key in self.sizes:
            self._release(key)
            self.sizes[key] = (0, False)


@dataclass(frozen=True)
class MemoryProbe:
    """Bytes a step holds beyond its weights, measured at batch 1: (batch-scaled, fixed) pairs that can be the peak,
    and the pair alive when the forward ends (what the backward keeps). Activations grow linearly with the batch;
    cast copies of weights do not."""

    candidates: tuple[tuple[int, int], ...]
    after_forward: tuple[int, int]

    def peak(self, batch: int) -> int:
        """Peak bytes of a step of `batch` samples (the batch-1 shapes scaled, which is exact for these models)."""
        return max((batch * scaled + fixed for scaled, fixed in self.candidates), default=0)

    def saved(self, batch: int) -> int:
        """Bytes alive between the forward and the backward."""
        return batch * self.after_forward[0] + self.after_forward[1]


def probe_memory(step: Callable[[], torch.Tensor], modules: list[torch.nn.Module], compute: torch.dtype | None,
                 backward: bool = True) -> MemoryProbe:
    """Run `step` (which returns a loss; meta tensors only) and its backward under emulated CUDA autocast to
    `compute` (None: no autocast), recording the bytes alive beyond the weights and buffers of `modules` and the
    trainable parameters' gradients (which the caller counts)."""
    persistent = {_storage_key(t) for m in modules for t in (*m.parameters(), *m.buffers())}
    live = _LiveBytes(persistent)
    trainable = [p for m in modules for p in m.parameters() if p.requires_grad]
    hooks = [p.register_post_accumulate_grad_hook(lambda p: live.forget(p.grad)) for p in trainable]
    try:
        with live, _Autocast(compute):  # recomputation (checkpointing) runs in the backward: autocast stays on
            loss = step()
            after_forward = (live.scaled, live.fixed)
            if backward:
                loss.backward()
            del loss
    finally:
        for hook in hooks:
            hook.remove()
    return MemoryProbe(_frontier(live.points), after_forward)


def _frontier(points: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The points that can be the maximum of batch·scaled + fixed for some batch ≥ 1 (no other point has both
    more scaled and more fixed bytes)."""
    out: list[tuple[int, int]] = []
    for scaled, fixed in sorted(set(points), key=lambda p: (-p[0], -p[1])):
        if not out or fixed > out[-1][1]:
            out.append((scaled, fixed))
    return tuple(out)


def enable_checkpointing(module: torch.nn.Module, compute: torch.dtype | None) -> None:
    """Gradient checkpointing as the run enables it (torch's non-reentrant checkpoint per block), with the emulated
    autocast re-entered for the recomputation (torch re-enters only its own autocast)."""
    context = functools.partial(lambda dtype: (contextlib.nullcontext(), _Autocast(dtype)), compute)
    if hasattr(module, "enable_gradient_checkpointing"):  # diffusers
        module.enable_gradient_checkpointing(lambda block, *args: torch.utils.checkpoint.checkpoint(
            block.__call__, *args, use_reentrant=False, context_fn=context))
    else:  # transformers (activation_checkpointing_enable since 5, gradient_checkpointing_enable before)
        kwargs = {"use_reentrant": False, "context_fn": context}
        enable = getattr(module, "activation_checkpointing_enable", None)
        enable(kwargs) if enable else module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
