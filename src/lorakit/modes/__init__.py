"""Training modes: strategies (what trains on what, with which loss) over the one engine (`engine.mode`)."""

from __future__ import annotations

from ..engine.mode import Mode
from .difference import DifferenceMode
from .ileco import IlecoMode
from .lora import LoraMode

# dreambooth is LoRA training with regularisation images (data.reg_data_dir), as in kohya's train_network
MODES: dict[str, type[Mode]] = {
    "lora": LoraMode, "dreambooth": LoraMode, "ileco": IlecoMode, "difference": DifferenceMode,
}
