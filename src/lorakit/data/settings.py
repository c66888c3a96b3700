"""The `[data]` config section: where the images are and how they become training examples.

Names follow kohya sd-scripts where it has one (`bucket_reso_steps`, `min_bucket_reso`, `flip_aug`, …); the bucket
rules themselves are TrainTrain's (`image_size`, `sub_image_num`, mirroring) unless `bucket_mode = "kohya"`.
"""

from __future__ import annotations

import string

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Subset(BaseModel):
    """One sd-scripts dataset subset ([[datasets.subsets]]): a folder of images read as one `N_name` folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    image_dir: str = Field(..., min_length=1, description="The folder of images (not searched recursively).")
    num_repeats: int = Field(1, ge=1, description="How many times each image is used per epoch.")
    is_reg: bool = Field(False, description="Regularisation images (repeated up to the training count).")
    class_tokens: str = Field("", description="Caption of images without a caption file.")


class DataSection(BaseModel):
    """Training images, captions, buckets, validation split and caching."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)  # no silent coercion

    # -- folders -------------------------------------------------------------------------------------------------
    train_data_dir: str = Field(
        "",
        description="Folder of training images, searched recursively; a subfolder named 'N_name' repeats its "
        "images N times (kohya convention). Dot-files and dot-folders are skipped. With layout = 'kohya' only its "
        "'N_name' sub-folders count, as in sd-scripts.",
    )
    reg_data_dir: str = Field(
        "",
        description="Optional folder of regularisation (class) images, with its own 'N_name' repeat folders; "
        "each epoch uses as many regularisation images as training images.",
    )
    layout: Literal["lorakit", "kohya"] = Field(
        "lorakit",
        description="How the image folders are read. 'lorakit': recursively, every image, folders without "
        "'N_' repeat once (num_repeats). 'kohya': exactly as sd-scripts — only 'N_name' sub-folders, not "
        "recursive, .png/.jpg/.jpeg/.webp/.bmp, regularisation images repeated whole up to the training count; "
        "`config import` sets it.",
    )
    num_repeats: int = Field(1, ge=1, description="Repeats for folders whose name has no 'N_' prefix.")
    subsets: list[Subset] = Field(
        default_factory=list,
        description="kohya layout: sd-scripts dataset subsets ([[datasets.subsets]] of a dataset TOML), each a "
        "folder with its own repeats, instead of the 'N_name' folders of train_data_dir / reg_data_dir; "
        "`config import --dataset-toml` writes them.",
    )
    validation_data_dir: str = Field(
        "", description="Optional folder of validation images (overrides validation_split)."
    )
    validation_split: float = Field(
        0.0, ge=0.0, lt=1.0, description="Fraction of training images held out for the validation loss (e.g. 0.1)."
    )
    validation_seed: int | None = Field(
        None, description="Seed of the validation split; unset = the training seed."
    )

    # -- captions ------------------------------------------------------------------------------------------------
    caption_extension: str = Field(
        ".txt", description="Caption file extension; the other of '.txt'/'.caption' is the fallback (not in the "
        "kohya layout, which reads this extension only, as sd-scripts)."
    )
    trigger_word: str = Field(
        "", description="Prepended to every caption (and used alone when an image has none); never shuffled."
    )
    class_tokens_from_folder: bool = Field(
        False,
        description="When an image has no caption, use its folder's name after 'N_' (e.g. '10_sks dog' → "
        "'sks dog') as kohya's DreamBooth layout does (the kohya layout always does).",
    )
    caption_metadata: str = Field(
        "",
        description="Optional CSV, JSON or JSONL file with one row per image (column 'file_name', 'file' or "
        "'image'); its columns fill caption_template, or its 'caption'/'text' column is the caption.",
    )
    caption_template: str = Field(
        "",
        description="Caption built from the metadata row, e.g. 'floor plan, {floor_type}, {grid_size} grid'; "
        "{caption} is the caption file's text, {stem} the file name, {folder} the folder name.",
    )
    caption_separator: str = Field(",", description="Separator between tags in a caption.")
    secondary_separator: str | None = Field(
        None, description="Tags joined by this are one tag for shuffling and dropout, and it is written back as "
        "caption_separator (sd-scripts, e.g. ';;;'); unset = off.")
    enable_wildcard: bool = Field(
        False, description="Captions with {a|b|c} use one random choice each time; a multi-line caption file "
        "uses one random line (sd-scripts' enable_wildcard).")
    keep_tokens_separator: str = Field(
        "", description="Tags before this separator are kept in place (as keep_tokens), and after a second one "
        "too (sd-scripts, e.g. '|||'); empty = off.")
    shuffle_caption: bool = Field(False, description="Shuffle the tags of each caption every time it is used.")
    keep_tokens: int = Field(
        0, ge=0, description="Number of leading tags (after the trigger word) that shuffling and tag dropout keep."
    )
    caption_dropout_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that a caption is replaced by an empty one (unconditional)."
    )
    caption_tag_dropout_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that each tag (beyond keep_tokens) is dropped."
    )

    # -- buckets -------------------------------------------------------------------------------------------------
    resolution: int = Field(
        512, ge=64, le=4096, description="Training resolution: the square bucket side when image_size is unset."
    )
    image_size: tuple[int, int] | None = Field(
        None,
        strict=False,  # TOML writes it as a list
        description="Largest bucket as (width, height) in either order: its long side is the longest bucket side "
        "and its area the largest bucket area (TrainTrain's 'image size'). Unset = resolution × resolution.",
    )
    enable_bucket: bool = Field(
        True, description="Sort images into aspect-ratio buckets; off = every image is cropped to image_size."
    )
    bucket_mode: Literal["traintrain", "kohya"] = Field(
        "traintrain",
        description="'traintrain': a fixed set of buckets, with sub_image_num and mirroring; 'kohya': sd-scripts' "
        "BucketManager — predefined buckets of the nearest aspect ratio, or with bucket_no_upscale each image's own "
        "size rounded to bucket_reso_steps (width-first or height-first, the closer aspect), never enlarged.",
    )
    bucket_reso_steps: int = Field(
        64, ge=8, le=1024, description="Bucket sides are multiples of this (TrainTrain's 'image buckets step')."
    )
    min_bucket_reso: int = Field(
        256, ge=8, le=4096, description="Shortest bucket side (TrainTrain's 'image min length'); capped at the "
        "short side of image_size."
    )
    max_bucket_reso: int | None = Field(
        None, ge=64, le=8192, description="Longest bucket side; unset = the long side of image_size (traintrain), "
        "1024 but at least the resolution (kohya, sd-scripts' default)."
    )
    max_aspect_ratio: float = Field(
        2.0, ge=1.0, le=16.0, description="Largest long/short side ratio of a bucket (TrainTrain's 'image max "
        "ratio'); traintrain mode only (sd-scripts has no such cap)."
    )
    bucket_no_upscale: bool = Field(
        False,
        description="Never enlarge an image to fill a bucket (both modes); an image that cannot fit a bucket "
        "without enlarging (a side shorter than one step) is refused by name.",
    )
    sub_image_num: int = Field(
        0,
        ge=0,
        le=32,
        description="Also train N downscaled copies of each image in smaller buckets of similar aspect "
        "(TrainTrain's 'sub image num'; traintrain mode only).",
    )
    color_aug: bool = Field(
        False, description="Shift the hue (or the gamma) of each image randomly, each time it is used "
        "(sd-scripts' color_aug); needs train.cache_latents = false.")
    random_crop: bool = Field(
        False, description="Crop a random window instead of the centre when the image is larger than its "
        "bucket, each time it is used (sd-scripts); needs train.cache_latents = false.")
    alpha_mask: bool = Field(
        False, description="With train.masked_loss: the image's alpha channel is the loss mask (sd-scripts).")
    conditioning_data_dir: str = Field(
        "", description="With train.masked_loss: a folder of mask images named like the training images "
        "(sd-scripts' conditioning_data_dir); white = learn, black = ignore.")
    random_flip: bool = Field(
        False, description="Flip each use of an image left-right with probability 0.5 (sd-scripts' flip_aug; the "
        "number of images stays the same). Unlike flip_aug, which trains a mirrored copy besides each image.")
    flip_aug: bool = Field(
        False, description="Also train a left-right mirrored copy of every image (TrainTrain's 'image mirroring'; "
        "twice the images per epoch). sd-scripts' flip_aug is random_flip here; `config import` maps it so."
    )

    # -- caching -------------------------------------------------------------------------------------------------
    cache_latents_to_disk: bool = Field(
        True,
        description="Keep cached latents (and text-encoder outputs) on disk, keyed by file content, transform "
        "and model, so later runs reuse them (train.cache_latents turns caching on).",
    )
    cache_folder: str = Field(
        "", description="Where the disk cache lives; unset = $XDG_CACHE_HOME/lorakit (~/.cache/lorakit)."
    )

    @field_validator("caption_template")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write placeholders as {{column}} and a literal brace "
                             "as {{ or }}") from None
        return value

    @field_validator("caption_extension")
    @classmethod
    def _dot_extension(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith("."):
            value = "." + value
        return value

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (min(value) < 64 or max(value) > 8192):
            raise ValueError(f"{value}: each side must be between 64 and 8192 pixels")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        w, h = self.max_size
        step = self.bucket_reso_steps
        if self.subsets and self.layout != "kohya":
            raise ValueError("subsets need layout = 'kohya' (they are sd-scripts' dataset subsets)")
        if self.subsets and (self.train_data_dir or self.reg_data_dir):
            raise ValueError("subsets replace train_data_dir and reg_data_dir: set one or the other")
        if self.bucket_mode == "kohya" and self.sub_image_num:
            raise ValueError("sub_image_num needs bucket_mode = 'traintrain' (kohya mode has no sub buckets)")
        if step % 8:
            raise ValueError(f"bucket_reso_steps = {step}: must be a multiple of 8 (the VAE downsamples by 8)")
        if self.enable_bucket and self.bucket_mode == "traintrain" and (w % step or h % step):
            raise ValueError(
                f"image size {w}x{h} is not a multiple of bucket_reso_steps = {step}: "
                f"use {w - w % step or step}x{h - h % step or step} or a smaller step"
            )
        if not self.enable_bucket and (w % 8 or h % 8):
            raise ValueError(f"image size {w}x{h}: each side must be a multiple of 8")
        return self

    @property
    def max_size(self) -> tuple[int, int]:
        """The largest bucket as (width, height): image_size if set, else resolution × resolution."""
        if self.image_size:
            return (self.image_size[0], self.image_size[1])
        return (self.resolution, self.resolution)
