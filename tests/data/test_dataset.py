"""Scanning, captions, validation split, regularisation, and the bucket batch sampler."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from lorakit.data.captions import CaptionRules, vary
from lorakit.data.pipeline import build_dataset, split_validation
from lorakit.data.scan import parse_repeats, scan_folder
from lorakit.data.settings import DataSection
from lorakit.errors import DataError


def img(path: Path, size: tuple[int, int] = (64, 64), caption: str | None = None, ext: str = ".txt") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    if caption is not None:
        path.with_suffix(ext).write_text(caption, encoding="utf-8")
    return path


def cfg(root: Path, **kw) -> DataSection:
    return DataSection(**{"train_data_dir": str(root), "resolution": 64, **kw})


def test_parse_repeats() -> None:
    assert parse_repeats("10_mychar") == (10, "mychar")
    assert parse_repeats("3_sks dog") == (3, "sks dog")
    assert parse_repeats("mychar") == (None, "mychar")
    assert parse_repeats("v2_x") == (None, "v2_x")


def test_scan_nested_repeats_and_hidden(tmp_path: Path) -> None:
    img(tmp_path / "top.png")
    img(tmp_path / "10_char" / "a.png")
    img(tmp_path / "10_char" / "outfits" / "b.jpg")
    img(tmp_path / "2_style" / "3_inner" / "c.png")
    img(tmp_path / ".hidden" / "d.png")
    img(tmp_path / "10_char" / ".e.png")
    (tmp_path / "10_char" / "notes.md").write_text("x")
    records = {r.rel: r for r in scan_folder(tmp_path, default_repeats=2)}
    assert set(records) == {"top.png", "10_char/a.png", "10_char/outfits/b.jpg", "2_style/3_inner/c.png"}
    assert {k: r.repeats for k, r in records.items()} == {
        "top.png": 2, "10_char/a.png": 10, "10_char/outfits/b.jpg": 10, "2_style/3_inner/c.png": 3}
    assert records["10_char/outfits/b.jpg"].folder_name == "10_char"


def test_scan_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(DataError, match="no images"):
        scan_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png") as info:
        scan_folder(tmp_path)
    assert "lorakit prepare" in str(info.value)


def test_exif_rotated_size_is_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (200, 100)).save(tmp_path / "r.jpg", exif=exif)
    assert scan_folder(tmp_path)[0].size == (100, 200)


def test_captions_txt_wins_trigger_and_class_tokens(tmp_path: Path) -> None:
    a = img(tmp_path / "5_sks dog" / "a.png", caption="from txt")
    a.with_suffix(".caption").write_text("from caption", encoding="utf-8")
    img(tmp_path / "5_sks dog" / "b.png", caption="only caption", ext=".caption")
    img(tmp_path / "5_sks dog" / "c.png")
    plan = build_dataset(cfg(tmp_path, trigger_word="zkz"), 1, 0, fingerprints=False)
    caps = {ex.image.name: ex.caption for ex in plan.train}
    assert caps == {"a.png": "zkz, from txt", "b.png": "zkz, only caption", "c.png": "zkz"}
    plan = build_dataset(cfg(tmp_path, class_tokens_from_folder=True, caption_extension="caption"), 1, 0)
    caps = {ex.image.name: ex.caption for ex in plan.train}
    assert caps == {"a.png": "from caption", "b.png": "only caption", "c.png": "sks dog"}
    (folder,) = plan.folders
    assert (folder.images, folder.repeats, folder.captions_found, folder.captions_missing) == (3, 5, 2, 1)


def test_metadata_templates_csv_and_json(tmp_path: Path) -> None:
    img(tmp_path / "plans" / "p1.png", caption="bright")
    img(tmp_path / "plans" / "p2.png")
    (tmp_path / "meta.csv").write_text("file_name,floor_type,grid\nplans/p1.png,studio,4x4\np2.png,loft,8x8\n")
    template = "floor plan, {floor_type}, {grid} grid, {caption}"
    plan = build_dataset(cfg(tmp_path, caption_metadata=str(tmp_path / "meta.csv"), caption_template=template), 1, 0)
    caps = {ex.image.name: ex.caption for ex in plan.train}
    assert caps == {"p1.png": "floor plan, studio, 4x4 grid, bright", "p2.png": "floor plan, loft, 8x8 grid"}
    (tmp_path / "meta.json").write_text(json.dumps({"p1.png": {"caption": "from json"}, "p2": {"text": "t2"}}))
    plan = build_dataset(cfg(tmp_path, caption_metadata="meta.json"), 1, 0)  # relative to the data folder
    assert {ex.image.name: ex.caption for ex in plan.train} == {"p1.png": "bright", "p2.png": "t2"}
    bad = cfg(tmp_path, caption_metadata=str(tmp_path / "meta.csv"), caption_template="{floors}")
    with pytest.raises(DataError, match="'floors'"):
        build_dataset(bad, 1, 0)


def test_vary_keeps_trigger_and_keep_tokens() -> None:
    rules = CaptionRules(trigger_word="zkz", shuffle=True, keep_tokens=1)
    caption = "zkz, girl, a, b, c, d, e"
    seen = {vary(caption, rules, random.Random(i)) for i in range(50)}
    assert len(seen) > 10
    for text in seen:
        tags = text.split(", ")
        assert tags[:2] == ["zkz", "girl"] and sorted(tags[2:]) == ["a", "b", "c", "d", "e"]
    drop = CaptionRules(dropout_rate=0.5)
    results = Counter(vary("a, b", drop, random.Random(i)) for i in range(400))
    assert set(results) == {"", "a, b"} and 150 < results[""] < 250
    tag_drop = CaptionRules(tag_dropout_rate=1.0, keep_tokens=1)
    assert vary("a, b, c", tag_drop, random.Random(0)) == "a"


def test_tag_frequency_per_folder(tmp_path: Path) -> None:
    img(tmp_path / "2_x" / "a.png", caption="red, hat")
    img(tmp_path / "2_x" / "b.png", caption="red, shoe")
    img(tmp_path / "y" / "c.png", caption="blue")
    plan = build_dataset(cfg(tmp_path, flip_aug=True), 1, 0)
    assert plan.tag_frequency == {"2_x": {"red": 2, "hat": 1, "shoe": 1}, "y": {"blue": 1}}


def test_validation_split_is_deterministic_and_by_image(tmp_path: Path) -> None:
    for i in range(20):
        img(tmp_path / f"{i:02d}.png")
    plan = build_dataset(cfg(tmp_path, validation_split=0.1, flip_aug=True), 1, seed=3)
    again = build_dataset(cfg(tmp_path, validation_split=0.1, flip_aug=True), 1, seed=3)
    other = build_dataset(cfg(tmp_path, validation_split=0.1, flip_aug=True, validation_seed=4), 1, seed=3)
    val = {ex.image for ex in plan.validation}
    assert len(val) == 2 and len(plan.validation) == 2  # one example per image, not mirrored
    assert val == {ex.image for ex in again.validation} and val != {ex.image for ex in other.validation}
    assert not val & {ex.image for ex in plan.train} and len(plan.train) == 36
    records = scan_folder(tmp_path)
    assert split_validation(records, 0.0, 0) == (records, [])


def test_validation_folder(tmp_path: Path) -> None:
    img(tmp_path / "train" / "a.png")
    img(tmp_path / "val" / "5_v" / "b.png")
    plan = build_dataset(cfg(tmp_path / "train", validation_data_dir=str(tmp_path / "val")), 1, 0)
    assert [ex.image.name for ex in plan.validation] == ["b.png"] and plan.validation[0].repeats == 1


def test_sampler_batches_one_bucket_deterministic(tmp_path: Path) -> None:
    for i in range(7):
        img(tmp_path / "3_wide" / f"w{i}.png", (256, 128))
    for i in range(5):
        img(tmp_path / "tall" / f"t{i}.png", (128, 256))
    data = cfg(tmp_path, resolution=128, bucket_reso_steps=32, min_bucket_reso=64)
    plan = build_dataset(data, batch_size=4, seed=7)
    sampler = plan.sampler
    epoch0 = list(sampler.batches(0))
    assert len(epoch0) == len(sampler) == 6 + 2  # 21 wide uses → 6 batches, 5 tall → 2
    for batch in epoch0:
        assert len({ex.size for ex in batch}) == 1 and 1 <= len(batch) <= 4
    uses = Counter(ex.image.name for batch in epoch0 for ex in batch)
    assert all(uses[f"w{i}.png"] == 3 for i in range(7)) and all(uses[f"t{i}.png"] == 1 for i in range(5))
    assert [[e.image for e in b] for b in epoch0] == [[e.image for e in b] for b in plan.sampler.batches(0)]
    assert [[e.image for e in b] for b in epoch0] != [[e.image for e in b] for b in sampler.batches(1)]
    again = build_dataset(data, batch_size=4, seed=7).sampler
    assert [[e.image for e in b] for b in again.batches(5)] == [[e.image for e in b] for b in sampler.batches(5)]
    assert {ex.size for b in epoch0 for ex in b} == {(128, 64), (64, 128)}


def test_regularisation_balanced_to_train_uses(tmp_path: Path) -> None:
    for i in range(3):
        img(tmp_path / "train" / "2_x" / f"a{i}.png")
    for i in range(10):
        img(tmp_path / "reg" / "1_dog" / f"r{i}.png")
    plan = build_dataset(cfg(tmp_path / "train", reg_data_dir=str(tmp_path / "reg")), 2, 0)
    uses = [ex for b in plan.sampler.batches(0) for ex in b]
    assert sum(not ex.is_reg for ex in uses) == 6 and sum(ex.is_reg for ex in uses) == 6
    assert len(plan.sampler) == 6 and len(plan.reg) == 10
    assert {f.is_reg for f in plan.folders} == {True, False}
    assert "dog" not in str(plan.tag_frequency)


def test_mixed_aspects_with_batch_size_four_cover_everything(tmp_path: Path) -> None:
    sizes = [(300, 200), (200, 300), (250, 250), (400, 100)]
    for i in range(10):
        img(tmp_path / f"{i}.png", sizes[i % 4])
    plan = build_dataset(cfg(tmp_path, resolution=128, bucket_reso_steps=32, min_bucket_reso=32,
                             max_aspect_ratio=4.0), 4, 0)
    batches = list(plan.sampler.batches(0))
    assert sorted(ex.image.name for b in batches for ex in b) == sorted(f"{i}.png" for i in range(10))
    assert all(len({ex.size for ex in b}) == 1 for b in batches)
    assert len({b[0].size for b in batches}) == 4


def test_shuffled_captions_vary_per_epoch_but_not_per_run(tmp_path: Path) -> None:
    img(tmp_path / "a.png", caption="a, b, c, d, e, f")
    data = cfg(tmp_path, shuffle_caption=True, trigger_word="zkz")
    s1, s2 = build_dataset(data, 1, 0).sampler, build_dataset(data, 1, 0).sampler
    caps = [next(iter(s1.batches(e)))[0].caption for e in range(6)]
    assert caps == [next(iter(s2.batches(e)))[0].caption for e in range(6)]
    assert len(set(caps)) > 1 and all(c.startswith("zkz, ") for c in caps)
    assert build_dataset(data, 1, 0).captions_vary


def test_disabled_buckets_use_one_size(tmp_path: Path) -> None:
    img(tmp_path / "a.png", (300, 100))
    img(tmp_path / "b.png", (100, 300))
    plan = build_dataset(cfg(tmp_path, enable_bucket=False, image_size=(128, 64)), 2, 0)
    assert {ex.size for ex in plan.train} == {(128, 64)} and len(plan.sampler) == 1


def test_settings_validation() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="multiple of bucket_reso_steps"):
        DataSection(resolution=96)
    with pytest.raises(ValidationError, match="traintrain"):
        DataSection(bucket_mode="kohya", sub_image_num=2)
    with pytest.raises(ValidationError, match="extra"):
        DataSection(bucket_step=64)  # unknown keys are errors
    assert DataSection(image_size=(512, 768)).max_size == (512, 768)
    assert DataSection(caption_extension="caption").caption_extension == ".caption"


def test_sdxl_conditioning_fields(tmp_path: Path) -> None:
    img(tmp_path / "a.png", (300, 200))
    plan = build_dataset(cfg(tmp_path, resolution=128, bucket_reso_steps=32, min_bucket_reso=32, flip_aug=True), 1, 0)
    plain, flipped = sorted(plan.train, key=lambda e: e.flip)
    assert plain.original_size == (200, 300) and plain.size == (128, 96)  # resized to 144×96, 8 px cut each side
    assert plain.crop_top_left == (0, 8) and flipped.crop_top_left == (0, 8)
    assert plain.key != flipped.key
