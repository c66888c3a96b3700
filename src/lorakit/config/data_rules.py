"""Checks of sd-scripts' caption and augmentation options in `[data]` (torch-free; `validate.check` calls it).

Augmentations that change an image at every use cannot use latents encoded once: sd-scripts refuses
`cache_latents` with `color_aug` or `random_crop` (train_network.py: "when caching latents, either color_aug or
random_crop cannot be used"), and so does lorakit, naming both keys.
"""

from __future__ import annotations

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
    return found
