"""Convert a TrainTrain JSON (a shipped preset, a saved preset or the settings saved beside a run) into the lorakit
config of the same run.

TrainTrain (hako-mikan/sd-webui-traintrain) writes every setting as its UI holds it: numbers as strings ("16",
"1e-4"), check boxes as booleans, the blocks as a list, and for Difference a nested "2nd pass" table. The meanings
below follow its trainer: Trainer.setpass and import_json (trainer/trainer.py) read the values, load_lr_scheduler
builds the schedule, LoRANetwork / LycorisNetwork (trainer/lora.py) the network, make_buckets (trainer/dataset.py)
the buckets. Every key is accounted for: mapped, inert (it changes nothing TrainTrain trains here) or unsupported.
"""

from __future__ import annotations

import ast
from typing import Any, Callable

from pydantic import TypeAdapter, ValidationError

from .import_result import ImportResult, cast, number
from .mode_sections import MODE_SECTIONS

PASS2 = "2nd pass"
BLOCKS_KEY = "network_blocks(BASE = TextEncoder)"
SIZE_KEY = "image_size(height, width)"
# keys only TrainTrain files have (its UI labels are its keys)
MARKERS = {BLOCKS_KEY, SIZE_KEY, "train_iterations", "save_lora_name", "train_lr_step_rules", "network_type"}
MODES = {"LoRA": "lora", "iLECO": "ileco", "Difference": "difference"}
NETWORKS = {"lierla": "lora", "c3lier": "locon", "loha": "loha"}
OPTIMIZERS = {  # TrainTrain's get_optimizer builds these from the same packages as sd-scripts
    "adamw": "AdamW", "adamw8bit": "AdamW8bit", "pagedadamw8bit": "PagedAdamW8bit", "lion": "Lion",
    "lion8bit": "Lion8bit", "pagedlion8bit": "PagedLion8bit", "sgdnesterov": "SGDNesterov",
    "sgdnesterov8bit": "SGDNesterov8bit", "prodigy": "Prodigy", "dadaptadam": "DAdaptAdam",
    "dadaptadagrad": "DAdaptAdaGrad", "dadaptlion": "DAdaptLion", "dadaptsgd": "DAdaptSGD", "adafactor": "Adafactor",
}
DIFFUSERS_SCHEDULES = {"linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"}
# load_lr_scheduler: the torch class of each name, with the defaults it fills in before train_lr_scheduler_settings
TORCH_SCHEDULES: dict[str, tuple[str, Callable[[int], dict[str, Any]]]] = {
    "cosine_annealing": ("CosineAnnealingLR", lambda steps: {"T_max": steps}),
    "cosine_annealing_with_restarts": ("CosineAnnealingWarmRestarts", lambda steps: {"T_0": 10}),
    "exponential": ("ExponentialLR", lambda steps: {"gamma": 0.9}),
    "step": ("StepLR", lambda steps: {"step_size": 10}),
    "multi_step": ("MultiStepLR", lambda steps: {"milestones": [30, 60, 90]}),
    "cyclic": ("CyclicLR", lambda steps: {"base_lr": 1e-5, "max_lr": 1e-3, "mode": "triangular"}),
    "one_cycle": ("OneCycleLR", lambda steps: {"max_lr": 1e-3, "total_steps": steps}),
}
SCHEDULE_KEYS = ("train_lr_scheduler", "train_lr_scheduler_settings", "train_lr_step_rules", "train_lr_warmup_steps",
                 "train_lr_scheduler_num_cycles", "train_lr_scheduler_power")
BLOCKID26 = ["BASE", *(f"IN{i:02d}" for i in range(12)), "M00", *(f"OUT{i:02d}" for i in range(12))]  # lora.py
SD_UNET_BLOCKS = set(BLOCKID26[1:])
DATA_KEYS = ("lora_data_directory", "lora_trigger_word", "image_buckets_step", "image_num_multiply",
             "image_min_length", "image_max_ratio", "sub_image_num", "image_mirroring")
NOT_READ = {  # in all_configs' "unused parameters", or UI state: TrainTrain's trainer does not read them
    **dict.fromkeys(("logging_use_wandb", "train_repeat", "train_use_bucket", "train_optimizer_args", "logging_dir",
                     "gradient_accumulation_steps", "gen_noise_scheduler", "lora_train_targets",
                     "logging_use_tensorboard", "network_train_text_encoder"), "TrainTrain does not read it"),
    "save_overwrite": "lorakit never overwrites: each run has its own folder",
    "save_as_json": "lorakit keeps the resolved config in the run folder",
    "logging_verbose": "console output only", "logging_save_csv": "lorakit always writes its CSV log",
}
OFF_UNLESS = {  # settings lorakit has no equivalent of, harmless at TrainTrain's default
    "network_strength": (1.0, "training at a LoRA strength other than 1 is not implemented"),
    "train_loss_function": ("MSE", "lorakit trains the MSE loss only"),
    "train_fixed_timsteps_in_batch": (False, "one timestep for the whole batch is not implemented"),
    "image_use_filename_as_tag": (False, "file names as captions are not implemented: write .txt captions"),
    "image_disable_upscale": (False, "TrainTrain skips images smaller than their bucket; lorakit's nearest, "
                                     "data.bucket_no_upscale, moves them to a smaller bucket instead"),
    "image_use_transparent_background_ajust": (False, "transparent-background adjustment is not implemented"),
    "train_VAE_precision": ("fp32", "lorakit encodes with the VAE in fp32"),
}
ADDIFT_ONLY = ("diff_target_name", "diff_alt_ratio", "diff_revert_original_target", "diff_use_diff_mask",
               "diff_use_fixed_noise")
FIRST_PASS_KEYS = {"diff_load_1st_pass": "first_pass_file", "diff_save_1st_pass": "save_first_pass",
                   "diff_1st_pass_only": "first_pass_only"}
SECOND_PASS_KEYS = {"network_rank": "network_dim", "network_alpha": "network_alpha",
                    "train_learning_rate": "learning_rate", "train_iterations": "max_train_steps",
                    "train_batch_size": "train_batch_size"}
# setpass(1) takes pass 1's value for these (their UI column for the 2nd pass is off)
PASS1_ONLY = {"lora_data_directory", "lora_trigger_word", "diff_target_name", SIZE_KEY, "save_lora_name",
              "network_resume", "network_train_text_encoder", "train_textencoder_learning_rate", *DATA_KEYS,
              "image_use_filename_as_tag", "image_disable_upscale", "save_as_json", *FIRST_PASS_KEYS, *ADDIFT_ONLY,
              "logging_verbose", "logging_save_csv",
              # export_json writes these once, beside the tables (add_dcit)
              "mode", "model", "vae", "te", "original prompt", "target prompt", "original image", "target image"}

# scripts/traintrain.py: the default of each setting the run depends on, which import_json (setconfigs) gives a key
# the file lacks; in the "2nd pass" table too (setpass(1) then takes it, not pass 1's, for the keys pass 2 may change)
DEFAULTS: dict[str, Any] = {
    "network_type": "lierla", "network_rank": "16", "network_alpha": "8", SIZE_KEY: 512, "train_iterations": 1000,
    "train_batch_size": 2, "train_learning_rate": "1e-4", "train_optimizer": "AdamW", "train_optimizer_settings": "",
    "train_lr_scheduler": "cosine", "train_lr_scheduler_settings": "", "use_gradient_checkpointing": False,
    BLOCKS_KEY: BLOCKID26,
    "network_conv_rank": "0", "network_conv_alpha": "0", "image_buckets_step": "256", "image_num_multiply": 1,
    "image_min_length": 512, "image_max_ratio": 2, "sub_image_num": 0, "image_mirroring": False,
    "train_textencoder_learning_rate": "", "train_seed": -1, "train_lr_step_rules": "", "train_lr_warmup_steps": 0,
    "train_lr_scheduler_num_cycles": 1, "train_lr_scheduler_power": 1.0, "train_snr_gamma": 5,
    "save_per_steps": 0, "train_model_precision": "fp16", "train_lora_precision": "fp32", "save_precision": "fp16",
    "train_min_timesteps": 0, "train_max_timesteps": 1000, "train_loss_function": "MSE", "network_strength": 1,
    "train_fixed_timsteps_in_batch": False, "model_v_pred": False, "train_VAE_precision": "fp32",
}


def is_traintrain(src: Any) -> bool:
    """Whether a JSON object is TrainTrain's (two or more of its own key names)."""
    return isinstance(src, dict) and len(MARKERS & set(src)) >= 2


def convert_traintrain(src: dict[str, Any]) -> ImportResult:
    """The lorakit values of a TrainTrain JSON, and every key that did not become one."""
    r = ImportResult(source=src, tool="TrainTrain", defaults_of="TrainTrain")
    defaulted = [key for key in DEFAULTS if key not in src]
    src = {**{key: DEFAULTS[key] for key in defaulted}, **src}
    mode = str(src.get("mode") or "LoRA")
    lorakit_mode = MODES.get(mode)
    if lorakit_mode is None:
        r.unsupported("mode", mode, f"lorakit has no {mode} mode (it has TrainTrain's LoRA, iLECO and Difference); "
                                    "the rest is imported as a LoRA run")
        lorakit_mode = "lora"
    else:
        r.values["mode"] = {"type": lorakit_mode}
        r.mapped["mode"] = "mode.type"
    handled = {"mode", PASS2, "use_2nd_pass_settings", *SCHEDULE_KEYS, "train_optimizer", "train_optimizer_settings",
               BLOCKS_KEY}
    _optimizer(r, src)
    _schedule(r, src)
    _blocks(r, src, mode)
    _second_pass(r, src, lorakit_mode)
    for key, value in src.items():
        if key not in handled:
            _one_key(r, key, value, mode, lorakit_mode)
    _blanks(r, lorakit_mode)
    _keep_used_defaults(r, defaulted)
    return r


def _keep_used_defaults(r: ImportResult, defaulted: list[str]) -> None:
    """A default TrainTrain fills in is reported only where it became a lorakit value; one this mode does not read
    was never in the file, so it is not listed as the file's inert key either."""
    used = [key for key in defaulted if key in r.mapped and not r.mapped[key].startswith("(inert: ")]
    unused = set(defaulted) - set(used)
    for key in unused:
        r.mapped.pop(key, None)
    r.inert_keys = [entry for entry in r.inert_keys if entry[0] not in unused]
    r.empty = [key for key in r.empty if key not in unused]
    r.defaults = used + [key for key in r.defaults if key not in defaulted]  # the 2nd pass's, added before


def _blanks(r: ImportResult, lorakit_mode: str) -> None:
    """What a run needs and the file leaves blank: TrainTrain's shipped presets carry no folder, prompt or image."""
    if lorakit_mode == "lora" and not r.values.get("data", {}).get("train_data_dir"):
        r.to_fill["data.train_data_dir"] = "the folder of training images (TrainTrain's lora_data_directory)"
    elif lorakit_mode == "ileco" and not r.values["mode"].get("original_prompt"):
        r.to_fill["mode.original_prompt"] = "the concept to edit (TrainTrain's 'original prompt')"
    elif lorakit_mode == "difference":
        loaded = bool(r.values["mode"].get("first_pass_file"))  # pass 1 loaded: no original image needed
        for which in ("target",) if loaded else ("original", "target"):
            if not r.values["mode"].get(f"{which}_image"):
                r.to_fill[f"mode.{which}_image"] = f"the {which} image file (TrainTrain's '{which} image')"


def _one_key(r: ImportResult, key: str, value: Any, mode: str, lorakit_mode: str) -> None:
    """One plain key: a copy, a conversion, or the reason it is not mapped."""
    if key in NOT_READ:
        r.inert(key, value, NOT_READ[key]) if not _off(value) else r.skip(key, None, "")
    elif key in OFF_UNLESS:
        default, need = OFF_UNLESS[key]
        same = str(value).lower() == str(default).lower() or (number(value) is not None and number(value) == default)
        if _off(value) or same:
            r.skip(key, None, "")
        elif key == "train_VAE_precision":
            r.inert(key, value, need)
        else:
            r.unsupported(key, value, need)
    elif key in ADDIFT_ONLY:
        r.skip(key, None, "") if _off(value) or number(value) == 1 else r.inert(key, value, "ADDifT modes only")
    elif key in DATA_KEYS and lorakit_mode != "lora":
        r.skip(key, None, "") if _off(value) else r.inert(key, value, f"{mode} trains without a dataset folder")
    elif key in FIRST_PASS_KEYS:
        if _off(value):
            r.skip(key, None, "")
        elif lorakit_mode != "difference":
            r.inert(key, value, "Difference mode only")
        else:
            found = str(value) if key != "diff_load_1st_pass" or str(value).endswith(".safetensors") \
                else f"{value}.safetensors"
            _put_mode(r, key, FIRST_PASS_KEYS[key], found)
            if key == "diff_load_1st_pass":
                r.notes.append(f"{key}: TrainTrain looks for {found} in its LoRA folder; give its path")
    elif key in CONVERSIONS:
        CONVERSIONS[key](r, key, value, lorakit_mode)
    elif key in COPIES:
        dotted, zero_is_off = COPIES[key]
        r.skip(key, None, "") if _off(value) or (zero_is_off and _off_number(value)) \
            else r.put(key, dotted, ELEMENTS.get(str(value).lower(), value) if key == "network_element" else value)
    else:
        r.unsupported(key, value, "not a TrainTrain setting lorakit knows")


def _off(value: Any) -> bool:
    return value in ("", None, False, [], {}, "None")


def _off_number(value: Any) -> bool:
    n = number(value)
    return n is not None and n <= 0


COPIES: dict[str, tuple[str, bool]] = {  # key → (lorakit key, whether 0 or less means off)
    "network_rank": ("network.network_dim", False),
    "network_alpha": ("network.network_alpha", False),
    "network_conv_rank": ("network.conv_dim", True),  # 0 = the network's rank, lorakit's unset too
    "network_conv_alpha": ("network.conv_alpha", True),
    "network_element": ("network.network_element", False),
    "network_resume": ("network.network_weights", False),
    "train_iterations": ("train.max_train_steps", False),
    "train_batch_size": ("train.train_batch_size", False),
    "train_learning_rate": ("train.learning_rate", False),
    "train_textencoder_learning_rate": ("train.text_encoder_lr", True),  # empty or 0 = the main rate, as unset
    "use_gradient_checkpointing": ("train.gradient_checkpointing", False),
    "train_min_timesteps": ("train.min_timestep", True),
    "train_snr_gamma": ("train.min_snr_gamma", True),  # applied only when > 0
    "train_lora_precision": ("train.lora_precision", False),
    "save_per_steps": ("output.save_every_n_steps", True),
    "save_lora_name": ("output.output_name", False),
    "lora_data_directory": ("data.train_data_dir", False),
    "lora_trigger_word": ("data.trigger_word", False),
    "image_buckets_step": ("data.bucket_reso_steps", False),
    "image_min_length": ("data.min_bucket_reso", False),
    "image_max_ratio": ("data.max_aspect_ratio", False),
    "sub_image_num": ("data.sub_image_num", True),
    "model": ("model.pretrained_model_name_or_path", False),
    "vae": ("model.vae", False),
}
ELEMENTS = {"full": "full", "crossattention": "cross_attention", "selfattention": "self_attention"}
PRECISIONS = {"fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16", "bf16": "bf16",
              "bfloat16": "bf16"}


def _network_type(r: ImportResult, key: str, value: Any, _: str) -> None:
    name = NETWORKS.get(str(value).lower())
    r.put(key, "network.network_module", name) if name else r.bad(key, value, "TrainTrain's types are lierla, "
                                                                             "c3lier and loha")


def _image_size(r: ImportResult, key: str, value: Any, lorakit_mode: str) -> None:
    """'512' or 'H,W': Trainer.__init__ doubles a single value and sorts the pair, so iLECO's latents are
    short × long (height, width); lorakit's image_size is (width, height), and its buckets take either order."""
    if lorakit_mode == "difference":
        r.skip(key, None, "") if _off(value) else r.inert(key, value, "Difference trains at its images' own size")
        return
    try:
        sizes = sorted(int(float(x)) for x in str(value).split(","))
    except ValueError:
        r.bad(key, value, "write one size or 'height, width' (e.g. '512' or '512, 768')")
        return
    sizes = sizes * 2 if len(sizes) == 1 else sizes
    if len(sizes) != 2:
        r.bad(key, value, "write one size or 'height, width'")
        return
    r.put(key, "data.image_size", [sizes[1], sizes[0]])


def _seed(r: ImportResult, key: str, value: Any, _: str) -> None:
    n = number(value)
    if n is not None and n < 0:  # train.py: a negative seed draws a random one
        r.inert(key, value, "TrainTrain draws a random seed; lorakit keeps train.seed (42) so a run repeats")
    else:
        r.put(key, "train.seed", value)


def _max_timestep(r: ImportResult, key: str, value: Any, _: str) -> None:
    n = number(value)
    r.skip(key, None, "") if n in (None, 1000) else r.put(key, "train.max_timestep", value)


def _num_multiply(r: ImportResult, key: str, value: Any, _: str) -> None:
    r.skip(key, None, "") if number(value) in (None, 1) else r.put(key, "data.num_repeats", value)


def _mirroring(r: ImportResult, key: str, value: Any, _: str) -> None:
    r.put(key, "data.flip_aug", True) if value is True else r.skip(key, None, "")


def _model_precision(r: ImportResult, key: str, value: Any, _: str) -> None:
    """parse_precision, and make_accelerator autocasts in the same precision."""
    name = PRECISIONS.get(str(value).lower())
    if name is None:
        need = {"int8": "8-bit weight quantization is not implemented (train.fp8_base is the nearest)",
                "model": "the checkpoint's own dtype is not implemented: choose fp16, bf16 or fp32"}
        r.unsupported(key, value, need.get(str(value).lower(), "use fp32, fp16 or bf16"))
        return
    r.put(key, "train.model_precision", name)
    r.put(key, "train.mixed_precision", "no" if name == "fp32" else name)
    r.mapped[key] = f"train.model_precision = {name!r}, train.mixed_precision = {'no' if name == 'fp32' else name!r}"


def _save_precision(r: ImportResult, key: str, value: Any, _: str) -> None:
    r.put(key, "output.save_precision", PRECISIONS.get(str(value).lower(), value))


def _v_pred(r: ImportResult, key: str, value: Any, _: str) -> None:
    r.put(key, "model.v_parameterization", True) if value is True else r.skip(key, None, "")


def _text_encoder(r: ImportResult, key: str, value: Any, _: str) -> None:
    r.skip(key, None, "") if _off(value) else r.unsupported(key, value, "a separate text-encoder file (SD3/Flux/"
                                                                        "Z-Image) is not supported")


def _prompt(which: str) -> Callable[[ImportResult, str, Any, str], None]:
    """iLECO's two prompts; Difference captions both images with the original prompt and reads no target."""
    def convert(r: ImportResult, key: str, value: Any, lorakit_mode: str) -> None:
        if _off(value):
            r.skip(key, None, "")
        elif lorakit_mode == "ileco":
            _put_mode(r, key, f"{which}_prompt", value)
        elif lorakit_mode == "difference" and which == "original":
            _put_mode(r, key, "prompt", value)
        else:
            r.inert(key, value, "this mode reads no such prompt")
    return convert


def _image(which: str) -> Callable[[ImportResult, str, Any, str], None]:
    def convert(r: ImportResult, key: str, value: Any, lorakit_mode: str) -> None:
        if _off(value):
            r.skip(key, None, "")
        elif lorakit_mode == "difference":
            _put_mode(r, key, f"{which}_image", value)
        else:
            r.inert(key, value, "Difference mode only")
    return convert


CONVERSIONS: dict[str, Callable[[ImportResult, str, Any, str], None]] = {
    "network_type": _network_type, SIZE_KEY: _image_size, "train_seed": _seed, "train_max_timesteps": _max_timestep,
    "image_num_multiply": _num_multiply, "image_mirroring": _mirroring, "train_model_precision": _model_precision,
    "save_precision": _save_precision, "model_v_pred": _v_pred, "te": _text_encoder,
    "original prompt": _prompt("original"), "target prompt": _prompt("target"),
    "original image": _image("original"), "target image": _image("target"),
}


def _put_mode(r: ImportResult, source: str, name: str, value: Any) -> None:
    """A [mode] key of the file's mode (ImportResult.put knows only lora's section)."""
    mode_type = r.values.get("mode", {}).get("type", "lora")
    info = MODE_SECTIONS[mode_type].model_fields.get(name)
    try:
        value = cast(value, info.annotation)
        TypeAdapter(info.annotation).validate_python(value)
    except (TypeError, ValueError, ValidationError, AttributeError):
        r.bad(source, value, f"mode.{name} does not take it")
        return
    r.values["mode"][name] = value
    r.mapped[source] = f"mode.{name}"


def settings_args(text: Any) -> list[str]:
    """train_optimizer_settings / train_lr_scheduler_settings ('k=v; k=v' or one per line; setpass drops spaces
    and reads each value as a Python literal) as lorakit's key=value strings."""
    out = []
    for item in str(text or "").replace(" ", "").replace(";", "\n").split("\n"):
        if "=" in item:
            key, raw = item.split("=", 1)
            out.append(f"{key}={ast.literal_eval(raw)!r}")  # ValueError/SyntaxError: TrainTrain fails there too
    return out


def _optimizer(r: ImportResult, src: dict[str, Any]) -> None:
    key, value = "train_optimizer", src.get("train_optimizer")
    name = OPTIMIZERS.get(str(value).lower()) if value is not None else None
    if value is not None:
        r.put(key, "train.optimizer_type", name) if name else r.unsupported(
            key, value, f"lorakit offers {', '.join(OPTIMIZERS.values())}")
    skey = "train_optimizer_settings"
    try:
        args = settings_args(src.get(skey))
    except (ValueError, SyntaxError):
        r.bad(skey, src[skey], "each setting is key=value with a Python literal value (e.g. weight_decay=0.01)")
        args = []
    if name == "Adafactor" and not any(a.startswith("relative_step=") for a in args):
        args.append("relative_step=True")  # get_optimizer's default for Adafactor
    r.put(skey, "train.optimizer_args", args) if args else r.skip(skey, src.get(skey), "")


def _schedule(r: ImportResult, src: dict[str, Any]) -> None:
    """load_lr_scheduler: Adafactor's own schedule; torch classes (no warm-up) with train_lr_scheduler_settings;
    else diffusers' get_scheduler with step rules, warm-up, cycles and power (each read by some schedules only)."""
    present = [k for k in SCHEDULE_KEYS if k in src]
    if not present:
        return
    name = str(src.get("train_lr_scheduler", "cosine"))
    steps = int(number(src.get("train_iterations")) or 1000)
    warmup = max(0, int(number(src.get("train_lr_warmup_steps")) or 0))
    used: dict[str, str] = {}  # key → lorakit key, for the keys this schedule reads

    def inert_rest(why: str) -> None:
        for k in present:
            if k not in used and k != "train_lr_scheduler":
                value = src[k]
                default = {"train_lr_scheduler_num_cycles": 1, "train_lr_scheduler_power": 1}.get(k, 0)
                r.skip(k, None, "") if _off(value) or number(value) == default else r.inert(k, value, why)

    try:
        settings = settings_args(src.get("train_lr_scheduler_settings"))
    except (ValueError, SyntaxError):
        r.bad("train_lr_scheduler_settings", src["train_lr_scheduler_settings"], "each setting is key=value with a "
              "Python literal value (e.g. eta_min=1e-5)")
        settings = []
    if r.values.get("train", {}).get("optimizer_type") == "Adafactor":
        relative = "relative_step=False" not in r.values["train"].get("optimizer_args", [])
        r.put("train_lr_scheduler", "train.lr_scheduler", "adafactor" if relative else "constant")
        r.mapped["train_lr_scheduler"] = f"train.lr_scheduler = '{'adafactor' if relative else 'constant'}' " \
                                         "(TrainTrain always uses Adafactor's own schedule with Adafactor)"
        inert_rest("Adafactor's own schedule replaces it")
        return
    if name in TORCH_SCHEDULES:
        cls, defaults = TORCH_SCHEDULES[name]
        given = {a.split("=", 1)[0] for a in settings}
        args = [f"{k}={v!r}" for k, v in defaults(steps).items() if k not in given] + settings
        r.put("train_lr_scheduler", "train.lr_scheduler_type", cls)
        r.put("train_lr_scheduler_settings", "train.lr_scheduler_args", args)
        used["train_lr_scheduler_settings"] = "train.lr_scheduler_args"
        inert_rest(f"TrainTrain's '{name}' is torch's {cls}, which has no warm-up, rules, cycles or power")
        return
    if settings:
        r.unsupported("train_lr_scheduler_settings", src["train_lr_scheduler_settings"],
                      f"TrainTrain passes these to diffusers' get_scheduler, which takes no extra arguments for "
                      f"'{name}' (TrainTrain stops there)")
        used["train_lr_scheduler_settings"] = ""
    if name == "piecewise_constant":
        rules = str(src.get("train_lr_step_rules") or "")
        r.put("train_lr_scheduler", "train.lr_scheduler", "step")
        r.put("train_lr_step_rules", "train.lr_step_rules", rules) if rules else r.bad(
            "train_lr_step_rules", rules, "piecewise_constant needs step rules such as '1:100,0.5:200,0.1'")
        used["train_lr_step_rules"] = "train.lr_step_rules"
        inert_rest("diffusers' piecewise_constant reads only the step rules (no warm-up)")
        return
    if name not in DIFFUSERS_SCHEDULES:
        r.unsupported("train_lr_scheduler", name, "needs a metric at every step" if name == "reduce_on_plateau"
                      else "not a TrainTrain schedule lorakit knows")
        inert_rest("its schedule is not imported")
        return
    r.put("train_lr_scheduler", "train.lr_scheduler", name)
    if warmup and name != "constant":  # diffusers' constant has no warm-up (lorakit's would add one)
        r.put("train_lr_warmup_steps", "train.lr_warmup_steps", warmup)
        used["train_lr_warmup_steps"] = "train.lr_warmup_steps"
    cycles = number(src.get("train_lr_scheduler_num_cycles"))
    if name == "cosine_with_restarts" and cycles is not None and cycles > 0:  # get_scheduler's 0 → 1
        r.put("train_lr_scheduler_num_cycles", "train.lr_scheduler_num_cycles", cycles)
        used["train_lr_scheduler_num_cycles"] = ""
    power = number(src.get("train_lr_scheduler_power"))
    if name == "polynomial" and power is not None and power > 0:  # get_scheduler's 0 → 1
        r.put("train_lr_scheduler_power", "train.lr_scheduler_power", power)
        used["train_lr_scheduler_power"] = ""
    inert_rest(f"diffusers' '{name}' schedule does not read it")


def _blocks(r: ImportResult, src: dict[str, Any], mode: str) -> None:
    """BASE trains the text encoders (in LoRA mode only); every SD block listed = all blocks (lorakit's empty list),
    whatever the family."""
    if BLOCKS_KEY not in src:
        return
    value = src[BLOCKS_KEY]
    if not isinstance(value, list) or not value:
        r.bad(BLOCKS_KEY, value, "a list of blocks (BASE, IN00…, M00, OUT00…); an empty list trains nothing")
        return
    names = [str(v) for v in value]
    # Outside LoRA mode TrainTrain encodes the prompts once, under no_grad, before the network exists (train.py
    # train_main): its text-encoder modules are created but never trained, so lorakit's UNet-only modes match it
    text_encoder = "BASE" in names and mode == "LoRA"
    if "BASE" in names and not text_encoder:
        r.inert(f"{BLOCKS_KEY} BASE", "BASE", f"in {mode} mode TrainTrain encodes the prompts once without "
                                              "gradients, so the text encoder is never trained")
    unet = [n for n in names if n != "BASE"]
    blocks = [] if SD_UNET_BLOCKS <= set(unet) else (["BASE"] if text_encoder else []) + unet
    if blocks:
        r.put(BLOCKS_KEY, "network.blocks", blocks)
    if text_encoder:
        r.put(BLOCKS_KEY, "network.train_text_encoder", True)
    parts = ([f"network.blocks = {blocks!r}"] if blocks else []) \
        + (["network.train_text_encoder = True"] if text_encoder else [])
    r.mapped[BLOCKS_KEY] = ", ".join(parts) + ("" if blocks else " (every block: network.blocks left empty)")


def _second_pass(r: ImportResult, src: dict[str, Any], lorakit_mode: str) -> None:
    """Difference's '2nd pass' table (Trainer.setpass(1)); lorakit's second pass differs from the first only in
    rank, alpha, learning rate, iterations and batch size. Only the table's own use_2nd_pass_settings switches it
    on: setpass(1) reads the last value of the 2nd-pass column, while import_json puts the top-level key into a
    hidden check box nothing reads (scripts/traintrain.py `dummy`)."""
    top, second = src.get("use_2nd_pass_settings"), src.get(PASS2)
    if "use_2nd_pass_settings" in src:
        r.skip("use_2nd_pass_settings", None, "") if _off(top) else r.inert(
            "use_2nd_pass_settings", top, "TrainTrain reads the 2nd pass's own use_2nd_pass_settings, inside "
                                          f"'{PASS2}', not this one")
    use = isinstance(second, dict) and not _off(second.get("use_2nd_pass_settings", False))
    if lorakit_mode != "difference" or not use:
        if PASS2 in src:
            r.skip(PASS2, None, "") if _off(second) else r.inert(
                PASS2, "{…}", "TrainTrain trains it only in Difference mode with its use_2nd_pass_settings on")
        if lorakit_mode == "difference" and not _off(top) and not use:
            r.notes.append(f"use_2nd_pass_settings is on, but the one inside '{PASS2}' is off: TrainTrain trains "
                           "both passes with the first pass's settings, and so does this config")
        return
    filled = {key for key in DEFAULTS if key not in second}
    second = {**{key: DEFAULTS[key] for key in filled}, **second}
    pass2 = r.values["mode"].setdefault("second_pass", {})
    for key, value in second.items():
        first = src.get(key)
        if key in PASS1_ONLY or key == "use_2nd_pass_settings" or _same(value, first):
            continue
        label = f"{PASS2}.{key}"
        if key in filled:  # not in the table: TrainTrain's default, not pass 1's value
            r.defaults.append(label)
        if key in SECOND_PASS_KEYS:
            name = SECOND_PASS_KEYS[key]
            try:
                pass2[name] = cast(value, float if name in ("network_alpha", "learning_rate") else int)
                r.mapped[label] = f"mode.second_pass.{name} = {pass2[name]!r}"
            except ValueError:
                r.bad(label, value, f"mode.second_pass.{name} takes a number")
        else:
            r.unsupported(label, value, "lorakit's second pass can differ only in rank, alpha, learning rate, "
                                        "iterations and batch size")
    r.mapped[PASS2] = "mode.second_pass = (its keys below)"
    if not pass2:
        del r.values["mode"]["second_pass"]


def _same(a: Any, b: Any) -> bool:
    """Equal as TrainTrain reads them ('8' and '8.0' are the same alpha)."""
    na, nb = number(a) if not isinstance(a, bool) else None, number(b) if not isinstance(b, bool) else None
    return a == b or (na is not None and na == nb)
