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

Kohya mode (`kohya_place`) is sd-scripts' BucketManager, number for number: without `no_upscale` the predefined
resolutions of `make_bucket_resolutions` and the one nearest the image's aspect (w/h difference); with it, each
image's own bucket — scaled down to the maximum area if larger, width-first or height-first rounding whichever keeps
the aspect closer, then each side rounded down to the step. sd-scripts has no aspect-ratio cap (max_ratio is
ignored) and, with `no_upscale`, ignores min/max bucket sides. Where sd-scripts would make a bucket side of 0 (an
image side shorter than one step) lorakit refuses the image (`NoBucketError`) rather than enlarge it.
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


class NoBucketError(ValueError):
    """An image that no bucket fits without enlarging it (a side shorter than one bucket step)."""


def downscaled_bucket(image: Size, spec: BucketSpec) -> Size:
    """TrainTrain mode's no-upscale fallback: the image cropped to max_ratio, scaled down (never up) to the maximum
    area and longest side, each side rounded down to the step; `NoBucketError` when a side falls below one step."""
    w, h = float(image[0]), float(image[1])
    if w > spec.max_ratio * h:  # crop first: cropping a panorama keeps more pixels than shrinking it
        w = h * spec.max_ratio
    elif h > spec.max_ratio * w:
        h = w * spec.max_ratio
    scale = min(1.0, math.sqrt(spec.max_area / (w * h)), spec.longest / w, spec.longest / h)
    bw, bh = _floor(w * scale + 1e-6, spec.step), _floor(h * scale + 1e-6, spec.step)
    if not bw or not bh:
        raise NoBucketError(f"{image[0]}×{image[1]}: a side is shorter than one bucket step ({spec.step}) "
                            "once it fits the limits, and bucket_no_upscale forbids enlarging it")
    if bw > spec.max_ratio * bh:  # rounding down one side can tip the ratio: shorten the other (a crop)
        bw = _floor(bh * spec.max_ratio + 1e-6, spec.step)
    elif bh > spec.max_ratio * bw:
        bh = _floor(bw * spec.max_ratio + 1e-6, spec.step)
    return bw, bh


# -- kohya: sd-scripts' BucketManager ------------------------------------------------------------------------------

KOHYA_MAX_BUCKET_RESO = 1024  # sd-scripts' --max_bucket_reso default


@dataclass(frozen=True)
class Placement:
    """Where sd-scripts puts an image: its bucket and the size it is resized to before the centre crop."""

    bucket: Size
    resized: Size


def kohya_limits(spec: BucketSpec) -> tuple[int, int]:
    """(min, max) bucket side as sd-scripts' adjust_min_max_bucket_reso_by_steps makes them: min rounded down and
    max rounded up to the step. sd-scripts refuses a min above the short side of the resolution or a max below its
    long side, and fails on a min below one step; lorakit clamps them there (no config that runs in sd-scripts
    changes). Unset max = 1024."""
    step = spec.step
    lo = min(spec.min_length, min(spec.max_size))
    hi = max(spec.max_side or KOHYA_MAX_BUCKET_RESO, max(spec.max_size))
    return max(step, lo - lo % step), hi + (-hi) % step


def kohya_resolutions(max_reso: Size, min_size: int, max_size: int, divisible: int) -> list[Size]:
    """sd-scripts' model_util.make_bucket_resolutions: the square of the max area's side, and for each width from
    min_size to max_size in steps the tallest height within the area (capped at max_size), with transposes."""
    area = max_reso[0] * max_reso[1]
    side = int(math.sqrt(area) // divisible) * divisible
    resos = {(side, side)}
    for width in range(min_size, max_size + 1, divisible):
        height = min(max_size, int((area // width) // divisible) * divisible)
        if height >= min_size:
            resos.update({(width, height), (height, width)})
    return sorted(resos)


def _kohya_round(x: float, step: int) -> int:
    """BucketManager.round_to_steps: round half up, then down to a multiple of the step."""
    n = int(x + 0.5)
    return n - n % step


def kohya_predefined(image: Size, resos: list[Size] | tuple[Size, ...]) -> Placement:
    """BucketManager.select_bucket without no_upscale: the image's own size if it is a bucket, else the bucket
    whose w/h is nearest (first in sorted order on a tie); scaled to cover it (may enlarge), centre-cropped."""
    iw, ih = image
    aspect = iw / ih
    if image in resos:
        reso = image
    else:
        reso = min(resos, key=lambda r: abs(r[0] / r[1] - aspect))  # np.argmin: the first minimum
    scale = reso[1] / ih if aspect > reso[0] / reso[1] else reso[0] / iw
    return Placement(reso, (int(iw * scale + 0.5), int(ih * scale + 0.5)))


def kohya_no_upscale(image: Size, max_area: int, step: int) -> Placement:
    """BucketManager.select_bucket with no_upscale: an image above the max area is scaled down keeping its aspect,
    rounded width-first or height-first (whichever keeps the aspect closer); each side of the bucket is then the
    resized side rounded down to the step. Never enlarges; `NoBucketError` where sd-scripts would get a 0 side."""
    iw, ih = image
    aspect = iw / ih
    resized = image
    if iw * ih > max_area:
        rw = math.sqrt(max_area * aspect)
        rh = max_area / rw
        bw = _kohya_round(rw, step)
        bh_w = _kohya_round(bw / aspect, step)
        bh = _kohya_round(rh, step)
        bw_h = _kohya_round(bh * aspect, step)
        # sd-scripts divides by these (a 0 crashes it); a 0 makes that candidate unusable here
        err_w = abs(bw / bh_w - aspect) if bh_w else math.inf
        err_h = abs(bw_h / bh - aspect) if bh else math.inf
        resized = (bw, int(bw / aspect + 0.5)) if err_w < err_h else (int(bh * aspect + 0.5), bh)
    bucket = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    if not bucket[0] or not bucket[1]:
        raise NoBucketError(f"{iw}×{ih}: a side is shorter than one bucket step ({step}) after fitting the maximum "
                            "area; sd-scripts would make a 0-pixel bucket and lorakit never enlarges with "
                            "bucket_no_upscale")
    return Placement(bucket, resized)


def kohya_place(image: Size, spec: BucketSpec, resos: tuple[Size, ...] = ()) -> Placement:
    """An image's bucket in kohya mode (both variants); `resos` are the predefined resolutions (no_upscale off)."""
    if spec.no_upscale:
        return kohya_no_upscale(image, spec.max_area, spec.step)
    if not resos:
        resos = tuple(kohya_resolutions(spec.max_size, *kohya_limits(spec), spec.step))
    return kohya_predefined(image, resos)


def kohya_bucket(image: Size, spec: BucketSpec) -> Size:
    """The bucket sd-scripts gives an image (see `kohya_place`)."""
    return kohya_place(image, spec).bucket


def kohya_crop_conditioning(bucket: Size, image: Size, flip: bool = False) -> tuple[int, int]:
    """SDXL's crop conditioning (top, left) as sd-scripts gives it with buckets (BucketManager.get_crop_ltrb, after
    Stability AI's preprocessing): where the image would sit fitted *inside* the bucket, not the pixels cropped;
    mirrored, the left edge is the bucket width minus the fitted right edge (train_util.py, the batch's
    crop_top_lefts). Float arithmetic and int() truncation as there."""
    bw, bh = bucket
    image_ar = image[0] / image[1]
    fitted_w, fitted_h = (bh * image_ar, bh) if bw / bh > image_ar else (bw, bw / image_ar)
    left, top = (bw - fitted_w) // 2, (bh - fitted_h) // 2
    return int(top), int(bw - (left + fitted_w) if flip else left)


def trim_offsets(resized: Size, bucket: Size) -> tuple[int, int]:
    """(top, left) of sd-scripts' centre crop (trim_and_resize_if_required): half the excess, rounded down."""
    return max(0, resized[1] - bucket[1]) // 2, max(0, resized[0] - bucket[0]) // 2


@dataclass(frozen=True)
class BucketPlan:
    """The buckets of one spec, computed once and reused for every image."""

    spec: BucketSpec
    main: tuple[Size, ...]
    sub: tuple[Size, ...]

    @classmethod
    def build(cls, spec: BucketSpec) -> BucketPlan:
        """Compute the main and sub buckets of `spec`; in kohya mode `main` holds sd-scripts' predefined
        resolutions (none with no_upscale, where buckets are per image) and there are no sub buckets."""
        if spec.mode == "kohya":
            if spec.no_upscale:
                return cls(spec, (), ())
            return cls(spec, tuple(kohya_resolutions(spec.max_size, *kohya_limits(spec), spec.step)), ())
        main = main_buckets(spec)
        return cls(spec, tuple(main), tuple(sub_buckets(spec, main)))

    def place(self, image: Size) -> Placement:
        """Kohya mode: the image's bucket and the size it is resized to before sd-scripts' centre crop."""
        return kohya_place(image, self.spec, self.main)

    def assign(self, image: Size, sub_image_num: int = 0) -> list[Size]:
        """Buckets an image is trained in: its main bucket first, then its sub buckets (all distinct).
        Raises `NoBucketError` when no_upscale leaves no bucket of at least one step per side."""
        if self.spec.mode == "kohya":
            return [self.place(image).bucket]
        main_choices = list(self.main)
        if self.spec.no_upscale:
            main_choices = [b for b in main_choices if not needs_upscale(image, b)]
            if not main_choices:
                return [downscaled_bucket(image, self.spec)]
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
