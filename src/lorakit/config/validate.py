"""Semantic checks the schema cannot express: argument lists against real signatures, cross-field rules, paths.

`check(config)` returns (errors, warnings). Errors stop a run; warnings are shown by `config validate`, `plan`
and at the start of a run. Decision: a text-encoder learning rate with a frozen text encoder is a *warning*, not
an error, because a TOML layer cannot unset a key: a preset that sets `text_encoder_lr` must stay usable with
`--set network.train_text_encoder=false`. The warning names both keys, so the value is never silently ignored.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

# built-in model → family; a torch-free module, so validation does not import torch
from ..families.names import BUILTIN_MODELS as BUILTIN_FAMILIES
from ..runs import COPY_MACHINE_SUFFIX
from .schema import LorakitConfig


@dataclass
class Finding:
    """One problem: the dotted key it is about and what to do."""

    key: str
    message: str
    error: bool = True


def _dry_run(cfg: LorakitConfig) -> list[Finding]:
    """Build the optimizer and the schedule on a one-element parameter, so that a value the signature accepts
    but the constructor refuses (betas out of range, a negative eps, ...) is an error now, not mid-run.
    Only with user arguments or a scheduler class: the defaults always build, and torch and diffusers take
    seconds to import."""
    t = cfg.train
    if not (t.optimizer_args or t.lr_scheduler_args or t.lr_scheduler_type):
        return []
    import torch

    from ..engine.optim import build_optimizer
    from ..errors import ConfigError

    try:
        optimizer = build_optimizer(t.optimizer_type, [{"params": [torch.nn.Parameter(torch.zeros(1))]}],
                                    t.learning_rate or 1e-4, t.optimizer_args)
    except ConfigError:
        return []  # the package is missing: check_environment says so
    except Exception as exc:  # noqa: BLE001 - any constructor error is the user's value
        return [Finding("train.optimizer_args", f"{t.optimizer_type} refuses these arguments: {exc}")]
    if t.lr_scheduler_args or t.lr_scheduler_type:
        from ..engine.schedule import build_scheduler  # diffusers: seconds to import, only when needed

        own = t.lr_scheduler_type or t.lr_scheduler == "adafactor"  # no warm-up there
        try:
            build_scheduler(t.lr_scheduler, optimizer, 0 if own else 1, 10, t.lr_scheduler_num_cycles,
                            t.lr_scheduler_args, power=t.lr_scheduler_power, scheduler_type=t.lr_scheduler_type,
                            initial_lr=t.learning_rate)
        except Exception as exc:  # noqa: BLE001
            owner = t.lr_scheduler_type or f"scheduler '{t.lr_scheduler}'"
            return [Finding("train.lr_scheduler_args", f"{owner} refuses these arguments: {exc}")]
    return []


def _gpu_driver_present() -> bool:
    """False when no CUDA (or ROCm) driver is installed, found without importing torch; True when unsure."""
    if not sys.platform.startswith("linux"):
        return sys.platform != "darwin"  # macOS has no CUDA; Windows: ask torch
    return any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd"))


def _cuda() -> bool:
    """Whether torch sees a CUDA device (torch is imported only when a driver could be there)."""
    if not _gpu_driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def check_optimizer_package(cfg: LorakitConfig) -> list[Finding]:
    """The optimizer's package is installed; an 8-bit one without CUDA needs a bitsandbytes that runs on the CPU."""
    from .optimizer_rules import BNB_REQUIREMENT, EIGHT_BIT_FALLBACK, OPTIMIZERS  # imports Finding from here

    name = cfg.train.optimizer_type
    spec = OPTIMIZERS[name]
    instead = f", or use '{EIGHT_BIT_FALLBACK[name]}'" if name in EIGHT_BIT_FALLBACK else ""
    module = spec.module.split(".")[0]
    if not package_installed(module):
        return [Finding("train.optimizer_type", f"'{name}' needs the {spec.package} package, which is not installed: "
                                                f"{spec.install}{instead}")]
    if spec.package == "bitsandbytes" and not _cuda():
        from importlib.metadata import version

        from packaging.requirements import Requirement

        have = version("bitsandbytes")
        if not Requirement(BNB_REQUIREMENT).specifier.contains(have, prereleases=True):
            return [Finding("train.optimizer_type", f"'{name}' on a machine without CUDA needs {BNB_REQUIREMENT} "
                                                    f"(installed: {have}, which runs it on CUDA GPUs only): "
                                                    f"{spec.install}{instead}")]
    return []


def _this_device() -> str:
    """'cuda', 'mps' or 'cpu': what a run here trains on (engine/device.training_device). Where no GPU can be (no
    driver, not a Mac) that is the CPU, known without importing torch."""
    if not _gpu_driver_present() and sys.platform != "darwin":
        return "cpu"
    from ..engine.device import training_device

    return training_device().type


def resolved_mixed_precision(cfg: LorakitConfig) -> str:
    """train.mixed_precision with 'auto' resolved for this machine, as a run resolves it (engine/device)."""
    if cfg.train.mixed_precision != "auto":
        return cfg.train.mixed_precision
    from ..engine.device import auto_mixed_precision

    return auto_mixed_precision(_this_device())


def check_environment(cfg: LorakitConfig) -> list[Finding]:
    """What this machine must have for the run: a device that runs the precisions and options chosen
    (engine/device.device_findings), the optimizer's package, the logger's package."""
    from ..engine.device import device_findings

    return device_findings(cfg.train, _this_device()) + check_optimizer_package(cfg) + check_log_with(cfg)


def package_installed(name: str) -> bool:
    """Whether a package can be imported, found without importing it."""
    return importlib.util.find_spec(name) is not None


def check_log_with(cfg: LorakitConfig) -> list[Finding]:
    """`train.log_with` names a logger whose package is installed."""
    if cfg.train.log_with == "tensorboard" and not package_installed("tensorboard"):
        return [Finding("train.log_with", "'tensorboard' needs the tensorboard package, which is not installed: "
                        "run `pip install tensorboard` (or `pip install lorakit[tensorboard]`), or set "
                        "train.log_with = 'none'")]
    return []


def check_output_names(cfg: LorakitConfig) -> list[Finding]:
    """The longest file name a run writes (a step checkpoint) fits the output file system. (Temporary names keep
    at most 100 bytes of the target's name, so they always fit.)"""
    out = cfg.output
    probe = Path(out.output_dir)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    copy = COPY_MACHINE_SUFFIX if cfg.mode.type == "difference" else ""  # Difference's copy machine: <name>_copy-step…
    names = {"output.output_name": (out.output_name, f"{out.output_name}{copy}-step00000000.safetensors")}
    if out.run_id:
        names["output.run_id"] = (out.run_id, out.run_id)
    found = []
    for key, (value, name) in names.items():
        length = len(name.encode("utf-8"))
        if length > limit:
            shown = value if len(value) <= 40 else value[:40] + "…"
            found.append(Finding(key, f"{shown!r} makes file names of {length} bytes, longer than the {limit} "
                                      f"this file system allows in {probe}; shorten it by {length - limit} bytes"))
    return found


# Settings whose feature has not landed yet: a value other than the default is refused, never silently ignored.
NOT_YET = "is not implemented yet"
UNIMPLEMENTED_SECTIONS: dict[str, str] = {}  # section → feature, while a feature has not landed
UNIMPLEMENTED_FIELDS: dict[str, dict[str, str]] = {}  # section → {field: feature}; the section's other fields work


def check_unimplemented(cfg: LorakitConfig) -> list[Finding]:
    """A setting of a feature that has not landed yet, changed from its default, is an error that says so."""
    found = []
    fields = {**{s: {f: feature for f in type(getattr(cfg, s)).model_fields}
                 for s, feature in UNIMPLEMENTED_SECTIONS.items()}, **UNIMPLEMENTED_FIELDS}
    for section, names in fields.items():
        current, default = getattr(cfg, section), type(getattr(cfg, section))()
        for name, feature in names.items():
            if getattr(current, name) != getattr(default, name):
                found.append(Finding(f"{section}.{name}", f"{feature} {NOT_YET}; remove this setting "
                                     f"(default: {getattr(default, name)!r})"))
    return found


def check_training(cfg: LorakitConfig) -> list[Finding]:
    """Cross-field rules of the training settings."""
    t, n = cfg.train, cfg.network
    found = []
    if t.lr_warmup_ratio is not None and t.lr_warmup_steps > 0:
        found.append(Finding("train.lr_warmup_ratio", "set either lr_warmup_steps or lr_warmup_ratio, not both"))
    if t.lora_precision != "fp32" or t.fp8_base:  # 'auto' as this machine resolves it (torch only where a GPU is)
        mp = resolved_mixed_precision(cfg)
        now = f"'{mp}'" if mp == t.mixed_precision else f"'auto', which is '{mp}' on this machine"
        if t.lora_precision != "fp32" and mp != t.lora_precision:
            found.append(Finding("train.lora_precision", f"'{t.lora_precision}' needs train.mixed_precision = "
                                 f"'{t.lora_precision}' (the network computes in it; now {now})"))
        if t.fp8_base and mp not in ("fp16", "bf16"):
            found.append(Finding("train.fp8_base", "needs train.mixed_precision = 'bf16' or 'fp16' (float8 weights "
                                 f"are upcast to it per layer; now {now})"))
    if not n.train_text_encoder:
        if t.text_encoder_lr is not None:
            found.append(Finding("train.text_encoder_lr", "is set but network.train_text_encoder is false: "
                                 "the text encoder stays frozen and this value is not used", False))
        if t.stop_text_encoder_training is not None:
            found.append(Finding("train.stop_text_encoder_training", "is set but network.train_text_encoder is "
                                 "false: the text encoder is frozen from the start", False))
    every = cfg.output.save_every_n_steps
    if t.max_train_steps is not None and every and every > t.max_train_steps:
        found.append(Finding("output.save_every_n_steps", f"{every} is more than max_train_steps "
                             f"({t.max_train_steps}): no intermediate checkpoint", False))
    bucket_step = getattr(cfg.data, "bucket_reso_steps", getattr(cfg.data, "bucket_step", 1))
    if bucket_step is not None and bucket_step < 1:
        found.append(Finding("data.bucket_reso_steps", f"{bucket_step}: the bucket step must be ≥ 1"))
    if not 0 <= t.noise_offset <= 1:
        found.append(Finding("train.noise_offset", f"{t.noise_offset}: must be in [0, 1]"))
    has_reg = bool(cfg.data.reg_data_dir) or any(s.is_reg for s in cfg.data.subsets)
    if cfg.mode.type in ("lora", "dreambooth") and cfg.mode.prior_loss_weight != 1 and not has_reg:
        found.append(Finding("mode.prior_loss_weight", "weights regularisation images, but data.reg_data_dir is "
                                                       "not set: set it, or remove prior_loss_weight"))
    return found


def check_family(cfg: LorakitConfig) -> list[Finding]:
    """Model family against the chosen model, the network and the resolution."""
    m = cfg.model
    found = []
    known = BUILTIN_FAMILIES.get(m.pretrained_model_name_or_path)
    family = m.family if m.family != "auto" else known
    if known and m.family not in ("auto", known):
        found.append(Finding("model.family", f"'{m.family}' but {m.pretrained_model_name_or_path} is {known}"))
    if family == "sd1" and m.v_parameterization:
        found.append(Finding("model.v_parameterization", "SD 1.x models predict noise, not v", False))
    res = cfg.data.resolution
    if family == "sdxl" and res < 768 and not known:
        found.append(Finding("data.resolution", f"{res} is low for SDXL (trained at 1024)", False))
    if family == "sd1" and res > 768 and not known:
        found.append(Finding("data.resolution", f"{res} is high for SD 1.x (trained at 512)", False))
    if family == "sdxl" and cfg.train.clip_skip not in (None, 1):  # as sdxl_train_util.verify_sdxl_training_args
        found.append(Finding("train.clip_skip", "SDXL always uses the penultimate layer of both text encoders: "
                             "clip_skip changes nothing (remove it)", False))
    return found


MAX_HEADER_BYTES = 100 * 1024 * 1024  # as safetensors itself allows


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name → shape from a .safetensors header (reads only the header); ValueError if it is not one."""
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"header length {size} is larger than {MAX_HEADER_BYTES} bytes")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    shapes = {k: v.get("shape") if isinstance(v, dict) else None for k, v in header.items() if k != "__metadata__"}
    for name, shape in shapes.items():
        if not (isinstance(shape, list) and all(isinstance(n, int) for n in shape)):
            raise ValueError(f"tensor {name!r} has no list of sizes as its shape")
    return shapes  # type: ignore[return-value]


def weights_file(path: Path) -> Path | None:
    """A kohya LoRA file: the path itself, or the one a folder (a run, its train/, a checkpoint folder) holds.

    In a folder: the final `<name>.safetensors` (newest if several), else the checkpoint with the highest step
    (`<name>-step00000100.safetensors`). `train/` is searched before the folder itself; PEFT folders (`*_peft/`,
    `adapter_model.safetensors`) are never chosen: they are not kohya files.
    """
    import re

    if path.is_file():
        return path
    if not path.is_dir():
        return None

    def kohya(files: list[Path], base: Path) -> list[Path]:
        return [f for f in files if f.is_file() and f.name != "adapter_model.safetensors"
                and not any(part.endswith("_peft") for part in f.relative_to(base).parts[:-1])]

    step = re.compile(r"-step(\d+)$")
    for files in (kohya(sorted((path / "train").glob("*.safetensors")), path),
                  kohya(sorted(path.glob("*.safetensors")), path),
                  kohya(sorted(path.rglob("*.safetensors")), path)):
        finals = [f for f in files if not step.search(f.stem)]
        if finals:
            return max(finals, key=lambda f: f.stat().st_mtime)
        if files:
            return max(files, key=lambda f: (int(step.search(f.stem).group(1)), f.stat().st_mtime))
    return None


def network_type_of(names: list[str]) -> str | None:
    """The adapter type a file's tensor names show: loha (hada_*), lokr (lokr_*), dora (dora_scale), lora."""
    for marker, kind in (("hada_w1", "loha"), ("lokr_w1", "lokr"), ("dora_scale", "dora"),
                         ("lora_down", "lora"), ("lora_A", "lora")):
        if any(marker in n for n in names):
            return kind
    return None


def check_model(cfg: LorakitConfig) -> list[Finding]:
    """A local model's real family (read from its folder or file header) against model.family."""
    m = cfg.model
    if m.family == "auto" or not Path(m.pretrained_model_name_or_path).exists():
        return []
    from ..errors import LorakitError
    from ..families import detect_family

    try:
        detected = detect_family(m.model_copy(update={"family": "auto"}))
    except LorakitError as exc:
        return [Finding("model.pretrained_model_name_or_path", exc.message)]
    if detected != m.family:
        return [Finding("model.family", f"'{m.family}' but {m.pretrained_model_name_or_path} is an {detected} "
                                        "model; set model.family = 'auto' or the right family")]
    return []


def check_resume(cfg: LorakitConfig, key: str, value: str, rank: bool = True) -> list[Finding]:
    """A LoRA to start from must be of the configured network type, fit the model family and (`rank`) have the
    configured rank."""
    file = weights_file(Path(value))
    if file is None:
        return [Finding(key, f"{value}: no .safetensors LoRA file found there")]
    try:
        shapes = _safetensors_shapes(file)
    except (OSError, ValueError, struct.error) as exc:
        return [Finding(key, f"{file}: not a readable .safetensors file ({exc})")]
    found = []
    kind = network_type_of(list(shapes))
    if kind and kind != cfg.network.network_module:
        found.append(Finding(key, f"{file} is a {kind} network but network.network_module is "
                                  f"'{cfg.network.network_module}'"))
    ranks = {s[0] for k, s in shapes.items() if k.endswith((".lora_down.weight", ".lora_A.weight")) and s}
    if rank and ranks and ranks != {cfg.network.network_dim}:
        found.append(Finding(key, f"{file} has rank {sorted(ranks)} but network.network_dim is "
                                  f"{cfg.network.network_dim}; set network.network_dim to match"))
    sdxl = any(k.startswith(("lora_te1_", "lora_te2_")) or "input_blocks" in k for k in shapes)
    family = cfg.model.family if cfg.model.family != "auto" else BUILTIN_FAMILIES.get(
        cfg.model.pretrained_model_name_or_path)
    if family and sdxl != (family == "sdxl"):
        found.append(Finding(key, f"{file} is an {'SDXL' if sdxl else 'SD 1/2'} LoRA but model.family is {family}"))
    return found


def _writable(path: Path) -> bool:
    """True if `path` exists as a writable folder or could be created (checked without creating anything)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def looks_like_hub_id(value: str) -> bool:
    """'org/name' with no file extension: a Hugging Face model id rather than a local path."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and "\\" not in value and not Path(value).suffix


def check_paths(cfg: LorakitConfig) -> list[Finding]:
    """Every input path exists and is readable; every output folder exists writable or is creatable."""
    from .mode_rules import check_mode_inputs  # imports Finding from here

    found = []

    def need(key: str, value: str | None, folder: bool | None) -> None:
        if not value:
            return
        p = Path(value)
        if not p.exists():
            found.append(Finding(key, f"{value}: not found"))
        elif folder is True and not p.is_dir():
            found.append(Finding(key, f"{value}: is a file, expected a folder"))
        elif folder is False and not p.is_file():
            found.append(Finding(key, f"{value}: is a folder, expected a file"))
        elif not os.access(p, os.R_OK):
            found.append(Finding(key, f"{value}: not readable"))

    model = cfg.model.pretrained_model_name_or_path
    if model not in BUILTIN_FAMILIES and not (looks_like_hub_id(model) and not Path(model).exists()):
        need("model.pretrained_model_name_or_path", model, None)
    if cfg.model.vae and not looks_like_hub_id(cfg.model.vae):
        need("model.vae", cfg.model.vae, None)
    found += check_mode_inputs(cfg)
    for name in type(cfg.data).model_fields:
        value = getattr(cfg.data, name)
        if name.endswith("_dir") and isinstance(value, str):
            need(f"data.{name}", value, True)
    for i, subset in enumerate(getattr(cfg.data, "subsets", [])):  # sd-scripts' dataset subsets, one folder each
        need(f"data.subsets[{i}].image_dir", subset.image_dir, True)
    metadata = getattr(cfg.data, "caption_metadata", "")
    if metadata and not (Path(cfg.data.train_data_dir) / metadata).is_file():  # relative to the images is fine
        need("data.caption_metadata", metadata, False)
    need("network.network_weights", cfg.network.network_weights, None)
    for key in ("original_image", "target_image", "first_pass_file"):  # Difference's inputs
        need(f"mode.{key}", getattr(cfg.mode, key, None), False)
    need("batch.oom_file", cfg.batch.oom_file, False)
    need("sample.prompts_file", cfg.sample.prompts_file, False)
    outputs = [("output.output_dir", cfg.output.output_dir), ("batch.stage_dir", cfg.batch.stage_dir),
               ("data.cache_folder", getattr(cfg.data, "cache_folder", ""))]
    for key, value in outputs:
        if value and not _writable(Path(value)):
            found.append(Finding(key, f"{value}: cannot be created or written (check the folder's permissions)"))
    return found


def check_samples(cfg: LorakitConfig, paths: bool = False) -> list[Finding]:
    """Sample prompts that cannot be rendered as written (each line named), and sample settings without prompts.
    The prompts file's lines are read only with `paths` (and when the file is there)."""
    from ..engine.sample_prompts import file_problem, line_problems, prompt_lines  # torch-free

    s = cfg.sample
    if not (s.prompts or s.prompts_file):
        default = type(s)()
        return [Finding(f"sample.{name}", "is set but there are no sample prompts: add sample.prompts or "
                                          "sample.prompts_file, or remove it")
                for name in type(s).model_fields if getattr(s, name) != getattr(default, name)]
    found = [Finding("sample.prompts", p) for p in line_problems(prompt_lines(s.prompts, None))]
    problem = file_problem(s.prompts_file) if s.prompts_file else None
    if problem:
        return found + [Finding("sample.prompts_file", problem)]
    if paths and s.prompts_file and Path(s.prompts_file).is_file() and os.access(s.prompts_file, os.R_OK):
        try:
            lines = prompt_lines([], s.prompts_file)
        except UnicodeDecodeError as exc:
            return found + [Finding("sample.prompts_file", f"{s.prompts_file}: not UTF-8 text ({exc.reason})")]
        found += [Finding("sample.prompts_file", p) for p in line_problems(lines)]
        if not lines and not s.prompts:
            found.append(Finding("sample.prompts_file", f"{s.prompts_file}: holds no prompt (only empty or '#' "
                                                        "lines)"))
    return found


def check(cfg: LorakitConfig, paths: bool = False, machine: str = "error") -> tuple[list[Finding], list[Finding]]:
    """All semantic checks; returns (errors, warnings).

    `paths` adds the checks of this machine: files and folders, and what the run needs here (CUDA for fp16,
    packages, file-name limits, the optimizer built once). `machine = "warn"` reports the latter as warnings
    (`lorakit plan` of a config meant for another machine)."""
    from ..networks.findings import network_findings  # torch-free: network type combinations
    from ..networks.targets import selection_findings  # torch-free: blocks, element, per-block dims
    from .bench_rules import check_bench  # imports Finding from here
    from .data_rules import check_data_options  # imports Finding from here
    from .loss_rules import check_loss_options  # imports Finding from here
    from .mode_rules import check_mode  # imports Finding from here
    from .optimizer_rules import check_arguments, check_optimizer  # imports Finding from here

    found = check_unimplemented(cfg) + check_mode(cfg) + check_training(cfg) + check_family(cfg) + check_arguments(cfg)
    found += check_data_options(cfg) + check_loss_options(cfg)
    found += check_optimizer(cfg)
    found += selection_findings(cfg) + network_findings(cfg)
    found += check_samples(cfg, paths) + check_bench(cfg, paths)
    if paths:
        found += check_paths(cfg) + check_model(cfg)
        resume_keys = [("network.network_weights", cfg.network.network_weights),
                       ("train.resume", getattr(cfg.train, "resume", None)),
                       ("mode.first_pass_file", getattr(cfg.mode, "first_pass_file", None))]
        for key, value in resume_keys:
            if value and Path(value).exists():  # a copy machine keeps its own rank: only type and family
                found += check_resume(cfg, key, value, rank=key != "mode.first_pass_file")
        here = check_environment(cfg) + check_output_names(cfg)
        if not any(f.error for f in found if f.key.startswith("train.")):
            here += _dry_run(cfg)
        if machine == "warn":
            here = [Finding(f.key, f"{f.message} (on this machine)", False) for f in here]
        found += here
    return [f for f in found if f.error], [f for f in found if not f.error]
