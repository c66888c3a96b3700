"""Shared by the resume tests: stop a run at a step as the job runner or the UI would, and compare two LoRAs bit
for bit."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from lorakit import api
from lorakit.engine.events import Callback, Commands, StepEvent


class StopAt(Callback):
    """Asks the run to stop after step `step`."""

    def __init__(self, step: int) -> None:
        self.step, self.commands = step, Commands()

    def on_step(self, event: StepEvent) -> None:
        if event.step == self.step:
            self.commands.stop = True


def stop_at(cfg, step: int):
    """Train `cfg`, stopped after `step`; the run's result."""
    stopper = StopAt(step)
    result = api.train(cfg, [stopper], stopper.commands)
    assert result.stopped and result.steps == step
    return result


def assert_same_lora(a: Path, b: Path) -> None:
    """Every tensor of the two files equal, bit for bit."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta and ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} of {len(ta)} tensors differ, e.g. {different[:3]}"
