"""The bench plan: samplers by ComfyUI's and A1111's names, onto the diffusers schedulers diffusers' own table
gives for them (docs: api/schedulers/overview), and the images a plan renders."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.bench.plan import BenchPlan, diffusers_scheduler, sampler_of
from lorakit.errors import ConfigError

SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "prediction_type": "epsilon"}


@pytest.mark.parametrize("name, expected", [
    ("Euler", ("euler", "normal")), ("Euler a", ("euler_ancestral", "normal")),
    ("DPM++ 2M Karras", ("dpmpp_2m", "karras")), ("DDIM", ("ddim", "normal")), ("dpmpp_2m", ("dpmpp_2m", "normal")),
])
def test_a1111_and_comfyui_names(name: str, expected: tuple[str, str]) -> None:
    assert sampler_of(name) == expected


@pytest.mark.parametrize("sampler, schedule, cls, attrs", [
    ("euler", "normal", "EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    ("euler_ancestral", "normal", "EulerAncestralDiscreteScheduler", {}),
    ("dpmpp_2m", "karras", "DPMSolverMultistepScheduler",
     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("ddim", "normal", "DDIMScheduler", {}),
])
def test_samplers_are_the_diffusers_schedulers_of_the_same_method(sampler, schedule, cls, attrs) -> None:
    s = diffusers_scheduler(sampler, schedule, SD_SCHEDULER)
    assert type(s).__name__ == cls
    assert s.config.beta_schedule == "scaled_linear" and s.config.prediction_type == "epsilon"  # the model's betas
    assert {k: s.config[k] for k in attrs} == attrs


def test_unknown_sampler_and_ddim_karras_are_refused() -> None:
    with pytest.raises(ConfigError, match="'heun' is not one lorakit renders with; use one of ddim, dpmpp_2m"):
        sampler_of("heun")
    with pytest.raises(ConfigError, match="ddim with the karras schedule"):
        diffusers_scheduler("ddim", "karras", SD_SCHEDULER)


def test_images_cover_prompts_seeds_weights_and_the_plan_round_trips(tmp_path: Path) -> None:
    plan = BenchPlan(prompts=["a", "b"], seeds=[1, 2], weights=[0.0, 1.0], sampler="Euler a")
    assert plan.images() == [(0, 1, 0.0), (0, 1, 1.0), (0, 2, 0.0), (0, 2, 1.0),
                             (1, 1, 0.0), (1, 1, 1.0), (1, 2, 0.0), (1, 2, 1.0)]
    (tmp_path / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    again = BenchPlan.read(tmp_path / "plan.json")
    assert again == plan and again.sampler == "euler_ancestral"


def test_bad_plans_name_every_problem() -> None:
    with pytest.raises(ConfigError) as exc:
        BenchPlan(prompts=[], seeds=[1], weights=[0.5, 0.5], width=500, height=512)
    assert exc.value.problems == ["bench plan: prompts is empty", "bench plan: weights repeat a value: [0.5, 0.5]",
                                  "bench plan: steps ≥ 1 and a size in multiples of 8 (got 20, 500×512)"]
