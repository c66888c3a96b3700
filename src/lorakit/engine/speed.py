"""Speed and memory options on the frozen UNet: float8 base weights, regional torch.compile, channels-last, and
CUDA's TF32 and cuDNN-benchmark flags (train.fp8_base, torch_compile, channels_last, allow_tf32, cudnn_benchmark).

`apply_speed_settings` runs once per run, after the model is loaded and before any network is attached; the
modes feed the UNet through `unet_input`.

fp8_base (sd-scripts' --fp8_base): sd-scripts casts the whole UNet to float8_e4m3fn (`train_network.py`,
`unet.to(dtype=unet_weight_dtype)`) and relies on autocast to upcast each weight inside each op. Here only the
Linear and Conv2d weights are stored in float8, and each is read back upcast to the frozen model's dtype whenever
anything reads `weight`: the layer's forward, peft (which takes an adapter's dtype from its base layer's weight,
and DoRA's weight norm), diffusers. So it works with or without autocast, norms and biases keep the model's
dtype, and an adapter attached afterwards gets exactly the dtype it gets without fp8 (the trainer then keeps the
trained ones in train.lora_precision). The result equals a model whose weights were rounded through float8
(every float8 value is exact in bf16, fp16 and fp32). As with autocast in sd-scripts, backward keeps the upcast
copy of each weight it needs until it has used it; gradient checkpointing bounds that to one block.
"""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..config.schema import TrainSection
from ..families import ModelParts
from . import device as device_module

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448: larger weights would turn to NaN (the cast does not saturate)
REGIONS = ("down_blocks", "mid_block", "up_blocks", "transformer_blocks", "single_transformer_blocks")
RECOMPILE_LIMIT = 64  # per code object: block classes × input shapes × adapter settings (Difference, samples)


class Fp8Weight:
    """Mixin for a Linear or Conv2d whose weight parameter is stored in float8: `weight` reads it upcast to
    `fp8_upcast`. The parameter keeps its name (state-dict keys stay 'weight'). peft builds a convolution
    adapter's lora_A as `type(base_layer)(…)`: such a layer holds a normal weight, which `weight` returns as is."""

    fp8_upcast: torch.dtype | None = None

    @property
    def weight(self) -> torch.Tensor:
        stored = self._parameters.get("weight")  # type: ignore[attr-defined]
        if stored is None:  # AttributeError, not KeyError: nn.Module's register_parameter asks hasattr() first
            raise AttributeError("weight")
        return stored.to(self.fp8_upcast) if stored.dtype == FP8 else stored


class Fp8Linear(Fp8Weight, nn.Linear):
    """nn.Linear with its weight stored in float8 (see Fp8Weight)."""


class Fp8Conv2d(Fp8Weight, nn.Conv2d):
    """nn.Conv2d with its weight stored in float8 (see Fp8Weight)."""


FP8_CLASSES: dict[type, type] = {nn.Linear: Fp8Linear, nn.Conv2d: Fp8Conv2d}


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def store_fp8(unet: nn.Module, upcast: torch.dtype) -> str:
    """Store the weights of the UNet's Linear and Conv2d layers in float8, read back as `upcast`; returns a line
    for the run log. Must run before a network is attached (peft's own Linear layers would be caught too)."""
    if any(isinstance(m, BaseTunerLayer) for m in unet.modules()):
        raise RuntimeError("store_fp8 runs before a network is attached: the adapter's weights must not be float8")
    before, out_of_range = _param_bytes(unet), []
    with torch.no_grad():
        for name, layer in unet.named_modules():
            cls = FP8_CLASSES.get(type(layer))  # exact types: a subclass may read its weight its own way
            if cls is None:
                continue
            weight = layer._parameters["weight"]
            if weight.abs().amax() > FP8_MAX:
                out_of_range.append(name)
                continue
            layer.__class__ = cls
            layer.fp8_upcast = upcast
            layer._parameters["weight"] = nn.Parameter(weight.to(FP8), requires_grad=False)  # keeps channels-last
    dtype = str(upcast).removeprefix("torch.")
    line = (f"fp8_base: {stored_count(unet)} Linear/Conv2d weights of the UNet stored in float8_e4m3fn, read as "
            f"{dtype} (UNet weights {before / 2**20:.1f} MiB → {_param_bytes(unet) / 2**20:.1f} MiB)")
    if out_of_range:
        line += f"; {len(out_of_range)} kept in {dtype} (weights beyond float8's ±{FP8_MAX:g}, e.g. {out_of_range[0]})"
    return line


def stored_count(module: nn.Module) -> int:
    """How many layers of `module` hold their weight in float8."""
    return sum(1 for m in module.modules() if isinstance(m, Fp8Weight) and m._parameters["weight"].dtype == FP8)


def compile_regions(unet: nn.Module, backend: str = "inductor") -> list[str]:
    """Compile each block of the UNet separately (regional compile: one block's code is compiled once per shape
    and reused, so the first step costs seconds, not minutes). Compilation happens at the first call, so networks
    attached before it are part of the compiled code; a later change (Difference's second network, adapter weights
    while sampling) recompiles the blocks it touches. Returns the names of the compiled blocks."""
    names = []
    for attr in REGIONS:
        value = getattr(unet, attr, None)
        blocks = list(enumerate(value)) if isinstance(value, nn.ModuleList) else [(None, value)] if value else []
        for index, block in blocks:
            block.compile(backend=backend)
            names.append(attr if index is None else f"{attr}.{index}")
    config = torch._dynamo.config  # process-wide; the default (8) is too few for the blocks that share a class
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), RECOMPILE_LIMIT))
    return names


def cuda_flags(train: TrainSection, device: torch.device) -> list[str]:
    """train.allow_tf32 and train.cudnn_benchmark on CUDA (nothing elsewhere: they only exist there). The flags
    are process-wide: every run sets both values it wants rather than restoring them afterwards, so a run never
    inherits an earlier run's choice."""
    tf32, benchmark = train.allow_tf32, train.cudnn_benchmark  # read on every device (each field is read by a run)
    if device.type != "cuda":
        return []
    # the API every reader understands: torch 2.9+'s fp32_precision settings follow it, while setting those directly
    # makes torch.get_float32_matmul_precision() (inductor calls it) raise "mix of the legacy and new APIs"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = benchmark
    return [f"CUDA: TF32 matmuls and convolutions {'on' if tf32 else 'off (exact fp32)'}, cuDNN benchmark "
            f"{'on' if benchmark else 'off'}"]


def apply_speed_settings(parts: ModelParts, train: TrainSection, device: torch.device,
                         compile_backend: str = "inductor") -> list[str]:
    """Apply the run's speed and memory settings to the frozen UNet (the text encoders and the VAE stay as they
    are); returns lines for the run log. Call it once, after loading and before any network is attached; before
    the move to the GPU is best (fp8 halves what moves). `compile_backend`: tests use 'eager' or 'aot_eager'."""
    fp8, compile_unet, channels_last = train.fp8_base, train.torch_compile, train.channels_last  # always read
    notices = cuda_flags(train, device)
    unet = parts.unet
    if channels_last:
        unet.to(memory_format=torch.channels_last)
        notices.append("channels_last: the UNet's convolutions in channels-last memory format")
    if fp8:
        notices.append(store_fp8(unet, device_module.model_dtype(train.mixed_precision, train.model_precision)))
    if compile_unet:
        names = compile_regions(unet, compile_backend)
        notices.append(f"torch_compile: {len(names)} UNet blocks compiled separately ({compile_backend}); the first "
                       "step of each new image size and of each new adapter setting takes longer")
    return notices


def unet_input(x: torch.Tensor, train: TrainSection) -> torch.Tensor:
    """The UNet's input latents in the frozen model's dtype and, with train.channels_last, in channels-last
    memory format. Use this rather than `unet.dtype`: with fp8_base, diffusers reports float8 there."""
    x = x.to(device_module.model_dtype(train.mixed_precision, train.model_precision))
    return x.contiguous(memory_format=torch.channels_last) if train.channels_last and x.dim() == 4 else x
