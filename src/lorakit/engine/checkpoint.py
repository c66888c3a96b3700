"""Write the adapter in the configured format(s); never overwrite an existing file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config.schema import LorakitConfig
from ..errors import LorakitError
from ..families import ModelParts
from ..networks import formats


@dataclass(frozen=True)
class SavedLora:
    """What one save wrote: the kohya file and/or the PEFT folder."""

    kohya: Path | None
    peft: Path | None

    @property
    def main(self) -> Path:
        """The file users load: the kohya file when there is one."""
        return self.kohya or self.peft  # type: ignore[return-value]


HEADER_BYTES_PER_TENSOR = 256  # a tensor's key, dtype, shape and offsets in the safetensors header (and its alpha)
METADATA_BYTES = 64 * 1024  # ss_* / modelspec.* metadata, tag frequencies included, with room to spare


def save_size_estimate(groups: list[dict], save_precision: str, save_format: str) -> int:
    """Bytes one save takes (an upper estimate): the trainable adapter parameters × the save precision's bytes,
    plus headers and metadata, twice for save_format = "both"."""
    params = [p for g in groups for p in g["params"]]
    itemsize = torch.empty((), dtype=formats.SAVE_DTYPES[save_precision]).element_size()
    one = sum(p.numel() for p in params) * itemsize + len(params) * HEADER_BYTES_PER_TENSOR + METADATA_BYTES
    return one * (2 if save_format == "both" else 1)


def save_lora(parts: ModelParts, cfg: LorakitConfig, folder: Path, name: str, metadata: dict[str, str]) -> SavedLora:
    """Save `<folder>/<name>.safetensors` (kohya) and/or `<folder>/<name>_peft/` as `output.save_format` says."""
    fmt, dtype = cfg.output.save_format, formats.SAVE_DTYPES[cfg.output.save_precision]
    saved = SavedLora(folder / f"{name}.safetensors" if fmt in ("kohya", "both") else None,
                      folder / f"{name}_peft" if fmt in ("peft", "both") else None)
    for p in (saved.kohya, saved.peft):
        if p is not None and p.exists():
            raise LorakitError(f"{p} already exists; refusing to overwrite", "use a new run folder")
    if saved.kohya:
        formats.save_kohya(saved.kohya, formats.to_kohya(parts, dtype), metadata)
    if saved.peft:
        formats.save_peft(saved.peft, parts, dtype)
    return saved
