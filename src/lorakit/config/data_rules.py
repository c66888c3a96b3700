"""Checks of sd-scripts' caption and augmentation options in `[data]` (torch-free; `validate.check` calls it).

Augmentations that change an image at every use cannot use latents encoded once: sd-scripts refuses
`cache_latents` with `color_aug` or `random_crop` (train_network.py: "when caching latents, either color_aug or
random_crop cannot be used"), and so does lorakit, naming both keys.

A masked loss needs masks and masks need the masked loss: sd-scripts applies an alpha mask even without
--masked_loss (train_network.py), and a dataset's conditioning_data_dir needs it; lorakit asks for both settings,
so a config says what it trains.
"""

from __future__ import annotations

from pathlib import Path

from .schema import LorakitConfig
from .validate import Finding

PER_USE_AUGMENTATIONS = ("color_aug", "random_crop")


def check_data_options(cfg: LorakitConfig) -> list[Finding]:
    """Errors and warnings about the caption separators and the per-use augmentations."""
    d = cfg.data
    found = []
    per_use = [name for name in PER_USE_AUGMENTATIONS if getattr(d, name)]  # read every one, on or off
    if cfg.train.cache_latents:
        for name in per_use:
            found.append(Finding(f"data.{name}", "changes the image at every use, so its latents cannot be "
                                 "cached, but train.cache_latents is true (sd-scripts refuses this pair too): set "
                                 f"train.cache_latents = false, or data.{name} = false"))
    sep = d.caption_separator
    if d.secondary_separator and sep in d.secondary_separator:
        found.append(Finding("data.secondary_separator", f"{d.secondary_separator!r} contains caption_separator "
                             f"{sep!r}, so the tags it joins are split apart: use a string without it, such as "
                             "';;;'"))
    mark, varies = d.keep_tokens_separator, d.shuffle_caption or d.caption_tag_dropout_rate > 0
    if mark and not varies:
        found.append(Finding("data.keep_tokens_separator", "only acts with data.shuffle_caption or "
                             f"data.caption_tag_dropout_rate; without them {mark!r} stays in the caption as text "
                             "(as in sd-scripts)", False))
    return found + check_masks(cfg)


def check_masks(cfg: LorakitConfig) -> list[Finding]:
    """train.masked_loss against data.alpha_mask / data.conditioning_data_dir (every one read, on or off)."""
    masked, alpha, folder = cfg.train.masked_loss, cfg.data.alpha_mask, cfg.data.conditioning_data_dir
    found = []
    if masked and not (alpha or folder):
        found.append(Finding("train.masked_loss", "has no masks to apply: set data.alpha_mask = true (the images' "
                             "alpha channels) or data.conditioning_data_dir (a folder of mask images), or remove it"))
    for key, on in (("data.alpha_mask", alpha), ("data.conditioning_data_dir", bool(folder))):
        if on and not masked:
            found.append(Finding(key, "gives loss masks, but train.masked_loss is false: set train.masked_loss = "
                                 "true (sd-scripts applies alpha masks even without it), or remove this setting"))
    if folder and not Path(folder).is_dir():
        found.append(Finding("data.conditioning_data_dir", f"{folder}: folder not found; set it to the folder of "
                             "mask images named like the training images"))
    if alpha and folder:
        found.append(Finding("data.alpha_mask", "the mask images of data.conditioning_data_dir are used and the "
                             "alpha channels are not (as sd-scripts' apply_masked_loss); remove one of the two",
                             False))
    return found
