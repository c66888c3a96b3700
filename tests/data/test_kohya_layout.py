"""data.layout = "kohya": folders, captions, regularisation and step counts exactly as sd-scripts runs them.

Every expected number below is arithmetic written from reading sd-scripts (kohya-ss/sd-scripts), not lorakit's
output:
- folders: library/config_util.py generate_dreambooth_subsets_config_by_subdirs — only sub-folders whose name
  before the first '_' is an int() ≥ 1; no images from the root; class tokens = the rest of the name;
- images: library/train_util.py glob_images — '*' + each of IMAGE_EXTENSIONS (.png .jpg .jpeg .webp .bmp and the
  same in upper case), not recursive; '*' skips names starting with '.';
- regularisation: DreamBoothDataset.__init__ — whole reg images with their repeats until the training count T
  (images × repeats) is reached, then +1 repeat per image in turn;
- buckets: BaseDataset.make_buckets — train and reg images (each × its repeats) share the buckets; batches per
  epoch = Σ ceil(len(bucket) / batch);
- steps: train_network.py — steps per epoch = ceil(batches / gradient_accumulation_steps); max_train_steps =
  max_train_epochs × that; warm-up (get_scheduler_fix) = int(ratio × max_train_steps) for a ratio below 1;
- the kohya_ss GUI's estimate (kohya_gui/lora_gui.py train_model): ceil(T_gui / batch / accumulation × epoch ×
  reg factor), reg factor 2 with a reg folder, where T_gui counts .jpg/.jpeg/.png/.webp in any case in every
  folder whose int(name.split('_')[0]) works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lorakit.config.loader import resolve_layers
from lorakit.config.plan import build_plan, kohya_gui_estimate, render_plan
from lorakit.data.pipeline import build_dataset
from lorakit.data.scan import kohya_reg_repeats, kohya_repeats, scan_kohya
from lorakit.data.settings import DataSection
from lorakit.errors import DataError

from conftest import write_images  # noqa: I001 (tests/ is on sys.path)

SQ = (64, 64)


@dataclass
class Case:
    """Folders (path under tmp → (images, size)), settings, and what sd-scripts runs."""

    name: str
    folders: dict[str, tuple[int, tuple[int, int]]]
    sets: list[str]
    samples: int  # per epoch: train uses + reg uses
    batches: int  # per epoch
    per_epoch: int  # optimizer steps per epoch
    total: int
    gui: int  # the kohya_ss GUI's max_train_steps estimate for the same epochs
    warmup: int = 0
    setup: Callable[[Path], None] | None = None
    notes: list[str] = field(default_factory=list)  # words the plan's warnings must contain


def _odd_extensions(root: Path) -> None:
    """1_a holds img0..img9 as PNG data; rename them to the extensions under test, add a hidden one."""
    folder = root / "train" / "2_a"
    names = ["img0.png", "img1.PNG", "img2.Png", "img3.JPG", "img4.jpeg", "img5.gif", "img6.tif", "img7.webp",
             "img8.bmp", "img9.Jpg"]
    for i, name in enumerate(names):
        os.replace(folder / f"img{i}.png", folder / name)
    os.replace(folder / "img9.txt", folder / ".hidden.png")


B64 = ["data.resolution=64", "data.min_bucket_reso=64", "data.bucket_reso_steps=64"]
B128 = ["data.resolution=128", "data.min_bucket_reso=64", "data.bucket_reso_steps=64", "data.max_bucket_reso=256"]

CASES = [
    # T = 3×10 + 2×5 = 40; one bucket (64²); batches ceil(40/2) = 20; 3 epochs → 60. GUI ceil(40/2×3) = 60
    Case("repeats", {"train/10_a": (3, SQ), "train/5_b": (2, SQ)},
         ["train.train_batch_size=2", "train.max_train_epochs=3"], 40, 20, 20, 60, 60),
    # root images, 'cats' and '0_zero' are not used; '3' counts (int('3') = 3, no class tokens): T = 2×10 + 1×3 = 23
    Case("root images, non-N_ and 0_ folders", {"train": (4, SQ), "train/cats": (3, SQ), "train/10_x": (2, SQ),
                                                "train/0_zero": (2, SQ), "train/3": (1, SQ)},
         [], 23, 23, 23, 23, 23, notes=["cats", "directly in the folder", "0_zero"]),
    # no recursion: 2_a/more is not read. T = 2×2 = 4; GUI counts only files directly in 2_a too
    Case("sub-folders", {"train/2_a": (2, SQ), "train/2_a/more": (3, SQ)}, [], 4, 4, 4, 4, 4,
         notes=["2_a/more"]),
    # .png .PNG .JPG .jpeg .webp .bmp count (6), .Png .gif .tif .Jpg and a hidden .png do not: T = 6×2 = 12;
    # batch 4 → 3 batches, 2 epochs → 6. GUI: png PNG Png JPG jpeg webp Jpg = 7 → ceil(14/4×2) = 7
    Case("odd extensions", {"train/2_a": (10, SQ)}, ["train.train_batch_size=4", "train.max_train_epochs=2"],
         12, 3, 3, 6, 7, setup=_odd_extensions, notes=["img2.Png", "img5.gif"]),
    # T = 10×2 = 20; reg 15_r: r0 → 15 < 20, r1 → 30 ≥ 20: 30 reg uses (10 over); samples 50. GUI 20 × 2 = 40
    Case("reg overshoot", {"train/2_a": (10, SQ), "reg/15_r": (3, SQ)}, [], 50, 50, 50, 50, 40),
    # T = 6×5 = 30; reg 1_r (4) + 2_s (3) = 10, then +1 per image in turn: 17, 24, and six more → exactly 30;
    # samples 60, batch 4 → 15 batches, accumulation 2 → 8 steps, 2 epochs → 16. GUI ceil(30/4/2×2×2) = 15
    Case("reg topped up one by one", {"train/5_a": (6, SQ), "reg/1_r": (4, SQ), "reg/2_s": (3, SQ)},
         ["train.train_batch_size=4", "train.gradient_accumulation_steps=2", "train.max_train_epochs=2"],
         60, 15, 8, 16, 15),
    # T = 2; the first reg image alone (10 repeats) passes it: 10 reg uses, 4 images unused. GUI 2 × 2 = 4
    Case("reg images left unused", {"train/1_a": (2, SQ), "reg/10_r": (5, SQ)}, [], 12, 12, 12, 12, 4),
    # train and reg share the bucket: ceil((3 + 3) / 2) = 3 batches (not ceil(3/2) + ceil(3/2) = 4). GUI 3/2×2 = 3
    Case("train and reg mixed in buckets", {"train/1_a": (3, SQ), "reg/1_r": (3, SQ)},
         ["train.train_batch_size=2"], 6, 3, 3, 3, 3),
    # make_bucket_resolutions((128, 128), 64, 256, 64) = 64×192, 64×256, 128×128, 192×64, 256×64; 128² → 128×128
    # (6 uses), 192×64 → itself (6), 64×200 (w/h 0.32: 64/192 = 0.333 nearest) → 64×192 (1); batch 4 →
    # 2 + 2 + 1 = 5 batches; 2 epochs → 10. GUI ceil(13/4×2) = 7
    Case("buckets of different aspect", {"train/2_sq": (3, (128, 128)), "train/3_wide": (2, (192, 64)),
                                         "train/1_tall": (1, (64, 200))},
         [*B128, "data.bucket_mode='kohya'", "train.train_batch_size=4", "train.max_train_epochs=2"],
         13, 5, 5, 10, 7),
    # bucket_no_upscale at 128²: 100×70 (7000 px ≤ 16384: not resized) → 64×64 (4 uses); 200×130 (ar 1.538):
    # rw 158.8 → 128, 128/1.538 = 83.2 → 64 (w/h 2.0); rh 103.2 → 64, 98.5 → 64 (1.0): width-first → 128×64 (3);
    # batch 2 → 2 + 2 = 4 batches; 3 epochs → 12. GUI ceil(7/2×3) = 11
    Case("buckets without upscaling", {"train/2_a": (2, (100, 70)), "train/1_b": (3, (200, 130))},
         [*B128, "data.bucket_mode='kohya'", "data.bucket_no_upscale=true", "train.train_batch_size=2",
          "train.max_train_epochs=3"], 7, 4, 4, 12, 11),
    # T = 3×7 = 21, batch 2 → 11 batches; accumulation 4 → 3 steps; 5 epochs → 15; warm-up int(0.3 × 15) = 4
    # (the GUI's round() of a percentage would give 5 on a dataset TOML). GUI ceil(21/2/4×5) = 14
    Case("accumulation and warm-up ratio", {"train/7_a": (3, SQ)},
         ["train.train_batch_size=2", "train.gradient_accumulation_steps=4", "train.max_train_epochs=5",
          "train.lr_warmup_ratio=0.3"], 21, 11, 3, 15, 14, warmup=4),
    # max_train_steps given (no max_train_epochs): 7 steps whatever the epoch length
    Case("max_train_steps", {"train/5_a": (2, SQ)}, ["train.max_train_steps=7", "train.train_batch_size=3"],
         10, 4, 4, 7, 4),
    # enable_bucket off: every image to 64×64 (one bucket): 2×3 + 1×1 = 7 uses, batch 2 → 4
    Case("buckets off", {"train/2_a": (3, (128, 64)), "train/1_b": (1, (64, 128))},
         ["data.enable_bucket=false", "train.train_batch_size=2"], 7, 4, 4, 4, 4),
    # validation_split 0.2 per folder (split_train_val): ceil(10 × 0.8) = 8 train images, T = 8
    Case("validation split", {"train/1_a": (10, SQ)}, ["data.validation_split=0.2"], 8, 8, 8, 8, 10),
]


def _make(root: Path, case: Case) -> None:
    for i, (rel, (count, size)) in enumerate(case.folders.items()):
        write_images(root / rel, count, size, seed=i)
    if case.setup:
        case.setup(root)


def _config(root: Path, case: Case, *extra: str):
    sets = [f'data.train_data_dir="{root / "train"}"', "data.layout='kohya'", "data.caption_extension='.txt'",
            *B64, *case.sets, *extra]
    if any(rel.startswith("reg/") for rel in case.folders):
        sets.append(f'data.reg_data_dir="{root / "reg"}"')
    return resolve_layers(sets=sets).config


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kohya_layout_steps(tmp_path: Path, case: Case) -> None:
    _make(tmp_path, case)
    cfg = _config(tmp_path, case)
    plan = build_plan(cfg)
    s = plan.steps
    assert (s.samples_per_epoch, s.batches_per_epoch, s.steps_per_epoch, s.total_steps, s.warmup_steps) == (
        case.samples, case.batches, case.per_epoch, case.total, case.warmup)
    lines = render_plan(plan)
    assert lines[0].startswith("layout: kohya") and f"total steps: {case.total}" in lines
    for word in case.notes:
        assert any(word in w for w in plan.warnings), (word, plan.warnings)


def test_gui_estimates_of_the_table() -> None:
    """The GUI's estimate column, from the GUI's own image counts (its rule, written out per case)."""
    t_gui = {"repeats": 40, "root images, non-N_ and 0_ folders": 23, "sub-folders": 4, "odd extensions": 14,
             "reg overshoot": 20, "reg topped up one by one": 30, "reg images left unused": 2,
             "train and reg mixed in buckets": 3, "buckets of different aspect": 13, "buckets without upscaling": 7,
             "accumulation and warm-up ratio": 21, "max_train_steps": 10, "buckets off": 7, "validation split": 10}
    for case in CASES:
        values = dict(s.split("=", 1) for s in case.sets if s.startswith("train."))
        reg = any(rel.startswith("reg/") for rel in case.folders)
        est = kohya_gui_estimate([(t_gui[case.name], 1, False), *([(1, 1, True)] if reg else [])],
                                 int(values.get("train.train_batch_size", 1)),
                                 int(values.get("train.gradient_accumulation_steps", 1)),
                                 int(values.get("train.max_train_epochs", 1)))
        assert est == case.gui, case.name


def test_default_layout_counts_every_image(tmp_path: Path) -> None:
    """The lorakit layout is unchanged: root images (num_repeats 1), 'cats', sub-folders and .gif/.tif count."""
    case = CASES[1]
    _make(tmp_path, case)
    plan = build_plan(_config(tmp_path, case, "data.layout='lorakit'"))
    assert plan.steps.samples_per_epoch == 4 + 3 + 2 * 10 + 0 + 1  # '3' is no 'N_' folder: 1 repeat
    assert render_plan(plan)[0].startswith("layout: lorakit")


# -- pieces ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [("10_sks dog", (10, "sks dog")), ("10_sks_dog", (10, "sks_dog")),
                                           ("3", (3, "")), ("0_x", (0, "x")), ("cats", None), ("x_10", None),
                                           (" 2_a", (2, "a"))])
def test_folder_names_as_sd_scripts(name: str, expected) -> None:
    """int(name.split('_')[0]) and '_'.join(the rest), as generate_dreambooth_subsets_config_by_subdirs."""
    assert kohya_repeats(name) == expected


def _records(tmp_path: Path, repeats: list[int]):
    for i, n in enumerate(repeats):
        write_images(tmp_path / f"{i}_r{i}" if n == 0 else tmp_path / f"{n}_r{i}", 1, SQ, seed=i)
    return scan_kohya(tmp_path)


def test_reg_repeats_loop(tmp_path: Path) -> None:
    """DreamBoothDataset's loop on reg images of 3, 1, 2 repeats (sorted: 1_r1, 2_r2, 3_r0)."""
    reg = _records(tmp_path, [3, 1, 2])
    assert [r.repeats for r in kohya_reg_repeats(reg, 2)] == [1, 2]  # 1, then 3 ≥ 2: one over
    assert [r.repeats for r in kohya_reg_repeats(reg, 6)] == [1, 2, 3]  # exactly 6
    assert [r.repeats for r in kohya_reg_repeats(reg, 8)] == [2, 3, 3]  # 6, +1 → 7, +1 → 8
    assert kohya_reg_repeats(reg, 0) == []


def test_kohya_captions_and_class_tokens(tmp_path: Path) -> None:
    """read_caption: only caption_extension, its first line; no caption file → the folder's class tokens."""
    folder = write_images(tmp_path / "5_sks_dog", 4, SQ)
    (folder / "img0.txt").write_text("first line\nsecond line", encoding="utf-8")
    (folder / "img1.txt").unlink()
    (folder / "img1.caption").write_text("a .caption file", encoding="utf-8")  # no fallback in the kohya layout
    (folder / "img2.txt").unlink()
    (folder / "img3.txt").write_text("   \n", encoding="utf-8")  # whitespace: an empty caption, no class tokens
    cfg = DataSection(train_data_dir=str(tmp_path), layout="kohya", caption_extension=".txt", resolution=64,
                      min_bucket_reso=64)
    captions = {ex.image.name: ex.caption for ex in build_dataset(cfg, 1, 0).train}
    assert captions == {"img0.png": "first line", "img1.png": "sks_dog", "img2.png": "sks_dog", "img3.png": ""}
    lorakit = DataSection(train_data_dir=str(tmp_path), caption_extension=".txt", resolution=64, min_bucket_reso=64)
    assert {ex.image.name: ex.caption for ex in build_dataset(lorakit, 1, 0).train}["img1.png"] == "a .caption file"


def test_face_crop_caption_name(tmp_path: Path) -> None:
    """read_caption's second candidate: the path without its last four '_' parts (a cropped face's name)."""
    folder = write_images(tmp_path / "1_x", 1, SQ)
    os.replace(folder / "img0.png", folder / "photo_0_1_2_3.png")
    os.replace(folder / "img0.txt", folder / "photo.txt")
    cfg = DataSection(train_data_dir=str(tmp_path), layout="kohya", resolution=64, min_bucket_reso=64)
    assert build_dataset(cfg, 1, 0).train[0].caption == "colour block 0"


def test_no_n_folders_is_a_clear_error(tmp_path: Path) -> None:
    write_images(tmp_path / "cats", 2, SQ)
    with pytest.raises(DataError, match="N_name"):
        build_dataset(DataSection(train_data_dir=str(tmp_path), layout="kohya", resolution=64), 1, 0)


def test_no_upscale_resize_and_crop_reach_the_examples(tmp_path: Path) -> None:
    """800×1000 at 512², bucket_no_upscale: bucket 384×512, resized 410×512 (the pixels are cropped 13 from the
    left); SDXL's crop conditioning is sd-scripts' get_crop_ltrb: fitted inside, 384 × 480, top (512 − 480) // 2."""
    write_images(tmp_path / "1_x", 1, (800, 1000))
    cfg = DataSection(train_data_dir=str(tmp_path), layout="kohya", bucket_mode="kohya", bucket_no_upscale=True,
                      resolution=512)
    (ex,) = build_dataset(cfg, 1, 0).train
    assert (ex.size, ex.resized, ex.crop_top_left, ex.original_size) == ((384, 512), (410, 512), (16, 0), (1000, 800))
