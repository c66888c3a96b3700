"""Training modes: strategies (what trains, how a batch becomes a loss) over the one engine."""

from __future__ import annotations

from .base import Mode
from .lora import LoraMode

MODES: dict[str, type[Mode]] = {"lora": LoraMode}
