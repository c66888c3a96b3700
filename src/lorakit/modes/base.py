"""The mode contract the engine runs."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from ..data.example import Example


class Mode(Protocol):
    """A training strategy: builds the trainable adapter and computes the loss of a batch."""

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups (each with its own `lr`)."""
        ...

    def loss(self, examples: list[Example], gen: torch.Generator) -> torch.Tensor:
        """The scalar loss of one batch; `gen` drives every random draw so runs are reproducible."""
        ...

    def freeze_text_encoders(self) -> None:
        """Stop training the text encoders (kohya's stop_text_encoder_training); the optimizer skips them."""
        ...

    def train(self, on: bool) -> None:
        """Switch the trainable modules between train and eval behaviour (dropout)."""
        ...
