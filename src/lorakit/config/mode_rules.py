"""What each mode reads and needs, beyond what every run does: the settings a mode would ignore (refused), and the
inputs it needs on disk (DreamBooth's class images, Difference's two images of one size).

Torch-free, like the rest of config validation; `validate.check` and `validate.check_paths` call it.
"""

from __future__ import annotations

from pathlib import Path

from .schema import LorakitConfig
from .validate import Finding


# What the modes that do not train on data.train_data_dir read of the other sections. Any other data field, and
# the settings listed as unused, changed from the default, are refused: the mode would silently ignore them.
MODE_DATA_FIELDS = {
    "ileco": {"resolution", "image_size"},  # the size of the random latents
    "difference": {"resolution", "image_size", "cache_latents_to_disk", "cache_folder"},
}
MODE_UNUSED = {
    "ileco": {
        "train.max_train_epochs": "it counts iterations: set train.max_train_steps",
        "train.noise_offset": "it predicts on pure noise",
        **{f"train.{k}": "it predicts on pure noise (no image is noised)" for k in (
            "noise_offset_random_strength", "adaptive_noise_scale", "multires_noise_iterations",
            "multires_noise_discount", "ip_noise_gamma", "ip_noise_gamma_random_strength", "zero_terminal_snr")},
        **{f"train.{k}": "its timesteps are drawn over the whole schedule (not implemented for iLECO)"
           for k in ("min_timestep", "max_timestep")},
        **{f"train.{k}": "iLECO's loss applies min_snr_gamma only (not implemented for iLECO)"
           for k in ("debiased_estimation_loss", "scale_v_pred_loss_like_noise_pred", "v_pred_like_loss")},
        "network.train_text_encoder": "the text encoder is what encodes the concept (UNet only, as TrainTrain)",
        "train.cache_latents": "it encodes no images",
        "train.cache_text_encoder_outputs": "its prompts are always encoded once (the text encoders are frozen)",
        "train.validate_every_n_steps": "it has no held-out images",
        "sample.every_n_epochs": "it has no image epochs: use sample.every_n_steps",
        "checkpoint.every_n_epochs": "it has no image epochs: use checkpoint.every_n_steps",
        "output.save_every_n_epochs": "it has no image epochs: use output.save_every_n_steps",
        "output.save_last_n_epochs": "it has no image epochs: use output.save_last_n_steps",
        "train.masked_loss": "it encodes no images",
    },
    "difference": {
        "sample.every_n_epochs": "each pass is one epoch: use sample.every_n_steps",
        "checkpoint.every_n_epochs": "each pass is one epoch: use checkpoint.every_n_steps",
        "train.max_train_epochs": "it counts iterations: set train.max_train_steps",
        "network.train_text_encoder": "TrainTrain trains the UNet only in this mode",
        "network.network_weights": "load the copy machine with mode.first_pass_file",
        "train.validate_every_n_steps": "it has no held-out images",
        "output.save_every_n_epochs": "each pass is one epoch: use output.save_every_n_steps",
        "output.save_last_n_epochs": "each pass is one epoch: use output.save_last_n_steps",
        "train.masked_loss": "its two images carry no mask",
    },
}


def check_mode(cfg: LorakitConfig) -> list[Finding]:
    """Settings the configured mode would ignore are errors that say why."""
    mode = cfg.mode.type
    if mode not in MODE_DATA_FIELDS:
        return []
    found = []
    default_data = type(cfg.data)()
    for name in type(cfg.data).model_fields:
        if name not in MODE_DATA_FIELDS[mode] and getattr(cfg.data, name) != getattr(default_data, name):
            found.append(Finding(f"data.{name}", f"is not used by mode '{mode}' (it does not train on an image "
                                                 "folder); remove it"))
    for key, why in MODE_UNUSED[mode].items():
        section, name = key.split(".")
        current, default = getattr(cfg, section), type(getattr(cfg, section))()
        if getattr(current, name) != getattr(default, name):
            found.append(Finding(key, f"is not used by mode '{mode}': {why}; remove it"))
    return found + (check_difference(cfg) if mode == "difference" else [])


def check_difference(cfg: LorakitConfig) -> list[Finding]:
    """Pass 2's network: its overrides must take effect, and DoRA cannot stack on a copy machine."""
    found, n, second = [], cfg.network, cfg.mode.second_pass
    per_layer = [k for k in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
                 if getattr(n, k)] + [k for k in ("conv_dim", "conv_alpha") if getattr(n, k)]
    for key in ("network_dim", "network_alpha"):
        if getattr(second, key) is not None and per_layer:
            found.append(Finding(f"mode.second_pass.{key}", f"pass 2 would keep network.{per_layer[0]} for the "
                                 "layers it sets, so this value would not apply everywhere; remove one"))
    if n.use_dora:
        found.append(Finding("network.use_dora", "DoRA in mode 'difference' is not implemented yet: peft's DoRA "
                             "rescales the frozen copy machine's output too, so the slider would differ from what "
                             "the UIs apply; use network_module 'lora' or 'locon' without DoRA"))
    return found


def check_mode_inputs(cfg: LorakitConfig) -> list[Finding]:
    """The inputs a mode cannot run without (their files' existence is `check_paths`' generic check)."""
    found, m = [], cfg.mode
    subsets = cfg.data.subsets
    if m.type in ("lora", "dreambooth") and not cfg.data.train_data_dir and not any(not s.is_reg for s in subsets):
        found.append(Finding("data.train_data_dir", "is empty: set it to your image folder"))
    if m.type == "dreambooth" and not cfg.data.reg_data_dir and not any(s.is_reg for s in subsets):
        found.append(Finding("data.reg_data_dir", "is empty: mode 'dreambooth' trains with regularisation (class) "
                                                  "images; set it to their folder (or use mode.type = 'lora')"))
    if m.type == "difference":
        if not m.original_image and not m.first_pass_file:
            found.append(Finding("mode.original_image", "is not set: pass 1 learns to copy it (or load pass 1 "
                                                        "with mode.first_pass_file)"))
        if not m.target_image and not m.first_pass_only:
            found.append(Finding("mode.target_image", "is not set: pass 2 learns how it differs from the original"))
        found += check_image_pair(m.original_image, m.target_image)
    return found


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image is shown (EXIF rotation applied), from its header: nothing is decoded."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # EXIF orientations that swap the sides
    return (h, w) if rotated else (w, h)


def check_image_pair(original: str | None, target: str | None) -> list[Finding]:
    """Difference's two images: readable, and the same size (pass 2 learns the pixel-wise change)."""
    found, sizes = [], {}
    for key, value in (("mode.original_image", original), ("mode.target_image", target)):
        if value and Path(value).is_file():
            try:
                sizes[key] = image_size(Path(value))
            except Exception as exc:  # PIL raises several types for a file that is no image
                found.append(Finding(key, f"{value}: not an image lorakit can read ({type(exc).__name__})"))
    if len(sizes) == 2 and sizes["mode.original_image"] != sizes["mode.target_image"]:
        (wo, ho), (wt, ht) = sizes["mode.original_image"], sizes["mode.target_image"]
        found.append(Finding("mode.target_image", f"{target} is {wt}×{ht} pixels but mode.original_image "
                                                  f"{original} is {wo}×{ho}: the two images must be the same size "
                                                  "(crop or resize one to match the other)"))
    return found
