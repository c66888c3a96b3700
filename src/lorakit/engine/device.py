"""The training device, what it can run, and the precisions 'auto' stands for on it.

accelerate picks the device (CUDA, else Apple MPS, else the CPU; `accelerate launch --cpu` forces the CPU); the
same choice is made here without building an Accelerator, so validation, `plan` and `doctor` can resolve 'auto'
and refuse what the device cannot run before anything loads. torch is imported inside the functions: validation
asks about the CPU on machines without a GPU driver, and importing torch there costs seconds for nothing.

What the MPS rules rest on (torch and accelerate sources):
- fp16 autocast on MPS: torch 2.5 (pytorch#99272); training also needs accelerate's gradient scaler on MPS, which
  `accelerate.utils.modeling.get_grad_scaler` refuses below torch 2.8.
- bf16 on MPS: tensors from macOS 14 (pytorch#119641; accelerate's `is_bf16_available` asks
  `torch.backends.mps.is_macos_or_newer(14, 0)`), autocast from torch 2.6 (pytorch#139390;
  `Accelerator.__init__` refuses it below).
- accelerate accepts fp16/bf16 on MPS from 1.11 (accelerate#3373); before, `Accelerator.__init__` refused both.
- torch.compile on MPS: inductor's Metal backend, a release feature of torch 2.8 (pytorch#157957).
- float8 tensors on MPS: missing from torch for years (pytorch#148420); probed, so a torch that has them passes.
- 8-bit optimizers: bitsandbytes registers `optimizer_update_8bit_blockwise` for CUDA, CPU and XPU only
  (bitsandbytes/backends/*/ops.py, 0.50.2); probed through torch's dispatcher.

Decision: 'auto' is fp32 ('no') on MPS. Apple M1/M2 GPUs have no bf16 arithmetic (Metal emulates it in fp32:
transformers#40458; metal-flash-attention#17 measured bf16 GEMM at 50–60% of fp32), and users report no bf16 speed-up
on newer chips either (nanochat#793: a memory saving, not a speed one). On a 32–64 GB Mac the saving is rarely needed
for SD 1.x/2.x, and fp32 is exact and uses none of MPS's younger autocast paths. bf16 (macOS 14+) and fp16 stay
available and are checked here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from packaging.version import Version

from ..config.schema import LorakitConfig, TrainSection
from ..config.validate import Finding

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = {"no": "float32", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MPS_FP16_TORCH, MPS_BF16_TORCH, MPS_COMPILE_TORCH = Version("2.8"), Version("2.6"), Version("2.8")
MPS_ACCELERATE, MPS_BF16_MACOS = Version("1.11"), (14, 0)
BNB_8BIT_OP = "bitsandbytes::optimizer_update_8bit_blockwise"
CPU_COMPILERS = ("g++", "clang++", "c++")  # inductor's C++ backend compiles its CPU kernels with one of these


def _env_flag(name: str) -> bool:
    """accelerate's parse_flag_from_env: 'true'/'yes'/'1' (any case) is set."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "y", "on")


AUTO_LOG_EVERY_ON_GPU = 10  # log_every_n_steps = 'auto' on a GPU: the loss read back every 10 steps


def training_device() -> torch.device:
    """The device a run trains on, as accelerate picks it (`PartialState.default_device`): the CPU under
    `accelerate launch --cpu` (ACCELERATE_USE_CPU), else MPS when torch has it, else CUDA, else the CPU. (accelerate
    asks MPS first; no machine has both.)"""
    import torch

    if _env_flag("ACCELERATE_USE_CPU"):
        return torch.device("cpu")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and mps.is_built():
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _kind(device: torch.device | str) -> str:
    """'cuda', 'mps' or 'cpu' from a torch.device or its name ('cuda:1' → 'cuda')."""
    return (device if isinstance(device, str) else device.type).split(":")[0]


@dataclass(frozen=True)
class DeviceSupport:
    """What a device runs, read once from torch, accelerate and the OS; `missing` says why a feature does not.

    Features: 'fp16' and 'bf16' (mixed precision that trains here), 'bf16 weights' (bf16 tensors at all), 'fp8'
    (float8 weights, fp8_base), 'compile' (torch.compile)."""

    kind: str
    name: str  # "NVIDIA H100 80GB HBM3", "Apple M2 Max", "CPU"
    memory_bytes: int | None = None  # the GPU's memory; MPS: the unified memory; CPU: None
    free_bytes: int | None = None  # CUDA: free now; MPS: Metal's recommended working set
    platform: str = ""  # "CUDA 12.8", "macOS 14.5, torch 2.13.0"
    bf16_native: bool = False  # bf16 runs in hardware (CUDA compute capability 8.0+), not emulated
    tf32: bool = False
    missing: dict[str, str] = field(default_factory=dict)

    def runs(self, feature: str) -> bool:
        """Whether `feature` works here."""
        return feature not in self.missing

    @property
    def where(self) -> str:
        """The device as messages name it: 'the CUDA GPU NVIDIA T4', 'Apple MPS (Apple M2 Max)', 'the CPU'."""
        if self.kind == "cuda":
            return f"the CUDA GPU {self.name}"
        if self.kind == "mps":
            return f"Apple MPS ({self.name})"
        return "the CPU"


def _torch_version() -> Version:
    import torch

    return Version(Version(torch.__version__).base_version)


def _accelerate_version() -> Version | None:
    try:
        return Version(version("accelerate"))
    except PackageNotFoundError:
        return None


def _macos() -> tuple[int, ...]:
    """The macOS version as numbers ((14, 5)); () elsewhere."""
    import platform

    text = platform.mac_ver()[0]
    return tuple(int(p) for p in text.split(".") if p.isdigit()) if text else ()


def _installed(package: str) -> bool:
    """Whether a package can be imported, found without importing it."""
    return importlib.util.find_spec(package) is not None


def _physical_memory() -> int | None:
    """The machine's memory in bytes (on Apple silicon the GPU's too: it is unified)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _mps_float8() -> bool:
    """Whether this torch stores float8 tensors on MPS and casts them back (the probe fp8_base needs)."""
    import torch

    try:
        probe = torch.ones(2, device="mps").to(torch.float8_e4m3fn)
        return bool(probe.to(torch.float32).sum().item() == 2)
    except Exception:  # noqa: BLE001 - TypeError or RuntimeError, by torch version: no float8 here
        return False


def _bnb_8bit_kernel(dispatch_key: str) -> bool | None:
    """Whether bitsandbytes has its 8-bit optimizer step for a device (dispatch key 'MPS'); None when bitsandbytes
    is not installed (check_optimizer_package reports that)."""
    if not _installed("bitsandbytes"):
        return None
    try:
        import bitsandbytes  # noqa: F401 - registers its kernels
        import torch

        return bool(torch._C._dispatch_has_kernel_for_dispatch_key(BNB_8BIT_OP, dispatch_key))
    except Exception:  # noqa: BLE001 - a bitsandbytes that cannot even load has no kernel here
        return False


def _cpu_compiler() -> str | None:
    """The C++ compiler inductor would use on the CPU ($CXX or a usual name), None when there is none."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(CPU_COMPILERS)
    return next((found for n in names if (found := shutil.which(n))), None)


def _cuda_support(device: torch.device | str, memory: bool) -> DeviceSupport:
    """A CUDA GPU: the launcher's (LOCAL_RANK) or the current one. Free memory only with `memory`: asking creates a
    CUDA context, which validation has no need of (under torchrun every process would make one on GPU 0)."""
    import torch

    index = device.index if not isinstance(device, str) else None
    if index is None:
        index = int(os.environ.get("LOCAL_RANK", -1))
        index = index if 0 <= index < torch.cuda.device_count() else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    free = torch.cuda.mem_get_info(index)[0] if memory else None
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    missing = {}
    if not torch.cuda.is_bf16_supported(including_emulation=True):
        missing["bf16"] = missing["bf16 weights"] = f"{props.name} has no bf16"
    if not _installed("triton"):
        missing["compile"] = ("torch.compile on CUDA needs the triton package, which is not installed "
                              "(`pip install triton`; on Windows `pip install triton-windows`)")
    return DeviceSupport("cuda", props.name, props.total_memory, free, f"CUDA {torch.version.cuda}, compute "
                         f"capability {props.major}.{props.minor}", native, props.major >= 8, missing)


def _mps_support() -> DeviceSupport:
    import torch

    torch_v, accelerate_v, macos = _torch_version(), _accelerate_version(), _macos()
    shown = ".".join(map(str, macos)) or "?"
    missing = {}
    if accelerate_v is not None and accelerate_v < MPS_ACCELERATE:
        for p in ("fp16", "bf16"):
            missing[p] = f"accelerate {accelerate_v} refuses {p} on MPS (accepted from {MPS_ACCELERATE})"
    if torch_v < MPS_FP16_TORCH:
        missing["fp16"] = f"torch {torch_v} has no gradient scaler for MPS (torch {MPS_FP16_TORCH}+)"
    newer = getattr(torch.backends.mps, "is_macos_or_newer", None)  # torch 2.3+; older ones: ask the OS
    if not (newer(*MPS_BF16_MACOS) if newer else macos >= MPS_BF16_MACOS):
        missing["bf16"] = missing["bf16 weights"] = f"bf16 on MPS needs macOS 14 or newer (this is {shown})"
    elif torch_v < MPS_BF16_TORCH:
        missing["bf16"] = f"torch {torch_v} has no bf16 autocast on MPS (torch {MPS_BF16_TORCH}+)"
    if not _mps_float8():
        missing["fp8"] = f"torch {torch_v} has no float8 tensors on MPS"
    if torch_v < MPS_COMPILE_TORCH:
        missing["compile"] = f"torch {torch_v} cannot compile for MPS (inductor's Metal backend: torch 2.8+)"
    try:
        name = torch.backends.mps.get_name()
        working_set = int(torch.mps.recommended_max_memory())
    except (AttributeError, RuntimeError):
        name, working_set = "Apple GPU", None
    return DeviceSupport("mps", name, _physical_memory(), working_set, f"macOS {shown}, torch {torch_v}",
                         missing=missing)


def _cpu_support() -> DeviceSupport:
    """The CPU, torch-free: bf16 autocast works on any CPU torch runs on; fp16 does not train (accelerate does not
    autocast fp16 on the CPU: `Accelerator.__init__` enables native AMP for fp16 only off the CPU)."""
    missing = {"fp16": "accelerate does not autocast fp16 on the CPU"}
    if _cpu_compiler() is None:
        missing["compile"] = ("torch.compile on the CPU needs a C++ compiler (inductor), and none was found "
                              "(install g++ or clang, or set $CXX)")
    return DeviceSupport("cpu", "CPU", missing=missing)


def device_support(device: torch.device | str, memory: bool = False) -> DeviceSupport:
    """What `device` (a torch.device or 'cuda'/'mps'/'cpu') can run; the CPU is answered without importing torch.
    `memory`: also a CUDA GPU's free memory (`lorakit doctor`)."""
    kind = _kind(device)
    if kind == "cuda":
        return _cuda_support(device, memory)
    if kind == "mps":
        return _mps_support()
    return _cpu_support()


def auto_mixed_precision(device: torch.device | str) -> str:
    """What mixed_precision = 'auto' means on `device`: bf16 on a CUDA GPU with bf16 in hardware (Ampere or newer),
    else fp32 ('no') — on MPS too (see the module's docstring)."""
    if _kind(device) != "cuda":
        return "no"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "no"


def resolve_auto(cfg: LorakitConfig, device: torch.device | str | None = None) -> LorakitConfig:
    """The config with train.mixed_precision and log_every_n_steps = 'auto' replaced by what they mean on `device`
    (default: this machine's); model_precision 'auto' stays (it follows mixed_precision, see `model_dtype`)."""
    t, update = cfg.train, {}
    if t.mixed_precision == "auto" or t.log_every_n_steps == "auto":
        device = device if device is not None else training_device()
        if t.mixed_precision == "auto":
            update["mixed_precision"] = auto_mixed_precision(device)
        if t.log_every_n_steps == "auto":  # a GPU waits at each read; on the CPU a read costs nothing
            update["log_every_n_steps"] = 1 if _kind(device) == "cpu" else AUTO_LOG_EVERY_ON_GPU
    return cfg.model_copy(update={"train": t.model_copy(update=update)}) if update else cfg


def compute_dtype(mixed_precision: str) -> torch.dtype:
    """The autocast dtype of mixed_precision ('auto': what it means on this machine, see `resolve_auto`)."""
    import torch

    if mixed_precision == "auto":  # a config used without a run (a mode's task in a test, a tool)
        mixed_precision = auto_mixed_precision(training_device())
    return getattr(torch, DTYPE_NAMES[mixed_precision])


def model_dtype(mixed_precision: str, model_precision: str) -> torch.dtype:
    """The dtype of the frozen model's weights: model_precision, or the compute precision when it is 'auto'."""
    return compute_dtype(mixed_precision if model_precision == "auto" else model_precision)


def _precision_findings(train: TrainSection, mp: str, s: DeviceSupport) -> list[Finding]:
    """mixed_precision, model_precision and lora_precision against what the device runs."""
    found = []
    if mp == "fp16" and not s.runs("fp16"):
        instead = "'bf16' or 'no'" if s.runs("bf16") else "'no' (fp32)"
        found.append(Finding("train.mixed_precision", f"'fp16' does not train on {s.where}: {s.missing['fp16']}; "
                                                      f"use {instead}"))
    if mp == "bf16" and not s.runs("bf16"):
        instead = "'fp16' or 'no'" if s.runs("fp16") else "'no' (fp32)"
        found.append(Finding("train.mixed_precision", f"'bf16' does not train on {s.where}: {s.missing['bf16']}; "
                                                      f"use {instead}"))
    elif mp == "bf16" and s.kind == "cuda" and not s.bf16_native:
        found.append(Finding("train.mixed_precision", f"'bf16' is emulated on {s.where} ({s.platform}; bf16 in "
                                                      "hardware from 8.0) and slower than fp16: use 'fp16' or 'no'",
                             False))
    for key in ("model_precision", "lora_precision"):
        if getattr(train, key) == "bf16" and not s.runs("bf16 weights"):
            found.append(Finding(f"train.{key}", f"'bf16' weights do not work on {s.where}: "
                                                 f"{s.missing['bf16 weights']}; use 'fp16' or 'fp32'"))
    return found


def device_findings(train: TrainSection, device: torch.device | str) -> list[Finding]:
    """What `device` cannot run of the train settings, each naming the key, the device and what to use instead.

    mixed_precision 'auto' is resolved for the device first (it only ever picks what the device runs). allow_tf32
    and cudnn_benchmark only matter on CUDA and are harmless elsewhere: no finding. fp8_base on the CPU works but
    only costs time (a warning); MPS lacks float8 tensors (an error)."""
    from ..config.optimizer_rules import EIGHT_BIT_FALLBACK

    s = device_support(device)
    mp = auto_mixed_precision(device) if train.mixed_precision == "auto" else train.mixed_precision
    found = _precision_findings(train, mp, s)
    smaller = "train.model_precision = 'fp16' or 'bf16' (half the fp32 weights) and gradient_checkpointing"
    if train.fp8_base and not s.runs("fp8"):
        found.append(Finding("train.fp8_base", f"float8 weights do not work on {s.where}: {s.missing['fp8']}; set "
                                               f"fp8_base = false and, to save memory, use {smaller}"))
    elif train.fp8_base and s.kind == "cpu":
        found.append(Finding("train.fp8_base", "float8 weights save GPU memory; on the CPU they only add an upcast "
                                               f"per layer: set fp8_base = false, or use {smaller}", False))
    if train.torch_compile and not s.runs("compile"):
        found.append(Finding("train.torch_compile", f"cannot work on {s.where}: {s.missing['compile']}; set "
                                                    "torch_compile = false"))
    name = train.optimizer_type  # bitsandbytes is imported only for an 8-bit optimizer on a Mac
    if name in EIGHT_BIT_FALLBACK and s.kind == "mps" and _bnb_8bit_kernel("MPS") is False:
        found.append(Finding("train.optimizer_type", f"'{name}' does not run on {s.where}: bitsandbytes has no "
                                                     f"8-bit optimizer step for MPS; use '{EIGHT_BIT_FALLBACK[name]}' "
                                                     "(its 32-bit state fits in unified memory)"))
    return found


def describe(s: DeviceSupport) -> str:
    """One line for `lorakit doctor`: memory, platform and what runs (bf16, fp16, fp8 weights, TF32, compile)."""
    def yes(feature: str) -> str:
        return "yes" if s.runs(feature) else "no"

    gib = 1024**3
    if s.kind == "cuda" and s.memory_bytes is not None:
        free = f", {s.free_bytes / gib:.1f} GiB free" if s.free_bytes is not None else ""
        memory = f"{s.memory_bytes / gib:.1f} GiB{free}; "
    elif s.kind == "mps" and s.memory_bytes is not None:
        working = f", Metal working set {s.free_bytes / gib:.1f} GiB" if s.free_bytes else ""
        memory = f"{s.memory_bytes / gib:.0f} GiB unified memory{working}; "
    else:
        memory = ""
    bf16 = ("native" if s.bf16_native else "emulated") if s.kind == "cuda" and s.runs("bf16") else yes("bf16")
    tf32 = f", TF32 {'yes' if s.tf32 else 'no'}" if s.kind == "cuda" else ""
    return (f"{s.name}: {memory}{s.platform + '; ' if s.platform else ''}bf16 {bf16}, fp16 {yes('fp16')}, "
            f"fp8 weights {yes('fp8')}{tf32}, torch.compile {yes('compile')}")
