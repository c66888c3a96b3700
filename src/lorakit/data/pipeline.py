"""From the `[data]` settings to what the engine trains on: examples, a batch sampler, a validation set."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .example import BatchSampler, Example
from .folder import ShuffleSampler, folder_examples
from .settings import DataSection


@dataclass
class FolderSummary:
    """One scanned image folder, for the plan and `dataset inspect`."""

    path: Path
    images: int
    repeats: int = 1
    is_reg: bool = False


@dataclass
class DatasetPlan:
    """Everything the engine needs from the data side."""

    train: list[Example]
    sampler: BatchSampler
    validation: list[Example] = field(default_factory=list)
    folders: list[FolderSummary] = field(default_factory=list)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)


def tag_frequency(examples: list[Example], folder_name: str) -> dict[str, dict[str, int]]:
    """Comma-separated tag counts per folder, as kohya records them in `ss_tag_frequency`."""
    counts: Counter[str] = Counter()
    for ex in examples:
        counts.update(t.strip() for t in ex.caption.split(",") if t.strip())
    return {folder_name: dict(counts)}


def build_dataset(cfg: DataSection, batch_size: int, seed: int) -> DatasetPlan:
    """Scan `cfg.train_data_dir` and plan the batches."""
    root = Path(cfg.train_data_dir)
    examples = folder_examples(root, cfg.resolution, cfg.trigger_word)
    return DatasetPlan(
        train=examples,
        sampler=ShuffleSampler(examples, batch_size, seed),
        folders=[FolderSummary(root, len(examples))],
        tag_frequency=tag_frequency(examples, root.name),
    )
