"""Every optimizer name: the class and arguments sd-scripts' `get_optimizer` (library/train_util.py) uses, checked by
one step on a fixed parameter against the update formula, or against the reference package's class for the
adaptive ones."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from lorakit.engine.optim import build_optimizer

P0 = torch.tensor([0.5, -1.0, 2.0, -0.25])
G = torch.tensor([0.1, -0.2, -0.3, 0.4])
EPS = 1e-8
bnb = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")


def one_step(name: str, lr: float, args: list[str] = (), p0: torch.Tensor = P0, g: torch.Tensor = G,
             steps: int = 1) -> torch.Tensor:
    """The parameter after `steps` steps of lorakit's optimizer `name` with the gradient `g` each time."""
    p = torch.nn.Parameter(p0.clone())
    opt = build_optimizer(name, [{"params": [p], "lr": lr}], lr, list(args))
    for _ in range(steps):
        p.grad = g.clone()
        opt.step()
    return p.detach()


def reference_steps(cls, steps: int = 3, **kwargs) -> torch.Tensor:
    """The same run with the reference class, built as sd-scripts builds it: cls(params, lr=lr, **kwargs)."""
    p = torch.nn.Parameter(P0.clone())
    opt = cls([{"params": [p], "lr": kwargs["lr"]}], **kwargs)
    for _ in range(steps):
        p.grad = G.clone()
        opt.step()
    return p.detach()


def adam_first_step(lr: float, wd: float) -> torch.Tensor:
    # AdamW, step 1: m̂ = g, v̂ = g² (bias-corrected); decoupled decay p·(1 − lr·wd)
    return P0 * (1 - lr * wd) - lr * G / (G.abs() + EPS)


@pytest.mark.parametrize("name", ["AdamW", pytest.param("AdamW8bit", marks=bnb),
                                  pytest.param("PagedAdamW8bit", marks=bnb)])
def test_adamw_family_first_step(name: str) -> None:
    # bitsandbytes keeps 32-bit state for tensors under min_8bit_size (4096): the exact Adam formula
    # (torch's weight_decay default 0.01, bitsandbytes' too)
    torch.testing.assert_close(one_step(name, 1e-3), adam_first_step(1e-3, 0.01))
    torch.testing.assert_close(one_step(name, 1e-3, ["weight_decay=0.1"]), adam_first_step(1e-3, 0.1))


@bnb
def test_adamw8bit_quantised_state_stays_close_to_adam() -> None:
    p0, g = torch.linspace(-1, 1, 4096), torch.linspace(0.5, -0.5, 4096) + 1e-3
    got = one_step("AdamW8bit", 1e-3, [], p0, g)
    want = p0 * (1 - 1e-3 * 0.01) - 1e-3 * g / (g.abs() + EPS)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # an update of 1e-3, within 10 %


@pytest.mark.parametrize("name", ["Lion", pytest.param("Lion8bit", marks=bnb),
                                  pytest.param("PagedLion8bit", marks=bnb)])
def test_lion_first_step(name: str) -> None:
    # Lion (Chen et al. 2023): c = β1·m + (1 − β1)·g with m = 0 → update sign(g); decay p·(1 − lr·wd)
    lr, wd = 1e-4, 0.1
    torch.testing.assert_close(one_step(name, lr, [f"weight_decay={wd}"]), P0 * (1 - lr * wd) - lr * G.sign())


def test_sgd_nesterov_gets_momentum_0_9_and_nesterov() -> None:
    # sd-scripts: torch SGD(nesterov=True), momentum 0.9 unless given. Step 1: buf = g, update g + μ·buf
    lr = 0.1
    torch.testing.assert_close(one_step("SGDNesterov", lr), P0 - lr * (1 + 0.9) * G)
    torch.testing.assert_close(one_step("SGDNesterov", lr, ["momentum=0.5"]), P0 - lr * (1 + 0.5) * G)
    # step 2: buf = μ·buf + g = 1.9 g, update g + μ·buf = (1 + 0.9·1.9) g, after step 1's 1.9 g
    torch.testing.assert_close(one_step("SGDNesterov", lr, steps=2), P0 - lr * (1.9 + 1 + 0.9 * 1.9) * G)


@bnb
def test_sgd_nesterov_8bit_is_heavy_ball_momentum_as_in_sd_scripts() -> None:
    # sd-scripts passes nesterov=True to bitsandbytes' SGD8bit, whose kernel ignores it: buf = μ·buf + g (buf₁ = g),
    # p −= lr·buf. Three steps: buf = g, 1.9 g, 2.71 g
    lr = 0.1
    torch.testing.assert_close(one_step("SGDNesterov8bit", lr, steps=3), P0 - lr * (1 + 1.9 + 2.71) * G)


@pytest.mark.parametrize("name", ["Prodigy", "DAdaptAdam"])
def test_adam_like_learning_rate_free_first_step(name: str) -> None:
    # Prodigy (Mishchenko & Defazio 2023, Alg. 1 as prodigyopt) and D-Adapt Adam (Defazio & Mishchenko 2023), step
    # 1: d = d0 = 1e-6 (the estimate's numerator is 0), m = d·(1 − β1)·g, v = d²·(1 − β2)·g²,
    # p −= d·lr·m / (√v + d·eps)  →  d0·lr·(1 − β1)·g / (√(1 − β2)·|g| + eps)  (no bias correction by default)
    lr, d0 = 1.0, 1e-6
    want = P0 - d0 * lr * 0.1 * G / (math.sqrt(1 - 0.999) * G.abs() + EPS)
    torch.testing.assert_close(one_step(name, lr), want)


@pytest.mark.parametrize(("name", "module", "cls", "args"), [
    ("Prodigy", "prodigyopt", "Prodigy", {"decouple": True, "use_bias_correction": True, "weight_decay": 0.01}),
    ("DAdaptation", "dadaptation.experimental", "DAdaptAdamPreprint", {}),  # sd-scripts' class for 'DAdaptation'
    ("DAdaptAdam", "dadaptation", "DAdaptAdam", {"decouple": True}),
    ("DAdaptAdaGrad", "dadaptation", "DAdaptAdaGrad", {}),
    ("DAdaptLion", "dadaptation", "DAdaptLion", {}),
    ("DAdaptSGD", "dadaptation", "DAdaptSGD", {"momentum": 0.9}),
])
def test_learning_rate_free_optimizers_match_the_packages_sd_scripts_imports(name, module, cls, args) -> None:
    ref = getattr(importlib.import_module(module), cls)
    want = reference_steps(ref, lr=1.0, **args)
    got = one_step(name, 1.0, [f"{k}={v!r}" for k, v in args.items()], steps=3)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(got, P0)


def test_adafactor_fixed_lr_is_lorakits_default() -> None:
    # transformers' Adafactor, relative_step=False, scale_parameter=False: on a vector at step 1, β2ₜ = 1 − 1^−0.8 = 0,
    # v = g² + 1e-30, update g/√v = sign(g), RMS 1 so no clipping; p −= lr·sign(g)
    torch.testing.assert_close(one_step("Adafactor", 1e-3), P0 - 1e-3 * G.sign())


def test_adafactor_relative_step_ignores_the_learning_rate() -> None:
    # sd-scripts' default: relative_step=True (lr=None), scale_parameter=True: step size
    # min(1e-2, 1/√t) · max(eps₂ = 1e-3, RMS(p)), the RMS of the parameter before the step
    rms = P0.pow(2).mean().sqrt()
    want = P0 - 1e-2 * max(1e-3, rms.item()) * G.sign()
    args = ["relative_step=True", "scale_parameter=True"]
    torch.testing.assert_close(one_step("Adafactor", 5.0, args), want)
    torch.testing.assert_close(one_step("Adafactor", 1e-4, args), want)


def test_groups_keep_their_rates_and_are_not_changed() -> None:
    a, b = torch.nn.Parameter(P0.clone()), torch.nn.Parameter(P0.clone())
    groups = [{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}]
    opt = build_optimizer("SGDNesterov", groups, 0.1, [])
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)
    opt = build_optimizer("Adafactor", groups, 0.1, ["relative_step=True"])
    assert [g["lr"] for g in opt.param_groups] == [None, None]  # as sd-scripts: the group rates are dropped
    assert [g["lr"] for g in groups] == [0.1, 0.2]  # the caller's groups stay as they were


def test_tiny_run_with_prodigy(tmp_path, image_dir) -> None:
    from safetensors.torch import load_file

    from lorakit import api
    from lorakit.config.loader import load_config

    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"',
                            "data.resolution=64", "network.network_dim=2", "train.max_train_steps=2",
                            "train.optimizer_type='Prodigy'", "train.learning_rate=1.0",
                            "train.optimizer_args=['decouple=True', 'use_bias_correction=True', 'd_coef=2']"])
    result = api.train(cfg)
    assert result.steps == 2
    ups = [v for k, v in load_file(result.lora_path).items() if k.endswith("lora_up.weight")]
    assert ups and all(torch.isfinite(v).all() for v in ups) and any(v.abs().sum() > 0 for v in ups)
