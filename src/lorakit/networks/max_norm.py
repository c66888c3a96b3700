"""Max-norm regularisation (`train.scale_weight_norms`): after an optimizer step, every adapter module whose weight
update ΔW (as the module applies it, scale included) has a Frobenius norm above `max_norm` is scaled down to it.

sd-scripts networks/lora.py `apply_max_norm_regularization` (LoRA, LoCon): ΔW = (alpha/rank)·up·down, norm clamped
below at max_norm/2 (only to keep the ratio finite), ratio = min(norm, max_norm)/norm, and up and down each times
√ratio. LyCORIS (lycoris/modules/{locon,loha,lokr}.py `apply_max_norm`, also used for DoRA) applies the same ratio
to a scalar buffer that multiplies ΔW; peft layers have no such buffer, so the ratio is spread evenly over the
factors ΔW is the product of (LoHa's four or six, LoKr's two to four, LoRA's two: √ratio each, as sd-scripts).
DoRA's magnitude is not a factor of ΔW and is left alone, as in LyCORIS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..families import ModelParts
from .attach import _layer_tensors, adapter_layers, components
from .registry import ADAPTER

NOT_FACTORS = {"lora_magnitude_vector"}  # DoRA's magnitude: applied after ΔW, not part of it


@dataclass(frozen=True)
class MaxNormResult:
    """What sd-scripts returns and logs: modules scaled ("Keys Scaled"), the mean and the largest ΔW norm after
    scaling over all modules ("Average key norm", max_norm/maximum_norm)."""

    keys_scaled: int
    mean_norm: float
    max_norm: float


@torch.no_grad()
def apply_max_norm(parts: ModelParts, max_norm: float, adapter: str = ADAPTER) -> MaxNormResult:
    """Scale down each module of `adapter` (UNet and text encoders) whose ΔW norm exceeds `max_norm`; returns the
    count and the norms after scaling."""
    layers = [(net, layer) for _, module in components(parts)
              for net, layer in adapter_layers(module, adapter).values()]
    if not layers:
        return MaxNormResult(0, 0.0, 0.0)
    # one transfer to the host for all modules
    norms = torch.stack([layer.get_delta_weight(adapter).float().norm() for _, layer in layers]).tolist()
    after, scaled = [], 0
    for (net, layer), norm in zip(layers, norms):
        clamped = max(norm, max_norm / 2)
        ratio = min(clamped, max_norm) / clamped
        if ratio != 1:
            scaled += 1
            factors = [p for key, p in _layer_tensors(net, layer, adapter) if key not in NOT_FACTORS]
            for p in factors:
                p.mul_(ratio ** (1 / len(factors)))
        after.append(norm * ratio)
    return MaxNormResult(scaled, sum(after) / len(after), max(after))
