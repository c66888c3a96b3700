"""Write the adapter in the configured format(s); never overwrite an existing file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


def save_lora(parts: ModelParts, cfg: LorakitConfig, folder: Path, name: str, metadata: dict[str, str]) -> SavedLora:
    """Save `<folder>/<name>.safetensors` (kohya) and/or `<folder>/<name>_peft/` as `output.save_format` says."""
    fmt, dtype = cfg.output.save_format, formats.SAVE_DTYPES[cfg.output.save_precision]
    saved = SavedLora(folder / f"{name}.safetensors" if fmt in ("kohya", "both") else None,
                      folder / f"{name}_peft" if fmt in ("peft", "both") else None)
    for p in (saved.kohya, saved.peft):
        if p is not None and p.exists():
            raise LorakitError(f"{p} already exists; refusing to overwrite", "use a new run folder")
    if saved.kohya:
        formats.save_kohya(saved.kohya, formats.to_kohya(parts, cfg.network.network_alpha, dtype), metadata)
    if saved.peft:
        formats.save_peft(saved.peft, parts, dtype)
    return saved
