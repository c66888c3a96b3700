"""A kohya_ss GUI JSON → the sd-scripts arguments kohya_ss launches with, as its "Start training" button does.

Read from kohya_ss `kohya_gui/lora_gui.py` `train_model` (bmaltais/kohya_ss 45088f04, 2026): it computes
max_train_steps from the `N_name` folders when it is 0 (`epoch` is used only there and as the default number of
scheduler cycles), turns the GUI's percentages and learning rates into sd-scripts' values, writes a config TOML
without the values "", False, None and 0 (Python's `0 in [False]`), and appends `additional_parameters` to the
command line, where they win over the TOML. A key missing from the JSON keeps the GUI's widget default
(`GUI_DEFAULTS`, from kohya_gui/class_basic_training.py and lora_gui.py).

The network keys (LoRA_type and the GUI's network fields) are left to `import_networks.py`, which reads them the
way train_model builds network_module and network_args.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any

from .import_network_tables import NETWORK_KEYS

if TYPE_CHECKING:
    from .import_result import ImportResult

# The GUI's widget defaults for keys a (partial or older) JSON lacks (kohya_gui/class_basic_training.py,
# class_advanced_training.py, class_accelerate_launch.py, lora_gui.py). `optimizer` is not here: update_my_data
# fills it (AdamW, AdamW8bit with use_8bit_adam) before the widgets see the file.
GUI_DEFAULTS: dict[str, Any] = {
    "epoch": 1, "max_train_steps": 1600, "max_train_epochs": 0, "train_batch_size": 1,
    "learning_rate": 0.0001, "lr_scheduler": "cosine", "lr_warmup": 10,
    "lr_scheduler_num_cycles": 1, "lr_scheduler_power": 1.0, "max_resolution": "512,512", "enable_bucket": True,
    "min_bucket_reso": 256, "max_bucket_reso": 2048, "bucket_reso_steps": 64, "bucket_no_upscale": True,
    "save_every_n_epochs": 1, "seed": 0, "mixed_precision": "fp16", "save_precision": "fp16",
    "caption_extension": ".txt", "cache_latents": True, "noise_offset_type": "Original", "clip_skip": 1,
    "max_token_length": 75, "network_dim": 8, "network_alpha": 1, "LoRA_type": "Standard",
}
# update_my_data (kohya_gui/common_gui.py) converts these when a file is loaded; an unreadable value → the fallback
GUI_INTS = {"clip_skip": 0, "epoch": 0, "gradient_accumulation_steps": 0, "keep_tokens": 0, "lr_warmup": 0,
            "max_data_loader_n_workers": 0, "max_train_epochs": 0, "save_every_n_epochs": 0, "seed": 0,
            "lr_scheduler_num_cycles": 1, "max_train_steps": 0, "caption_dropout_every_n_epochs": 0,
            "max_token_length": 75}
GUI_FLOATS = {"adaptive_noise_scale": 0.0, "noise_offset": 0.0, "learning_rate": 0.0, "text_encoder_lr": 0.0,
              "unet_lr": 0.0, "lr_scheduler_power": 1.0}


def update_my_data(src: dict[str, Any]) -> dict[str, Any]:
    """What kohya_ss's update_my_data does to a loaded JSON: int/float conversions (Python's int()/float() of the
    text; an unreadable value becomes the fallback), the optimizer from use_8bit_adam, LoCon's new name, a boolean
    xformers as a name, lora_network_weights renamed."""
    data = dict(src)
    data.setdefault("optimizer", "AdamW8bit" if data.get("use_8bit_adam") else "AdamW")
    for table, kind in ((GUI_INTS, int), (GUI_FLOATS, float)):
        for key, fallback in table.items():
            if data.get(key) is not None:
                try:
                    data[key] = kind(data[key])
                except (TypeError, ValueError):
                    data[key] = fallback
    if data.get("LoRA_type", "Standard") == "LoCon":
        data["LoRA_type"] = "LyCORIS/LoCon"
    if isinstance(data.get("xformers"), bool):
        data["xformers"] = "xformers" if data["xformers"] else "none"
    if data.get("lora_network_weights") is not None:
        data["network_weights"] = data.pop("lora_network_weights")
    return data


# GUI key → sd-scripts key, where the names differ
RENAMED = {"optimizer": "optimizer_type", "max_resolution": "resolution"}
# GUI keys train_model consumes itself (what it does with them)
CONSUMED = {
    "epoch": "kohya_ss uses it to compute max_train_steps when that is 0",
    "lr_warmup": "kohya_ss turns the percentage into lr_warmup_steps",
    "noise_offset_type": "kohya_ss passes the noise settings of this type only",
    "xformers": "the attention implementation (lorakit always uses SDPA)",
    "sdxl": "kohya_ss picks sdxl_train_network.py (model.family)",
    "stop_text_encoder_training": "kohya_ss ignores it ('not yet supported') and trains the text encoder to the end",
}
NOT_PASSED_ZERO_OK = {"caption_dropout_every_n_epochs", "gradient_accumulation_steps", "keep_tokens",
                      "train_batch_size", "epoch", "min_bucket_reso", "persistent_data_loader_workers"}
GUI_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # what train_model counts (sd-scripts also reads .bmp)


def _float(value: Any, default: float = 0.0) -> float:
    """A GUI number ("" and None = default; as train_model coerces them)."""
    try:
        return default if value in ("", None) else float(value)
    except (TypeError, ValueError):
        return default


def gui_steps(train_data_dir: str, reg_data_dir: str, batch: int, accumulation: int, epoch: int) -> int | None:
    """train_model's max_train_steps when the JSON's is 0: ceil(Σ repeats × images ÷ batch ÷ accumulation × epoch
    × reg factor), over the sub-folders whose name starts with a number before '_' (not recursive), counting
    .jpg/.jpeg/.png/.webp in any case; reg factor 2 when reg_data_dir is set. None when the folder is missing."""
    if not train_data_dir or not os.path.isdir(train_data_dir):
        return None
    total = 0
    for folder in os.listdir(train_data_dir):
        path = os.path.join(train_data_dir, folder)
        if not os.path.isdir(path):
            continue
        try:
            repeats = int(folder.split("_")[0])
        except ValueError:
            continue
        images = sum(1 for f in os.listdir(path) if f.lower().endswith(GUI_IMAGE_EXTENSIONS))
        total += repeats * images
    reg_factor = 2 if reg_data_dir else 1
    return int(math.ceil(float(total) / batch / accumulation * epoch * reg_factor))


def parse_command_line(text: str) -> tuple[dict[str, Any], list[str]]:
    """sd-scripts arguments from a command-line string ('--flag --key value --key=value'); kohya_ss removes double
    quotes and splits on whitespace. A flag without a value is True. Returns (arguments, words not understood)."""
    words = str(text).replace('"', "").split()
    args: dict[str, Any] = {}
    stray: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--"):
            stray.append(word)
            i += 1
            continue
        key, eq, value = word[2:].partition("=")
        if eq:
            args[key] = value
        elif i + 1 < len(words) and not words[i + 1].startswith("--"):
            values = []
            while i + 1 < len(words) and not words[i + 1].startswith("--"):
                values.append(words[i + 1])
                i += 1
            args[key] = values if len(values) > 1 or key in ("network_args", "optimizer_args",
                                                              "lr_scheduler_args") else values[0]
        else:
            args[key] = True
        i += 1
    return args, stray


def gui_to_sd_scripts(src: dict[str, Any], r: ImportResult) -> tuple[dict[str, Any], dict[str, str]]:
    """The sd-scripts arguments kohya_ss would launch for the GUI JSON `src` (network keys passed through as they
    are, for import_networks), and a label per argument: the GUI key it came from."""
    src = update_my_data(src)
    gui = {**{k: v for k, v in GUI_DEFAULTS.items() if k not in src}, **src}
    missing = [f"{key} = {value!r}" for key, value in GUI_DEFAULTS.items() if key not in src]
    if missing:
        r.notes.append(f"not in the file, so at the kohya_ss GUI's defaults: {', '.join(missing)}")
    args: dict[str, Any] = {}
    labels: dict[str, str] = {}

    def put(key: str, value: Any, label: str | None = None) -> None:
        args[key], labels[key] = value, label or key

    for key, value in gui.items():
        if key in NETWORK_KEYS or key in CONSUMED or key == "additional_parameters":
            continue
        put(RENAMED.get(key, key), value, key)

    # noise: only the chosen type's settings reach sd-scripts
    multires = gui.get("noise_offset_type") == "Multires"
    for key in (("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength") if multires
                else ("multires_noise_iterations", "multires_noise_discount")):
        if key in args:
            args.pop(key)
            r.inert(key, gui[key], f"kohya_ss passes it only with noise_offset_type "
                                   f"{'Original' if multires else 'Multires'}")
    if "noise_offset_type" in gui:
        r.mapped["noise_offset_type"] = "(chooses which noise settings kohya_ss passes)"

    # learning rates: text_encoder_lr and unet_lr choose what trains (resolve_network_train_flags)
    te_lr, unet_lr = _float(gui.get("text_encoder_lr")), _float(gui.get("unet_lr"))
    args.pop("text_encoder_lr", None), args.pop("unet_lr", None)
    if te_lr > 0:
        put("text_encoder_lr", te_lr)
    if unet_lr != 0:
        put("unet_lr", unet_lr)
    put("learning_rate", _float(gui.get("learning_rate")))
    if te_lr == 0 and unet_lr != 0:
        put("network_train_unet_only", True, "text_encoder_lr")
    elif te_lr != 0 and unet_lr == 0:
        put("network_train_text_encoder_only", True, "unet_lr")
    for key in ("text_encoder_lr", "unet_lr"):
        if key in src and key not in args:
            r.mapped[key] = "(0: kohya_ss passes no value; it chooses what trains)"

    # steps: train_model's own count when max_train_steps is 0
    steps = int(_float(gui.get("max_train_steps")))
    epoch = int(_float(gui.get("epoch"), 1))
    batch = int(_float(gui.get("train_batch_size"), 1))
    accumulation = int(_float(gui.get("gradient_accumulation_steps"), 1))
    if steps == 0 and int(_float(gui.get("max_train_epochs"))) > 0:
        pass  # sd-scripts trains max_train_epochs epochs; kohya_ss's count would not be used
    elif steps == 0 and not gui.get("dataset_config") and (batch <= 0 or accumulation <= 0):
        r.unsupported("train_batch_size" if batch <= 0 else "gradient_accumulation_steps",
                      gui.get("train_batch_size") if batch <= 0 else gui.get("gradient_accumulation_steps"),
                      "kohya_ss divides by it to count the steps and stops; set it to 1 or more")
    elif steps == 0 and not gui.get("dataset_config"):
        counted = gui_steps(str(gui.get("train_data_dir") or ""), str(gui.get("reg_data_dir") or ""), batch,
                            accumulation, epoch)
        if counted is None:
            r.unsupported("epoch", epoch, f"kohya_ss computes max_train_steps from the images in train_data_dir "
                          f"({gui.get('train_data_dir')!r}, not found here) × epoch; import on the machine that "
                          "has the images, or set train.max_train_steps")
        else:
            steps = counted
            r.notes.append(f"max_train_steps = {counted}: kohya_ss's count of train_data_dir × epoch {epoch} "
                           "(it passes max_train_steps, not epochs)")
    put("max_train_steps", steps, "max_train_steps")
    r.mapped["epoch"] = f"(used by kohya_ss: {CONSUMED['epoch']})"

    # warm-up: percent of the steps, unless lr_warmup_steps is set
    warm_pct, warm_steps = _float(gui.get("lr_warmup")), _float(gui.get("lr_warmup_steps"))
    if warm_steps > 0:
        put("lr_warmup_steps", int(warm_steps), "lr_warmup_steps")
        if "lr_warmup" in src:
            r.mapped["lr_warmup"] = "(lr_warmup_steps wins, as in kohya_ss)"
    elif warm_pct:
        fraction = warm_pct / 100
        if gui.get("dataset_config"):  # train_model: steps when max_train_steps is known, else no warm-up
            fraction = round(warm_pct * steps / 100) if steps > 0 else 0
        put("lr_warmup_steps", fraction, "lr_warmup")
    else:
        args.pop("lr_warmup_steps", None)
        if "lr_warmup" in src:
            r.mapped["lr_warmup"] = "(0: no warm-up)"

    put("lr_scheduler_num_cycles", int(_float(gui.get("lr_scheduler_num_cycles"), 1)))  # update_my_data: "" → 1
    for key in ("optimizer_args", "lr_scheduler_args"):
        if key in args:
            args[key] = str(args[key]).replace('"', "").split()
    attention = gui.get("xformers")
    if attention in ("sdpa", "xformers", True):
        r.inert("xformers", attention, CONSUMED["xformers"])
    elif "xformers" in src:
        r.empty.append("xformers")
    if "sdxl" in src:
        args["sdxl"], labels["sdxl"] = gui["sdxl"], "sdxl"
    for key in ("stop_text_encoder_training",):
        if key in src:
            r.inert(key, src[key], CONSUMED[key])
    if gui.get("seed") in (0, "0", "", None):
        args.pop("seed", None)

    # what train_model writes: no "", False, None or 0; then the command line wins
    kept = {k: v for k, v in args.items() if not (v in ("", None) or v is False or (
        isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0))}
    r.empty += [k for k in args if k not in kept and k in src or labels.get(k) in src and k not in kept]
    args = kept
    for key in [k for k in src if k not in args and k not in labels.values() and k not in NETWORK_KEYS
                and k not in CONSUMED and k != "additional_parameters" and k not in r.mapped]:
        r.empty.append(key)
    extra = gui.get("additional_parameters")
    if extra:
        words, stray = parse_command_line(str(extra))
        for key, value in words.items():
            args[key], labels[key] = value, f"additional_parameters --{key}"
        for word in stray:
            r.unsupported("additional_parameters", word, "not an --option: sd-scripts would stop on it")
        r.mapped["additional_parameters"] = f"(read as a command line: {', '.join('--' + k for k in words)})"
    # the network keys, unchanged (with the GUI's defaults): import_networks reads them as train_model does
    args.update({k: v for k, v in gui.items() if k in NETWORK_KEYS})
    if _float(gui.get("network_alpha"), 1) == 0:  # train_model drops the 0: sd-scripts' default alpha 1
        args["network_alpha"] = 1
        r.notes.append("network_alpha 0: kohya_ss does not pass a 0, so sd-scripts uses its default alpha 1")
    return args, labels
