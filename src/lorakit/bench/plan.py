"""A bench plan: prompts × seeds × weights and how each image is rendered, as plain data saved with the results.

Samplers are named as ComfyUI's KSampler names them (`euler`, `euler_ancestral`, `dpmpp_2m`, `ddim`, with the
`karras` scheduler), and A1111's names ("Euler a", "DPM++ 2M Karras", …) are accepted for them. Each maps onto the
diffusers scheduler that implements the same method (diffusers' own table of A1111/k-diffusion equivalents:
https://huggingface.co/docs/diffusers/api/schedulers/overview).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

# ComfyUI sampler name → (diffusers scheduler class, its arguments)
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "ddim": ("DDIMScheduler", {}),
}
BACKENDS = ("builtin", "comfyui")
SCHEDULES = ("normal", "karras")  # ComfyUI's scheduler input; karras = Karras et al. sigmas
A1111_NAMES = {  # A1111/Forge's sampler menu → (ComfyUI sampler, schedule)
    "euler": ("euler", "normal"), "euler a": ("euler_ancestral", "normal"), "dpm++ 2m": ("dpmpp_2m", "normal"),
    "dpm++ 2m karras": ("dpmpp_2m", "karras"), "ddim": ("ddim", "normal"),
}


def sampler_of(name: str, schedule: str = "normal") -> tuple[str, str]:
    """(ComfyUI sampler, schedule) for a ComfyUI or A1111 name; ConfigError naming the ones known."""
    key = name.strip().lower()
    if key in SAMPLERS:
        if schedule not in SCHEDULES:
            raise ConfigError([f"scheduler {schedule!r}: use one of {', '.join(SCHEDULES)}"])
        return key, schedule
    if key in A1111_NAMES:
        return A1111_NAMES[key]
    known = sorted(SAMPLERS) + sorted(n for n in A1111_NAMES if n not in SAMPLERS)
    raise ConfigError([f"sampler {name!r} is not one lorakit renders with; use one of {', '.join(known)}"])


def diffusers_scheduler(sampler: str, schedule: str, base_config: dict[str, Any]) -> Any:
    """The diffusers scheduler for a ComfyUI sampler and schedule, from the model's own scheduler config (its
    betas and prediction type)."""
    import diffusers

    class_name, kwargs = SAMPLERS[sampler]
    cls = getattr(diffusers, class_name)
    if schedule == "karras":
        if class_name == "DDIMScheduler":
            raise ConfigError(["ddim with the karras schedule: DDIM steps on its own timesteps; use 'normal'"])
        kwargs = {**kwargs, "use_karras_sigmas": True}
    return cls.from_config(base_config, **kwargs)


@dataclass
class BenchPlan:
    """Everything that decides the bench's images; `images()` lists them in render order."""

    prompts: list[str]
    seeds: list[int]
    weights: list[float]
    sampler: str = "euler"
    schedule: str = "normal"
    steps: int = 20
    cfg: float = 7.0
    width: int | None = None  # None: the model's resolution
    height: int | None = None
    negative_prompt: str = ""
    lora: str = ""
    model: str = ""  # builtin: the base model lorakit loads; comfyui: the workflow's checkpoint name
    batch_size: int = 1  # images per (prompt, seed, weight), from consecutive noise of the one seed
    backend: str = "builtin"  # builtin (diffusers in this process) | comfyui (a running ComfyUI)
    workflow: str = ""  # comfyui: the API-format workflow file the images were rendered with
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError([f"bench backend {self.backend!r}: use one of {', '.join(BACKENDS)}"])
        if self.backend == "builtin":  # ComfyUI renders with any of its own samplers; lorakit maps these
            self.sampler, self.schedule = sampler_of(self.sampler, self.schedule)
        elif self.sampler.strip().lower() in set(A1111_NAMES) - set(SAMPLERS):  # ComfyUI knows its own names only
            self.sampler, self.schedule = A1111_NAMES[self.sampler.strip().lower()]
        problems = [f"{name} is empty" for name in ("prompts", "seeds", "weights") if not getattr(self, name)]
        if not 1 <= self.batch_size <= 64:
            problems.append(f"batch_size {self.batch_size}: 1 to 64")
        if len(set(self.weights)) != len(self.weights):
            problems.append(f"weights repeat a value: {self.weights}")
        if self.steps < 1 or any(side is not None and (side < 8 or side % 8) for side in (self.width, self.height)):
            problems.append(f"steps ≥ 1 and a size in multiples of 8 (got {self.steps}, {self.width}×{self.height})")
        if problems:
            raise ConfigError([f"bench plan: {p}" for p in problems])

    def images(self) -> list[tuple[int, int, float]]:
        """(prompt index, seed, weight) of every image: for each prompt and seed, every weight (the base model,
        weight 0, renders from the same seed as the others)."""
        return [(p, s, w) for p in range(len(self.prompts)) for s in self.seeds for w in self.weights]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def read(cls, path: Path) -> "BenchPlan":
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError([f"{path}: not a bench plan ({exc})"]) from None
