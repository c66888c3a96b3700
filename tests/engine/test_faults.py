"""Failures inside a step, made real by `[faults]`: a NaN loss is skipped (the weights never see it) until
train.max_nonfinite_steps in a row stop the run; a real torch.OutOfMemoryError is retried with the batch split
in two, else the run saves a checkpoint and stops, and that checkpoint resumes exactly."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import FaultsSection
from lorakit.data.pipeline import build_dataset
from lorakit.engine.events import Callback, Commands
from lorakit.engine.faults import FaultInjector
from lorakit.engine.loop import DONE, OUT_OF_MEMORY, LoopSettings, LoopState, is_out_of_memory, train_loop
from lorakit.engine.state import checkpoints_of, is_complete, step_of
from lorakit.engine.trainer import make_accelerator
from lorakit.errors import EXIT_NONFINITE, EXIT_OOM, NonFiniteStop, OutOfMemoryStop

LR = 1.5e-3  # distinctive in messages: "learning rate 0.0015"


def config(tmp_path: Path, image_dir: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        f"train.learning_rate={LR}", "network.network_dim=4", "output.save_precision='fp32'", *extra,
    ])


class Warnings(Callback):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_warning(self, message: str) -> None:
        self.lines.append(message)


def batch_images(cfg, step: int) -> list[str]:
    """The image files of the run's `step`-th batch (first epoch), as the run's sampler orders them."""
    dataset = build_dataset(cfg.data, cfg.train.train_batch_size, cfg.train.seed)
    return [str(e.image) for e in list(dataset.sampler.batches(1))[step - 1]]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def steps_logged(run_dir: Path) -> list[int]:
    with open(run_dir / "train" / "log.csv", newline="", encoding="utf-8") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]


# --- NaN/inf ---------------------------------------------------------------------------------------------------


def test_a_nan_step_is_skipped_and_leaves_the_weights_as_they_were(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "train.max_train_steps=5", "output.save_every_n_steps=1",
                 "faults.nan_at_step=3")
    seen = Warnings()
    result = api.train(cfg, [seen])
    assert result.steps == 5 and not result.stopped
    (warning,) = seen.lines
    (image,) = batch_images(cfg, 3)
    assert warning.startswith("step 3: the loss or the gradients are NaN/inf; step skipped") and image in warning
    run_log = (result.run_dir / "train" / "run.log").read_text(encoding="utf-8")
    assert f"warning: {warning}" in run_log
    lora = {n: load_file(result.run_dir / "train" / f"lora-step{n:08d}.safetensors") for n in (2, 3, 4)}
    assert same(lora[2], lora[3])  # the skipped step changed nothing
    assert not same(lora[3], lora[4])  # the next one trains again
    final = load_file(result.lora_path)
    assert all(torch.isfinite(t).all() for t in final.values())
    assert steps_logged(result.run_dir) == [1, 2, 4, 5]  # the skipped step has no loss to log


def test_nan_steps_in_a_row_stop_the_run_with_the_last_good_weights(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "train.max_train_steps=8", "output.save_every_n_steps=1",
                 "faults.nan_at_step=2", "faults.nan_steps=10", "train.max_nonfinite_steps=3",
                 "checkpoint.every_n_steps=1", "checkpoint.keep_last=10")
    with pytest.raises(NonFiniteStop) as exc:
        api.train(cfg)
    message = str(exc.value)
    assert exc.value.exit_code == EXIT_NONFINITE == 6
    (image,) = batch_images(cfg, 4)  # steps 2, 3, 4 were NaN: the third in a row ends the run
    assert "3 steps in a row" in message and "last: step 4" in message
    assert "learning rate 0.0015" in message
    assert image in message and re.search(r"saved a checkpoint\b.* at step 4\b", message)
    (run_dir,) = (tmp_path / "runs").iterdir()
    checkpoints = checkpoints_of(run_dir)
    assert [step_of(p) for p in checkpoints] == [1, 2, 3, 4] and all(is_complete(p) for p in checkpoints)
    adapters = {step_of(p): load_file(p / "adapter.safetensors") for p in checkpoints}
    assert all(same(adapters[1], adapters[n]) for n in (2, 3, 4))  # nothing NaN was ever applied
    assert all(torch.isfinite(t).all() for t in adapters[4].values())
    # the LoRA saved at the stop is the step-1 LoRA
    assert same(load_file(run_dir / "train" / "lora.safetensors"),
                load_file(run_dir / "train" / "lora-step00000001.safetensors"))
    assert "error: 3 steps in a row had a NaN/inf loss" in (run_dir / "train" / "run.log").read_text(encoding="utf-8")


def test_max_nonfinite_steps_0_turns_the_check_off(tmp_path: Path, image_dir: Path) -> None:
    """What 0 means: no check, no skip — the NaN goes into the weights (a ruined LoRA, no warning)."""
    cfg = config(tmp_path, image_dir, "train.max_train_steps=3", "faults.nan_at_step=2",
                 "train.max_nonfinite_steps=0")
    seen = Warnings()
    result = api.train(cfg, [seen])
    assert result.steps == 3 and seen.lines == []
    final = load_file(result.lora_path)
    assert any(torch.isnan(t).any() for t in final.values())


# --- out of GPU memory ---------------------------------------------------------------------------------------


def test_the_injected_error_is_a_real_torch_out_of_memory_error() -> None:
    faults = FaultInjector(FaultsSection(oom_at_step=2, oom_attempts=1))
    faults.forward(1, 1)  # other steps, and the retry, run
    faults.forward(2, 2)
    with pytest.raises(torch.OutOfMemoryError) as exc:
        faults.forward(2, 1)
    assert type(exc.value) is torch.OutOfMemoryError and isinstance(exc.value, RuntimeError)
    assert is_out_of_memory(exc.value)
    with pytest.raises(torch.OutOfMemoryError):
        FaultInjector(FaultsSection(oom_at_step=2, oom_attempts=2)).forward(2, 2)
    heavy_only = FaultsSection(oom_at_step=2, oom_attempts=2, oom_min_batch=2)  # only while the batch is ≥ 2
    FaultInjector(heavy_only, batch_size=1).forward(2, 1)
    with pytest.raises(torch.OutOfMemoryError):
        FaultInjector(heavy_only, batch_size=2).forward(2, 1)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GiB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_out_of_memory_is_retried_with_the_batch_split_in_two(tmp_path: Path, image_dir: Path) -> None:
    steps = ("train.max_train_steps=4", "train.train_batch_size=2", "output.save_every_n_steps=1")
    reference = api.train(config(tmp_path, image_dir, *steps))
    seen = Warnings()
    result = api.train(config(tmp_path, image_dir, *steps, "faults.oom_at_step=2"), [seen])
    assert result.steps == 4 and not result.stopped
    lora = {(who, n): load_file(r.run_dir / "train" / f"lora-step{n:08d}.safetensors")
            for who, r in (("ref", reference), ("oom", result)) for n in (1, 2)}
    assert same(lora["ref", 1], lora["oom", 1])  # the same run until the fault
    assert not same(lora["oom", 1], lora["oom", 2])  # the retried step did update the weights
    (warning,) = seen.lines
    assert warning.startswith("step 2: out of GPU memory (CUDA out of memory. Tried to allocate")
    assert warning.endswith("retrying it with each batch split in two")
    assert steps_logged(result.run_dir) == [1, 2, 3, 4]
    ref, got = load_file(reference.lora_path), load_file(result.lora_path)
    assert ref.keys() == got.keys() and all(torch.isfinite(t).all() for t in got.values())
    # Not bit-identical, and "close" only in a weak sense: the halves draw their noise and timesteps one sample
    # after the other (noise₁ t₁ noise₂ t₂, not noise₁₂ t₁₂), so the retried step trains on other random draws —
    # the same update in expectation, not in value (test_split_retry_is_the_same_update shows it is the same
    # update for the same draws). AdamW moves each weight by about lr per step, so two runs that part at step 2
    # of 4 differ by at most about 2·lr per step left: measured max |difference| 7.3e-3 (lr 1.5e-3), bound 9e-3.
    diff = max((ref[k] - got[k]).abs().max().item() for k in ref)
    assert 0 < diff <= 2 * LR * 3, diff


# The loop alone, on a least-squares task: its loss is exactly the mean over a batch's items, so a split batch
# gives the same gradient up to float rounding; a real out-of-memory error can be raised from inside its forward,
# after the step's random draws, as a real one would be.


class ListSampler:
    def __init__(self, batches: list[list[int]]) -> None:
        self._batches = batches

    def batches(self, epoch: int):
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


class LinearTask:
    def __init__(self, w: torch.nn.Parameter, draw: bool, failures: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(9, 4, generator=g), torch.randn(9, generator=g)
        self.w, self.draw, self.failures = w, draw, failures
        self.sampler = ListSampler([[0, 1, 2], [3, 4, 5], [6, 7, 8]])  # step 2's batch splits into [3, 4] + [5]

    def loss(self, batch: list[int], gen: torch.Generator) -> torch.Tensor:
        x, y = self.x[batch], self.y[batch]
        if self.draw:  # the loss generator's draws and torch's own (dropout), as the diffusion loss makes
            y = y + torch.randn(len(batch), generator=gen) + torch.randn(len(batch))
        if 3 in batch and self.failures:  # step 2's forward runs out of memory after its draws
            self.failures -= 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return ((x @ self.w - y) ** 2).mean()

    def train(self, on: bool) -> None:
        pass

    def freeze_text_encoders(self) -> None:
        pass


@dataclass
class LoopRun:
    weights: torch.Tensor
    warnings: list[str]
    state: LoopState
    ended: str
    gen_state: torch.Tensor  # the loss generator's state after the loop
    torch_state: torch.Tensor  # torch's global generator's


def run_loop(accelerator, steps: int = 3, draw: bool = False, failures: int = 0,
             faults: FaultsSection | None = None) -> LoopRun:
    w = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([w], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    seen = Warnings()
    state, ended = train_loop(LinearTask(w, draw, failures), optimizer, scheduler, accelerator,
                              LoopSettings(total_steps=steps), gen, seen, Commands(), lambda *a: None, None,
                              FaultInjector(faults))
    return LoopRun(w.detach().clone(), seen.lines, state, ended, gen.get_state(), torch.get_rng_state())


@pytest.fixture
def accelerator(tmp_path: Path, image_dir: Path):
    return make_accelerator(config(tmp_path, image_dir))


def test_split_retry_is_the_same_update(accelerator) -> None:
    """Batches of 3 split into 2 + 1 items weighted 2/3 and 1/3: the update of the whole batch."""
    plain = run_loop(accelerator)
    retried = run_loop(accelerator, faults=FaultsSection(oom_at_step=2))
    assert retried.ended == DONE and retried.state.step == 3
    assert len(retried.warnings) == 1 and retried.warnings[0].startswith("step 2: out of GPU memory")
    assert not torch.equal(plain.weights, torch.zeros(4))
    # measured: equal; allclose, as the weighted halves' sum may round differently from the whole batch's mean
    assert torch.allclose(plain.weights, retried.weights, rtol=0, atol=1e-6)


def test_a_step_that_fails_is_undone(accelerator) -> None:
    """Out of memory in the forward pass, and again in the split retry: the loop ends without the step; its data
    position and its random draws are as before it (so its checkpoint continues as if it never began)."""
    one_step = run_loop(accelerator, steps=1, draw=True)
    failed = run_loop(accelerator, draw=True, failures=2)
    assert failed.ended == OUT_OF_MEMORY and failed.state.step == 1 and len(failed.warnings) == 1
    assert failed.state.problem == "step 2: out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)"
    assert (failed.state.position.epoch, failed.state.position.batch) == (1, 1)
    assert torch.equal(failed.weights, one_step.weights)  # no update from the failed step
    assert torch.equal(failed.gen_state, one_step.gen_state) and torch.equal(failed.torch_state, one_step.torch_state)


def test_a_retried_step_draws_from_where_the_step_began(accelerator) -> None:
    plain = run_loop(accelerator, draw=True)
    retried = run_loop(accelerator, draw=True, failures=1)
    assert retried.ended == DONE and len(retried.warnings) == 1
    # the split draws the same numbers in the same order here (2 + 1 scalars), so a retry that starts from the
    # step's random state is the same run
    assert torch.equal(retried.gen_state, plain.gen_state) and torch.equal(retried.torch_state, plain.torch_state)
    assert torch.allclose(plain.weights, retried.weights, rtol=0, atol=1e-6)


def test_out_of_memory_twice_stops_with_a_checkpoint_that_resumes_exactly(tmp_path: Path, image_dir: Path) -> None:
    steps = ("train.max_train_steps=5", "train.train_batch_size=2")
    reference = api.train(config(tmp_path, image_dir, *steps))
    seen = Warnings()
    with pytest.raises(OutOfMemoryStop) as exc:
        api.train(config(tmp_path, image_dir, *steps, "output.run_id='oom'", "faults.oom_at_step=3",
                         "faults.oom_attempts=2"), [seen])
    assert exc.value.exit_code == EXIT_OOM == 5
    assert str(exc.value).startswith("step 3: out of GPU memory (CUDA out of memory.")
    assert re.search(r"saved a checkpoint\b.* at step 2\b", str(exc.value))
    assert len(seen.lines) == 1 and seen.lines[0].startswith("step 3:")  # the retry was tried, once
    run_dir = tmp_path / "runs" / "oom"
    assert [step_of(p) for p in checkpoints_of(run_dir)] == [2]
    assert steps_logged(run_dir) == [1, 2]
    # faults.* is a safe change: the same config without the fault continues the run
    checkpoint = api.find_checkpoint(run_dir)
    resumed = api.train(config(tmp_path, image_dir, *steps, "output.run_id='oom'"), resume=checkpoint)
    assert resumed.run_dir == run_dir and resumed.steps == 5
    assert steps_logged(run_dir) == [1, 2, 3, 4, 5]
    assert same(load_file(reference.lora_path), load_file(resumed.lora_path))


def test_a_real_out_of_memory_mid_forward_resumes_exactly_without_cached_latents(
        tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a real one: raised inside the UNet, after the step's latents and noise were drawn (with cached latents
    the same test gives a bit-identical LoRA)."""
    from diffusers import UNet2DConditionModel

    steps = ("train.max_train_steps=5", "train.train_batch_size=2", "train.cache_latents=false")
    reference = api.train(config(tmp_path, image_dir, *steps))
    real, calls = UNet2DConditionModel.forward, iter(range(1, 100))

    def forward(self, *args, **kwargs):
        if next(calls) in (3, 4):  # step 3 and its split retry (one UNet call per batch or piece)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", forward)
    with pytest.raises(OutOfMemoryStop, match="^step 3: out of GPU memory"):
        api.train(config(tmp_path, image_dir, *steps, "output.run_id='oom'"))
    monkeypatch.undo()
    run_dir = tmp_path / "runs" / "oom"
    resumed = api.train(config(tmp_path, image_dir, *steps, "output.run_id='oom'"),
                        resume=api.find_checkpoint(run_dir))
    assert resumed.steps == 5
    assert same(load_file(reference.lora_path), load_file(resumed.lora_path))


def test_out_of_memory_with_one_image_per_batch_stops_at_once(tmp_path: Path, image_dir: Path) -> None:
    seen = Warnings()
    with pytest.raises(OutOfMemoryStop) as exc:
        api.train(config(tmp_path, image_dir, "train.max_train_steps=4", "faults.oom_at_step=2"), [seen])
    assert str(exc.value).startswith("step 2: out of GPU memory")
    assert re.search(r"saved a checkpoint\b.* at step 1\b", str(exc.value))
    assert seen.lines == []  # nothing to split: no retry
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert [step_of(p) for p in checkpoints_of(run_dir)] == [1]
    assert (run_dir / "train" / "lora.safetensors").is_file()


def test_out_of_memory_in_the_first_step_does_not_claim_a_checkpoint(tmp_path: Path, image_dir: Path) -> None:
    with pytest.raises(OutOfMemoryStop) as exc:
        api.train(config(tmp_path, image_dir, "train.max_train_steps=4", "faults.oom_at_step=1"))
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert checkpoints_of(run_dir) == []  # nothing was trained, so nothing was saved …
    assert "saved a checkpoint" not in str(exc.value)  # … and the message must not say otherwise
    assert "--resume" not in str(exc.value)


# --- the CLI's exit statuses -----------------------------------------------------------------------------------


def write_toml(tmp_path: Path, image_dir: Path, faults: str) -> Path:
    path = tmp_path / "faults.toml"
    path.write_text(f"""
[data]
train_data_dir = "{image_dir}"
resolution = 64
[train]
max_train_steps = 4
learning_rate = {LR}
max_nonfinite_steps = 2
[network]
network_dim = 4
[output]
output_dir = "{tmp_path / 'runs'}"
[faults]
{faults}
""", encoding="utf-8")
    return path


@pytest.mark.parametrize("faults,status,words", [
    ("nan_at_step = 2\nnan_steps = 5", 6, "2 steps in a row had a NaN/inf loss or gradients (last: step 3"),
    ("oom_at_step = 2", 5, "step 2: out of GPU memory"),
])
def test_cli_exit_status(cli, tmp_path: Path, image_dir: Path, faults: str, status: int, words: str) -> None:
    code, out = cli("train", "--config", write_toml(tmp_path, image_dir, faults))
    assert code == status, out
    assert words in " ".join(out.split())
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"--resume {run_dir}" in " ".join(out.split())
    assert checkpoints_of(run_dir)


def test_out_of_memory_in_the_optimizer_step_exits_5_keeping_the_last_checkpoint(tmp_path: Path, image_dir: Path,
                                                                                  monkeypatch) -> None:
    """An OOM after backward (the optimizer step) may leave the weights half-updated: no checkpoint of that state,
    exit 5 naming the last good one (written at step 2)."""
    from lorakit.config.loader import load_config
    from lorakit.errors import OutOfMemoryStop

    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"',
                            "data.resolution=64", "train.max_train_steps=5", "network.network_dim=2",
                            "checkpoint.every_n_steps=2"])
    with pytest.raises(OutOfMemoryStop) as info:
        api.train(cfg)
    (run,) = (tmp_path / "runs").iterdir()
    assert info.value.exit_code == 5
    assert "after step 2 outside the forward pass" in str(info.value)
    assert str(run / "checkpoints" / "step-00000002") in str(info.value)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]


# --- the NaN guard without a per-step host sync (fused optimizers) -----------------------------------------------


def test_a_fused_optimizer_skips_nan_steps_on_the_device_exactly_as_the_synchronous_guard(
        tmp_path: Path, image_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AdamW fused (as lorakit builds it on CUDA; torch has the fused kernel on the CPU too) takes `found_inf` and
    skips the update inside its kernel, step count included (torch.optim.adamw._fused_adamw, the gradient scaler's
    mechanism): the weights equal the guard that reads a flag each step and skips the call."""
    from lorakit.engine import loop

    sets = ("train.max_train_steps=6", "faults.nan_at_step=2", "faults.nan_steps=2", "train.log_every_n_steps=3",
            "train.optimizer_args=['fused=True']", "train.max_nonfinite_steps=3")
    seen = Warnings()
    on_device = api.train(config(tmp_path / "device", image_dir, *sets), [seen])
    assert seen.lines == ["steps 1–3: 2 step(s) had a NaN/inf loss or gradients and were skipped, weights unchanged "
                          "(2 in a row now; the run stops at 3)"]
    assert steps_logged(on_device.run_dir) == [3, 6]  # the loss read back on logging steps only
    monkeypatch.setattr(loop, "skips_on_device", lambda optimizer: False)
    synchronous = api.train(config(tmp_path / "sync", image_dir, *sets))
    a, b = load_file(on_device.lora_path), load_file(synchronous.lora_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_steps_in_a_row_stop_a_fused_run_at_the_next_logging_step(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "train.max_train_steps=9", "faults.nan_at_step=2", "faults.nan_steps=10",
                 "train.log_every_n_steps=2", "train.optimizer_args=['fused=True']", "train.max_nonfinite_steps=3")
    # steps 2, 3, 4 are NaN: 3 in a row once step 4 is done, read at step 4's logging; the run saves and stops there
    with pytest.raises(NonFiniteStop, match=r"3 steps in a row had a NaN/inf loss or gradients \(last: step 4,.*"
                                            r"saved a checkpoint and the LoRA at step 4"):
        api.train(cfg)
