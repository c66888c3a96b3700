"""Optional TensorBoard logging (`train.log_with = "tensorboard"`): loss, lr and val_loss scalars per step in
`runs/<id>/train/tensorboard/`. Needs the `tensorboard` package (`pip install tensorboard` or the extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .events import Callback, StepEvent

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLog(Callback):
    """Scalars `loss`, `lr` (on logging steps) and `val_loss` for TensorBoard, by optimizer step."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writer: Any = None

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.folder))

    def on_step(self, event: StepEvent) -> None:
        if self.writer is not None and event.loss is not None:
            self.writer.add_scalar("loss", event.loss, event.step)
            self.writer.add_scalar("lr", event.lr, event.step)

    def on_validation(self, step: int, loss: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("val_loss", loss, step)

    def on_end(self, steps: int, stopped: bool) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
