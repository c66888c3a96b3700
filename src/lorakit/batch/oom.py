"""Out-of-memory retries of `lorakit batch`: did a training child run out of GPU memory, and what to try next.

`lorakit train` exits with status 5 (EXIT_OOM) after an OOM in a step that the split retry could not save; an OOM
elsewhere (loading the model, caching latents) or in another tool shows only as text, so the output is read too.

The retry ladder: attempt 1 applies the user's out-of-memory layer (batch.oom_file / outofmemory.toml), else the
shipped oom-fallback preset; each further attempt adds one of lorakit's rungs on top of all before it, ordered from
"the same training, only computed another way" to "a different training": gradient checkpointing, cached latents,
smaller batches with more accumulation (the same images per optimizer step), the 8-bit AdamW, then a lower
resolution. A rung that would change nothing for this config is left out, so every attempt differs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..config.loader import Layer, read_toml, resolve
from ..config.presets import OOM_PRESET, preset_path
from ..config.schema import LorakitConfig
from ..errors import EXIT_DISK_FULL, EXIT_INTERRUPTED, EXIT_NONFINITE, EXIT_OOM, EXIT_STOPPED

# What torch and the GPU libraries print when device memory runs out (exact texts, see tests/batch/test_oom.py):
# the caching allocator's "CUDA/HIP/XPU out of memory. Tried to allocate …", the exception's class name
# (torch.OutOfMemoryError, torch.cuda.OutOfMemoryError, c10::OutOfMemoryError), the CUDA runtime's
# cudaErrorMemoryAllocation ("CUDA error: out of memory", e.g. creating a context), Apple's MPS allocator, and the
# cuBLAS / cuDNN handle allocations that fail first when the card is full.
GPU_OOM_TEXT = re.compile(
    r"\b(?:CUDA|HIP|XPU) out of memory|CUDA error: out of memory|MPS backend out of memory|\bOutOfMemoryError\b"
    r"|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_ALLOC_FAILED"
)
# The host's RAM (c10's CPU allocator): not the GPU's. Lighter GPU settings rarely help there (what fails is
# usually reading a checkpoint into RAM), so it is no OOM retry; `is_host_oom` lets the message say what happened.
HOST_OOM_TEXT = re.compile(r"DefaultCPUAllocator: (?:can't allocate memory|not enough memory)")
# Exit statuses lorakit gives other known causes: their output may still quote an OOM that was handled (a split
# retry that worked, a sample render skipped), so the text is not read for them.
OTHER_CAUSES = {0, EXIT_DISK_FULL, EXIT_STOPPED, EXIT_NONFINITE, EXIT_INTERRUPTED}
SIGKILL = 9
TRACEBACK = "Traceback (most recent call last):"
CHAINED = ("During handling of the above exception, another exception occurred:",
           "The above exception was the direct cause of the following exception:")


def _last_error_text(output_tail: str) -> str:
    """The final (chained) Python traceback in the output, or all of it when there is none: an OOM that an
    earlier step survived (quoted in a warning) must not make a later, different crash look like one."""
    lines = output_tail.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == TRACEBACK]
    if not starts:
        return output_tail
    k = len(starts) - 1
    while k > 0:  # walk back over "During handling of the above exception" links to the chain's first traceback
        between = [line.strip() for line in lines[starts[k - 1]:starts[k]] if line.strip()]
        if not between or between[-1] not in CHAINED:
            break
        k -= 1
    return "\n".join(lines[starts[k]:])


def is_oom(exit_code: int | None, output_tail: str) -> bool:
    """Whether a training child ran out of GPU memory: lorakit's exit status 5, or an OOM text of torch / CUDA /
    ROCm / MPS in its output (the last traceback when there is one). A killed process (137, -9) alone is not:
    see `looks_killed`."""
    if exit_code == EXIT_OOM:
        return True
    if exit_code in OTHER_CAUSES:
        return False
    return bool(GPU_OOM_TEXT.search(_last_error_text(output_tail)))


def is_host_oom(output_tail: str) -> bool:
    """Whether the output says the host ran out of RAM (torch's CPU allocator), for a clearer failure message."""
    return bool(HOST_OOM_TEXT.search(_last_error_text(output_tail)))


def looks_killed(exit_code: int | None) -> bool:
    """Killed by SIGKILL: -9 from subprocess, 137 (128 + 9) from a shell. Often the Linux OOM killer (host RAM,
    see `dmesg`), or a container limit; never a sign of GPU memory, so no OOM retry."""
    return exit_code in (-SIGKILL, 128 + SIGKILL)


@dataclass(frozen=True)
class OomStep:
    """One rung of the retry ladder: a TOML layer (`layer`) and/or `--set` strings, applied on top of all rungs
    before it; `why` says what it saves, for the batch log."""

    name: str
    sets: tuple[str, ...]
    why: str
    layer: Path | None = None


def ladder(config: LorakitConfig, user_layer: Path | None, bnb_available: bool) -> list[OomStep]:
    """The retry ladder for `config` (the run as it failed). `user_layer`: the user's out-of-memory TOML, else the
    shipped preset is rung 1. `bnb_available`: bitsandbytes is installed (the 8-bit AdamW needs it).
    Raises ConfigError naming the layer file when it is unreadable or makes the config invalid."""
    layer_path = user_layer if user_layer is not None else preset_path(OOM_PRESET)
    origin = "your out-of-memory layer" if user_layer is not None else f"the shipped {OOM_PRESET} preset"
    steps = [OomStep("oom-layer", (), f"{origin} ({layer_path.name})", layer_path)]
    cfg = resolve([Layer("config", config.model_dump()), read_toml(layer_path)])  # the run as attempt 1 sees it
    t, d = cfg.train, cfg.data

    if not t.gradient_checkpointing:
        steps.append(OomStep("gradient-checkpointing", ("train.gradient_checkpointing=true",),
                             "recompute activations in the backward pass instead of keeping them (slower)"))
    if not t.cache_latents and not (d.color_aug or d.random_crop):  # those two need fresh latents every use
        steps.append(OomStep("cache-latents", ("train.cache_latents=true",),
                             "encode each image once, so the VAE is not run (and held) during the steps"))
    batch, accumulation = t.train_batch_size, t.gradient_accumulation_steps
    while batch > 1:
        factor = _smallest_prime_factor(batch)  # batch × accumulation stays exactly the same
        batch, accumulation = batch // factor, accumulation * factor
        steps.append(OomStep(f"batch-{batch}", (f"train.train_batch_size={batch}",
                                                f"train.gradient_accumulation_steps={accumulation}"),
                             f"{batch} image(s) per forward pass, {accumulation} accumulated per optimizer step "
                             "(the same images per update)"))
    if t.optimizer_type == "AdamW" and bnb_available:
        steps.append(OomStep("adamw-8bit", ('train.optimizer_type="AdamW8bit"',),
                             "8-bit optimizer state (bitsandbytes): a quarter of AdamW's state memory"))
    for size in lower_sizes(d.max_size, _size_step(cfg)):
        if d.image_size is None:
            sets: tuple[str, ...] = (f"data.resolution={size[0]}",)
        else:
            sets = (f"data.image_size=[{size[0]}, {size[1]}]",)
        steps.append(OomStep(f"size-{size[0]}x{size[1]}", sets,
                             f"train at {size[0]}×{size[1]}: fewer latent pixels per image (a different LoRA: "
                             "less detail)"))
    return steps


def _smallest_prime_factor(n: int) -> int:
    return next(p for p in range(2, n + 1) if n % p == 0)


def _size_step(cfg: LorakitConfig) -> int:
    """Sizes stay multiples of 64 (the UNet halves the 1/8 latent three times) and of the bucket step."""
    return math.lcm(64, cfg.data.bucket_reso_steps)


def lower_sizes(size: tuple[int, int], step: int = 64) -> list[tuple[int, int]]:
    """Each side × 3/4, rounded down to `step`, until the short side would drop below half its start or 256 px:
    1024 → 768 → 576 → 512 (SDXL no lower than half its native size), 512 → 384 → 256, 768 → 576 → 384. The last
    rung lands on that floor when ×3/4 would overshoot it."""
    width, height = size
    floor = max(256, _round_up(min(size) // 2, step))
    sizes = []
    while min(width, height) > floor:
        scale = 3 / 4 if min(width, height) * 3 / 4 >= floor else floor / min(width, height)
        width, height = (max(step, _round_down(round(side * scale), step)) for side in (width, height))
        if min(width, height) < floor:  # rounding down to the step went under: stop at the floor
            width, height = (max(floor, side) for side in (width, height))
        if sizes and sizes[-1] == (width, height):
            break
        sizes.append((width, height))
    return sizes


def _round_down(value: int, step: int) -> int:
    return value // step * step


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def attempt_sets(steps: list[OomStep], attempt: int) -> tuple[list[Path], list[str]]:
    """What retry number `attempt` (1 = the first retry) applies: the layer files of rungs 1…attempt, and their
    `--set` strings (a key set twice keeps its last value). Pass the layers after the run's config files and the
    sets after its own overrides. IndexError past the ladder's end: nothing lighter is left to try."""
    if not 1 <= attempt <= len(steps):
        raise IndexError(f"attempt {attempt}: the out-of-memory ladder has {len(steps)} rungs (1…{len(steps)})")
    layers = [s.layer for s in steps[:attempt] if s.layer is not None]
    latest: dict[str, str] = {}
    for step in steps[:attempt]:
        for item in step.sets:
            key = item.partition("=")[0]
            latest.pop(key, None)  # re-insert: the order shows the rung that set it last
            latest[key] = item
    return layers, list(latest.values())
