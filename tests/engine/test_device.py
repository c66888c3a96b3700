"""The training device and what runs on it, with CUDA and Apple MPS faked: the device accelerate picks, what
mixed_precision 'auto' resolves to, and every refusal (key, device, what to use instead).

Expected values come from the peers' rules, not from lorakit: accelerate's `PartialState.default_device` (state.py)
picks the device; `Accelerator.__init__` (accelerator.py) refuses fp16 off GPU/MPS and MPS mixed precision before
accelerate 1.11; `utils/modeling.get_grad_scaler` refuses the MPS gradient scaler below torch 2.8; accelerate's
`is_bf16_available` (utils/imports.py) gives bf16 on MPS from macOS 14; bitsandbytes registers its 8-bit optimizer
step for CUDA, CPU and XPU only (backends/*/ops.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.state import PartialState
from packaging.version import Version

from lorakit.config.schema import LorakitConfig, TrainSection
from lorakit.config.validate import check_environment, check_training
from lorakit.engine import device
from lorakit.engine.device import (auto_mixed_precision, describe, device_findings, device_support, resolve_auto,
                                   training_device)

GIB = 1024**3


def fake_cuda(monkeypatch: pytest.MonkeyPatch, name: str = "NVIDIA A100-SXM4-80GB", major: int = 8,
              emulated_bf16: bool = True, total: int = 80 * GIB, triton: bool = True) -> None:
    """One CUDA GPU of compute capability `major`.x; torch's is_bf16_supported as torch computes it (native from
    8.0; with emulation, wherever a bf16 tensor can be made)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i=0: SimpleNamespace(name=name, major=major, minor=0, total_memory=total))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (total // 2, total))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: major >= 8 or (including_emulation and emulated_bf16))
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    real = device._installed
    monkeypatch.setattr(device, "_installed", lambda p: triton if p == "triton" else real(p))


def fake_mps(monkeypatch: pytest.MonkeyPatch, macos: tuple[int, int] = (14, 5), torch_version: str = "2.13.0",
             accelerate: str = "1.15.0", float8: bool = False, memory: int = 64 * GIB) -> None:
    """An Apple M2 Max under macOS `macos`, with the given torch and accelerate versions."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_built", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: macos >= (major, minor))
    monkeypatch.setattr(torch.backends.mps, "get_name", lambda: "Apple M2 Max")
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: memory * 3 // 4)
    monkeypatch.setattr(device, "_macos", lambda: macos)
    monkeypatch.setattr(device, "_torch_version", lambda: Version(torch_version))
    monkeypatch.setattr(device, "_accelerate_version", lambda: Version(accelerate))
    monkeypatch.setattr(device, "_mps_float8", lambda: float8)
    monkeypatch.setattr(device, "_physical_memory", lambda: memory)
    monkeypatch.setenv("PYTORCH_ENABLE_MPS_FALLBACK", "1")  # accelerate's default_device sets it; restored after


def fake_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def accelerates_choice() -> torch.device:
    """accelerate's own default device (the property reads no instance state)."""
    return PartialState.default_device.fget(None)


def errors(found) -> list[tuple[str, str]]:
    return [(f.key, f.message) for f in found if f.error]


# --- the device and 'auto' -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("fake, expected", [(fake_cpu, "cpu"), (fake_cuda, "cuda"), (fake_mps, "mps")])
def test_the_device_is_the_one_accelerate_picks(monkeypatch, fake, expected: str) -> None:
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    fake(monkeypatch)
    assert training_device().type == expected == accelerates_choice().type


def test_accelerate_launch_cpu_trains_on_the_cpu(monkeypatch) -> None:
    fake_cuda(monkeypatch)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # what `accelerate launch --cpu` sets (PartialState: cpu=True)
    assert training_device().type == "cpu"


@pytest.mark.parametrize("fake, auto, log_every", [
    (lambda m: fake_cuda(m, "NVIDIA H100", major=9), "bf16", 10),  # bf16 in hardware from compute capability 8.0
    (lambda m: fake_cuda(m, "Tesla T4", major=7), "no", 10),  # bf16 only emulated: fp32
    (fake_mps, "no", 10),  # Apple GPU: fp32 (engine/device.py's docstring says why)
    (fake_cpu, "no", 1),  # on the CPU reading the loss back costs nothing
])
def test_auto_precision(monkeypatch, fake, auto: str, log_every: int) -> None:
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    fake(monkeypatch)
    assert auto_mixed_precision(training_device()) == auto
    cfg = resolve_auto(LorakitConfig())
    assert cfg.train.mixed_precision == auto and cfg.train.model_precision == "auto"
    assert cfg.train.log_every_n_steps == log_every
    explicit = LorakitConfig(train={"mixed_precision": "fp16", "log_every_n_steps": 3})
    assert resolve_auto(explicit) is explicit


def test_auto_is_what_the_device_runs(monkeypatch) -> None:
    """'auto' never resolves to a precision that the same device would refuse."""
    for fake in (fake_cuda, lambda m: fake_cuda(m, "Tesla T4", major=7), fake_mps, fake_cpu):
        fake(monkeypatch)
        here = training_device()
        assert device_findings(TrainSection(), here) == []
        assert device_findings(TrainSection(mixed_precision=auto_mixed_precision(here)), here) == []


# --- refusals --------------------------------------------------------------------------------------------------------

def test_fp16_on_the_cpu_is_refused(monkeypatch) -> None:
    assert errors(device_findings(TrainSection(mixed_precision="fp16"), "cpu")) == [(
        "train.mixed_precision", "'fp16' does not train on the CPU: accelerate does not autocast fp16 on the CPU; "
                                 "use 'bf16' or 'no'")]
    assert device_findings(TrainSection(mixed_precision="bf16"), "cpu") == []  # CPU autocast is bf16


def test_bf16_on_a_cuda_gpu_without_it(monkeypatch) -> None:
    fake_cuda(monkeypatch, "Quadro P1000", major=6, emulated_bf16=False)
    found = device_findings(TrainSection(mixed_precision="bf16", model_precision="bf16"), "cuda")
    assert errors(found) == [
        ("train.mixed_precision", "'bf16' does not train on the CUDA GPU Quadro P1000: Quadro P1000 has no bf16; "
                                  "use 'fp16' or 'no'"),
        ("train.model_precision", "'bf16' weights do not work on the CUDA GPU Quadro P1000: Quadro P1000 has no "
                                  "bf16; use 'fp16' or 'fp32'")]


def test_emulated_bf16_is_a_warning(monkeypatch) -> None:
    fake_cuda(monkeypatch, "Tesla T4", major=7)
    (found,) = device_findings(TrainSection(mixed_precision="bf16"), "cuda")
    assert (found.key, found.error) == ("train.mixed_precision", False)
    assert found.message == ("'bf16' is emulated on the CUDA GPU Tesla T4 (CUDA 12.8, compute capability 7.0; bf16 "
                             "in hardware from 8.0) and slower than fp16: use 'fp16' or 'no'")
    assert device_findings(TrainSection(mixed_precision="fp16"), "cuda") == []


def test_mps_before_macos_14_has_no_bf16(monkeypatch) -> None:
    fake_mps(monkeypatch, macos=(13, 6))
    found = device_findings(TrainSection(mixed_precision="bf16", model_precision="bf16"), "mps")
    why = "bf16 on MPS needs macOS 14 or newer (this is 13.6)"
    assert errors(found) == [
        ("train.mixed_precision", f"'bf16' does not train on Apple MPS (Apple M2 Max): {why}; use 'fp16' or 'no'"),
        ("train.model_precision", f"'bf16' weights do not work on Apple MPS (Apple M2 Max): {why}; use 'fp16' or "
                                  "'fp32'")]
    assert device_findings(TrainSection(mixed_precision="fp16"), "mps") == []


def test_mps_fp16_needs_torchs_mps_gradient_scaler(monkeypatch) -> None:
    fake_mps(monkeypatch, torch_version="2.7.1")
    assert errors(device_findings(TrainSection(mixed_precision="fp16"), "mps")) == [(
        "train.mixed_precision", "'fp16' does not train on Apple MPS (Apple M2 Max): torch 2.7.1 has no gradient "
                                 "scaler for MPS (torch 2.8+); use 'bf16' or 'no'")]
    assert device_findings(TrainSection(mixed_precision="bf16"), "mps") == []  # bf16 autocast from torch 2.6


def test_mps_bf16_autocast_needs_torch_2_6(monkeypatch) -> None:
    fake_mps(monkeypatch, torch_version="2.5.1")
    assert errors(device_findings(TrainSection(mixed_precision="bf16"), "mps")) == [(
        "train.mixed_precision", "'bf16' does not train on Apple MPS (Apple M2 Max): torch 2.5.1 has no bf16 "
                                 "autocast on MPS (torch 2.6+); use 'no' (fp32)")]
    assert device_findings(TrainSection(model_precision="bf16"), "mps") == []  # bf16 tensors: macOS 14


def test_mps_mixed_precision_needs_accelerate_1_11(monkeypatch) -> None:
    fake_mps(monkeypatch, accelerate="1.10.1")
    for precision in ("fp16", "bf16"):
        assert errors(device_findings(TrainSection(mixed_precision=precision), "mps")) == [(
            "train.mixed_precision", f"'{precision}' does not train on Apple MPS (Apple M2 Max): accelerate 1.10.1 "
                                     f"refuses {precision} on MPS (accepted from 1.11); use 'no' (fp32)")]


def test_fp8_base(monkeypatch) -> None:
    fp8 = TrainSection(mixed_precision="bf16", fp8_base=True)
    fake_mps(monkeypatch)
    assert errors(device_findings(fp8, "mps")) == [(
        "train.fp8_base", "float8 weights do not work on Apple MPS (Apple M2 Max): torch 2.13.0 has no float8 "
                          "tensors on MPS; set fp8_base = false and, to save memory, use train.model_precision = "
                          "'fp16' or 'bf16' (half the fp32 weights) and gradient_checkpointing")]
    fake_mps(monkeypatch, float8=True)  # a torch that has them
    assert device_findings(fp8, "mps") == []
    (cpu,) = device_findings(fp8, "cpu")
    assert (cpu.key, cpu.error) == ("train.fp8_base", False) and "model_precision = 'fp16' or 'bf16'" in cpu.message
    fake_cuda(monkeypatch, "NVIDIA GeForce RTX 3060", major=8, total=8 * GIB)
    assert device_findings(fp8, "cuda") == []  # kohya's --fp8_base: any CUDA GPU stores float8


def test_torch_compile(monkeypatch) -> None:
    compiled = TrainSection(torch_compile=True)
    fake_mps(monkeypatch, torch_version="2.7.1")
    assert errors(device_findings(compiled, "mps")) == [(
        "train.torch_compile", "cannot work on Apple MPS (Apple M2 Max): torch 2.7.1 cannot compile for MPS "
                               "(inductor's Metal backend: torch 2.8+); set torch_compile = false")]
    fake_mps(monkeypatch)
    assert device_findings(compiled, "mps") == []
    fake_cuda(monkeypatch, triton=False)
    ((key, message),) = errors(device_findings(compiled, "cuda"))
    assert key == "train.torch_compile" and "needs the triton package" in message and "pip install triton" in message
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(device.shutil, "which", lambda name: None)
    assert errors(device_findings(compiled, "cpu")) == [(
        "train.torch_compile", "cannot work on the CPU: torch.compile on the CPU needs a C++ compiler (inductor), "
                               "and none was found (install g++ or clang, or set $CXX); set torch_compile = false")]
    monkeypatch.setattr(device.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "clang++" else None)
    assert device_findings(compiled, "cpu") == []


def test_8bit_optimizers_on_mps(monkeypatch) -> None:
    fake_mps(monkeypatch)
    monkeypatch.setattr(device, "_bnb_8bit_kernel", lambda key: False)
    for name, instead in (("AdamW8bit", "AdamW"), ("PagedLion8bit", "Lion"), ("SGDNesterov8bit", "SGDNesterov")):
        assert errors(device_findings(TrainSection(optimizer_type=name), "mps")) == [(
            "train.optimizer_type", f"'{name}' does not run on Apple MPS (Apple M2 Max): bitsandbytes has no 8-bit "
                                    f"optimizer step for MPS; use '{instead}' (its 32-bit state fits in unified "
                                    "memory)")]
    monkeypatch.setattr(device, "_bnb_8bit_kernel", lambda key: None)  # not installed: the package check says so
    assert device_findings(TrainSection(optimizer_type="AdamW8bit"), "mps") == []


def test_the_installed_bitsandbytes_has_its_8bit_step_on_the_cpu_only() -> None:
    """The probe against the real package: bitsandbytes/backends/cpu/ops.py registers the step; no MPS backend does."""
    pytest.importorskip("bitsandbytes")
    assert device._bnb_8bit_kernel("CPU") is True
    assert device._bnb_8bit_kernel("MPS") is False


def test_cuda_only_switches_are_harmless_elsewhere(monkeypatch) -> None:
    switches = TrainSection(allow_tf32=True, cudnn_benchmark=True, channels_last=True)
    fake_mps(monkeypatch)
    assert device_findings(switches, "mps") == [] and device_findings(switches, "cpu") == []


# --- validation and the run use the same rules ---------------------------------------------------------------------

def test_validation_refuses_what_this_machine_lacks(monkeypatch) -> None:
    monkeypatch.setattr("lorakit.config.validate._gpu_driver_present", lambda: False)
    monkeypatch.setattr("lorakit.config.validate.sys.platform", "linux")
    found = check_environment(LorakitConfig(train={"mixed_precision": "fp16"}))
    assert errors(found)[0] == ("train.mixed_precision", "'fp16' does not train on the CPU: accelerate does not "
                                                         "autocast fp16 on the CPU; use 'bf16' or 'no'")


def test_validation_on_a_mac_asks_mps(monkeypatch) -> None:
    fake_mps(monkeypatch, macos=(13, 6))
    monkeypatch.setattr("lorakit.config.validate.sys.platform", "darwin")
    found = errors(check_environment(LorakitConfig(train={"mixed_precision": "bf16"})))
    assert found and found[0][1].startswith("'bf16' does not train on Apple MPS (Apple M2 Max)")


def test_precision_rules_resolve_auto_for_this_machine(monkeypatch) -> None:
    half = LorakitConfig(train={"lora_precision": "bf16", "fp8_base": True})  # mixed_precision 'auto'
    monkeypatch.setattr("lorakit.config.validate._gpu_driver_present", lambda: False)
    monkeypatch.setattr("lorakit.config.validate.sys.platform", "linux")
    assert errors(check_training(half)) == [
        ("train.lora_precision", "'bf16' needs train.mixed_precision = 'bf16' (the network computes in it; now "
                                 "'auto', which is 'no' on this machine)"),
        ("train.fp8_base", "needs train.mixed_precision = 'bf16' or 'fp16' (float8 weights are upcast to it per "
                           "layer; now 'auto', which is 'no' on this machine)")]
    monkeypatch.setattr("lorakit.config.validate._gpu_driver_present", lambda: True)
    fake_cuda(monkeypatch)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert errors(check_training(half)) == []  # 'auto' is bf16 on an A100


def test_validation_without_a_gpu_does_not_import_torch() -> None:
    code = ("import sys; from lorakit.config.validate import check_environment, check_training; "
            "from lorakit.config.schema import LorakitConfig; import lorakit.config.validate as v; "
            "v._gpu_driver_present = lambda: False; v.sys.platform = 'linux'; "
            "c = LorakitConfig(train={'lora_precision': 'bf16', 'mixed_precision': 'fp16', 'torch_compile': True}); "
            "check_environment(c); check_training(c); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"


def test_the_run_refuses_what_validation_refuses(monkeypatch, tmp_path: Path) -> None:
    from lorakit.engine.trainer import make_accelerator
    from lorakit.errors import ConfigError

    fake_cpu(monkeypatch)
    with pytest.raises(ConfigError) as exc:
        make_accelerator(LorakitConfig(train={"mixed_precision": "fp16"}))
    assert exc.value.problems == ["train.mixed_precision: 'fp16' does not train on the CPU: accelerate does not "
                                  "autocast fp16 on the CPU; use 'bf16' or 'no'"]


# --- the hot path on MPS ---------------------------------------------------------------------------------------------

class FakeMpsRng:
    """torch.mps's global generator, as a state that draws change."""

    def __init__(self) -> None:
        self.state = torch.tensor([1], dtype=torch.uint8)

    def get(self) -> torch.Tensor:
        return self.state.clone()

    def set(self, state: torch.Tensor) -> None:
        self.state = state.clone()


def test_a_failed_step_restores_the_mps_generator(monkeypatch) -> None:
    from lorakit.engine.loop import _rng_now, _rng_restore

    fake_mps(monkeypatch)
    rng = FakeMpsRng()
    monkeypatch.setattr(torch.mps, "get_rng_state", rng.get)
    monkeypatch.setattr(torch.mps, "set_rng_state", rng.set)
    saved = _rng_now(())
    rng.state = torch.tensor([7], dtype=torch.uint8)  # the step's dropout drew on MPS
    _rng_restore(saved)
    assert rng.state.tolist() == [1]


def test_samples_leave_the_mps_generator_as_they_found_it(monkeypatch) -> None:
    from lorakit.engine.samples import preserved_rng

    fake_mps(monkeypatch)
    rng = FakeMpsRng()
    monkeypatch.setattr(torch.mps, "get_rng_state", rng.get)
    monkeypatch.setattr(torch.mps, "set_rng_state", rng.set)
    with preserved_rng():
        rng.state = torch.tensor([9], dtype=torch.uint8)
    assert rng.state.tolist() == [1]


def test_describe(monkeypatch) -> None:
    fake_mps(monkeypatch)
    assert describe(device_support("mps")) == (
        "Apple M2 Max: 64 GiB unified memory, Metal working set 48.0 GiB; macOS 14.5, torch 2.13.0; bf16 yes, fp16 "
        "yes, fp8 weights no, torch.compile yes")
    fake_cuda(monkeypatch, "Tesla T4", major=7, total=16 * GIB)
    assert describe(device_support("cuda", memory=True)) == (
        "Tesla T4: 16.0 GiB, 8.0 GiB free; CUDA 12.8, compute capability 7.0; bf16 emulated, fp16 yes, fp8 weights "
        "yes, TF32 no, torch.compile yes")
