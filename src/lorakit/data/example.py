"""The dataset interface the engine consumes.

A dataset is a list of `Example`s (pure data: which file, which caption, which target size, flipped or not) plus a
sampler that groups them into batches of one size. The engine only needs `Example.key` for caching and
`load_pixels` to turn an example into a tensor; everything upstream (scanning, repeats, buckets) is plain Python.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Literal, Protocol

from .buckets import cover_crop

MaskKind = Literal["alpha", "image"]


@dataclass(frozen=True)
class MaskSource:
    """Where an example's loss mask comes from (train.masked_loss): the alpha channel of the image itself
    (data.alpha_mask) or the red channel of a same-named file in data.conditioning_data_dir. `fingerprint` is the
    mask file's content hash (empty for "alpha": the image's own fingerprint covers it, or when not hashed)."""

    path: Path
    kind: MaskKind
    fingerprint: str = ""


@dataclass(frozen=True)
class Example:
    """One training image as the engine sees it.

    `size` is the (width, height) the image is resized and centre-cropped to; all examples in one batch share it.
    `original_size` and `crop_top_left` are (height, width)-ordered like SDXL's micro-conditioning expects.
    `repeats` is how many times the example is used per epoch (its folder's `N_` prefix); `folder` names the
    folder it came from (for tag frequency and `dataset inspect`). `resized` is the size the image is resized to
    before the centre crop when it is not simply "cover `size`" (kohya buckets: sd-scripts' rounding, and no
    resize at all for an image already within bucket_no_upscale's area); None = cover `size`. `aug_seed` seeds this
    use's random crop and colour change (data.color_aug / data.random_crop); the sampler sets it per use, so it is
    not part of the example's identity or cache key. `mask` is the source of its loss mask (train.masked_loss),
    None = no mask (the whole image counts); the mask is cut exactly as the pixels, so it is not part of `key`.
    """

    image: Path
    caption: str
    size: tuple[int, int]
    flip: bool = False
    is_reg: bool = False
    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    fingerprint: str = field(default="", compare=False)
    repeats: int = field(default=1, compare=False)
    folder: str = field(default="", compare=False)
    resized: tuple[int, int] | None = None
    aug_seed: int | None = field(default=None, compare=False)
    mask: MaskSource | None = None

    def mirrored(self) -> Example:
        """The left-right mirror image of this example, its crop's left edge measured from the other side as the
        pipeline's flip_aug copies do (mirroring twice gives the example back)."""
        top, left = self.crop_top_left
        if self.original_size is not None and self.resized is not None:  # kohya buckets: sd-scripts' conditioning
            from .buckets import kohya_crop_conditioning

            top, left = kohya_crop_conditioning(self.size, self.original_size[::-1], not self.flip)
        elif self.original_size is not None:
            ih, iw = self.original_size
            rw = self.resized[0] if self.resized is not None else cover_crop((iw, ih), self.size)[0][0]
            left = rw - left - self.size[0]
        return replace(self, flip=not self.flip, crop_top_left=(top, left))

    @property
    def key(self) -> str:
        """Stable identity of the pixels this example produces (file content, size, flip)."""
        h = hashlib.sha1()
        h.update((self.fingerprint or str(self.image)).encode())
        h.update(f"|{self.size[0]}x{self.size[1]}|{int(self.flip)}".encode())
        if self.resized is not None:  # only then, so the keys of cover-cropped examples stay as they were
            h.update(f"|resized={self.resized[0]}x{self.resized[1]}".encode())
        return h.hexdigest()


class BatchSampler(Protocol):
    """Yields lists of examples of one size; deterministic for a given epoch and seed."""

    def batches(self, epoch: int) -> Iterator[list[Example]]: ...

    def __len__(self) -> int: ...


def file_fingerprint(path: Path) -> str:
    """Content hash of a file, so a changed image invalidates its cached latents."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
