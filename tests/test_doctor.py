"""`lorakit doctor` and `--version`: each check's verdict from known inputs."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lorakit import doctor
from conftest import run_cli



def test_version_is_the_installed_distributions(monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "--version")
    assert code == 0 and out.strip() == f"lorakit {metadata.version('lorakit')}"


def test_package_outside_lorakits_range_fails_with_the_fix() -> None:
    torch_version = metadata.version("torch")
    assert doctor.check_package("torch", Requirement("torch>=2.1")).status == "ok"
    bad = doctor.check_package("torch", Requirement("torch<2"))
    assert (bad.status, bad.detail, bad.fix) == ("fail", f"{torch_version} is outside lorakit's range <2",
                                                 "pip install 'torch<2'")
    missing = doctor.check_package("no-such-package-lorakit", Requirement("no-such-package-lorakit>=1"))
    assert missing.status == "fail" and missing.detail == "not installed"


def test_lorakit_ranges_come_from_its_metadata() -> None:
    reqs = doctor.lorakit_requirements()
    assert {"torch", "diffusers", "transformers", "peft", "accelerate"} <= set(reqs)
    assert not reqs["transformers"].specifier.contains("5.24.0")  # refuses peft < 0.22 (see pyproject)
    assert "pytest" not in reqs  # extras are not requirements


def test_peft_older_than_a_library_needs_is_a_failure(monkeypatch) -> None:
    versions = {"peft": "0.21.2", "transformers": "5.24.0", "diffusers": "0.42.1"}
    minimum = {"transformers.integrations.peft": "0.22.0", "diffusers.utils.constants": "0.17.0"}
    monkeypatch.setattr(doctor, "installed_version", versions.get)
    monkeypatch.setattr(doctor, "_min_peft", minimum.get)
    tf, df = doctor.check_peft_pairing()
    assert (tf.name, tf.status) == ("transformers + peft", "fail")
    assert tf.detail == "transformers 5.24.0 needs peft ≥ 0.22.0, peft is 0.21.2"
    assert tf.fix.startswith("pip install 'peft>=0.22.0'")
    assert (df.status, df.detail) == ("ok", "diffusers 0.42.1 accepts peft 0.21.2 (≥ 0.17.0)")


def test_installed_pairing_is_accepted() -> None:
    """The locked transformers/diffusers accept the locked peft (what broke `make test` before the lock)."""
    checks = doctor.check_peft_pairing()
    assert checks and all(c.status == "ok" for c in checks), checks


def test_output_folder_checks(tmp_path: Path) -> None:
    ok = doctor.check_output(tmp_path / "new" / "runs")
    assert [c.status for c in ok] == ["ok", "ok"]
    assert ok[0].detail == f"{tmp_path / 'new' / 'runs'} can be created in {tmp_path}"
    assert not (tmp_path / "new").exists() and list(tmp_path.iterdir()) == []  # the probe left nothing
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (bad,) = doctor.check_output(blocker / "runs")
    assert bad.status == "fail" and str(blocker) in bad.detail and bad.fix


def test_doctor_exit_status_follows_failures(monkeypatch, capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out = run_cli(monkeypatch, capsys, "doctor", "--output-dir", blocker / "runs")
    assert code == 1 and "FAIL output folder" in out and "1 check(s) failed: output folder" in out
    monkeypatch.setattr(doctor, "check_optional", lambda: [doctor.Check("gradio", "warn", "not installed", "x")])
    code, out = run_cli(monkeypatch, capsys, "doctor", "--output-dir", tmp_path / "runs")
    assert code == 0 and "WARN gradio" in out and "OK   torch" in out


def test_doctor_without_installed_metadata(monkeypatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(doctor.metadata, "requires", missing)
    assert doctor.lorakit_requirements() == {}


# --- the training device (CUDA and Apple MPS faked as in tests/engine/test_device.py) ------------------------------

def test_doctor_reports_the_cuda_gpu_and_auto(monkeypatch) -> None:
    from engine.test_device import GIB, fake_cuda

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    fake_cuda(monkeypatch, "NVIDIA H100 80GB HBM3", major=9, total=80 * GIB)
    gpu, chosen = doctor.check_gpu()
    assert (gpu.name, gpu.status, gpu.fix) == ("GPU 0", "ok", "")
    assert gpu.detail == ("NVIDIA H100 80GB HBM3: 80.0 GiB, 40.0 GiB free; CUDA 12.8, compute capability 9.0; "
                          "bf16 native, fp16 yes, fp8 weights yes, TF32 yes, torch.compile yes")
    assert (chosen.name, chosen.detail) == ("training device", "cuda (accelerate's choice); mixed_precision 'auto' "
                                                               "= 'bf16' here")


def test_doctor_warns_about_a_small_gpu(monkeypatch) -> None:
    from engine.test_device import GIB, fake_cuda

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    fake_cuda(monkeypatch, "NVIDIA GeForce GTX 1660", major=7, total=6 * GIB)
    gpu, chosen = doctor.check_gpu()
    assert gpu.status == "warn" and "bf16 emulated" in gpu.detail and "lowvram-8gb" in gpu.fix
    assert chosen.detail.endswith("mixed_precision 'auto' = 'no' (fp32) here")


def test_doctor_reports_apple_mps(monkeypatch) -> None:
    from engine.test_device import GIB, fake_mps

    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    fake_mps(monkeypatch, macos=(13, 6), memory=64 * GIB)
    gpu, chosen = doctor.check_gpu()
    assert (gpu.name, gpu.status) == ("GPU", "ok")
    assert gpu.detail == ("Apple MPS, Apple M2 Max: 64 GiB unified memory, Metal working set 48.0 GiB; macOS 13.6, "
                          "torch 2.13.0; bf16 no, fp16 yes, fp8 weights no, torch.compile yes")
    assert chosen.detail == "mps (accelerate's choice); mixed_precision 'auto' = 'no' (fp32) here"
    fake_mps(monkeypatch, memory=8 * GIB)  # under spec 003's 16 GB minimum
    gpu, _ = doctor.check_gpu()
    assert gpu.status == "warn" and "16 GB" in gpu.fix


def test_doctor_without_a_gpu(monkeypatch) -> None:
    from engine.test_device import fake_cpu

    fake_cpu(monkeypatch)
    gpu, chosen = doctor.check_gpu()
    assert gpu.status == "warn" and "training runs on the CPU" in gpu.detail
    assert chosen.detail == "cpu (accelerate's choice); mixed_precision 'auto' = 'no' (fp32) here"
