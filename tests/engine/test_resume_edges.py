"""Edge cases of stopping and resuming (docs/stopping-and-resuming.md), each one a past bug: a run on a relative data
folder resumed without --config; fp16's gradient scaler on a skipped NaN step; a Difference resume whose earlier
pass changed length; a stop before the first step; a resume with nothing left; a prune killed mid-delete; the
samples' contact sheet set aside on a resume.

Tiny SD1 model on the CPU in fp32, 64 px, 3 square images, batch 1 (3 steps an epoch), at most 8 steps a run.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config, resolve_layers
from lorakit.config.schema import FaultsSection
from lorakit.engine import state as state_module
from lorakit.engine.events import Callback, Commands, StepEvent
from lorakit.engine.faults import FaultInjector
from lorakit.engine.loop import DONE, LoopSettings, train_loop
from lorakit.engine.state import CHECKPOINTS, checkpoints_of, is_complete, step_of
from lorakit.errors import LorakitError
from engine.helpers import assert_same_lora, stop_at

TEMP = re.compile(r"^\.step-(\d{8})\..+\.tmp$")


# --- helpers ------------------------------------------------------------------------------------------------------

def config(data: Path | str, out: Path | str, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{data}"', f'output.output_dir="{out}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=4", "network.network_dim=4",
        "output.save_precision='fp32'", *extra,
    ])


def ck(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def logged_steps(path: Path) -> list[int]:
    return [int(r[0]) for r in csv_rows(path)[1:] if r and r[2]]


def run_log(run_dir: Path) -> str:
    return (run_dir / "train" / "run.log").read_text(encoding="utf-8")


def files_of(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under `folder` (relative path → content), but those under the top-level folders `skip`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def superseded(run_dir: Path) -> list[Path]:
    folder = run_dir / "superseded"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("edges-data") / "images", 3)


# --- 1. a relative data folder, resumed the CLI's way without --config -----------------------------------------------

def test_relative_data_folder_resumes_without_config(data_dir: Path, tmp_path: Path, cli,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpoint's config has absolute paths; its input fingerprints must match the resumed run's (once, every
    image read as changed and the resume was refused)."""
    shutil.copytree(data_dir, tmp_path / "images")
    monkeypatch.chdir(tmp_path)
    cfg = config("images", "runs")
    assert cfg.data.train_data_dir == "images"  # relative, as written
    reference = api.train(cfg)
    stopped = stop_at(cfg, 2)
    assert not stopped.run_dir.is_absolute()  # runs/<id>, as a user types it
    inputs = json.loads((ck(stopped.run_dir, 2) / "inputs.json").read_text(encoding="utf-8"))
    assert sorted(inputs) == [str(tmp_path / "images" / f"img{i}.png") for i in range(3)]  # absolute paths

    code, text = cli("train", "--resume", stopped.run_dir)
    assert code == 0, text
    assert f"resuming from {ck(stopped.run_dir, 2)}" in text and "changed since the checkpoint" not in text
    assert_same_lora(stopped.run_dir / "train" / "lora.safetensors", reference.lora_path)
    assert logged_steps(stopped.run_dir / "train" / "log.csv") == [1, 2, 3, 4]


# --- 2. fp16's gradient scaler sees a skipped NaN step ---------------------------------------------------------------
# accelerate's fp16 needs CUDA: the loop alone, with an accelerator that does what accelerate's does with a scaler.

class ScalerAccelerator:
    """accelerate's fp16 calls, on the CPU: backward through the scaler, clip and unscale on the optimizer."""

    device = torch.device("cpu")

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4)

    def autocast(self):
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale_gradients(self) -> None:
        self.scaler.unscale_(self.optimizer)

    def clip_grad_norm_(self, params, max_norm: float) -> torch.Tensor:
        self.unscale_gradients()
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class ScaledOptimizer:
    """As accelerate's AcceleratedOptimizer with a scaler: step() steps through the scaler and updates it."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self.optimizer, self.scaler = optimizer, scaler

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)


class Batches:
    def __init__(self, n: int) -> None:
        self.n = n

    def batches(self, epoch: int):
        return iter([[i] for i in range(self.n)])

    def __len__(self) -> int:
        return self.n


class LinearTask:
    """Least squares on 4 weights, one item a batch."""

    def __init__(self, w: torch.nn.Parameter) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y, self.w = torch.randn(6, 4, generator=g), torch.randn(6, generator=g), w
        self.sampler = Batches(6)

    def loss(self, batch: list[int], gen: torch.Generator) -> torch.Tensor:
        return ((self.x[batch] @ self.w - self.y[batch]) ** 2).mean()

    def train(self, on: bool) -> None:
        pass

    def freeze_text_encoders(self) -> None:
        pass


class Scales(Callback):
    """The scaler's scale after each step, and the warnings."""

    def __init__(self, scaler: torch.amp.GradScaler) -> None:
        self.scaler, self.scales, self.warnings = scaler, {}, []

    def on_step(self, event: StepEvent) -> None:
        self.scales[event.step] = self.scaler.get_scale()

    def on_warning(self, message: str) -> None:
        self.warnings.append(message)


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0], ids=["clipped", "no_clip"])
def test_fp16_scaler_sees_a_skipped_nan_step(max_grad_norm: float) -> None:
    w = torch.nn.Parameter(torch.zeros(4))
    inner = torch.optim.SGD([w], lr=0.05)
    accelerator = ScalerAccelerator(inner)
    optimizer = ScaledOptimizer(inner, accelerator.scaler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(inner, lambda s: 1.0)
    seen = Scales(accelerator.scaler)
    weights: dict[int, torch.Tensor] = {}

    def after_step(step: int, epoch: int, ended: bool) -> None:
        weights[step] = w.detach().clone()

    state, ended = train_loop(LinearTask(w), optimizer, scheduler, accelerator,  # type: ignore[arg-type]
                              LoopSettings(total_steps=5, max_grad_norm=max_grad_norm), torch.Generator(), seen,
                              Commands(), after_step, None, FaultInjector(FaultsSection(nan_at_step=2)))
    # every step ran (once, the step after the NaN raised "unscale_() has already been called on this optimizer")
    assert (ended, state.step, state.nonfinite_total, state.nonfinite_in_row) == (DONE, 5, 1, 0)
    assert len(seen.warnings) == 1 and seen.warnings[0].startswith("step 2: the loss or the gradients are NaN/inf")
    # the scaler saw the inf: it halved its scale at step 2 (and only then: its growth interval is 2000 steps)
    assert seen.scales == {1: 16.0, 2: 8.0, 3: 8.0, 4: 8.0, 5: 8.0}
    assert torch.equal(weights[1], weights[2])  # the skipped step changed nothing …
    assert all(not torch.equal(weights[s - 1], weights[s]) for s in (3, 4, 5))  # … the others trained
    assert torch.isfinite(w).all()


# --- 3. Difference: a pass's start must not move -----------------------------------------------------------------

def difference_config(tmp: Path, pair: tuple[Path, Path], *extra: str):
    return resolve_layers(sets=[
        "mode.type='difference'", f"output.output_dir='{tmp / 'runs'}'", "data.resolution=64",
        "train.max_train_steps=3", "train.learning_rate=1e-2", "network.network_dim=4", "network.network_alpha=4",
        "train.train_batch_size=2", "output.save_precision='fp32'", f"mode.original_image='{pair[0]}'",
        f"mode.target_image='{pair[1]}'", *extra]).config


def test_difference_resume_refuses_a_longer_first_pass_and_accepts_a_longer_second(tmp_path: Path) -> None:
    from modes.test_difference import write_pair

    pair = write_pair(tmp_path / "pair")
    stopped = stop_at(difference_config(tmp_path, pair), 5)  # pass 1: steps 1–3; pass 2: steps 4–6
    run_dir, checkpoint = stopped.run_dir, ck(stopped.run_dir, 5)
    state = (checkpoint / "state.json").read_text(encoding="utf-8")
    assert '"stage": 1' in state and '"stage_step": 2' in state
    before = files_of(run_dir, skip=("resumed",))

    # train.max_train_steps is a safe key, but without mode.second_pass.max_train_steps it lengthens pass 1 too:
    # pass 2 would start at step 5, not 4
    grown = difference_config(tmp_path, pair, "train.max_train_steps=4")
    with pytest.raises(LorakitError) as exc:
        api.train(grown, resume=checkpoint)
    message = str(exc.value)
    assert f"{checkpoint}: its pass 2 starts at step 4, this config's at step 5" in message
    assert "the steps of an earlier pass changed" in message and "mode.second_pass.max_train_steps" in message
    assert superseded(run_dir) == []  # nothing moved: refused before the later files are set aside
    assert files_of(run_dir, skip=("resumed",)) == before  # train/ (LoRA, log.csv, run.log), checkpoints/

    # pass 2's own length is a safe change: accepted, and pass 2 runs to it
    longer = difference_config(tmp_path, pair, "mode.second_pass.max_train_steps=5")
    result = api.train(longer, resume=checkpoint)
    assert (result.run_dir, result.steps, result.stopped) == (run_dir, 8, False)
    assert "changed since the checkpoint: mode.second_pass.max_train_steps: unset → 5" in run_log(run_dir)
    assert logged_steps(run_dir / "train" / "log.csv") == list(range(1, 9))
    end = (ck(run_dir, 8) / "state.json").read_text(encoding="utf-8")
    assert '"stage": 1' in end and '"stage_step": 5' in end


def test_difference_refused_resume_leaves_no_snapshot(tmp_path: Path) -> None:
    from modes.test_difference import write_pair

    pair = write_pair(tmp_path / "pair")
    stopped = stop_at(difference_config(tmp_path, pair, "train.max_train_steps=2"), 3)
    before = files_of(stopped.run_dir)
    with pytest.raises(LorakitError, match="the steps of an earlier pass changed"):
        api.train(difference_config(tmp_path, pair, "train.max_train_steps=3"), resume=ck(stopped.run_dir, 3))
    assert not (stopped.run_dir / "resumed").exists()  # fails here: resumed/<time>/config.toml … written
    assert files_of(stopped.run_dir) == before


# --- 4. a stop before the first step -------------------------------------------------------------------------------

def test_stop_before_the_first_step_saves_nothing_and_says_so(data_dir: Path, tmp_path: Path) -> None:
    commands = Commands()
    commands.stop = True
    result = api.train(config(data_dir, tmp_path / "runs"), commands=commands)
    assert (result.stopped, result.steps, result.checkpoint) == (True, 0, None)
    assert not (result.run_dir / CHECKPOINTS).exists()
    assert list((result.run_dir / "train").glob("*.safetensors")) == [] and not result.lora_path.exists()
    log = run_log(result.run_dir)
    assert "stopped before the first step: nothing was trained or saved" in log
    assert "continue with" not in log and "checkpoint " not in log  # no checkpoint claimed


def test_cli_stop_before_the_first_step(data_dir: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """`lorakit train` asked to stop before its first step: exit 4, and it claims no checkpoint or LoRA."""
    from lorakit.engine import events

    class Stopped(Commands):
        def __init__(self) -> None:
            super().__init__()
            self.stop = True

    monkeypatch.setattr(events, "Commands", Stopped)
    toml = tmp_path / "c.toml"
    toml.write_text(f'[data]\ntrain_data_dir = "{data_dir}"\nresolution = 64\n[train]\nmax_train_steps = 4\n'
                    f'[network]\nnetwork_dim = 4\n[output]\noutput_dir = "{tmp_path / "runs"}"\n', encoding="utf-8")
    code, text = cli("train", "--config", toml)
    assert code == 4, text
    flat = " ".join(text.split())
    assert "stopped 0 steps: nothing was trained or saved" in flat
    assert "continue with" not in flat and "stopped 0 steps →" not in flat  # no checkpoint or LoRA claimed


# --- 5. a resume with nothing left keeps log.csv whole ----------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A finished 6-step run with checkpoints at 2, 4, 6 (all kept)."""
    out = tmp_path_factory.mktemp("finished") / "runs"
    result = api.train(config(data_dir, out, "train.max_train_steps=6", "checkpoint.every_n_steps=2",
                              "checkpoint.keep_last=10"))
    assert [step_of(p) for p in checkpoints_of(result.run_dir)] == [2, 4, 6]
    return out, result


@pytest.mark.parametrize("at, steps", [(6, 6), (4, 4)], ids=["at_the_end", "earlier_checkpoint_fewer_steps"])
def test_nothing_left_keeps_log_csv_whole(finished, data_dir: Path, tmp_path: Path, at: int, steps: int) -> None:
    """From the last checkpoint unchanged, or from step 4 with max_train_steps lowered to 4: every row stays (once,
    the rows after the checkpoint's step were cut although nothing was trained again)."""
    out, done = finished
    run_dir = Path(shutil.copytree(done.run_dir, tmp_path / done.run_dir.name))
    rows = csv_rows(run_dir / "train" / "log.csv")
    assert logged_steps(run_dir / "train" / "log.csv") == [1, 2, 3, 4, 5, 6]
    lora = (run_dir / "train" / "lora.safetensors").read_bytes()
    result = api.train(config(data_dir, out, f"train.max_train_steps={steps}", "checkpoint.every_n_steps=2",
                              "checkpoint.keep_last=10"), resume=ck(run_dir, at))
    assert (result.run_dir, result.steps, result.stopped) == (run_dir, at, False)
    assert csv_rows(run_dir / "train" / "log.csv") == rows
    assert f"{ck(run_dir, at)}: the run already trained {at} of its {steps} steps; nothing left to do" in (
        run_log(run_dir))
    assert (run_dir / "train" / "lora.safetensors").read_bytes() == lora and superseded(run_dir) == []


# --- 6. pruning renames before deleting ----------------------------------------------------------------------------

class Killed(BaseException):
    """The process dying mid-delete."""


def test_prune_killed_mid_delete_leaves_no_broken_checkpoint(data_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_rmtree = shutil.rmtree
    deleting: list[Path] = []

    def rmtree(path, *args: Any, **kwargs: Any) -> None:
        p = Path(path)
        if p.parent.name == CHECKPOINTS and (p / "complete.json").exists():  # a prune: half-done, then killed
            deleting.append(p)
            (p / "complete.json").unlink()
            (p / "adapter.safetensors").unlink()
            raise Killed
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(state_module.shutil, "rmtree", rmtree)
    cfg = config(data_dir, tmp_path / "runs", "checkpoint.every_n_steps=1", "checkpoint.keep_last=1")
    with pytest.raises(Killed):
        api.train(cfg)  # step 2's checkpoint written, then step 1's pruned
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "runs").iterdir()
    (gone,) = deleting
    assert TEMP.match(gone.name) and TEMP.match(gone.name)[1] == "00000001"  # renamed before the delete began
    names = sorted(p.name for p in (run_dir / CHECKPOINTS).iterdir())
    assert names == [gone.name, "step-00000002"] and is_complete(ck(run_dir, 2))
    warnings: list[str] = []
    assert checkpoints_of(run_dir, warnings.append) == [ck(run_dir, 2)]
    assert not any("incomplete checkpoint" in w or "step-00000001:" in w for w in warnings), warnings
    assert api.find_checkpoint(run_dir) == ck(run_dir, 2)


# --- 7. the contact sheet set aside ---------------------------------------------------------------------------------

def test_resume_copies_the_contact_sheet_aside(data_dir: Path, tmp_path: Path) -> None:
    cfg = config(data_dir, tmp_path / "runs", "sample.prompts=['a dog --w 64 --h 64 --s 1']",
                 "sample.every_n_steps=2", "checkpoint.every_n_steps=2", "checkpoint.keep_last=10")
    done = api.train(cfg)
    samples = done.run_dir / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["contact_sheet.png"] + [
        f"step{s:08d}_00.png" for s in (0, 2, 4)]
    sheet, step4 = (samples / "contact_sheet.png").read_bytes(), (samples / "step00000004_00.png").read_bytes()

    result = api.train(cfg, resume=ck(done.run_dir, 2))
    assert result.steps == 4
    (moved,) = superseded(done.run_dir)
    assert (moved / "samples" / "contact_sheet.png").read_bytes() == sheet  # the sheet as it was, copied
    assert sorted(p.name for p in (moved / "samples").iterdir()) == ["contact_sheet.png", "step00000004_00.png"]
    assert (moved / "samples" / "step00000004_00.png").read_bytes() == step4
    assert (samples / "contact_sheet.png").is_file() and (samples / "step00000004_00.png").is_file()
