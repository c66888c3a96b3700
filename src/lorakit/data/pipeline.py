"""From the `[data]` settings to what the engine trains on: examples, a batch sampler, a validation set."""

from __future__ import annotations

import dataclasses
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .buckets import BucketPlan, BucketSpec, Size, cover_crop, cropped_fraction
from .captions import CaptionRules, Metadata, image_caption, load_metadata, with_trigger
from .example import BatchSampler, Example, file_fingerprint
from .sampler import BucketBatchSampler
from .scan import ImageRecord, pixel_limit, scan_folder
from .settings import DataSection

HEAVY_CROP = 0.2  # an image whose main bucket crops away this share of its area or more is reported


@dataclass
class FolderSummary:
    """One scanned image folder, for the plan and `dataset inspect`."""

    path: Path
    images: int
    repeats: int = 1
    is_reg: bool = False
    captions_found: int = 0
    captions_missing: int = 0
    buckets: dict[Size, int] = field(default_factory=dict)
    uncaptioned: list[Path] = field(default_factory=list)  # images without a caption file, sorted
    empty_captions: list[Path] = field(default_factory=list)  # caption files with no text (0 bytes / whitespace)


@dataclass(frozen=True)
class CroppedImage:
    """An image whose main bucket's aspect is far from its own, so the centre crop cuts much of it away."""

    path: Path
    size: Size
    bucket: Size
    cropped: float  # share of the image's area cut away, 0..1


@dataclass
class DatasetPlan:
    """Everything the engine needs from the data side.

    `train` holds each distinct example once (an image × its buckets × mirroring); the sampler repeats them.
    `captions_vary` tells the engine that captions change per step (text-encoder outputs cannot be cached).
    For the plan's warnings: `scan_notes` (skipped symlinks, unreadable sub-folders), `heavy_crops` (worst first)
    and `large_images` (above Pillow's decompression-bomb limit, which it opens with a warning); empty caption
    files and images without captions are listed per folder.
    """

    train: list[Example]
    sampler: BatchSampler
    validation: list[Example] = field(default_factory=list)
    folders: list[FolderSummary] = field(default_factory=list)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    reg: list[Example] = field(default_factory=list)
    buckets: BucketPlan | None = None
    captions_vary: bool = False
    scan_notes: list[str] = field(default_factory=list)
    heavy_crops: list[CroppedImage] = field(default_factory=list)
    large_images: list[tuple[Path, Size]] = field(default_factory=list)

    @property
    def examples(self) -> list[Example]:
        """Every distinct example the engine may need pixels or latents for (train, reg, validation)."""
        return self.train + self.reg + self.validation

    def captions(self) -> dict[Path, str]:
        """Each image's caption (with trigger word, before per-step shuffle/dropout), train, reg and validation."""
        return {ex.image: ex.caption for ex in self.examples}


def bucket_spec(cfg: DataSection) -> BucketSpec:
    """The bucket numbers of a `[data]` section."""
    return BucketSpec(
        max_size=cfg.max_size,
        step=cfg.bucket_reso_steps,
        min_length=cfg.min_bucket_reso,
        max_side=cfg.max_bucket_reso,
        max_ratio=cfg.max_aspect_ratio,
        mode=cfg.bucket_mode,
        no_upscale=cfg.bucket_no_upscale,
    )


def caption_rules(cfg: DataSection) -> CaptionRules:
    """The caption settings of a `[data]` section."""
    return CaptionRules(
        trigger_word=cfg.trigger_word,
        extension=cfg.caption_extension,
        template=cfg.caption_template,
        class_tokens=cfg.class_tokens_from_folder,
        separator=cfg.caption_separator,
        shuffle=cfg.shuffle_caption,
        keep_tokens=cfg.keep_tokens,
        dropout_rate=cfg.caption_dropout_rate,
        tag_dropout_rate=cfg.caption_tag_dropout_rate,
    )


def _metadata(cfg: DataSection) -> Metadata | None:
    if not cfg.caption_metadata:
        if cfg.caption_template and any(k not in ("caption", "stem", "folder") for k in _fields(cfg.caption_template)):
            raise DataError(
                f"caption_template {cfg.caption_template!r} uses metadata columns but data.caption_metadata is unset",
                "set data.caption_metadata to the CSV/JSON file with one row per image",
            )
        return None
    path = Path(cfg.caption_metadata)
    if not path.is_file() and cfg.train_data_dir and (Path(cfg.train_data_dir) / path).is_file():
        path = Path(cfg.train_data_dir) / path
    return load_metadata(path)


def _fields(template: str) -> list[str]:
    """Placeholder names of a caption template."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def examples_for(record: ImageRecord, caption: str, sizes: list[Size], flips: bool, fingerprint: str
                 ) -> list[Example]:
    """The examples of one image: each bucket size, mirrored too when `flips`."""
    out = []
    iw, ih = record.size
    for size in sizes:
        (rw, _), (top, left) = cover_crop(record.size, size)
        for flip in (False, True) if flips else (False,):
            out.append(Example(
                image=record.path,
                caption=caption,
                size=size,
                flip=flip,
                is_reg=record.is_reg,
                original_size=(ih, iw),
                crop_top_left=(top, rw - left - size[0] if flip else left),
                fingerprint=fingerprint,
                repeats=record.repeats,
                folder=record.folder_name,
            ))
    return out


@dataclass
class _Built:
    examples: list[Example]
    folders: list[FolderSummary]
    tags: dict[str, Counter[str]]
    crops: list[CroppedImage]
    large: list[tuple[Path, Size]]


def _build(records: list[ImageRecord], cfg: DataSection, buckets: BucketPlan, *, augment: bool,
           fingerprints: bool) -> _Built:
    rules, meta = caption_rules(cfg), _metadata(cfg)
    examples: list[Example] = []
    folders: dict[Path, FolderSummary] = {}
    tags: dict[str, Counter[str]] = {}
    crops: list[CroppedImage] = []
    limit = pixel_limit()
    large = [(r.path, r.size) for r in records if limit and r.size[0] * r.size[1] > limit]
    for rec in records:
        found = image_caption(rec, rules, meta)
        caption = with_trigger(found.text, rules)
        if cfg.enable_bucket:
            sizes = buckets.assign(rec.size, cfg.sub_image_num if augment else 0)
        else:
            sizes = [cfg.max_size]
        lost = cropped_fraction(rec.size, sizes[0])
        if lost >= HEAVY_CROP:
            crops.append(CroppedImage(rec.path, rec.size, sizes[0], lost))
        fp = file_fingerprint(rec.path) if fingerprints else ""
        new = examples_for(rec, caption, sizes, cfg.flip_aug and augment, fp)
        examples.extend(new)
        summary = folders.setdefault(rec.folder, FolderSummary(rec.folder, 0, rec.repeats, rec.is_reg))
        summary.images += 1
        summary.captions_found += found.file is not None
        summary.captions_missing += found.file is None
        if found.file is None:
            summary.uncaptioned.append(rec.path)
        elif found.file_empty:
            summary.empty_captions.append(found.file)
        for ex in new:
            summary.buckets[ex.size] = summary.buckets.get(ex.size, 0) + 1
        if not rec.is_reg:
            tags.setdefault(rec.folder_name, Counter()).update(rules.split(caption))
    return _Built(examples, list(folders.values()), tags, crops, large)


def split_validation(records: list[ImageRecord], ratio: float, seed: int
                     ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, validation) by image: a seeded shuffle, round(ratio × n) images held out (≥ 1 when ratio > 0)."""
    if ratio <= 0 or len(records) < 2:
        return records, []
    count = min(len(records) - 1, max(1, round(ratio * len(records))))
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def build_dataset(cfg: DataSection, batch_size: int, seed: int, *, fingerprints: bool = True) -> DatasetPlan:
    """Scan the folders of `cfg`, assign buckets, split validation and plan the batches.

    `fingerprints=False` skips hashing file contents (for `dataset inspect`; cache keys then fall back to paths).
    """
    if not cfg.train_data_dir:
        raise DataError("data.train_data_dir is empty", "set it to your folder of training images")
    buckets = BucketPlan.build(bucket_spec(cfg))
    notes: list[str] = []
    records = scan_folder(Path(cfg.train_data_dir), default_repeats=cfg.num_repeats, notes=notes)
    val_seed = seed if cfg.validation_seed is None else cfg.validation_seed
    if cfg.validation_data_dir:
        val_records = scan_folder(Path(cfg.validation_data_dir), what="validation_data_dir", notes=notes)
    else:
        records, val_records = split_validation(records, cfg.validation_split, val_seed)
    reg_records = scan_folder(Path(cfg.reg_data_dir), is_reg=True, default_repeats=cfg.num_repeats,
                              what="reg_data_dir", notes=notes) if cfg.reg_data_dir else []
    train = _build(records, cfg, buckets, augment=True, fingerprints=fingerprints)
    reg = _build(reg_records, cfg, buckets, augment=True, fingerprints=fingerprints)
    val = _build(val_records, cfg, buckets, augment=False, fingerprints=fingerprints)
    rules = caption_rules(cfg)
    sampler = BucketBatchSampler(train.examples, batch_size, seed, reg=reg.examples, captions=rules)
    if len(sampler) == 0:
        raise DataError(
            f"no training examples in {cfg.train_data_dir} (all folders have 0 repeats?)",
            "rename '0_name' folders to '1_name' or more",
        )
    return DatasetPlan(
        train=train.examples,
        sampler=sampler,
        validation=[dataclasses.replace(ex, repeats=1) for ex in val.examples],
        folders=train.folders + reg.folders,
        tag_frequency={k: dict(v) for k, v in train.tags.items()},
        reg=reg.examples,
        buckets=buckets,
        captions_vary=rules.varies,
        scan_notes=notes,
        heavy_crops=sorted(train.crops + reg.crops + val.crops, key=lambda c: (-c.cropped, c.path)),
        large_images=train.large + reg.large + val.large,
    )
