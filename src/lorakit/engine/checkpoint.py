"""Write the adapter in the configured format(s); never overwrite an existing file."""

from __future__ import annotations

from pathlib import Path

from ..config.schema import LorakitConfig
from ..errors import LorakitError
from ..families import ModelParts
from ..networks import formats


def save_lora(parts: ModelParts, cfg: LorakitConfig, folder: Path, name: str,
              metadata: dict[str, str]) -> tuple[Path, Path | None]:
    """Save `<folder>/<name>.safetensors` (kohya) and/or `<folder>/<name>_peft/`; returns (main path, peft dir)."""
    out = cfg.output
    dtype = formats.SAVE_DTYPES[out.save_precision]
    kohya_path, peft_dir = folder / f"{name}.safetensors", folder / f"{name}_peft"
    for p in (kohya_path, peft_dir):
        if p.exists():
            raise LorakitError(f"{p} already exists; refusing to overwrite", "use a new run folder")
    main = kohya_path
    if out.save_format in ("kohya", "both"):
        formats.save_kohya(kohya_path, formats.to_kohya(parts, cfg.network.network_alpha, dtype), metadata)
    if out.save_format in ("peft", "both"):
        formats.save_peft(peft_dir, parts, dtype)
        main = kohya_path if out.save_format == "both" else peft_dir
    return main, peft_dir if out.save_format != "kohya" else None
