"""data.subsets: sd-scripts' dataset subsets ([[datasets.subsets]]) read, counted and trained as sd-scripts does.

Every expected number is arithmetic written from reading sd-scripts (kohya-ss/sd-scripts), not lorakit's output:
- library/train_util.py DreamBoothDataset.__init__: subsets in the order given; each image_dir read by
  load_dreambooth_dir → glob_images(image_dir, '*'): '*' + each of IMAGE_EXTENSIONS (.png .jpg .jpeg .webp .bmp and
  the same in upper case), not recursive, sorted; '*' skips names starting with '.'. A subset without images is
  skipped with a warning ("ignore subset with image_dir=…: no images found"), and so is a subset equal to an
  earlier one (DreamBoothSubset.__eq__ compares image_dir). T = Σ train images × num_repeats; regularisation:
  whole reg images (in subset order) with their repeats until T is reached, then +1 repeat per image in turn.
- read_caption: no caption file → the subset's class_tokens.
- split_train_val: per non-reg subset, the first ceil(n × (1 − split)) images train; reg subsets are not split.
- BaseDataset.make_buckets: train and reg uses share the buckets; batches per epoch = Σ ceil(len(bucket) / batch);
  train_network.py: steps per epoch = ceil(batches / gradient_accumulation_steps), total = epochs × that;
  get_scheduler_fix: warm-up int(ratio × total) for a ratio below 1.
All images here are 64×64 at resolution 64: one bucket, so batches = ceil(samples / batch).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lorakit import api
from lorakit.config.loader import load_config, resolve_layers
from lorakit.config.plan import build_plan, render_plan
from lorakit.config.validate import check_paths
from lorakit.data.pipeline import build_dataset
from lorakit.data.scan import scan_kohya_subsets
from lorakit.data.settings import DataSection, Subset
from lorakit.errors import ConfigError, DataError

from conftest import write_images  # noqa: I001 (tests/ is on sys.path)

SQ = (64, 64)
B64 = ["data.resolution=64", "data.min_bucket_reso=64", "data.bucket_reso_steps=64"]


@dataclass
class Case:
    """Folders (path under tmp → image count), subsets (image_dir under tmp, num_repeats, is_reg), settings and
    what sd-scripts runs."""

    name: str
    folders: dict[str, int]
    subsets: list[tuple[str, int, bool]]
    sets: list[str]
    samples: int  # per epoch: train uses + reg uses
    batches: int
    per_epoch: int
    total: int
    warmup: int = 0
    setup: Callable[[Path], None] | None = None
    warnings: list[str] = field(default_factory=list)  # words the plan's warnings must contain


def _odd_extensions(root: Path) -> None:
    """'a' holds img0..img9 as PNG data; rename them to the extensions under test, add a hidden one."""
    names = ["img0.png", "img1.PNG", "img2.Png", "img3.JPG", "img4.jpeg", "img5.gif", "img6.tif", "img7.webp",
             "img8.bmp", "img9.Jpg"]
    for i, name in enumerate(names):
        os.replace(root / "a" / f"img{i}.png", root / "a" / name)
    os.replace(root / "a" / "img9.txt", root / "a" / ".hidden.png")


def _only_a_gif(root: Path) -> None:
    (root / "empty").mkdir()
    (root / "empty" / "x.gif").write_bytes(b"GIF89a")


CASES = [
    # T = 3×10 + 2×3 = 36; batch 2 → 18 batches; 2 epochs → 36
    Case("two train subsets", {"a": 3, "b": 2}, [("a", 10, False), ("b", 3, False)],
         ["train.train_batch_size=2", "train.max_train_epochs=2"], 36, 18, 18, 36),
    # T = 10×2 = 20; reg r (15 repeats): r0 → 15 < 20, r1 → 30 ≥ 20: 30 reg uses (10 over); samples 50
    Case("reg overshoot", {"a": 10, "r": 3}, [("a", 2, False), ("r", 15, True)], [], 50, 50, 50, 50),
    # T = 5; reg subsets in the order given: s0 (7 repeats) → 7 ≥ 5: 7 reg uses; samples 12
    Case("reg subsets in order: s first", {"a": 1, "r": 2, "s": 1}, [("a", 5, False), ("s", 7, True),
                                                                    ("r", 1, True)], [], 12, 12, 12, 12),
    # the same folders, r first: r0 1, r1 2, s0 9 ≥ 5: 9 reg uses; samples 14
    Case("reg subsets in order: r first", {"a": 1, "r": 2, "s": 1}, [("a", 5, False), ("r", 1, True),
                                                                    ("s", 7, True)], [], 14, 14, 14, 14),
    # T = 6×5 = 30; reg r (4 × 1) + s (3 × 2) = 10, then +1 per image in turn (7 images): 17, 24, and 6 more → 30;
    # samples 60; batch 4 → 15 batches, accumulation 2 → 8 steps, 2 epochs → 16
    Case("reg topped up one by one", {"a": 6, "r": 4, "s": 3}, [("a", 5, False), ("r", 1, True), ("s", 2, True)],
         ["train.train_batch_size=4", "train.gradient_accumulation_steps=2", "train.max_train_epochs=2"],
         60, 15, 8, 16),
    # no recursion: a/more and a/10_x are not read; T = 2×4 = 8
    Case("sub-folders of image_dir", {"a": 2, "a/more": 3, "a/10_x": 2}, [("a", 4, False)], [], 8, 8, 8, 8,
         warnings=["more", "10_x"]),
    # .png .PNG .JPG .jpeg .webp .bmp count (6); .Png .gif .tif .Jpg and a hidden .png do not: T = 6×2 = 12;
    # batch 4 → 3 batches, 2 epochs → 6
    Case("odd extensions", {"a": 10}, [("a", 2, False)], ["train.train_batch_size=4", "train.max_train_epochs=2"],
         12, 3, 3, 6, setup=_odd_extensions, warnings=["img2.Png", "img5.gif"]),
    # a folder named like 'N_name' takes the subset's num_repeats (2), not the 10 of its name; a name without
    # 'N_' is read as well: T = 3×2 + 2×1 = 8
    Case("folder names do not matter", {"10_x": 3, "cats": 2}, [("10_x", 2, False), ("cats", 1, False)], [],
         8, 8, 8, 8),
    # an empty subset (only a .gif) and an empty reg subset are skipped: T = 2×3 = 6, no regularisation
    Case("empty subsets skipped", {"a": 2, "r": 0}, [("a", 3, False), ("empty", 1, False), ("r", 5, True)], [],
         6, 6, 6, 6, setup=_only_a_gif, warnings=["data.subsets[1].image_dir", "data.subsets[2].image_dir"]),
    # the second subset of the same image_dir is ignored (the first counts): T = 2×5 = 10
    Case("duplicated subset", {"a": 2}, [("a", 5, False), ("a", 7, False)], [], 10, 10, 10, 10,
         warnings=["data.subsets[1]"]),
    # validation_split 0.2: a → ceil(10 × 0.8) = 8 train images, T = 8; reg r not split: r0 3, r1 6, then +1
    # each → 8; samples 16
    Case("validation split, reg not split", {"a": 10, "r": 2}, [("a", 1, False), ("r", 3, True)],
         ["data.validation_split=0.2"], 16, 16, 16, 16),
    # T = 3×7 = 21, batch 2 → 11 batches; accumulation 4 → 3 steps; 5 epochs → 15; warm-up int(0.3 × 15) = 4
    Case("accumulation and warm-up ratio", {"a": 3}, [("a", 7, False)],
         ["train.train_batch_size=2", "train.gradient_accumulation_steps=4", "train.max_train_epochs=5",
          "train.lr_warmup_ratio=0.3"], 21, 11, 3, 15, warmup=4),
]


def _subsets_toml(root: Path, subsets: list[tuple[str, int, bool]], tokens: list[str] | None = None) -> str:
    items = [f"{{image_dir='{root / d}', num_repeats={n}, is_reg={str(reg).lower()}"
             + (f", class_tokens='{tokens[i]}'" if tokens else "") + "}"
             for i, (d, n, reg) in enumerate(subsets)]
    return f"data.subsets=[{', '.join(items)}]"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_subset_steps(tmp_path: Path, case: Case) -> None:
    for i, (rel, count) in enumerate(case.folders.items()):
        (tmp_path / rel).mkdir(parents=True, exist_ok=True)
        write_images(tmp_path / rel, count, SQ, seed=i)
    if case.setup:
        case.setup(tmp_path)
    cfg = resolve_layers(sets=["data.layout='kohya'", *B64, _subsets_toml(tmp_path, case.subsets), *case.sets]).config
    plan = build_plan(cfg)
    s = plan.steps
    assert (s.samples_per_epoch, s.batches_per_epoch, s.steps_per_epoch, s.total_steps, s.warmup_steps) == (
        case.samples, case.batches, case.per_epoch, case.total, case.warmup)
    lines = render_plan(plan)
    assert lines[0].startswith("layout: kohya, dataset subsets") and f"total steps: {case.total}" in lines
    for word in case.warnings:
        assert any(word in w for w in plan.warnings), (word, plan.warnings)


def test_plan_lists_each_subset(tmp_path: Path) -> None:
    """One line per subset: its key, folder, images × num_repeats and uses (reg after balancing: 3 × 15 = 45 for
    T = 3×10 + 2×3 = 36, r0..r2 all needed)."""
    for i, (name, n) in enumerate({"a": 3, "b": 2, "r": 3}.items()):
        write_images(tmp_path / name, n, SQ, seed=i)
    cfg = resolve_layers(sets=["data.layout='kohya'", *B64, _subsets_toml(
        tmp_path, [("a", 10, False), ("b", 3, False), ("r", 15, True)])]).config
    lines = render_plan(build_plan(cfg))
    assert f"  data.subsets[0] {tmp_path / 'a'}: 3 images × 10 repeats = 30 (train)" in lines
    assert f"  data.subsets[1] {tmp_path / 'b'}: 2 images × 3 repeats = 6 (train)" in lines
    assert f"  data.subsets[2] {tmp_path / 'r'}: 3 images × 15 repeats = 45 (reg)" in lines
    assert "total steps: 81" in lines and not any("kohya_ss GUI" in line for line in lines)


def _same_data_two_ways(root: Path) -> tuple[DataSection, DataSection]:
    """train/10_a (3 images, one without caption), train/3_sks_b (2, none captioned), reg/15_r (3): as N_ folders,
    and as subsets with the same repeats and the folders' class tokens."""
    write_images(root / "train" / "10_a", 3, SQ)
    (root / "train" / "10_a" / "img1.txt").unlink()
    b = write_images(root / "train" / "3_sks_b", 2, SQ, seed=1)
    for p in b.glob("*.txt"):
        p.unlink()
    write_images(root / "reg" / "15_r", 3, SQ, seed=2)
    common = {"layout": "kohya", "resolution": 64, "min_bucket_reso": 64, "bucket_reso_steps": 64}
    folders = DataSection(train_data_dir=str(root / "train"), reg_data_dir=str(root / "reg"), **common)
    subsets = DataSection(subsets=[
        Subset(image_dir=str(root / "train" / "10_a"), num_repeats=10, class_tokens="a"),
        Subset(image_dir=str(root / "train" / "3_sks_b"), num_repeats=3, class_tokens="sks_b"),
        Subset(image_dir=str(root / "reg" / "15_r"), num_repeats=15, is_reg=True, class_tokens="r")], **common)
    return folders, subsets


def test_same_as_the_n_folder_layout(tmp_path: Path) -> None:
    """config_util.generate_dreambooth_subsets_config_by_subdirs makes exactly these subsets of the N_ folders, so
    sd-scripts trains the same: T = 3×10 + 2×3 = 36, reg 15, 30, 45 → 45; 81 uses per epoch either way."""
    folders, subsets = _same_data_two_ways(tmp_path)
    a, b = build_dataset(folders, 1, 0), build_dataset(subsets, 1, 0)

    def uses(plan):
        return sorted((str(ex.image), ex.caption, ex.repeats, ex.is_reg) for ex in plan.train + plan.reg)

    assert uses(a) == uses(b) and len(a.sampler) == len(b.sampler) == 81
    captions = {(ex.image.parent.name, ex.image.name): ex.caption for ex in b.train}
    assert captions[("10_a", "img1.png")] == "a" and captions[("3_sks_b", "img0.png")] == "sks_b"  # class_tokens
    assert captions[("10_a", "img0.png")] == "colour block 0"  # the caption file wins


def test_class_tokens_are_the_caption_of_uncaptioned_images(tmp_path: Path) -> None:
    """read_caption finds no file → subset.class_tokens; without class_tokens the caption is empty."""
    for name in ("x", "y"):
        write_images(tmp_path / name, 2, SQ)
        (tmp_path / name / "img0.txt").unlink()
    cfg = DataSection(layout="kohya", resolution=64, min_bucket_reso=64, subsets=[
        Subset(image_dir=str(tmp_path / "x"), class_tokens="sks dog"), Subset(image_dir=str(tmp_path / "y"))])
    captions = {(ex.image.parent.name, ex.image.name): ex.caption for ex in build_dataset(cfg, 1, 0).train}
    assert captions == {("x", "img0.png"): "sks dog", ("x", "img1.png"): "colour block 1",
                        ("y", "img0.png"): "", ("y", "img1.png"): "colour block 1"}


def test_missing_folder_is_an_error_naming_the_subset(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 1, SQ)
    subsets = [Subset(image_dir=str(tmp_path / "a")), Subset(image_dir=str(tmp_path / "nope"))]
    with pytest.raises(DataError, match=r"data\.subsets\[1\]\.image_dir"):
        scan_kohya_subsets(subsets)
    cfg = resolve_layers(sets=["data.layout='kohya'", _subsets_toml(tmp_path, [("a", 1, False),
                                                                              ("nope", 1, False)])]).config
    found = [f for f in check_paths(cfg) if f.key.startswith("data.subsets")]
    assert [f.key for f in found] == ["data.subsets[1].image_dir"] and "not found" in found[0].message


def test_no_training_images_is_an_error_naming_the_empty_subsets(tmp_path: Path) -> None:
    """Every training subset skipped (no images) leaves sd-scripts nothing to train ("No data found")."""
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "r", 1, SQ)
    with pytest.raises(DataError, match=r"data\.subsets\[0\]\.image_dir"):
        scan_kohya_subsets([Subset(image_dir=str(tmp_path / "empty")), Subset(image_dir=str(tmp_path / "r"),
                                                                             is_reg=True)])
    with pytest.raises(DataError, match="is_reg"):
        scan_kohya_subsets([Subset(image_dir=str(tmp_path / "r"), is_reg=True)])


def test_subsets_need_the_kohya_layout_and_replace_the_folders(tmp_path: Path) -> None:
    subset = f"data.subsets=[{{image_dir='{tmp_path}'}}]"
    with pytest.raises(ConfigError, match="layout"):
        resolve_layers(sets=[subset])
    with pytest.raises(ConfigError, match="train_data_dir"):
        resolve_layers(sets=[subset, "data.layout='kohya'", f"data.train_data_dir='{tmp_path}'"])


def test_tiny_training_run_with_subsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps on the tiny model from relative subset folders; the run's snapshot names them absolute."""
    write_images(tmp_path / "a", 2, SQ)
    write_images(tmp_path / "r", 1, SQ, seed=1)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(sets=[
        "data.layout='kohya'", "data.resolution=64",
        "data.subsets=[{image_dir='a', num_repeats=2, class_tokens='sks'}, {image_dir='r', is_reg=true}]",
        f'output.output_dir="{tmp_path / "runs"}"', "train.max_train_steps=2", "network.network_dim=2"])
    result = api.train(cfg)
    rows = list(csv.DictReader(open(result.run_dir / "train" / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2] and result.lora_path.is_file()
    saved = load_config([result.run_dir / "config.toml"])
    assert [s.image_dir for s in saved.data.subsets] == [str(tmp_path / "a"), str(tmp_path / "r")]
    assert [(s.num_repeats, s.is_reg, s.class_tokens) for s in saved.data.subsets] == [(2, False, "sks"),
                                                                                       (1, True, "")]
