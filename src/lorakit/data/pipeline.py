"""From the `[data]` settings to what the engine trains on: examples, a batch sampler, a validation set.

`data.layout = "kohya"` reads the folders as sd-scripts' DreamBooth layout does (`scan.scan_kohya`; its dataset
subsets, `data.subsets`, with `scan.scan_kohya_subsets`), reads captions as its read_caption (`kohya_caption`),
splits validation per folder (split_train_val), and balances the regularisation repeats as it does
(`scan.kohya_reg_repeats`).

Loss masks (train.masked_loss): with data.conditioning_data_dir each image gets the same-named file there
(`scan.match_masks`), with data.alpha_mask its own alpha channel; the example carries the source, the engine cuts
the mask with the pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .buckets import (BucketPlan, BucketSpec, NoBucketError, Size, cover_crop, cropped_fraction,
                      kohya_crop_conditioning, kohya_predefined, trim_offsets)
from .captions import (Caption, CaptionRules, Metadata, _caption_text, caption_rules_from, image_caption, load_metadata,
                       read_text, with_trigger)
from .example import BatchSampler, Example, MaskSource, file_fingerprint
from .sampler import BucketBatchSampler
from .scan import (ImageRecord, kohya_reg_repeats, match_masks, pixel_limit, scan_folder, scan_kohya,
                   scan_kohya_subsets)
from .settings import DataSection
from .transforms import augment_from

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
    uses: int = 0  # examples × repeats per epoch (kohya layout: regularisation repeats after balancing)


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
    layout: str = "lorakit"
    layout_notes: list[str] = field(default_factory=list)  # what the layout did (kohya: regularisation balance)
    mirrored: list[Example] = field(default_factory=list)  # data.random_flip: mirror images a use may pick

    @property
    def examples(self) -> list[Example]:
        """Every distinct example the engine may need pixels or latents for (train, reg, validation, mirrored)."""
        return self.train + self.reg + self.validation + self.mirrored

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
    """The caption settings of a `[data]` section (all of them: secondary separator, wildcards, … included)."""
    return caption_rules_from(cfg)


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


def examples_for(record: ImageRecord, caption: str, sizes: list[Size], flips: bool, fingerprint: str,
                 resized: Size | None = None, mask: MaskSource | None = None) -> list[Example]:
    """The examples of one image: each bucket size, mirrored too when `flips`. `resized`: sd-scripts' resize
    before its centre crop (kohya buckets; one size), else the image is scaled to cover each size. `mask`: the
    source of its loss mask (train.masked_loss), if any."""
    out = []
    iw, ih = record.size
    for size in sizes:
        if resized is not None:
            rw, (top, left) = resized[0], trim_offsets(resized, size)
        else:
            (rw, _), (top, left) = cover_crop(record.size, size)
        for flip in (False, True) if flips else (False,):
            out.append(Example(
                image=record.path,
                caption=caption,
                size=size,
                flip=flip,
                is_reg=record.is_reg,
                original_size=(ih, iw),
                crop_top_left=kohya_crop_conditioning(size, record.size, flip) if resized is not None else
                (top, rw - left - size[0] if flip else left),
                fingerprint=fingerprint,
                repeats=record.repeats,
                folder=record.folder_name,
                resized=resized,
                mask=mask,
            ))
    return out


def kohya_caption_file(image: Path, extension: str) -> Path | None:
    """sd-scripts' read_caption candidates: <image without extension><extension>, then the same with the last four
    '_'-separated parts of the whole path dropped (face-crop names), when the path has five or more."""
    base = os.path.splitext(str(image))[0]
    tokens = base.split("_")
    candidates = [base + extension]
    if len(tokens) >= 5:
        candidates.append("_".join(tokens[:-4]) + extension)
    return next((Path(c) for c in candidates if os.path.isfile(c)), None)


def kohya_caption(record: ImageRecord, rules: CaptionRules, meta: Metadata | None, wildcard: bool) -> Caption:
    """An image's caption as sd-scripts reads it in DreamBooth folders: only `caption_extension` (no other
    extension as fallback), its first line (all non-empty lines with enable_wildcard); without a caption file,
    the folder's class tokens ('10_sks dog' → 'sks dog', underscores kept). A caption file without text gives an
    empty caption, not the class tokens (sd-scripts stops on a 0-byte one). caption_template and
    caption_metadata, lorakit's own, apply as in the lorakit layout."""
    side = kohya_caption_file(record.path, rules.extension)
    text = ""
    if side is not None:
        lines = [line.strip() for line in read_text(side).splitlines()]
        text = "\n".join(line for line in lines if line) if wildcard else (lines[0] if lines else "")
    body = _caption_text(record, dataclasses.replace(rules, class_tokens=False), meta, text)
    if side is None and not body and record.class_tokens:
        body = record.class_tokens
    return Caption(body, side, side is not None and not text)


def kohya_split(records: list[ImageRecord], ratio: float, seed: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """sd-scripts' split_train_val, per folder: each folder's images shuffled by `seed`, the first
    ceil(n × (1 − ratio)) train and the last round(n × ratio) validate."""
    if ratio <= 0:
        return records, []
    folders: dict[Path, list[ImageRecord]] = {}
    for rec in records:
        folders.setdefault(rec.folder, []).append(rec)
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for group in folders.values():
        random.Random(seed).shuffle(group)
        train += group[: math.ceil(len(group) * (1 - ratio))]
        val += group[len(group) - round(len(group) * ratio):]
    return train, val


@dataclass
class _Built:
    examples: list[Example]
    folders: list[FolderSummary]
    tags: dict[str, Counter[str]]
    crops: list[CroppedImage]
    large: list[tuple[Path, Size]]


def _placement(rec: ImageRecord, cfg: DataSection, buckets: BucketPlan, augment: bool
               ) -> tuple[list[Size], Size | None]:
    """(bucket sizes, sd-scripts' resized size or None) of an image; may raise `NoBucketError`."""
    kohya = cfg.bucket_mode == "kohya" or cfg.layout == "kohya"
    if not cfg.enable_bucket:
        if kohya:  # sd-scripts without buckets: one predefined resolution, covered and centre-cropped
            placed = kohya_predefined(rec.size, (cfg.max_size,))
            return [placed.bucket], placed.resized
        return [cfg.max_size], None
    if cfg.bucket_mode == "kohya":
        placed = buckets.place(rec.size)
        return [placed.bucket], placed.resized
    return buckets.assign(rec.size, cfg.sub_image_num if augment else 0), None


def _build(records: list[ImageRecord], cfg: DataSection, buckets: BucketPlan, *, augment: bool,
           fingerprints: bool, masks: dict[Path, MaskSource] | None = None) -> _Built:
    rules, meta = caption_rules(cfg), _metadata(cfg)
    examples: list[Example] = []
    folders: dict[Path, FolderSummary] = {}
    tags: dict[str, Counter[str]] = {}
    crops: list[CroppedImage] = []
    unplaced: list[str] = []
    limit = pixel_limit()
    large = [(r.path, r.size) for r in records if limit and r.size[0] * r.size[1] > limit]
    for rec in records:
        if cfg.layout == "kohya":
            found = kohya_caption(rec, rules, meta, cfg.enable_wildcard)
        else:
            found = image_caption(rec, rules, meta)
        caption = with_trigger(found.text, rules)
        try:
            sizes, resized = _placement(rec, cfg, buckets, augment)
        except NoBucketError as exc:
            unplaced.append(f"{rec.path}: {exc}")
            continue
        # sd-scripts' resize is not always "cover the bucket" (no_upscale crops a small image unscaled)
        lost = 1 - sizes[0][0] * sizes[0][1] / (resized[0] * resized[1]) if resized else \
            cropped_fraction(rec.size, sizes[0])
        if lost >= HEAVY_CROP:
            crops.append(CroppedImage(rec.path, rec.size, sizes[0], lost))
        fp = file_fingerprint(rec.path) if fingerprints else ""
        new = examples_for(rec, caption, sizes, cfg.flip_aug and augment, fp, resized, (masks or {}).get(rec.path))
        examples.extend(new)
        summary = folders.setdefault(rec.folder, FolderSummary(rec.folder, 0, rec.repeats, rec.is_reg))
        summary.images += 1
        summary.uses += rec.repeats * len(new)
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
    if unplaced:
        shown = "\n  ".join(unplaced[:10]) + (f"\n  … and {len(unplaced) - 10} more" if len(unplaced) > 10 else "")
        raise DataError(f"{len(unplaced)} image(s) fit no bucket without being enlarged:\n  {shown}",
                        "crop or remove them, or set data.bucket_no_upscale = false")
    return _Built(examples, list(folders.values()), tags, crops, large)


def mask_sources(cfg: DataSection, required: list[ImageRecord], optional: list[ImageRecord], notes: list[str],
                 fingerprints: bool) -> dict[Path, MaskSource]:
    """Each image's loss-mask source. data.conditioning_data_dir: the same-named file there for each training
    image; one without is an error naming it (sd-scripts' ControlNetDataset asserts it); regularisation and
    validation_data_dir images train unmasked (sd-scripts has no such images with masks; their names often repeat
    the training images'), and files no training image uses are noted. Otherwise data.alpha_mask: every image's
    own alpha channel (all ones without one, as
    sd-scripts). Mask files win over the alpha channel, as in sd-scripts' apply_masked_loss."""
    alpha, folder = cfg.alpha_mask, cfg.conditioning_data_dir  # read by every run, on or off
    if folder:
        root = Path(folder)
        if not root.is_dir():
            raise DataError(f"data.conditioning_data_dir = {folder}: folder not found",
                            "set it to the folder of mask images named like the training images")
        matched = match_masks(root, required)
        lacking = list(matched.missing)
        if lacking:
            shown = "\n  ".join(str(p) for p in lacking[:10]) + (f"\n  … and {len(lacking) - 10} more"
                                                                 if len(lacking) > 10 else "")
            raise DataError(f"{len(lacking)} training image(s) have no mask in {root} (data.conditioning_data_dir):"
                            f"\n  {shown}", "add a mask image of the same name (white = learn, black = ignore)")
        if matched.unused:
            notes.append(f"{root}: {len(matched.unused)} mask file(s) match no image and are not used: "
                         f"{', '.join(p.name for p in matched.unused[:5])}{' …' if len(matched.unused) > 5 else ''}")
        return {image: MaskSource(mask, "image", file_fingerprint(mask) if fingerprints else "")
                for image, mask in matched.found.items()}
    if alpha:
        return {r.path: MaskSource(r.path, "alpha") for r in required + optional}
    return {}


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


def _scan(cfg: DataSection, seed: int, notes: list[str]
          ) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord], list[str]]:
    """(train, validation, regularisation) records of the layout in force, and what the layout did."""
    kohya = cfg.layout == "kohya"
    val_seed = seed if cfg.validation_seed is None else cfg.validation_seed
    subset_reg: list[ImageRecord] = []  # regularisation subsets are not split for validation (as sd-scripts)
    if cfg.subsets:  # kohya layout only (DataSection checks it)
        records, subset_reg = scan_kohya_subsets(cfg.subsets, notes)
    elif kohya:
        records = scan_kohya(Path(cfg.train_data_dir), notes=notes)
    else:
        records = scan_folder(Path(cfg.train_data_dir), default_repeats=cfg.num_repeats, notes=notes)
    if cfg.validation_data_dir:
        val_records = scan_folder(Path(cfg.validation_data_dir), what="validation_data_dir", notes=notes)
    elif kohya:
        records, val_records = kohya_split(records, cfg.validation_split, val_seed)
    else:
        records, val_records = split_validation(records, cfg.validation_split, val_seed)
    if not cfg.reg_data_dir and not subset_reg:
        return records, val_records, [], []
    if not kohya:
        return records, val_records, scan_folder(Path(cfg.reg_data_dir), is_reg=True, default_repeats=cfg.num_repeats,
                                                 what="reg_data_dir", notes=notes), []
    found = subset_reg or scan_kohya(Path(cfg.reg_data_dir), is_reg=True, what="reg_data_dir", notes=notes)
    train_uses = sum(r.repeats for r in records)
    reg = kohya_reg_repeats(found, train_uses)
    reg_uses = sum(r.repeats for r in reg)
    note = (f"regularisation (kohya layout, as sd-scripts): {len(reg)} of {len(found)} image(s) used, "
            f"{reg_uses} uses per epoch for {train_uses} training uses")
    if reg_uses > train_uses:
        note += f" (whole images with their repeats: {reg_uses - train_uses} over)"
    return records, val_records, reg, [note]


def build_dataset(cfg: DataSection, batch_size: int, seed: int, *, fingerprints: bool = True) -> DatasetPlan:
    """Scan the folders of `cfg`, assign buckets, split validation and plan the batches.

    `fingerprints=False` skips hashing file contents (for `dataset inspect`; cache keys then fall back to paths).
    """
    if not cfg.train_data_dir and not cfg.subsets:
        raise DataError("data.train_data_dir is empty", "set it to your folder of training images")
    buckets = BucketPlan.build(bucket_spec(cfg))
    notes: list[str] = []
    records, val_records, reg_records, layout_notes = _scan(cfg, seed, notes)
    # a validation split's images are training images to sd-scripts; validation_data_dir's are extra ones
    extra = val_records if cfg.validation_data_dir else []
    masks = mask_sources(cfg, records + (val_records if not extra else []), reg_records + extra, notes, fingerprints)
    train = _build(records, cfg, buckets, augment=True, fingerprints=fingerprints, masks=masks)
    reg = _build(reg_records, cfg, buckets, augment=True, fingerprints=fingerprints, masks=masks)
    val = _build(val_records, cfg, buckets, augment=False, fingerprints=fingerprints, masks=masks)
    rules = caption_rules(cfg)
    sampler = BucketBatchSampler(train.examples, batch_size, seed, reg=reg.examples, captions=rules,
                                 kohya_reg=cfg.layout == "kohya", augment=augment_from(cfg).active,
                                 random_flip=cfg.random_flip)
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
        layout=cfg.layout,
        layout_notes=layout_notes,
        mirrored=sampler.mirrored_examples(),
    )
