"""Schedules as sd-scripts' `get_scheduler_fix` (library/train_util.py) builds them, against their formulas, and
their state surviving a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from lorakit.config.schema import TrainSection
from lorakit.engine.optim import build_optimizer
from lorakit.engine.schedule import build_scheduler, scheduler_for
from lorakit.errors import ConfigError


def sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def rates(scheduler, steps: int) -> list[float]:
    """The rate of each of the first `steps` steps (as the loop logs it), stepping without gradients."""
    out = []
    for _ in range(steps):
        out.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_polynomial_with_power_2() -> None:
    # diffusers' get_polynomial_decay_schedule_with_warmup (lr_end 1e-7), which get_scheduler_fix calls with
    # power=args.lr_scheduler_power: warm-up s/w, then (lr0 − lr_end)·(1 − (s − w)/(T − w))^power + lr_end
    lr0, lr_end, w, total = 1.0, 1e-7, 2, 10
    want = [s / w if s < w else (lr0 - lr_end) * (1 - (s - w) / (total - w)) ** 2 + lr_end for s in range(total)]
    train = TrainSection(lr_scheduler="polynomial", lr_scheduler_power=2.0)
    assert rates(scheduler_for(train, sgd(lr0), w, total), total) == pytest.approx(want, rel=1e-9)


def test_cosine_keeps_its_half_wave_and_restarts_take_the_cycles() -> None:
    # get_scheduler_fix passes num_cycles only to cosine_with_restarts; cosine keeps diffusers' 0.5 (half a wave)
    total = 10
    cosine = rates(build_scheduler("cosine", sgd(), 0, total, 3), total)
    assert cosine == pytest.approx([0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    restarts = rates(build_scheduler("cosine_with_restarts", sgd(), 0, total, 2), total)
    # hard restarts: 0.5·(1 + cos(π·((cycles·progress) mod 1)))
    assert restarts == pytest.approx([0.5 * (1 + math.cos(math.pi * ((2 * s / total) % 1.0))) for s in range(total)])


def test_scheduler_class_by_name_gets_only_its_arguments() -> None:
    # CosineAnnealingLR: eta_min + (lr0 − eta_min)·(1 + cos(π·t/T_max))/2
    lr0, t_max, eta_min = 0.1, 4, 0.01
    train = TrainSection(lr_scheduler_type="CosineAnnealingLR", lr_scheduler_args=[f"T_max={t_max}",
                                                                                  f"eta_min={eta_min}"])
    want = [eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2 for t in range(5)]
    assert rates(scheduler_for(train, sgd(lr0), 0, 1000), 5) == pytest.approx(want)
    dotted = TrainSection(lr_scheduler_type="torch.optim.lr_scheduler.StepLR", lr_scheduler_args=["step_size=2",
                                                                                                  "gamma=0.5"])
    assert rates(scheduler_for(dotted, sgd(1.0), 0, 1000), 5) == pytest.approx([1, 1, 0.5, 0.5, 0.25])


def test_no_warm_up_with_a_scheduler_class_or_adafactor() -> None:
    train = TrainSection(lr_scheduler_type="CosineAnnealingLR", lr_scheduler_args=["T_max=4"])
    with pytest.raises(ConfigError, match="train.lr_warmup_steps: 3 warm-up steps, but train.lr_scheduler_type"):
        scheduler_for(train, sgd(), 3, 10)


def adafactor_relative(p: torch.nn.Parameter) -> torch.optim.Optimizer:
    return build_optimizer("Adafactor", [{"params": [p], "lr": 1e-4}], 1e-4,
                           ["relative_step=True", "scale_parameter=True"])


def test_adafactor_schedule_reports_the_relative_step() -> None:
    # transformers' AdafactorSchedule: initial_lr (sd-scripts: learning_rate) before the first step, then the
    # step size Adafactor used: min(1e-2, 1/√t)·max(1e-3, RMS(p before the step))
    p = torch.nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, -0.25]]))
    opt = adafactor_relative(p)
    train = TrainSection(optimizer_type="Adafactor", lr_scheduler="adafactor", learning_rate=3e-4)
    scheduler = scheduler_for(train, opt, 0, 10)
    assert scheduler.get_last_lr() == [3e-4]
    for _ in range(2):
        rms = p.detach().pow(2).mean().sqrt().item()
        p.grad = torch.tensor([[0.1, -0.2], [-0.3, 0.4]])
        opt.step()
        scheduler.step()
        assert scheduler.get_last_lr() == pytest.approx([1e-2 * max(1e-3, rms)])


def test_adafactor_schedule_needs_relative_adafactor() -> None:
    with pytest.raises(ConfigError, match="'adafactor' needs optimizer_type = 'Adafactor' with 'relative_step=True'"):
        build_scheduler("adafactor", sgd(), 0, 10, 1)


def test_states_round_trip() -> None:
    """A schedule restored from state_dict() (what a checkpoint keeps) goes on exactly as the original."""
    def torch_class(opt):
        return scheduler_for(TrainSection(lr_scheduler_type="CosineAnnealingLR", lr_scheduler_args=["T_max=6"]),
                             opt, 0, 10)

    def adafactor(opt):
        return scheduler_for(TrainSection(lr_scheduler="adafactor"), opt, 0, 10)

    def polynomial(opt):
        return scheduler_for(TrainSection(lr_scheduler="polynomial", lr_scheduler_power=2.0), opt, 2, 10)

    for make, make_opt in ((torch_class, None), (adafactor, adafactor_relative), (polynomial, None)):
        def fresh():
            p = torch.nn.Parameter(torch.tensor([[0.5, -1.0], [2.0, -0.25]]))
            opt = make_opt(p) if make_opt else torch.optim.SGD([p], lr=0.1)
            return p, opt, make(opt)

        def advance(p, opt, sched, n):
            lrs = []
            for _ in range(n):
                p.grad = torch.tensor([[0.1, -0.2], [-0.3, 0.4]])
                opt.step()
                sched.step()
                lrs.append(sched.get_last_lr()[0])
            return lrs

        p, opt, sched = fresh()
        advance(p, opt, sched, 3)
        saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
        p2, opt2, sched2 = fresh()
        with torch.no_grad():
            p2.copy_(p)
        opt2.load_state_dict(saved_opt)
        sched2.load_state_dict(saved_sched)
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert advance(p2, opt2, sched2, 3) == advance(p, opt, sched, 3), make.__name__


def test_tiny_run_with_a_scheduler_class(tmp_path, image_dir) -> None:
    import csv

    from lorakit import api
    from lorakit.config.loader import load_config

    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"',
                            "data.resolution=64", "network.network_dim=2", "train.max_train_steps=2",
                            "train.learning_rate=1e-3", "train.lr_scheduler_type='StepLR'",
                            "train.lr_scheduler_args=['step_size=1', 'gamma=0.5']", "train.log_every_n_steps=1"])
    result = api.train(cfg)
    assert result.steps == 2
    rows = list(csv.DictReader(open(result.run_dir / "train" / "log.csv")))
    # StepLR(step_size=1, gamma=0.5): lr0·0.5^t at step t + 1
    assert [float(r["lr"]) for r in rows if r["loss"]] == pytest.approx([1e-3, 5e-4])
