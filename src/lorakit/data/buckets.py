"""Bucket math: which (width, height) each image is trained at. Pure integers in, integers out.

TrainTrain mode (the spec `004_…`): the *main* buckets are, for each width from the minimum length to the longest
side in steps, the tallest height that keeps the area within the maximum area, plus the transposes and the
square of the short side of `image_size`, all within the maximum aspect ratio. The *sub* buckets are every other
grid size within the same limits; an image can also be trained, downscaled, in `sub_image_num` of them.

Rules beyond the reference tool:
- "nearest aspect" means the least cropping: the distance between aspects a and b is max(a/b, b/a), computed
  exactly with fractions, so a transposed image always gets the transposed bucket;
- sub buckets are downscales of the image's main bucket (both sides ≤), its own orientation first, each at
  most once;
- the crop never runs past the image (scale to cover, then centre-crop: no padding bars).

Kohya mode: each image gets its own bucket, its size scaled down to the maximum area and rounded down to the step
(never upscaled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSpec:
    """The numbers that decide the buckets. `max_size` is (w, h) in either order: only its area and long side count."""

    max_size: Size
    step: int = 64
    min_length: int = 256
    max_side: int | None = None
    max_ratio: float = 2.0
    mode: Literal["traintrain", "kohya"] = "traintrain"
    no_upscale: bool = False

    @property
    def max_area(self) -> int:
        """Largest bucket area in pixels."""
        return self.max_size[0] * self.max_size[1]

    @property
    def longest(self) -> int:
        """Longest bucket side, a multiple of the step."""
        side = self.max_side or max(self.max_size)
        return max(self.step, side - side % self.step)

    @property
    def shortest(self) -> int:
        """Shortest bucket side: min_length rounded up to the step, capped at the short side of max_size."""
        short = min(self.max_size) - min(self.max_size) % self.step
        wanted = -(-self.min_length // self.step) * self.step
        return max(self.step, min(wanted, short, self.longest))

    def ratio_ok(self, size: Size) -> bool:
        """Whether a bucket's long/short ratio is within max_ratio."""
        return max(size) <= self.max_ratio * min(size) + 1e-9


def _floor(x: float, step: int) -> int:
    return int(x // step) * step


def main_buckets(spec: BucketSpec) -> list[Size]:
    """The main buckets (TrainTrain rules), sorted by aspect (w/h) ascending."""
    step, lo, hi, area = spec.step, spec.shortest, spec.longest, spec.max_area
    if spec.mode == "traintrain":
        side = min(spec.max_size) - min(spec.max_size) % step
    else:
        side = _floor(math.isqrt(area), step)
    found: set[Size] = {(min(side, hi), min(side, hi))}
    for w in range(lo, hi + 1, step):
        h = min(hi, _floor(area // w, step))
        if h >= lo and spec.ratio_ok((w, h)):
            found.update({(w, h), (h, w)})
    return sorted(found, key=lambda s: (Fraction(s[0], s[1]), s))


def sub_buckets(spec: BucketSpec, main: list[Size] | None = None) -> list[Size]:
    """Every grid size within the limits that is not a main bucket, sorted by aspect ascending."""
    main_set = set(main if main is not None else main_buckets(spec))
    lo, hi, step = spec.shortest, spec.longest, spec.step
    found = {
        (w, h)
        for w in range(lo, hi + 1, step)
        for h in range(lo, hi + 1, step)
        if w * h <= spec.max_area and spec.ratio_ok((w, h)) and (w, h) not in main_set
    }
    return sorted(found, key=lambda s: (Fraction(s[0], s[1]), s))


def aspect_distance(image: Size, bucket: Size) -> Fraction:
    """How far apart two aspects are: max(a/b, b/a) ≥ 1, the inverse of the fraction of the image a crop keeps."""
    a, b = Fraction(image[0], image[1]), Fraction(bucket[0], bucket[1])
    return max(a / b, b / a)


def cropped_fraction(image: Size, bucket: Size) -> float:
    """The share of an image's area that the cover-and-centre-crop into `bucket` cuts away (0 for equal aspects)."""
    return float(1 - 1 / aspect_distance(image, bucket))


def _rank(image: Size, bucket: Size) -> tuple[Fraction, int, Fraction, Size]:
    """Sort key: nearest aspect, then larger area, then closer to square (symmetric under transposition)."""
    square = Fraction(max(bucket), min(bucket))
    return (aspect_distance(image, bucket), -bucket[0] * bucket[1], square, bucket)


def needs_upscale(image: Size, bucket: Size) -> bool:
    """Whether covering `bucket` means enlarging `image`."""
    return bucket[0] > image[0] or bucket[1] > image[1]


def nearest_bucket(image: Size, buckets: list[Size]) -> Size:
    """The bucket whose aspect is nearest the image's (the least cropping)."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    return min(buckets, key=lambda b: _rank(image, b))


def _orientation(size: Size) -> int:
    return (size[0] > size[1]) - (size[0] < size[1])


def pick_sub_buckets(image: Size, main: Size, subs: list[Size], count: int) -> list[Size]:
    """Up to `count` distinct sub buckets for an image in `main`: downscales of it, same orientation first,
    then nearest aspect."""
    if count <= 0:
        return []
    fits = [s for s in subs if s[0] <= main[0] and s[1] <= main[1] and s != main]
    fits.sort(key=lambda s: (_orientation(s) != _orientation(main), *_rank(image, s)))
    return fits[:count]


def kohya_bucket(image: Size, spec: BucketSpec) -> Size:
    """Kohya's no-upscale bucket: the image scaled down to the max area / longest side, rounded down to the step."""
    iw, ih = image
    step, hi = spec.step, spec.longest
    scale = min(1.0, math.sqrt(spec.max_area / (iw * ih)), hi / iw, hi / ih)
    w, h = iw * scale, ih * scale
    if w > spec.max_ratio * h:
        w = h * spec.max_ratio
    elif h > spec.max_ratio * w:
        h = w * spec.max_ratio
    bw, bh = max(step, _floor(w + 1e-6, step)), max(step, _floor(h + 1e-6, step))
    if bw > spec.max_ratio * bh:
        bw = max(step, _floor(bh * spec.max_ratio, step))
    elif bh > spec.max_ratio * bw:
        bh = max(step, _floor(bw * spec.max_ratio, step))
    return bw, bh


@dataclass(frozen=True)
class BucketPlan:
    """The buckets of one spec, computed once and reused for every image."""

    spec: BucketSpec
    main: tuple[Size, ...]
    sub: tuple[Size, ...]

    @classmethod
    def build(cls, spec: BucketSpec) -> BucketPlan:
        """Compute the main and sub buckets of `spec` (none in kohya mode, where buckets are per image)."""
        if spec.mode == "kohya":
            return cls(spec, (), ())
        main = main_buckets(spec)
        return cls(spec, tuple(main), tuple(sub_buckets(spec, main)))

    def assign(self, image: Size, sub_image_num: int = 0) -> list[Size]:
        """Buckets an image is trained in: its main bucket first, then its sub buckets (all distinct)."""
        if self.spec.mode == "kohya":
            return [kohya_bucket(image, self.spec)]
        main_choices = list(self.main)
        if self.spec.no_upscale:
            main_choices = [b for b in main_choices if not needs_upscale(image, b)]
            if not main_choices:
                return [kohya_bucket(image, self.spec)]
        main = nearest_bucket(image, main_choices)
        subs = [s for s in self.sub if not (self.spec.no_upscale and needs_upscale(image, s))]
        return [main, *pick_sub_buckets(image, main, subs, sub_image_num)]


def cover_crop(image: Size, bucket: Size) -> tuple[Size, tuple[int, int]]:
    """Resize `image` to cover `bucket` (keeping its aspect) and centre-crop: returns the resized (w, h) and the
    crop's (top, left). The crop always lies inside the resized image."""
    iw, ih = image
    bw, bh = bucket
    scale = max(bw / iw, bh / ih)
    rw, rh = max(bw, round(iw * scale)), max(bh, round(ih * scale))
    return (rw, rh), ((rh - bh) // 2, (rw - bw) // 2)
