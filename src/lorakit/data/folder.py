"""The simplest dataset: every image under a folder, one caption each, one square resolution.

The bucketing pipeline (`data.scan`, `data.buckets`, `data.sampler`) produces the same `Example`s.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .example import Example, file_fingerprint

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".pcx", ".ico"}


def find_images(root: Path) -> list[Path]:
    """Every supported image below `root`, sorted, skipping dot-files and dot-folders."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", "set data.train_data_dir to a folder of images")
    found = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    if not found:
        raise DataError(
            f"no images in {root}",
            f"put .png/.jpg files (with .txt captions) in it; supported: {', '.join(sorted(IMAGE_EXTENSIONS))}",
        )
    return sorted(found)


def read_caption(image: Path, trigger_word: str = "", extensions: tuple[str, ...] = (".txt", ".caption")) -> str:
    """Caption of an image from the first sidecar file found (`.txt` wins), with the trigger word prepended."""
    text = ""
    for ext in extensions:
        side = image.with_suffix(ext)
        if side.is_file():
            text = side.read_text(encoding="utf-8").strip()
            break
    if trigger_word:
        text = f"{trigger_word}, {text}" if text else trigger_word
    return text


def folder_examples(root: Path, resolution: int, trigger_word: str = "") -> list[Example]:
    """One square `Example` per image under `root`."""
    return [
        Example(
            image=p,
            caption=read_caption(p, trigger_word),
            size=(resolution, resolution),
            fingerprint=file_fingerprint(p),
        )
        for p in find_images(root)
    ]


@dataclass
class ShuffleSampler:
    """Shuffles examples per epoch (deterministic by seed) and cuts them into batches of one size."""

    examples: list[Example]
    batch_size: int
    seed: int = 0

    def batches(self, epoch: int) -> Iterator[list[Example]]:
        order = list(self.examples)
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        by_size: dict[tuple[int, int], list[Example]] = {}
        for ex in order:
            by_size.setdefault(ex.size, []).append(ex)
        batches = [b[i : i + self.batch_size] for b in by_size.values() for i in range(0, len(b), self.batch_size)]
        random.Random(self.seed * 7 + epoch).shuffle(batches)
        yield from batches

    def __len__(self) -> int:
        sizes: dict[tuple[int, int], int] = {}
        for ex in self.examples:
            sizes[ex.size] = sizes.get(ex.size, 0) + 1
        return sum(-(-n // self.batch_size) for n in sizes.values())
