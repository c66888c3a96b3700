"""Bucket math: the spec's example exactly, and properties over random specs and images (hypothesis)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lorakit.data.buckets import (
    BucketPlan,
    BucketSpec,
    NoBucketError,
    Placement,
    aspect_distance,
    cover_crop,
    downscaled_bucket,
    kohya_limits,
    kohya_place,
    kohya_predefined,
    kohya_resolutions,
    main_buckets,
    pick_sub_buckets,
    sub_buckets,
    trim_offsets,
)

SPEC_004 = BucketSpec(max_size=(768, 512), step=128, min_length=256)
MAIN_004 = {(384, 768), (512, 768), (512, 640), (512, 512), (640, 512), (768, 512), (768, 384)}
SUB_004 = {(256, 512), (384, 640), (256, 384), (384, 512), (384, 384), (256, 256), (512, 384), (384, 256),
           (640, 384), (512, 256)}


def test_spec_example_main_and_sub_buckets() -> None:
    main = main_buckets(SPEC_004)
    assert set(main) == MAIN_004 and len(main) == 7
    assert set(sub_buckets(SPEC_004, main)) == SUB_004


def test_size_order_does_not_matter() -> None:
    swapped = BucketSpec(max_size=(512, 768), step=128, min_length=256)
    a, b = BucketPlan.build(swapped), BucketPlan.build(SPEC_004)
    assert (a.main, a.sub) == (b.main, b.sub)


@pytest.mark.parametrize("image", [(512, 640), (800, 1000), (780, 1000), (880, 1000), (1024, 1280)])
def test_spec_example_sub_images(image: tuple[int, int]) -> None:
    plan = BucketPlan.build(SPEC_004)
    buckets = plan.assign(image, sub_image_num=3)
    assert buckets[0] == (512, 640)
    assert set(buckets[1:]) == {(384, 640), (256, 384), (384, 512)}


def test_spec_example_eight_training_images_with_mirroring(tmp_path) -> None:
    from PIL import Image

    from lorakit.data.pipeline import build_dataset
    from lorakit.data.settings import DataSection

    Image.new("RGB", (800, 1000), "red").save(tmp_path / "a.png")
    cfg = DataSection(train_data_dir=str(tmp_path), image_size=(768, 512), bucket_reso_steps=128,
                      min_bucket_reso=256, sub_image_num=3, flip_aug=True)
    plan = build_dataset(cfg, batch_size=1, seed=0)
    assert len(plan.train) == 8
    assert {(ex.size, ex.flip) for ex in plan.train} == {
        (s, f) for s in [(512, 640), (384, 640), (256, 384), (384, 512)] for f in (False, True)
    }
    assert len(plan.sampler) == 8


def test_default_traintrain_three_buckets() -> None:
    """The spec: image size 768,512 with the default step 256 gives 768×512, 512×512, 512×768."""
    spec = BucketSpec(max_size=(768, 512), step=256, min_length=256)
    assert set(main_buckets(spec)) == {(768, 512), (512, 512), (512, 768)}


def test_sub_buckets_never_repeat_even_when_many_are_asked() -> None:
    plan = BucketPlan.build(SPEC_004)
    buckets = plan.assign((512, 640), sub_image_num=30)
    assert len(buckets) == len(set(buckets))
    assert all(w <= 512 and h <= 640 for w, h in buckets[1:])


# -- kohya mode: sd-scripts' BucketManager (library/train_util.py) and make_bucket_resolutions (model_util.py) -----
# round_to_steps(x) = int(x + 0.5) rounded down to the step. With no_upscale, an image above the max area is scaled to
# rw = sqrt(area × ar), rh = area / rw; width-first: bw = round_to_steps(rw), its height round_to_steps(bw / ar);
# height-first: bh = round_to_steps(rh), its width round_to_steps(bh × ar); the candidate whose w/h is closer to ar
# wins (height-first on a tie) and sets resized = (bw, int(bw / ar + 0.5)) or (int(bh × ar + 0.5), bh); the bucket
# is each resized side rounded down to the step. An image within the area is not resized: bucket = its size rounded
# down. min/max_bucket_reso are ignored.
NO_UPSCALE = [
    # image, max size, bucket, resized
    # ar 0.8, rw 457.96 → bw 448, 448/0.8 = 560 → 512: 0.875; rh 572.4 → bh 512, 409.6 → 384: 0.75 → height-first
    ((800, 1000), (512, 512), (384, 512), (410, 512)),  # the example (lorakit had 448×512)
    # ar 1.778, rw 1365.3 → bw 1344, 756 → 704: 1.909; rh 768 → bh 768, 1365.3 → 1344: 1.75 → height-first
    ((1920, 1080), (1024, 1024), (1344, 768), (1365, 768)),  # the example (lorakit had 1024×576)
    # ar 40, rw 3238.2 → bw 3200, 80 → 64: 50; rh 80.95 → bh 64, 2560: 40 exactly → height-first; shrunk, never enlarged
    ((4000, 100), (512, 512), (2560, 64), (2560, 64)),
    ((4000, 100), (1024, 1024), (3968, 64), (4000, 100)),  # 400000 px ≤ 1024²: no resize, only a crop
    ((300, 200), (512, 512), (256, 192), (300, 200)),  # within the area: cropped, never enlarged
    # ar 2, rw 724.08 → bw 704, 352 → 320: 2.2; rh 362.04 → bh 320, 640: 2.0 → height-first (max_bucket_reso ignored)
    ((2000, 1000), (512, 512), (640, 320), (640, 320)),
    ((1000, 1000), (512, 512), (512, 512), (512, 512)),  # a tie (both exact): height-first, 512×512
    ((1000, 2000), (512, 512), (320, 640), (320, 640)),  # the transpose of the 2000×1000 case
]


@pytest.mark.parametrize("image,max_size,bucket,resized", NO_UPSCALE)
def test_kohya_no_upscale_buckets(image, max_size, bucket, resized) -> None:
    spec = BucketSpec(max_size=max_size, step=64, min_length=256, max_side=1024, mode="kohya", no_upscale=True)
    assert kohya_place(image, spec) == Placement(bucket, resized)
    assert BucketPlan.build(spec).assign(image) == [bucket]


def test_kohya_no_upscale_refuses_a_side_below_one_step() -> None:
    """2000×50 is within 512²: sd-scripts keeps its size and rounds 50 down to a 0-pixel bucket side; lorakit
    refuses it instead of enlarging it to 64 (which bucket_no_upscale promises never to do)."""
    spec = BucketSpec(max_size=(512, 512), step=64, mode="kohya", no_upscale=True)
    with pytest.raises(NoBucketError, match="2000×50"):
        kohya_place((2000, 50), spec)


def test_kohya_resolutions_as_make_bucket_resolutions() -> None:
    """make_bucket_resolutions((512, 512), 256, 1024, 64): the square int(sqrt(262144) // 64) × 64 = 512, then for
    width 256…1024 the height min(1024, (262144 // w) // 64 × 64) when ≥ 256: 256→1024, 320→768 (819→768),
    384→640 (682), 448→576 (585), 512→512; 576→448 (455), 640→384 (409), 704→320 (372), 768→320 (341), 832→256
    (315), 896→256 (292), 960→256 (273), 1024→256; each with its transpose."""
    half = [(256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320),
            (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256)]
    assert kohya_resolutions((512, 512), 256, 1024, 64) == sorted(set(half) | {(h, w) for w, h in half})


def test_kohya_limits_as_adjust_min_max_bucket_reso_by_steps() -> None:
    """min rounded down, max rounded up to the step; unset max = sd-scripts' default 1024."""
    assert kohya_limits(BucketSpec((512, 512), 64, min_length=300, max_side=1000, mode="kohya")) == (256, 1024)
    assert kohya_limits(BucketSpec((512, 512), 64, min_length=256, mode="kohya")) == (256, 1024)


PREDEFINED = [
    # image, max size, bucket, resized: the bucket whose w/h is nearest (np.argmin of |bucket ar − ar|, the first on
    # a tie); scale = bucket h / image h when the image is wider than the bucket, else bucket w / image w; resized =
    # int(side × scale + 0.5) (it may enlarge)
    ((800, 1000), (512, 512), (448, 576), (461, 576)),  # ar 0.8: 448/576 = 0.778 is nearest; 0.8 > 0.778 → × 0.576
    ((1920, 1080), (1024, 1024), (1024, 576), (1024, 576)),  # 1024/576 = 1.778 exactly; × 1024/1920
    ((512, 512), (512, 512), (512, 512), (512, 512)),  # the image's own size is a bucket
    ((4000, 100), (512, 512), (1024, 256), (10240, 256)),  # ar 40: 1024×256 (ar 4) nearest; × 2.56 — enlarged
    ((640, 480), (512, 512), (576, 448), (597, 448)),  # ar 1.333: 576/448 = 1.286 (0.048) beats 640/384 (0.333)
]


@pytest.mark.parametrize("image,max_size,bucket,resized", PREDEFINED)
def test_kohya_predefined_buckets(image, max_size, bucket, resized) -> None:
    spec = BucketSpec(max_size=max_size, step=64, min_length=256, max_side=1024, mode="kohya")
    assert kohya_place(image, spec) == Placement(bucket, resized)
    assert BucketPlan.build(spec).assign(image) == [bucket]


def test_kohya_without_buckets_covers_the_resolution_and_crops_the_centre() -> None:
    """enable_bucket off: one predefined resolution; 800×1000 → × 512/800 → 512×640, 64 rows cut at the top."""
    placed = kohya_predefined((800, 1000), ((512, 512),))
    assert placed == Placement((512, 512), (512, 640))
    assert trim_offsets(placed.resized, placed.bucket) == (64, 0)
    assert trim_offsets((410, 512), (384, 512)) == (0, 13)  # trim_and_resize_if_required: (410 − 384) // 2


def test_traintrain_no_upscale_fallback_never_enlarges() -> None:
    """The issue's 4000×100 at 512² (min side 256): no main bucket fits; it is cropped to 2:1 (200×100), rounded
    down (192×64, ratio 3) and the long side shortened to 2 × 64 = 128: never enlarged; a side below one step is
    refused."""
    spec = BucketSpec(max_size=(512, 512), step=64, min_length=256, no_upscale=True)
    assert BucketPlan.build(spec).assign((4000, 100)) == [(128, 64)]
    assert downscaled_bucket((4000, 100), spec) == (128, 64)
    with pytest.raises(NoBucketError):
        BucketPlan.build(spec).assign((4000, 50))


def test_no_upscale_traintrain_skips_larger_buckets() -> None:
    spec = BucketSpec(max_size=(768, 512), step=128, min_length=256, no_upscale=True)
    buckets = BucketPlan.build(spec).assign((520, 650), sub_image_num=3)
    assert all(w <= 520 and h <= 650 for w, h in buckets)


def test_cover_crop_centres() -> None:
    assert cover_crop((1000, 500), (512, 512)) == ((1024, 512), (0, 256))
    assert cover_crop((500, 1000), (512, 512)) == ((512, 1024), (256, 0))


# -- properties ----------------------------------------------------------------------------------------------------

steps = st.sampled_from([8, 32, 64, 128])


@st.composite
def specs(draw: st.DrawFn, mode: str = "traintrain") -> BucketSpec:
    step = draw(steps)
    w = draw(st.integers(1, 24)) * step
    h = draw(st.integers(1, 24)) * step
    assume(64 <= min(w, h) and max(w, h) <= 2048)
    return BucketSpec(
        max_size=(w, h),
        step=step,
        min_length=draw(st.integers(8, 1024)),
        max_side=draw(st.none() | st.integers(64, 2048)),
        max_ratio=draw(st.floats(1.0, 4.0)),
        mode=mode,  # type: ignore[arg-type]
        no_upscale=draw(st.booleans()),
    )


images = st.tuples(st.integers(16, 5000), st.integers(16, 5000))


def _check_bucket(spec: BucketSpec, b: tuple[int, int]) -> None:
    assert b[0] % spec.step == 0 and b[1] % spec.step == 0
    assert b[0] * b[1] <= spec.max_area
    assert max(b) <= spec.longest
    assert min(b) >= spec.shortest
    assert spec.ratio_ok(b)


@settings(max_examples=150, deadline=None)
@given(specs())
def test_every_bucket_respects_the_limits(spec: BucketSpec) -> None:
    main = main_buckets(spec)
    sub = sub_buckets(spec, main)
    assert main and not set(main) & set(sub)
    for b in main + sub:
        _check_bucket(spec, b)
    assert set(main) == {(h, w) for w, h in main}  # closed under transposition
    assert set(sub) == {(h, w) for w, h in sub}


def _assign(plan: BucketPlan, image: tuple[int, int], n_sub: int = 0) -> list[tuple[int, int]] | None:
    try:
        return plan.assign(image, n_sub)
    except NoBucketError:
        return None


@settings(max_examples=200, deadline=None)
@given(specs(), images, st.integers(0, 6))
def test_assignment(spec: BucketSpec, image: tuple[int, int], n_sub: int) -> None:
    plan = BucketPlan.build(spec)
    candidates = [b for b in plan.main if not (spec.no_upscale and (b[0] > image[0] or b[1] > image[1]))]
    buckets = _assign(plan, image, n_sub)
    if buckets is None:  # refused: only with no_upscale, when no bucket fits without enlarging
        assert spec.no_upscale and not candidates
        return
    main = buckets[0]
    assert len(buckets) == len(set(buckets)) and len(buckets) <= 1 + n_sub
    if candidates:  # the nearest aspect among the allowed main buckets
        best = min(aspect_distance(image, b) for b in candidates)
        assert aspect_distance(image, main) == best
        for s in buckets[1:]:
            assert s in plan.sub and s[0] <= main[0] and s[1] <= main[1]
    else:  # no_upscale and the image is smaller than every main bucket: downscaled or cropped, never enlarged
        assert spec.no_upscale and main[0] <= image[0] and main[1] <= image[1]
        assert main[0] % spec.step == 0 and main[1] % spec.step == 0 and spec.ratio_ok(main)
    if not spec.no_upscale:
        expected_subs = min(n_sub, len([s for s in plan.sub if s[0] <= main[0] and s[1] <= main[1]]))
        assert len(buckets) == 1 + expected_subs


@settings(max_examples=200, deadline=None)
@given(specs(), images, st.integers(0, 6))
def test_transposed_image_gets_transposed_buckets(spec: BucketSpec, image: tuple[int, int], n_sub: int) -> None:
    assume(image[0] != image[1])
    plan = BucketPlan.build(spec)
    flipped, straight = _assign(plan, (image[1], image[0]), n_sub), _assign(plan, image, n_sub)
    assert flipped == (None if straight is None else [(h, w) for w, h in straight])


@settings(max_examples=200, deadline=None)
@given(specs("kohya"), images)
def test_kohya_buckets(spec: BucketSpec, image: tuple[int, int]) -> None:
    plan = BucketPlan.build(spec)
    try:
        placed = plan.place(image)
    except NoBucketError:  # only where sd-scripts would make a 0-pixel side: the short side, once the image is
        # shrunk to the max area, is below one step (+1 for its half-up rounding)
        shrink = min(1.0, (spec.max_area / (image[0] * image[1])) ** 0.5)
        assert spec.no_upscale and min(image) * shrink < spec.step + 1
        return
    (bw, bh), (rw, rh) = placed.bucket, placed.resized
    assert bw % spec.step == 0 and bh % spec.step == 0 and bw and bh
    assert rw >= bw and rh >= bh  # the resized image covers the bucket: a crop, no padding
    if spec.no_upscale:
        assert rw <= image[0] and rh <= image[1]  # never enlarged
        assert (bw, bh) == (rw - rw % spec.step, rh - rh % spec.step)
    else:  # the nearest w/h (a difference of w/h, so a transposed image need not get the transposed bucket)
        assert abs(bw / bh - image[0] / image[1]) == min(abs(w / h - image[0] / image[1]) for w, h in plan.main)
        assert min(rw - bw, rh - bh) <= 1  # one side fits exactly


@settings(max_examples=300, deadline=None)
@given(images, st.tuples(st.integers(1, 64), st.integers(1, 64)))
def test_cover_crop_stays_inside(image: tuple[int, int], bucket_steps: tuple[int, int]) -> None:
    bucket = (bucket_steps[0] * 16, bucket_steps[1] * 16)
    (rw, rh), (top, left) = cover_crop(image, bucket)
    assert rw >= bucket[0] and rh >= bucket[1]
    assert 0 <= left and left + bucket[0] <= rw and 0 <= top and top + bucket[1] <= rh
    assert min(rw - bucket[0], rh - bucket[1]) <= 1  # covers tightly: one side fits exactly
    kept = Fraction(bucket[0] * bucket[1], rw * rh)
    assert abs(float(kept) - 1 / float(aspect_distance(image, bucket))) < 0.01 + 2 / min(bucket)  # rounding


def test_spec_order_is_sorted_by_aspect() -> None:
    main = main_buckets(SPEC_004)
    assert [Fraction(w, h) for w, h in main] == sorted(Fraction(w, h) for w, h in main)
    assert pick_sub_buckets((512, 640), (512, 640), sub_buckets(SPEC_004), 0) == []


@pytest.mark.parametrize(("bucket", "image", "flip", "expected"), [
    # sd-scripts BucketManager.get_crop_ltrb: fit the image inside the bucket, offsets = half the gap, floored
    ((384, 512), (800, 1000), False, (16, 0)),   # 384 / 0.8 = 480 high: top (512 - 480) // 2 = 16
    ((1344, 768), (1920, 1080), False, (6, 0)),  # 1344 / (16/9) = 756 high: top (768 - 756) // 2 = 6
    ((1024, 768), (1000, 1000), False, (0, 128)),  # 768 wide: left (1024 - 768) // 2 = 128
    ((1024, 768), (1000, 1000), True, (0, 128)),   # mirrored: 1024 - (128 + 768) = 128
    ((1024, 768), (900, 1000), True, (0, 166)),    # 691.2 wide: left 166.0, right 857.2 → int(1024 - 857.2) = 166
    ((1024, 768), (900, 1000), False, (0, 166)),
])
def test_kohya_crop_conditioning(bucket, image, flip, expected) -> None:
    from lorakit.data.buckets import kohya_crop_conditioning

    assert kohya_crop_conditioning(bucket, image, flip) == expected
