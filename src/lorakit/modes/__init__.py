"""Training modes: strategies (what trains, how a batch becomes a loss) over the one engine."""

from __future__ import annotations

from .base import Mode
from .lora import LoraMode

# dreambooth is LoRA training with regularisation images (data.reg_data_dir), as in kohya's train_network
MODES: dict[str, type[Mode]] = {"lora": LoraMode, "dreambooth": LoraMode}
