"""The contract between the engine and the training modes.

The engine owns the loop, optimizer, schedule, saving, samples and events; a mode owns what it trains on and its
loss. A mode gets the `Run` (model loaded, adapters attached on request) and yields one `Stage` per pass of the
loop: plain LoRA yields one; Difference yields the copy machine, freezes it, then yields the difference. The engine
imports no concrete mode: `lorakit.modes.MODES` maps `mode.type` to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Protocol

import torch

from ..data.example import BatchSampler
from ..networks.registry import ADAPTER

if TYPE_CHECKING:
    from ..config.schema import LorakitConfig
    from .trainer import Run


class Task(Protocol):
    """What one stage trains on and how a batch becomes a loss."""

    sampler: BatchSampler  # batches (lists) of whatever `loss` takes: images, prompt pairs

    def loss(self, batch: list[Any], gen: torch.Generator) -> torch.Tensor:
        """The scalar loss of one batch; `gen` drives every random draw, so runs are reproducible. A mode with
        `data_parallel` also takes `rows` (several processes): it draws for the whole batch and returns the mean loss
        of those rows only, or None when the slice is empty."""
        ...

    def train(self, on: bool) -> None:
        """Switch the trainable modules between train and eval behaviour (dropout)."""
        ...

    def freeze_text_encoders(self) -> None:
        """Stop training the text encoders (kohya's stop_text_encoder_training)."""
        ...


@dataclass
class Stage:
    """One pass of the loop: an adapter trained on a task with the settings of `cfg`, saved as `output_name`."""

    cfg: LorakitConfig  # this stage's settings: rates, steps, batch, optimizer, schedule, network (for metadata)
    task: Task
    groups: list[dict[str, Any]]  # optimizer parameter groups, from `Run.param_groups`
    steps: int
    steps_per_epoch: int
    output_name: str
    adapter: str = ADAPTER
    label: str = ""  # shown when the stage starts, e.g. "pass 1: copy machine"
    warmup_steps: int = 0
    text_encoder_stop: int | None = None
    validate: Callable[[], float] | None = None  # held-out loss, every train.validate_every_n_steps
    save: bool = True  # write its file (Difference's copy machine only when asked)
    sample_weights: dict[str, float] = field(default_factory=dict)  # adapters' weights in samples (0 = off)
    final: bool = True  # its file is the run's result
    num_images: int = 0  # metadata: ss_num_train_images, ss_tag_frequency, ss_resolution
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    resolution: tuple[int, int] = (512, 512)


class Mode(Protocol):
    """A training strategy, constructed with the run it trains in."""

    uses_dataset: ClassVar[bool]  # it trains on data.train_data_dir (the engine builds the dataset first)
    uses_images: ClassVar[bool]  # it encodes images (the VAE is loaded even when no sample is rendered)
    data_parallel: ClassVar[bool]  # its task computes a slice of each batch (training on several processes)

    def __init__(self, run: Run) -> None: ...

    def plan_lines(self) -> list[str]:
        """What the run will do, shown and logged before training."""
        ...

    def total_steps(self) -> int:
        """Optimizer steps over all stages (the progress bar's total)."""
        ...

    def stages(self) -> Iterator[Stage]:
        """The stages, in order; code after a `yield` runs once that stage has trained."""
        ...
