"""Run folders: `<output_dir>/<run_id>/`, claimed atomically so a run never overwrites another."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from .errors import LorakitError


def new_run_dir(output_dir: Path, run_id: str | None = None) -> Path:
    """Create and return a fresh run folder; a given run_id that exists is an error, a timestamp gets a suffix."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if run_id:
        path = output_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise LorakitError(f"run folder {path} already exists", "choose another output.run_id") from None
        return path
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for n in range(1, 10_000):
        path = output_dir / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise LorakitError(f"could not create a run folder in {output_dir}")
