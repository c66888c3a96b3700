"""lorakit's training step against the bare loop a diffusers + peft user writes, measured as a run pays for it.

Both loops train the same model (same random weights), data, LoRA targets (kohya's: every Linear and 1×1 Conv2d in
the UNet's transformer blocks), rank, batch, optimizer (AdamW, fused on CUDA), gradient clipping and precision;
the VAE encodes in the same precision in both (its own, fp32 when `force_upcast`, outside the autocast) and the
noising is fp32 in both. "cached" encodes every image and caption once before the first step (lorakit: in memory,
no disk cache, so no round reuses another's); "uncached" reads, resizes and encodes them every step.

lorakit runs as a user runs it, with its default `train.log_every_n_steps` (the clock acts at two steps). Each loop is
timed over the steps after `--warmup`: one synchronize when the window opens and one when it closes, none per
step. The loops alternate within one process (the order flips every round) so drifting machine load hits both
alike; the median over `--rounds` is reported. Per loop: ms/step, images/s, peak memory (CUDA's
max_memory_allocated over the whole run, caching included, and over the timed steps alone; n/a elsewhere) and
MFU = images/s × training FLOPs per image (forward + input-gradient backward, from the architecture:
`lorakit.engine.flops`) ÷ the device's dense peak for the compute precision
(`--peak-tflops`, else lorakit's GPU table in `lorakit.engine.estimate`; CPU: n/a). With gradient checkpointing
the recomputed forward is not counted (the usual MFU).

Run: `.venv/bin/python benchmarks/train_step.py` (tiny-sd1, 64 px, CPU). GPU: `--model random-sd15 --resolution
512 --batch 8` or `--model random-sdxl --resolution 1024 --batch 4` (bf16 is the default there), with `--compile`,
`--checkpointing`, `--channels-last`; `--fp8` and `--preset lowvram-8gb` (a preset's peak) run lorakit alone;
`benchmarks/gpu_suite.sh` runs the whole matrix. `--json OUT` writes the numbers as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, build_layers, resolve, set_layer  # noqa: E402
from lorakit.config.schema import ModelSection, TrainSection  # noqa: E402
from lorakit.demo import write_sample_images  # noqa: E402
from lorakit.engine.device import auto_mixed_precision, compute_dtype, training_device  # noqa: E402
from lorakit.families import load_model  # noqa: E402
from lorakit.families.names import RANDOM_MODELS  # noqa: E402

from common import PeakMemory, WindowClock, peak_tflops  # noqa: E402

BARE, LORAKIT = "bare diffusers+peft", "lorakit"
DEFAULT_BATCH = 2
IMAGES = 16


@dataclass
class Timing:
    """One loop's run: seconds per step over the timed window, images per step, peak memory (bytes or None)."""

    seconds_per_step: float
    images_per_step: int
    run_peak: int | None
    window_peak: int | None


@dataclass
class Result:
    """A loop's medians over the rounds, as reported."""

    loop: str
    cached: bool
    ms_per_step: float
    images_per_s: float
    mfu: float | None
    peak_mib: float | None
    window_peak_mib: float | None
    rounds_ms: list[float]
    images_per_step: int


# -- lorakit ---------------------------------------------------------------------------------------------------------


def lorakit_layers(args: argparse.Namespace, data: Path, out: Path, cached: bool) -> list[Layer]:
    """The run's config: the preset (if any), then the benchmark's settings, then --set. With a preset, batch and
    precision stay the preset's unless given on the command line; each feature flag is written only when given."""
    train: dict[str, object] = {"max_train_steps": args.steps, "learning_rate": 1e-4, "max_grad_norm": 1.0,
                                "cache_latents": cached, "cache_text_encoder_outputs": cached}
    if args.batch is not None or not args.preset:
        train["train_batch_size"] = args.batch or DEFAULT_BATCH
    if args.precision is not None or not args.preset:
        train["mixed_precision"] = args.resolved_precision
    for flag, key in (("compile", "torch_compile"), ("checkpointing", "gradient_checkpointing"),
                      ("channels_last", "channels_last"), ("fp8", "fp8_base")):
        if getattr(args, flag) is not None:
            train[key] = getattr(args, flag)
    bench = Layer("benchmark", {
        "model": {"pretrained_model_name_or_path": args.model},
        "network": {"network_dim": args.rank, "network_alpha": args.rank},
        "data": {"train_data_dir": str(data), "resolution": args.resolution, "cache_latents_to_disk": False},
        "train": train,
        "output": {"output_dir": str(out)},
        "checkpoint": {"at_end": False},  # after the timed steps anyway; not what a step costs
    })
    layers = build_layers(preset=args.preset) if args.preset else []
    return [*layers, bench, *([set_layer(args.set)] if args.set else [])]


def run_lorakit(args: argparse.Namespace, data: Path, out: Path, cached: bool, memory: PeakMemory) -> Timing:
    """One lorakit run through `api.train`, as `lorakit train` runs it."""
    cfg = resolve(lorakit_layers(args, data, out, cached))
    clock = WindowClock(args.warmup, args.device, memory)
    memory.begin_run()
    api.train(cfg, [clock])
    clock.peaks.append(memory.mark())  # the saves after the last step
    assert clock.seconds is not None
    return Timing(clock.seconds / clock.steps, cfg.train.train_batch_size * cfg.train.gradient_accumulation_steps,
                  _max(clock.peaks), clock.window_peak)


# -- the bare loop ---------------------------------------------------------------------------------------------------


def kohya_targets(unet: torch.nn.Module) -> list[str]:
    """kohya's LoRA targets in the UNet (sd-scripts networks/lora.py, LoRANetwork.UNET_TARGET_REPLACE_MODULE =
    ["Transformer2DModel"]; create_modules takes its Linear and 1×1 Conv2d layers): full paths for peft."""
    paths = []
    for name, block in unet.named_modules():
        if type(block).__name__ != "Transformer2DModel":
            continue
        for sub, layer in block.named_modules():
            conv1x1 = isinstance(layer, torch.nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)
            if sub and (isinstance(layer, torch.nn.Linear) or conv1x1):
                paths.append(f"{name}.{sub}")
    return paths


def compile_blocks(unet: torch.nn.Module) -> None:
    """torch.compile of each down, mid and up block on its own: the regions lorakit compiles (train.torch_compile),
    so the two loops compile the same code."""
    for block in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]:
        block.compile()


def backend_flags(train: TrainSection, device: torch.device) -> None:
    """The bare loop's TF32 and cuDNN-benchmark flags, as lorakit's defaults (they are process-wide: whichever loop
    ran last would otherwise set them for both). torch 2.9+ has its own TF32 switch, not to be mixed with the old."""
    if device.type != "cuda":
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        matmul.fp32_precision = cudnn.conv.fp32_precision = "tf32" if train.allow_tf32 else "ieee"
    else:
        matmul.allow_tf32 = cudnn.allow_tf32 = train.allow_tf32
    cudnn.benchmark = train.cudnn_benchmark


def bare_pipeline(args: argparse.Namespace, dtype: torch.dtype, flops: dict[str, float | None]):
    """The model as a diffusers user prepares it: frozen, on the device, LoRA added with peft, the options on."""
    from peft import LoraConfig

    pipe = load_model(ModelSection(pretrained_model_name_or_path=args.model), dtype).pipeline
    pipe.to(args.device)
    if "per_image" not in flops:
        flops["per_image"] = flops_per_image(pipe.unet, args.resolution)
    if getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # as lorakit (and diffusers' pipelines for fp16): the VAE overflows otherwise
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    pipe.unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights=True,
                                     target_modules=kohya_targets(pipe.unet)))
    if args.checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    if args.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if args.compile:
        compile_blocks(pipe.unet)
    pipe.unet.train()
    return pipe


def encode_text(pipe, captions: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """The pipeline's own prompt encoding (SDXL: both encoders' penultimate layers and the pooled embedding)."""
    kwargs = {"prompt": captions, "device": device, "num_images_per_prompt": 1, "do_classifier_free_guidance": False}
    with torch.no_grad():
        out = pipe.encode_prompt(**kwargs)
    if getattr(pipe, "text_encoder_2", None) is not None:
        return {"hidden": out[0], "text_embeds": out[2]}
    return {"hidden": out[0]}


def encode_images(pipe, paths: list[Path], resolution: int, device: torch.device) -> torch.Tensor:
    """fp32 latents of image files, resized to the training size, encoded in the VAE's own precision."""
    from PIL import Image

    pixels = []
    for path in paths:
        im = Image.open(path).convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
        pixels.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1))
    vae = pipe.vae
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        dist = vae.encode(torch.stack(pixels).to(device, vae.dtype)).latent_dist
    return dist.sample().float() * vae.config.scaling_factor


def run_bare(args: argparse.Namespace, data: Path, cached: bool, memory: PeakMemory,
             flops: dict[str, float | None]) -> Timing:
    """The loop a diffusers + peft user writes: encode, noise (fp32), predict under autocast, MSE, clip, step."""
    device, dtype, batch, res = args.device, compute_dtype(args.resolved_precision), args.batch or DEFAULT_BATCH, \
        args.resolution
    memory.begin_run()
    backend_flags(TrainSection(), device)
    torch.manual_seed(0)
    pipe = bare_pipeline(args, dtype, flops)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)  # the training schedule, as lorakit's
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True if device.type == "cuda" else None,
                            foreach=None if device.type == "cuda" else True)
    images = sorted(data.glob("*.png"))
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8") for p in images]
    if cached:
        latents = torch.cat([encode_images(pipe, images[i : i + batch], res, device)
                             for i in range(0, len(images), batch)])
        parts = [encode_text(pipe, captions[i : i + batch], device) for i in range(0, len(images), batch)]
        texts = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    time_ids = torch.tensor([[res, res, 0, 0, res, res]] * batch, dtype=torch.float32, device=device)
    clock = WindowClock(args.warmup, device, memory)
    for step in range(1, args.steps + 1):
        idx = [((step - 1) * batch + i) % len(images) for i in range(batch)]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            if cached:
                x0, cond = latents[idx], {k: v[idx] for k, v in texts.items()}
            else:
                x0 = encode_images(pipe, [images[i] for i in idx], res, device)
                cond = encode_text(pipe, [captions[i] for i in idx], device)
            noise = torch.randn_like(x0)
            t = torch.randint(0, sched.config.num_train_timesteps, (batch,), device=device)
            noisy = sched.add_noise(x0, noise, t)
            target = sched.get_velocity(x0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
            extra = {"added_cond_kwargs": {"text_embeds": cond["text_embeds"], "time_ids": time_ids}} \
                if "text_embeds" in cond else {}
            x = noisy.to(dtype).contiguous(memory_format=torch.channels_last if args.channels_last else
                                           torch.contiguous_format)
            pred = pipe.unet(x, t, cond["hidden"], **extra).sample
            loss = F.mse_loss(pred.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step == args.warmup:
            clock.start()
    clock.stop(args.steps - args.warmup)
    assert clock.seconds is not None
    del pipe, opt, params
    return Timing(clock.seconds / clock.steps, batch, _max(clock.peaks), clock.window_peak)


# -- FLOPs, the rounds, the report -----------------------------------------------------------------------------------


def flops_per_image(unet: torch.nn.Module, resolution: int) -> float | None:
    """Training FLOPs per image of this UNet at this size; None while lorakit.engine.flops is not there."""
    try:
        from lorakit.engine.flops import training_flops_per_image
    except ImportError:
        return None
    return float(training_flops_per_image(unet, resolution, resolution))


def lorakit_only(args: argparse.Namespace) -> bool:
    """A preset, or fp8 base weights (which the bare loop has no training equivalent of): lorakit alone."""
    return bool(args.preset or args.fp8)


def lorakit_only_flops(args: argparse.Namespace) -> float | None:
    """Without the bare loop, the UNet is built once just to count its FLOPs."""
    try:
        from lorakit.engine.flops import meta_unet
    except ImportError:
        return None
    if args.model in RANDOM_MODELS:  # full size on the meta device: no weights, no memory
        return flops_per_image(meta_unet(RANDOM_MODELS[args.model][1]), args.resolution)
    return flops_per_image(load_model(ModelSection(pretrained_model_name_or_path=args.model)).unet, args.resolution)


def _max(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def summarize(name: str, cached: bool, timings: list[Timing], flops: float | None,
              peak: float | None) -> Result:
    """Medians over the rounds; MFU from the median images/s."""
    s = statistics.median(t.seconds_per_step for t in timings)
    images = timings[0].images_per_step
    rate = images / s
    mib = [_max([t.run_peak for t in timings]), _max([t.window_peak for t in timings])]
    return Result(name, cached, s * 1000, rate, rate * flops / (peak * 1e12) if flops and peak else None,
                  *(m / 2**20 if m is not None else None for m in mib),
                  [round(t.seconds_per_step * 1000, 3) for t in timings], images)


def run_rounds(args: argparse.Namespace, data: Path, out: Path, flops: dict[str, float | None],
               memory: PeakMemory) -> dict[tuple[str, bool], list[Timing]]:
    """Every (loop, caching) case once per round; the order flips every round."""
    loops = [LORAKIT] if lorakit_only(args) else [BARE, LORAKIT]
    cases = [(loop, cached) for cached in args.cache_modes for loop in loops]
    timings: dict[tuple[str, bool], list[Timing]] = {c: [] for c in cases}
    for r in range(args.rounds):
        for loop, cached in cases if r % 2 == 0 else cases[::-1]:
            if loop == BARE:
                timings[(loop, cached)].append(run_bare(args, data, cached, memory, flops))
            else:
                timings[(loop, cached)].append(run_lorakit(args, data, out, cached, memory))
    return timings


def report(args: argparse.Namespace, results: list[Result], flops: float | None,
           peak_and_source: tuple[float | None, str], memory: PeakMemory) -> dict[str, object]:
    """Print the table; return the JSON record."""
    peak, peak_source = peak_and_source
    t = TrainSection()
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    settings = {k: getattr(args, k) for k in ("model", "resolution", "batch", "rank", "steps", "warmup", "rounds",
                                               "compile", "checkpointing", "channels_last", "fp8", "preset", "set")}
    settings["images_per_step"] = results[0].images_per_step if results else None
    settings |= {"precision": args.resolved_precision,
                 "log_every_n_steps (lorakit default)": t.log_every_n_steps}
    print("  ".join(f"{k} {v}" for k, v in settings.items() if v not in (None, [], False)))
    print(f"device {name}  training FLOPs/image {flops / 1e12 if flops else float('nan'):.4g} T  peak "
          f"{f'{peak:g}' if peak else 'n/a'} TFLOP/s ({peak_source})  memory: {memory.label}")
    print(f"{'loop':20s} {'cache':8s} {'ms/step':>9s} {'images/s':>9s} {'MFU':>7s} {'peak MiB':>9s} "
          f"{'steps MiB':>9s} {'vs bare':>8s}")
    bare = {r.cached: r.images_per_s for r in results if r.loop == BARE}
    for r in results:
        ratio = f"{r.images_per_s / bare[r.cached]:.3f}" if r.cached in bare else "-"
        print(f"{r.loop:20s} {'cached' if r.cached else 'uncached':8s} {r.ms_per_step:9.2f} {r.images_per_s:9.2f} "
              f"{_pct(r.mfu):>7s} {_mib(r.peak_mib):>9s} {_mib(r.window_peak_mib):>9s} {ratio:>8s}")
    return {"date": date.today().isoformat(), "device": name, "settings": settings, "flops_per_image": flops,
            "peak_tflops": peak, "peak_source": peak_source, "memory": memory.label,
            "results": [asdict(r) for r in results]}


def _pct(value: float | None) -> str:
    return f"{value * 100:.1f}%" if value is not None else "n/a"


def _mib(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "n/a"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-sd1", help="tiny-sd1, random-sd15, random-sdxl, or a model path")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=None, help=f"images per step (default {DEFAULT_BATCH}; with "
                    "--preset: the preset's)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--precision", default=None, choices=["auto", "no", "bf16", "fp16"],
                    help="mixed precision of both loops (default auto: bf16 on a GPU that has it, else fp32)")
    ap.add_argument("--cache", default="both", choices=["on", "off", "both"],
                    help="latents and text encoded once before training (on), every step (off), or both cases")
    ap.add_argument("--steps", type=int, default=60, help="steps per run (the warm-up included)")
    ap.add_argument("--warmup", type=int, default=10, help="steps before the timed window (compilation, "
                    "allocator, caches)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    for flag, what in (("compile", "torch.compile of each UNet block (train.torch_compile; bare: the same "
                        "blocks)"),
                       ("checkpointing", "gradient checkpointing (train.gradient_checkpointing; bare: diffusers' "
                        "enable_gradient_checkpointing)"),
                       ("channels-last", "channels-last UNet (train.channels_last; bare: .to(memory_format))"),
                       ("fp8", "float8 frozen UNet weights (train.fp8_base); lorakit only: diffusers' "
                        "enable_layerwise_casting is for inference (its backward meets the float8 weights)")):
        ap.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None, help=what)
    ap.add_argument("--preset", default=None, help="a lorakit preset under the benchmark's settings, e.g. "
                    "lowvram-8gb (lorakit only: the bare loop is skipped)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a lorakit config override, last (lorakit only; repeatable)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (default: lorakit's "
                    "GPU table, engine/estimate.py, dense, for the compute precision)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here (one JSON line)")
    args = ap.parse_args()
    if not 1 <= args.warmup < args.steps:
        ap.error("--warmup must be at least 1 and below --steps (the timed window starts after it)")
    args.device = training_device()
    precision = args.precision or "auto"
    args.resolved_precision = auto_mixed_precision(args.device) if precision == "auto" else precision
    args.cache_modes = {"on": [True], "off": [False], "both": [False, True]}[args.cache]
    return args


def main() -> None:
    args = parse_args()
    if "OMP_NUM_THREADS" not in os.environ:  # torch reads it itself; else every core
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    if args.compile:  # both loops compile blocks of several shapes, run after run, in one process
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, limit, max(getattr(config, limit), 64))
    memory = PeakMemory(args.device)
    flops: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_sample_images(Path(tmp) / "images", count=IMAGES, size=args.resolution * 3 // 2)
        if lorakit_only(args):
            flops["per_image"] = lorakit_only_flops(args)
        if args.preset and args.precision is None:  # the preset's precision is the one the steps compute in
            mp = resolve(lorakit_layers(args, data, Path(tmp) / "runs", True)).train.mixed_precision
            args.resolved_precision = auto_mixed_precision(args.device) if mp == "auto" else mp
        timings = run_rounds(args, data, Path(tmp) / "runs", flops, memory)
    peak, peak_source = (args.peak_tflops, "--peak-tflops") if args.peak_tflops else \
        peak_tflops(args.resolved_precision, TrainSection().allow_tf32)
    results = [summarize(loop, cached, ts, flops.get("per_image"), peak) for (loop, cached), ts in timings.items()]
    record = report(args, results, flops.get("per_image"), (peak, peak_source), memory)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
