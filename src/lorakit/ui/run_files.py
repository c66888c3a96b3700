"""What the web UI reads from run folders (`<output_dir>/<run_id>/`): pure file helpers, no gradio, so they are
tested on folders written by the tests.

A run folder holds `config.toml` (the snapshot), `train/log.csv` (engine/events.py CsvLog: step,epoch,loss,lr,
val_loss,time), `train/<name>.safetensors` (the final LoRA; `-step<N>` files are intermediate saves),
`samples/step<N>_<i>.png` with `contact_sheet.png` (engine/samples.py) and `bench/index.html` (a bench page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

LOG_COLUMNS = ("step", "epoch", "loss", "lr", "val_loss", "time")
CONTACT_SHEET = "contact_sheet.png"  # engine/samples.py SHEET_NAME


@dataclass(frozen=True)
class RunInfo:
    """One run folder as the runs list shows it."""

    path: Path
    modified: float  # newest of the folder's and its log's modification times (seconds since the epoch)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """`<output_dir>/<run_id>`: unique in the list even when two output folders hold the same run id."""
        return f"{self.path.parent.name}/{self.path.name}" if self.path.parent.name else self.path.name


def is_run_dir(path: Path) -> bool:
    """A folder that training wrote: a config snapshot or a train/ folder."""
    return path.is_dir() and ((path / "config.toml").is_file() or (path / "train").is_dir())


def _modified(path: Path) -> float:
    times = [path.stat().st_mtime]
    log = path / "train" / "log.csv"
    if log.is_file():
        times.append(log.stat().st_mtime)
    return max(times)


def list_runs(folders: Iterable[Path | str]) -> list[RunInfo]:
    """Run folders in `folders` (each an output folder holding run folders, or a run folder itself), newest first;
    folders that do not exist are skipped and a run found twice is listed once."""
    found: dict[Path, RunInfo] = {}
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        candidates = [folder] if is_run_dir(folder) else sorted(p for p in folder.iterdir() if p.is_dir())
        for path in candidates:
            key = path.resolve()
            if key not in found and is_run_dir(path):
                found[key] = RunInfo(path, _modified(path))
    return sorted(found.values(), key=lambda r: (-r.modified, r.name))


def read_log(path: Path) -> dict[str, list]:
    """A CsvLog file as columns: {"step": [...], "epoch": [...], "loss": [...], "lr": [...], "val_loss": [...],
    "time": [...]}, numbers as floats (step as int), empty cells as None; rows without a step are skipped.
    Missing file: every column empty."""
    from ..demo import finite_number, read_log as rows

    columns: dict[str, list] = {name: [] for name in LOG_COLUMNS}
    for row in rows(Path(path)):
        step = finite_number(row.get("step"))
        if step is None:
            continue
        columns["step"].append(int(step))
        for name in ("epoch", "loss", "lr", "val_loss"):
            columns[name].append(finite_number(row.get(name)))
        columns["time"].append(row.get("time") or "")
    return columns


def series(log: dict[str, list], names: Iterable[str]) -> list[dict[str, object]]:
    """Long-format rows {"step", "value", "series"} of the named columns' non-empty values, for a line plot with
    one line per series."""
    return [{"step": step, "value": value, "series": name}
            for name in names for step, value in zip(log["step"], log[name]) if value is not None]


def samples(run_dir: Path) -> list[Path]:
    """The run's sample images in render order (`step<N>_<i>.png` sorts by step, then prompt), the contact
    sheet last."""
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    images = sorted(p for p in folder.glob("*.png") if p.name != CONTACT_SHEET)
    sheet = folder / CONTACT_SHEET
    return images + ([sheet] if sheet.is_file() else [])


def bench_page(run_dir: Path) -> Path | None:
    """runs/<id>/bench/index.html when a bench was run on the run's LoRA."""
    page = Path(run_dir) / "bench" / "index.html"
    return page if page.is_file() else None


def config_text(run_dir: Path) -> str:
    """The run's config snapshot, "" when it has none."""
    path = Path(run_dir) / "config.toml"
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def latest_log(folders: Iterable[Path | str]) -> Path | None:
    """train/log.csv of the newest run in `folders` that has one."""
    for run in list_runs(folders):
        log = run.path / "train" / "log.csv"
        if log.is_file():
            return log
    return None
