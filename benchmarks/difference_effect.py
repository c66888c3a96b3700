"""What a Difference slider does, measured on the saved files: held-out denoising loss on the target and on the
original image, and the one-step denoised original's distance to the target latent, at slider weights −1, 0, 1.

Run by hand: `.venv/bin/python benchmarks/difference_effect.py [steps] [network_module] [rank]` (default 200 steps
per pass, locon, rank 8; tiny-sd1 at 64 px, CPU or the first GPU). A slider that holds the difference lowers the
target's loss and raises the original's at weight 1, and moves the denoised original toward the target. Prints
numbers; asserts nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from common import positional, write_pair  # noqa: E402
from lorakit import api  # noqa: E402
from lorakit.config.loader import resolve_layers  # noqa: E402
from lorakit.engine.encode import BatchEncoder  # noqa: E402
from lorakit.families import load_model  # noqa: E402
from lorakit.modes.difference import COPY, read_images  # noqa: E402
from lorakit.networks.attach import adapter_weights  # noqa: E402
from lorakit.networks.formats import read_lora_file  # noqa: E402
from lorakit.networks.loading import attach_file  # noqa: E402

SIZES = [{"original_size": (64, 64), "crop_top_left": (0, 0), "target_size": (64, 64)}]


def main(steps: int, module: str, rank: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lorakit-diff-effect-"))
    original_png, target_png = write_pair(tmp / "pair")
    cfg = resolve_layers(sets=[
        "mode.type='difference'", f"mode.original_image='{original_png}'", f"mode.target_image='{target_png}'",
        "mode.save_first_pass=true", "mode.second_pass.network_dim=2", "mode.second_pass.network_alpha=2",
        f"network.network_module='{module}'", f"network.network_dim={rank}", f"network.network_alpha={rank}",
        f"train.max_train_steps={steps}", "train.learning_rate=5e-3", "train.train_batch_size=4",
        "data.resolution=64", "output.save_precision='fp32'", f"output.output_dir='{tmp / 'runs'}'",
        "data.cache_latents_to_disk=true", f"data.cache_folder='{tmp / 'cache'}'",
    ]).config
    result = api.train(cfg)
    parts = load_model(cfg.model)
    encoder = BatchEncoder(parts, torch.device("cpu"), torch.float32, True, False, 0, Path(cfg.data.cache_folder))
    examples = [image.example("") for image in read_images(cfg.mode, 64 * 64)]
    encoder.prefill(examples, 1)  # the latents training used, from the disk cache
    original, target = (encoder.latents[e.key][None] for e in examples)
    attach_file(parts, read_lora_file(result.stage_files[0])[0], adapter=COPY)
    attach_file(parts, read_lora_file(result.lora_path)[0])
    fam, sched = parts.family, parts.noise_scheduler
    cond = fam.encode_prompts(parts, [""])

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        c = {k: v.expand(n, *v.shape[1:]) for k, v in cond.items()}
        with torch.no_grad():
            return parts.unet(x, t, **fam.unet_kwargs(c, SIZES * n)).sample

    gen = torch.Generator().manual_seed(99)  # held-out noise and timesteps, the same at every weight
    noise = torch.randn((32, *original.shape[1:]), generator=gen)
    t = torch.randint(0, 1000, (32,), generator=gen)

    def loss(latents: torch.Tensor) -> float:
        return ((eps(sched.add_noise(latents.expand(32, -1, -1, -1), noise, t), t) - noise) ** 2).mean().item()

    def x0_distance(step: int) -> float:
        abar = sched.alphas_cumprod[step]
        n = noise[:4]
        x_t = abar.sqrt() * original.expand(4, -1, -1, -1) + (1 - abar).sqrt() * n
        x0 = (x_t - (1 - abar).sqrt() * eps(x_t, torch.full((4,), step))) / abar.sqrt()
        return (x0 - target).flatten(1).norm(dim=1).mean().item()

    print(f"{module} rank {rank}, {steps} steps per pass; latent distance original→target "
          f"{(original - target).norm().item():.3f}")
    print("weight  loss(target)  loss(original)  |x0−target| t=100  t=600")
    for w in (-1.0, 0.0, 1.0):
        with adapter_weights(parts, {"lorakit": w}):
            print(f"{w:>6}  {loss(target):12.4f}  {loss(original):14.4f}  {x0_distance(100):17.3f}  "
                  f"{x0_distance(600):.3f}")


if __name__ == "__main__":
    main(*positional(200, "locon", 8))
