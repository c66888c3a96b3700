"""Batches of one bucket, shuffled per epoch (deterministic by seed), repeats and regularisation images weighted.

One epoch uses every training example `repeats` times. With regularisation images, it also uses as many of them
as there are training uses (kohya's reg factor of 2): the regularisation pool, each image repeated by its own
folder's count, is shuffled once by seed and cycled to that length. Examples are grouped by bucket size and cut
into batches; the order of batches is shuffled, so batch size > 1 works with any mix of aspect ratios.

With `kohya_reg` the regularisation examples are used exactly `repeats` times each, as the training examples are:
the kohya layout has already balanced their repeats as sd-scripts does (`scan.kohya_reg_repeats`). Training and
regularisation examples share the buckets either way, as in sd-scripts' BucketManager.

Per-use augmentation draws from its own generator per epoch, so the order and captions of a run without it stay
as they were, and a resumed run (which replays the epoch's batches) repeats every draw: with `augment`
(data.color_aug / data.random_crop) each use gets a seed for its crop and colour change, with `random_flip` each
use is the mirror image with probability 0.5 (sd-scripts' flip_aug, `random.random() < 0.5` per use in
library/train_util.py BaseDataset.__getitem__).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from .captions import CaptionRules, vary
from .example import Example


def _rng(seed: int, epoch: int, salt: int) -> random.Random:
    return random.Random((seed * 1_000_003 + epoch) * 31 + salt)


def expand_repeats(examples: list[Example]) -> list[Example]:
    """Each example `repeats` times."""
    return [ex for ex in examples for _ in range(ex.repeats)]


def pick_regularisation(reg: list[Example], count: int, seed: int) -> list[Example]:
    """`count` uses of regularisation examples: the repeated pool shuffled by seed, cycled or cut to `count`."""
    pool = expand_repeats(reg)
    if not pool or count <= 0:
        return []
    random.Random(seed * 7_919 + 17).shuffle(pool)
    return [pool[i % len(pool)] for i in range(count)]


@dataclass
class BucketBatchSampler:
    """The engine's `BatchSampler`: `batches(epoch)` yields lists of examples that share one size."""

    train: list[Example]
    batch_size: int
    seed: int = 0
    reg: list[Example] = field(default_factory=list)
    captions: CaptionRules | None = None
    kohya_reg: bool = False
    augment: bool = False
    random_flip: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        uses = expand_repeats(self.train)
        reg = expand_repeats(self.reg) if self.kohya_reg else pick_regularisation(self.reg, len(uses), self.seed)
        self._uses = uses + reg

    def bucket_counts(self) -> Counter[tuple[int, int]]:
        """Uses per bucket size in one epoch (repeats and regularisation included)."""
        return Counter(ex.size for ex in self._uses)

    def batches(self, epoch: int) -> Iterator[list[Example]]:
        """The batches of epoch `epoch`: same examples every epoch, a different deterministic order."""
        rng = _rng(self.seed, epoch, 1)
        order = list(self._uses)
        rng.shuffle(order)
        by_size: dict[tuple[int, int], list[Example]] = {}
        for ex in order:
            by_size.setdefault(ex.size, []).append(ex)
        batches = [b[i : i + self.batch_size] for b in by_size.values() for i in range(0, len(b), self.batch_size)]
        rng.shuffle(batches)
        cap_rng = _rng(self.seed, epoch, 2)
        aug_rng = _rng(self.seed, epoch, 3)
        for batch in batches:
            if self.captions is not None and self.captions.varies:
                batch = [dataclasses.replace(ex, caption=vary(ex.caption, self.captions, cap_rng)) for ex in batch]
            if self.augment or self.random_flip:
                batch = [self._use(ex, aug_rng) for ex in batch]
            yield batch

    def _use(self, ex: Example, rng: random.Random) -> Example:
        """One use of `ex`: its augmentation seed and, with random_flip, maybe its mirror image."""
        seed = rng.getrandbits(63) if self.augment else None
        if self.random_flip and rng.random() < 0.5:
            ex = ex.mirrored()
        return dataclasses.replace(ex, aug_seed=seed)

    def mirrored_examples(self) -> list[Example]:
        """With random_flip: the mirror image of every training and regularisation example, which uses may pick
        (the latent cache must hold them too); else nothing."""
        if not self.random_flip:
            return []
        return list({m.key: m for m in (ex.mirrored() for ex in self.train + self.reg)}.values())

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(-(-n // self.batch_size) for n in self.bucket_counts().values())
