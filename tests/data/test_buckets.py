"""Bucket math: the spec's example exactly, and properties over random specs and images (hypothesis)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lorakit.data.buckets import (
    BucketPlan,
    BucketSpec,
    aspect_distance,
    cover_crop,
    kohya_bucket,
    main_buckets,
    pick_sub_buckets,
    sub_buckets,
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


def test_kohya_mode_never_upscales_and_respects_area() -> None:
    spec = BucketSpec(max_size=(512, 512), step=64, min_length=256, mode="kohya")
    assert kohya_bucket((300, 200), spec) == (256, 192)
    assert kohya_bucket((2000, 1000), spec) == (512, 256)  # the long side is capped at 512
    wide = BucketSpec(max_size=(512, 512), step=64, min_length=256, max_side=1024, mode="kohya")
    assert kohya_bucket((2000, 1000), wide) == (640, 320)  # 724×362 → 704×320 → ratio capped at 2
    assert kohya_bucket((2000, 1500), wide) == (576, 384)  # 591×443 → rounded down
    assert BucketPlan.build(wide).assign((2000, 1000)) == [(640, 320)]


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


@settings(max_examples=200, deadline=None)
@given(specs(), images, st.integers(0, 6))
def test_assignment(spec: BucketSpec, image: tuple[int, int], n_sub: int) -> None:
    plan = BucketPlan.build(spec)
    buckets = plan.assign(image, n_sub)
    main = buckets[0]
    assert len(buckets) == len(set(buckets)) and len(buckets) <= 1 + n_sub
    candidates = [b for b in plan.main if not (spec.no_upscale and (b[0] > image[0] or b[1] > image[1]))]
    if candidates:  # the nearest aspect among the allowed main buckets
        best = min(aspect_distance(image, b) for b in candidates)
        assert aspect_distance(image, main) == best
        for s in buckets[1:]:
            assert s in plan.sub and s[0] <= main[0] and s[1] <= main[1]
    else:  # no_upscale and the image is smaller than every main bucket: its own size, rounded down
        assert spec.no_upscale and main[0] <= max(image[0], spec.step) and main[1] <= max(image[1], spec.step)
    if not spec.no_upscale:
        expected_subs = min(n_sub, len([s for s in plan.sub if s[0] <= main[0] and s[1] <= main[1]]))
        assert len(buckets) == 1 + expected_subs


@settings(max_examples=200, deadline=None)
@given(specs(), images, st.integers(0, 6))
def test_transposed_image_gets_transposed_buckets(spec: BucketSpec, image: tuple[int, int], n_sub: int) -> None:
    assume(image[0] != image[1])
    plan = BucketPlan.build(spec)
    flipped = plan.assign((image[1], image[0]), n_sub)
    assert flipped == [(h, w) for w, h in plan.assign(image, n_sub)]


@settings(max_examples=200, deadline=None)
@given(specs("kohya"), images)
def test_kohya_buckets(spec: BucketSpec, image: tuple[int, int]) -> None:
    (b,) = BucketPlan.build(spec).assign(image)
    assert b[0] % spec.step == 0 and b[1] % spec.step == 0
    assert b[0] * b[1] <= max(spec.max_area, spec.step * spec.step)
    assert max(b) <= spec.longest
    assert max(b) <= spec.max_ratio * min(b) + 1e-9 or min(b) == spec.step
    assert b[0] <= max(image[0], spec.step) and b[1] <= max(image[1], spec.step)  # never upscaled


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
