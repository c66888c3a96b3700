"""A run's final LoRA and its copy into a UI's LoRA folder (lorakit.runs), shared by the pipeline, the batch, the
web UI and the ComfyUI nodes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.runs import final_lora, free_name, install_lora


def test_without_a_config_the_newest_save_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    train = tmp_path / "run" / "train"
    assert final_lora(tmp_path / "run") is None  # no train/ folder yet
    train.mkdir(parents=True)
    step = train / "slider-step00000010.safetensors"
    step.write_bytes(b"0")
    (train / "slider-000002.safetensors").write_bytes(b"0")  # an epoch's end (sd-scripts' name)
    (train / "slider-step00000010_peft").mkdir()
    assert final_lora(tmp_path / "run") is None  # an intermediate save is not the final LoRA
    copy, slider = train / "slider_copy.safetensors", train / "slider.safetensors"  # Difference: pass 1, pass 2
    copy.write_bytes(b"1")
    slider.write_bytes(b"2")
    os.utime(copy, (1_000, 1_000))
    os.utime(slider, (2_000, 2_000))
    os.utime(step, (9_000, 9_000))
    os.utime(train / "slider-000002.safetensors", (9_000, 9_000))
    assert final_lora(tmp_path / "run") == slider


def write_config(run: Path, output_name: str, mode: str = "lora", first_pass_only: bool = False) -> None:
    """The parts of a run's resolved config.toml (config/snapshot.py) that name its result."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.toml").write_text(f'version = 3\n[mode]\ntype = "{mode}"\nfirst_pass_only = '
                                     f'{str(first_pass_only).lower()}\n[output]\noutput_name = "{output_name}"\n',
                                     encoding="utf-8")


def test_final_lora_is_the_output_name_of_the_runs_config(tmp_path: Path) -> None:
    """modes/difference.py: pass 1 saves `<output_name>_copy` (save_first_pass), pass 2 `<output_name>`; a run
    stopped in pass 2 has only the copy machine, which is not a result. An output name may contain '-step'."""
    run = tmp_path / "run"
    write_config(run, "two-step", mode="difference")
    (run / "train").mkdir()
    (run / "train" / "two-step_copy.safetensors").write_bytes(b"copy machine")
    (run / "train" / "two-step-step00000005.safetensors").write_bytes(b"checkpoint")
    assert final_lora(run) is None
    (run / "train" / "two-step.safetensors").write_bytes(b"slider")
    assert final_lora(run) == run / "train" / "two-step.safetensors"
    write_config(run, "two-step", mode="difference", first_pass_only=True)
    assert final_lora(run) == run / "train" / "two-step_copy.safetensors"
    write_config(run, "peft-only")  # output.save_format = "peft": formats.save_peft's <name>_peft folder
    (run / "train" / "peft-only_peft").mkdir()
    assert final_lora(run) == run / "train" / "peft-only_peft"


def test_install_lora_names_the_copy_by_its_content(tmp_path: Path) -> None:
    lora = tmp_path / "mystyle.safetensors"
    lora.write_bytes(b"weights v1")
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "someone-elses.safetensors").write_bytes(b"theirs")
    name = install_lora(lora, loras)
    assert name == f"lorakit-mystyle-{hashlib.sha256(b'weights v1').hexdigest()[:12]}.safetensors"
    assert (loras / name).read_bytes() == b"weights v1"
    assert install_lora(lora, loras) == name  # the same file again: reused
    lora.write_bytes(b"weights v2")  # retrained: a new name, the old copy kept
    assert install_lora(lora, loras) != name and (loras / name).read_bytes() == b"weights v1"
    assert sorted(p.name for p in loras.iterdir() if not p.name.startswith("lorakit-")) == ["someone-elses.safetensors"]
    assert not [p for p in loras.iterdir() if p.suffix != ".safetensors"]  # no temporary file left


def test_install_lora_never_overwrites_other_contents(tmp_path: Path) -> None:
    lora = tmp_path / "mystyle.safetensors"
    lora.write_bytes(b"weights")
    name = f"lorakit-mystyle-{hashlib.sha256(b'weights').hexdigest()[:12]}.safetensors"
    (tmp_path / name).write_bytes(b"tampered")
    with pytest.raises(LorakitError, match="exists with other contents"):
        install_lora(lora, tmp_path)
    assert (tmp_path / name).read_bytes() == b"tampered"


def test_free_name_counts_up_from_2() -> None:
    taken = {"run", "run-2", "run-4"}
    assert free_name("run", taken.__contains__) == "run-3"
    assert free_name("other", taken.__contains__) == "other"


def test_intermediate_save_names() -> None:
    """engine/trainer.py _save: `<name>-step<8 digits>`, `<name>-<epoch, 6 digits>`, each also as a `_peft` folder."""
    from lorakit.runs import STEP_SAVE

    assert all(STEP_SAVE.search(n) for n in ("x-step00000010", "x-000002", "x-step00000010_peft", "two-step-000001"))
    assert not any(STEP_SAVE.search(n) for n in ("x", "two-step", "x_copy", "x_peft", "x-step10", "x-2"))
