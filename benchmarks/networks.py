"""Step time and trainable parameters of each network type, relative to plain LoRA at the same rank.

Run by hand: `.venv/bin/python benchmarks/networks.py [model] [rank] [steps]` (default tiny-sd1, rank 8, 5 steps,
CPU or the first GPU). Prints one line per type; nothing is asserted.
"""

from __future__ import annotations

import sys
import time

import torch

from lorakit.config.schema import ModelSection, NetworkSection
from lorakit.families import load_model
from lorakit.networks.attach import attach_network
from lorakit.networks.targets import select_targets

KINDS = {
    "lora": dict(network_module="lora"),
    "locon": dict(network_module="locon"),
    "loha": dict(network_module="loha"),
    "lokr": dict(network_module="lokr"),
    "dora": dict(network_module="lora", use_dora=True),
}


def measure(model: str, kind: str, rank: int, steps: int) -> tuple[int, float]:
    """(trainable parameters, seconds per forward+backward step) of one network type on the UNet."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    parts = load_model(ModelSection(pretrained_model_name_or_path=model))
    cfg = NetworkSection(network_dim=rank, network_alpha=rank / 2, target_modules=[], **KINDS[kind])
    params = attach_network(parts, cfg, select_targets(parts, cfg).components())
    unet = parts.unet.to(device).train()
    fam, size = parts.family, parts.resolution // 8
    with torch.no_grad():
        cond = {k: v.to(device) for k, v in fam.encode_prompts(parts, ["a photo", "a cat"]).items()}
    sizes = [{"original_size": (64, 64), "crop_top_left": (0, 0), "target_size": (64, 64)}] * 2
    latents = torch.randn(2, unet.config.in_channels, size, size, device=device)
    t = torch.tensor([10, 500], device=device)
    for i in range(steps + 1):  # the first step warms up (allocations, kernels)
        if i == 1:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        unet(latents, t, **fam.unet_kwargs(cond, sizes)).sample.square().mean().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return sum(p.numel() for p in params), (time.perf_counter() - start) / steps


def main() -> None:
    """Print a line per network type."""
    model = sys.argv[1] if len(sys.argv) > 1 else "tiny-sd1"
    rank = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    torch.manual_seed(0)
    results = {kind: measure(model, kind, rank, steps) for kind in KINDS}
    base_params, base_time = results["lora"]
    print(f"{model}, rank {rank}, {steps} steps, {'cuda' if torch.cuda.is_available() else 'cpu'}")
    for kind, (params, seconds) in results.items():
        print(f"{kind:6s} params {params:>10,d} ({params / base_params:5.2f}× lora)  "
              f"step {seconds * 1000:8.1f} ms ({seconds / base_time:5.2f}× lora)")


if __name__ == "__main__":
    main()
