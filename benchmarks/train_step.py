"""Time lorakit's training step against a minimal reference loop written directly on diffusers + peft.

Same tiny model, data, rank, batch, optimizer and precision; both read the images from disk every step when
caching is off. Prints seconds per step and the ratio (ours / reference). Run: `python benchmarks/train_step.py`.
On a CUDA machine use a real architecture with random weights, e.g. `--model random-sd15 --resolution 512
--precision bf16`, or `--model random-sdxl --resolution 1024 --precision bf16 --ours-only`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from peft import LoraConfig  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, resolve  # noqa: E402
from lorakit.config.schema import ModelSection  # noqa: E402
from lorakit.demo import write_sample_images  # noqa: E402
from lorakit.families import load_model  # noqa: E402

from common import StepClock  # noqa: E402


def per_step(times: list[float], warmup: int) -> float:
    """Median seconds per step after the warm-up steps."""
    return statistics.median(np.diff(times[warmup:]))


def ours(args: argparse.Namespace, data: Path, out: Path, cache: bool) -> float:
    cfg = resolve([Layer("bench", {
        "model": {"pretrained_model_name_or_path": args.model},
        "network": {"network_dim": args.rank, "network_alpha": args.rank},
        "data": {"train_data_dir": str(data), "resolution": args.resolution},
        "train": {"max_train_steps": args.steps, "train_batch_size": args.batch, "learning_rate": 1e-4,
                  "cache_latents": cache, "cache_text_encoder_outputs": cache, "max_grad_norm": 1.0,
                  "log_every_n_steps": 10_000, "mixed_precision": args.precision},
        "output": {"output_dir": str(out)},
    })])
    clock = StepClock()
    api.train(cfg, [clock])
    return per_step(clock.times, args.warmup)


def reference(args: argparse.Namespace, data: Path) -> float:
    """The loop a diffusers user would write: encode, noise, predict, MSE, step."""
    from PIL import Image

    torch.manual_seed(0)
    parts = load_model(ModelSection(pretrained_model_name_or_path=args.model))
    pipe = parts.pipeline
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    pipe.to(device, dtype)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights=True,
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device == "cuda" or None)
    sched = parts.noise_scheduler
    images = sorted(data.glob("*.png"))
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8") for p in images]
    res = args.resolution
    times = []
    for step in range(args.steps):
        idx = [(step * args.batch + i) % len(images) for i in range(args.batch)]
        pixels = []
        for i in idx:
            im = Image.open(images[i]).convert("RGB").resize((res, res), Image.Resampling.LANCZOS)
            pixels.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
        x = torch.stack(pixels).to(device, dtype)
        with torch.autocast(device, dtype=dtype, enabled=args.precision != "no"):
            with torch.no_grad():
                latents = pipe.vae.encode(x).latent_dist.sample() * pipe.vae.config.scaling_factor
                ids = pipe.tokenizer([captions[i] for i in idx], padding="max_length", truncation=True,
                                     max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
                hidden = pipe.text_encoder(ids.to(device))[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), device=device)
            pred = pipe.unet(sched.add_noise(latents, noise, t), t, hidden).sample
            loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return per_step(times, args.warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="tiny-sd1")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"])
    ap.add_argument("--rounds", type=int, default=3, help="Alternating rounds; the median of each is reported.")
    ap.add_argument("--ours-only", action="store_true",
                    help="Skip the reference loop (it is written for one text encoder: SD1/SD2, not SDXL).")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        data = write_sample_images(Path(tmp) / "images", count=16, size=args.resolution * 3 // 2)
        results: dict[str, list[float]] = {"reference": [], "ours, no cache": [], "ours, cached": []}
        for _ in range(args.rounds):  # alternate so drift in machine load hits all three alike
            if not args.ours_only:
                results["reference"].append(reference(args, data))
            results["ours, no cache"].append(ours(args, data, Path(tmp) / "runs", cache=False))
            results["ours, cached"].append(ours(args, data, Path(tmp) / "runs", cache=True))
    ref = statistics.median(results["reference"]) if results["reference"] else float("nan")
    print(f"model {args.model}  res {args.resolution}  batch {args.batch}  rank {args.rank}  "
          f"precision {args.precision}  device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    for name, values in results.items():
        if not values:
            continue
        s = statistics.median(values)
        print(f"{name:16s} {s * 1000:8.2f} ms/step  {1 / s:7.2f} steps/s  ratio {s / ref:5.3f}")
    if torch.cuda.is_available():
        print(f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
