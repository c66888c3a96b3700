"""Semantic checks: argument lists against real signatures, cross-field rules, paths, resume shape."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from lorakit.config.schema import LorakitConfig
from lorakit.config.optimizer_rules import optimizer_parameters, parse_args_list
from lorakit.config.validate import check


def cfg(**sections: dict) -> LorakitConfig:
    return LorakitConfig.model_validate(sections)


def messages(config: LorakitConfig, paths: bool = False) -> tuple[list[str], list[str]]:
    errors, warnings = check(config, paths=paths)
    return [f"{f.key}: {f.message}" for f in errors], [f"{f.key}: {f.message}" for f in warnings]


def test_parse_args_list_reads_literals() -> None:
    values, problems = parse_args_list(["weight_decay=0.01", "betas=(0.9, 0.99)", "amsgrad=True", "mode=fast", "x"])
    assert values == {"weight_decay": 0.01, "betas": (0.9, 0.99), "amsgrad": True, "mode": "fast"}
    assert problems == ["'x' is not key=value (e.g. 'weight_decay=0.01')"]


def test_optimizer_args_checked_against_adamw_signature() -> None:
    good = cfg(train={"optimizer_args": ["weight_decay=0.01", "betas=(0.9,0.99)", "amsgrad=True"]})
    assert messages(good) == ([], [])
    bad = cfg(train={"optimizer_args": ["weight_decy=0.01", "lr=1", "eps=tiny", "amsgrad=1"]})
    errors, _ = messages(bad)
    assert errors[0].startswith("train.optimizer_args: AdamW has no parameter 'weight_decy' (it accepts: amsgrad, "
                                "betas, capturable, differentiable, eps")
    assert "weight_decay" in errors[0]
    assert errors[1] == "train.optimizer_args: 'lr' is set by lorakit from train.learning_rate; remove it here"
    assert errors[2] == "train.optimizer_args: 'eps='tiny'' should be a number like 1e-08"
    assert errors[3] == "train.optimizer_args: 'amsgrad=1' should be True or False"
    assert "weight_decay" in optimizer_parameters("AdamW")


def test_scheduler_args_checked_against_diffusers_function() -> None:
    errors, _ = messages(cfg(train={"lr_scheduler": "cosine", "lr_scheduler_args": ["power=2", "num_cycles=0.5"]}))
    assert errors == ["train.lr_scheduler_args: scheduler 'cosine' has no parameter 'power' (it accepts: num_cycles)"]
    # lorakit fills these from their own settings (sd-scripts' get_scheduler_fix: num_cycles for restarts only,
    # power for polynomial)
    errors, _ = messages(cfg(train={"lr_scheduler": "cosine_with_restarts", "lr_scheduler_args": ["num_cycles=3"]}))
    assert errors == ["train.lr_scheduler_args: 'num_cycles' is set by lorakit from train.lr_scheduler_num_cycles; "
                      "remove it here"]
    errors, _ = messages(cfg(train={"lr_scheduler": "polynomial", "lr_scheduler_args": ["power=2", "lr_end=1e-6"]}))
    assert errors == ["train.lr_scheduler_args: 'power' is set by lorakit from train.lr_scheduler_power; remove it "
                      "here"]
    errors, _ = messages(cfg(train={"lr_scheduler": "constant", "lr_scheduler_args": ["num_warmup_steps=3"]}))
    assert errors == ["train.lr_scheduler_args: 'num_warmup_steps' is set by lorakit from train.lr_warmup_steps or "
                      "train.lr_warmup_ratio; remove it here"]


def test_optimizer_args_checked_against_each_optimizer_class() -> None:
    # kohya configs' Prodigy arguments are prodigyopt's own names
    ok = cfg(train={"optimizer_type": "Prodigy", "learning_rate": 1.0,
                    "optimizer_args": ["decouple=True", "use_bias_correction=True", "safeguard_warmup=True",
                                       "d_coef=2", "weight_decay=0.01", "betas=(0.9,0.99)"]})
    assert messages(ok) == ([], [])
    errors, _ = messages(cfg(train={"optimizer_type": "Prodigy", "learning_rate": 1.0,
                                    "optimizer_args": ["weight_decouple=True"]}))
    assert errors[0].startswith("train.optimizer_args: Prodigy has no parameter 'weight_decouple' (it accepts: "
                                "beta3, betas, d0, d_coef, decouple, eps")
    errors, _ = messages(cfg(train={"optimizer_type": "SGDNesterov", "optimizer_args": ["nesterov=False"]}))
    assert errors == ["train.optimizer_args: 'nesterov' is set by lorakit from optimizer_type 'SGDNesterov' (always "
                      "nesterov=True, as sd-scripts); remove it here"]
    for name, arg in (("DAdaptation", "decouple=True"), ("DAdaptAdaGrad", "momentum=0.9"),
                      ("Lion", "betas=(0.95,0.98)"),
                      ("DAdaptLion", "d0=1e-5"), ("DAdaptSGD", "growth_rate=1.02"), ("Adafactor", "clip_threshold=1.0"),
                      ("SGDNesterov8bit", "momentum=0.8"), ("Lion8bit", "weight_decay=0.1"),
                      ("PagedLion8bit", "weight_decay=0.1"), ("PagedAdamW8bit", "weight_decay=0.1")):
        lr = {"learning_rate": 1.0} if name.startswith("DAdapt") else {}
        assert messages(cfg(train={"optimizer_type": name, "optimizer_args": [arg], **lr}))[0] == [], name


def test_learning_rate_free_optimizers_warn_at_a_low_rate_and_need_one_rate() -> None:
    # sd-scripts' get_optimizer warns at lr <= 0.1 and recommends 1.0
    _, warnings = messages(cfg(train={"optimizer_type": "Prodigy", "learning_rate": 1e-4}))
    assert warnings == ["train.learning_rate: 0.0001 is low for Prodigy, which finds the step size itself and "
                        "multiplies it by learning_rate; sd-scripts and the optimizer's authors recommend about 1.0"]
    assert messages(cfg(train={"optimizer_type": "DAdaptAdam", "learning_rate": 1.0})) == ([], [])
    # prodigyopt and dadaptation raise at the first step when groups have different non-zero rates
    errors, _ = messages(cfg(train={"optimizer_type": "DAdaptation", "learning_rate": 1.0, "text_encoder_lr": 0.5},
                             network={"train_text_encoder": True}))
    assert errors == ["train.text_encoder_lr: 0.5 differs from learning_rate (1.0), and DAdaptation refuses different "
                      "rates per parameter group: set it equal to learning_rate, or 0 to keep the text encoder frozen"]
    for te_lr in (0, 1.0):
        assert messages(cfg(train={"optimizer_type": "Prodigy", "learning_rate": 1.0, "text_encoder_lr": te_lr},
                            network={"train_text_encoder": True}))[0] == []
    assert messages(cfg(train={"optimizer_type": "DAdaptAdaGrad", "learning_rate": 1.0, "text_encoder_lr": 0.5},
                        network={"train_text_encoder": True}))[0] == []  # DAdaptAdaGrad accepts it


def test_adafactor_relative_step_needs_its_schedule() -> None:
    relative = {"optimizer_type": "Adafactor", "optimizer_args": ["relative_step=True"]}
    errors, _ = messages(cfg(train=relative))
    assert errors == ["train.lr_scheduler: Adafactor with relative_step=True sets its own step size: set "
                      "train.lr_scheduler = 'adafactor' (what sd-scripts switches to)"]
    assert messages(cfg(train={**relative, "lr_scheduler": "adafactor"})) == ([], [])
    errors, _ = messages(cfg(train={**relative, "lr_scheduler": "adafactor", "lr_warmup_steps": 5}))
    assert errors == ["train.lr_warmup_steps: train.lr_scheduler = 'adafactor' has no warm-up (sd-scripts refuses one "
                      "with it); remove this setting"]
    errors, _ = messages(cfg(train={"lr_scheduler": "adafactor"}))
    assert errors == ["train.lr_scheduler: 'adafactor' is the schedule of Adafactor's relative step: set "
                      "optimizer_type = 'Adafactor' with 'relative_step=True' in optimizer_args, or choose another "
                      "schedule"]
    errors, _ = messages(cfg(train={"optimizer_type": "Adafactor", "optimizer_args": ["warmup_init=True"]}))
    assert errors == ["train.optimizer_args: 'warmup_init=True' needs 'relative_step=True' (sd-scripts turns it on for "
                      "warmup_init); add it, or remove warmup_init"]


def test_scheduler_class_by_name() -> None:
    errors, _ = messages(cfg(train={"lr_scheduler_type": "CosineAnealingLR"}))
    assert errors == ["train.lr_scheduler_type: 'CosineAnealingLR': torch.optim.lr_scheduler has no class "
                      "'CosineAnealingLR' (did you mean CosineAnnealingLR, CosineAnnealingWarmRestarts?)"]
    errors, _ = messages(cfg(train={"lr_scheduler_type": "no_such_module.Schedule"}))
    assert errors[0].startswith("train.lr_scheduler_type: 'no_such_module.Schedule': cannot import no_such_module")
    errors, _ = messages(cfg(train={"lr_scheduler_type": "torch.optim.SGD"}))
    assert errors == ["train.lr_scheduler_type: 'torch.optim.SGD' is not a learning-rate scheduler (a "
                      "torch.optim.lr_scheduler.LRScheduler subclass)"]
    errors, _ = messages(cfg(train={"lr_scheduler_type": "ReduceLROnPlateau"}))
    assert errors == ["train.lr_scheduler_type: 'ReduceLROnPlateau' needs a metric at every step; lorakit steps the "
                      "schedule without one"]
    errors, _ = messages(cfg(train={"lr_scheduler_type": "CosineAnnealingLR"}))
    assert errors == ["train.lr_scheduler_args: CosineAnnealingLR needs T_max: add e.g. 'T_max=…' here (sd-scripts "
                      "passes only lr_scheduler_args to a lr_scheduler_type class)"]
    errors, _ = messages(cfg(train={"lr_scheduler_type": "CosineAnnealingLR", "lr_warmup_ratio": 0.1,
                                    "lr_scheduler_args": ["T_max=10", "eta_min=x", "T_mux=3", "last_epoch=4"]}))
    assert errors[0] == "train.lr_scheduler_args: 'eta_min='x'' should be a number like 0.0"
    assert errors[1].startswith("train.lr_scheduler_args: CosineAnnealingLR has no parameter 'T_mux' (it accepts: "
                                "T_max, eta_min")
    assert errors[2:] == ["train.lr_scheduler_args: 'last_epoch' is set by lorakit from resuming; remove it here",
                          "train.lr_warmup_ratio: train.lr_scheduler_type has no warm-up (sd-scripts refuses one with "
                          "it); remove this setting"]
    ok = cfg(train={"lr_scheduler_type": "torch.optim.lr_scheduler.CosineAnnealingLR",
                    "lr_scheduler_args": ["T_max=10", "eta_min=1e-6"]})
    assert messages(ok) == ([], [])


def test_scheduler_class_values_it_refuses_are_errors_before_the_run(tmp_path: Path) -> None:
    # the signature accepts total_steps=0; OneCycleLR's constructor raises ValueError for it
    errors, _ = messages(cfg(train={"lr_scheduler_type": "OneCycleLR", "lr_scheduler_args": ["max_lr=0.1",
                                                                                           "total_steps=0"]},
                             data={"train_data_dir": str(tmp_path)}), paths=True)
    assert len(errors) == 1 and errors[0].startswith("train.lr_scheduler_args: OneCycleLR refuses these arguments: ")


def test_cross_field_rules() -> None:
    errors, warnings = messages(cfg(train={"lr_warmup_steps": 10, "lr_warmup_ratio": 0.1, "text_encoder_lr": 1e-5,
                                           "stop_text_encoder_training": 5, "max_train_steps": 10},
                                    output={"save_every_n_steps": 20}, mode={"type": "dreambooth"}))
    assert errors == ["train.lr_warmup_ratio: set either lr_warmup_steps or lr_warmup_ratio, not both"]
    assert [w.split(":")[0] for w in warnings] == [
        "train.text_encoder_lr", "train.stop_text_encoder_training", "output.save_every_n_steps"]
    # the same settings with the text encoder trained raise no text-encoder warning
    _, warnings = messages(cfg(network={"train_text_encoder": True}, train={"text_encoder_lr": 1e-5}))
    assert warnings == []


def test_family_checks() -> None:
    errors, _ = messages(cfg(model={"pretrained_model_name_or_path": "tiny-sdxl", "family": "sd1"}))
    assert errors == ["model.family: 'sd1' but tiny-sdxl is sdxl"]
    _, warnings = messages(cfg(model={"pretrained_model_name_or_path": "a/b", "family": "sdxl"}))
    assert warnings == ["data.resolution: 512 is low for SDXL (trained at 1024)"]
    _, warnings = messages(cfg(model={"pretrained_model_name_or_path": "a/b", "family": "sd1",
                                      "v_parameterization": True}))
    assert warnings == ["model.v_parameterization: SD 1.x models predict noise, not v"]


def test_paths_inputs_exist_and_outputs_are_creatable(tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    c = cfg(data={"train_data_dir": str(images), "reg_data_dir": str(tmp_path / "nope")},
            model={"pretrained_model_name_or_path": str(tmp_path / "model.safetensors"), "vae": "org/vae"},
            output={"output_dir": str(tmp_path / "new" / "runs")}, batch={"oom_file": str(images)})
    errors, _ = messages(c, paths=True)
    assert errors == [
        f"model.pretrained_model_name_or_path: {tmp_path / 'model.safetensors'}: not found",
        f"data.reg_data_dir: {tmp_path / 'nope'}: not found",
        f"batch.oom_file: {images}: is a folder, expected a file",
    ]
    assert not (tmp_path / "new").exists()  # checked without creating it


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    errors, _ = messages(cfg(output={"output_dir": str(locked / "runs")}), paths=True)
    assert any(e.startswith("output.output_dir:") for e in errors)


def test_output_under_a_file_is_not_creatable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    errors, _ = messages(cfg(output={"output_dir": str(blocker / "runs")}, data={"train_data_dir": str(tmp_path)}),
                         paths=True)
    assert errors == [f"output.output_dir: {blocker / 'runs'}: cannot be created or written (check the folder's "
                      "permissions)"]


def fake_lora(path: Path, rank: int, prefix: str = "lora_unet_down_blocks_0_attentions_0_proj_in") -> Path:
    header = {f"{prefix}.lora_down.weight": {"dtype": "F32", "shape": [rank, 8], "data_offsets": [0, rank * 32]},
              f"{prefix}.lora_up.weight": {"dtype": "F32", "shape": [8, rank], "data_offsets": [rank * 32, rank * 64]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(rank * 64))
    return path


def test_resume_weights_must_match_rank_and_family(tmp_path: Path) -> None:
    data = {"train_data_dir": str(tmp_path)}
    run = tmp_path / "run"
    run.mkdir()
    fake_lora(run / "lora.safetensors", 8)
    ok = cfg(network={"network_dim": 8, "network_weights": str(run)},
             model={"pretrained_model_name_or_path": "tiny-sd1"}, data=data)
    assert messages(ok, paths=True) == ([], [])
    wrong = cfg(network={"network_dim": 16, "network_weights": str(run / "lora.safetensors")},
                model={"pretrained_model_name_or_path": "tiny-sd1"}, data=data)
    errors, _ = messages(wrong, paths=True)
    assert errors == [f"network.network_weights: {run / 'lora.safetensors'} has rank [8] but network.network_dim is "
                      "16; set network.network_dim to match"]
    xl = fake_lora(tmp_path / "xl.safetensors", 8, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj")
    errors, _ = messages(cfg(network={"network_dim": 8, "network_weights": str(xl)},
                             model={"pretrained_model_name_or_path": "tiny-sd1"}, data=data), paths=True)
    assert errors == [f"network.network_weights: {xl} is an SDXL LoRA but model.family is sd1"]


def test_network_type_of_a_resume_file_must_match(tmp_path: Path) -> None:
    loha = fake_lora(tmp_path / "loha.safetensors", 8, "lora_unet_x.hada_w1_a")
    errors, _ = messages(cfg(network={"network_dim": 8, "network_weights": str(loha)},
                             data={"train_data_dir": str(tmp_path)}), paths=True)
    assert errors[0] == f"network.network_weights: {loha} is a loha network but network.network_module is 'lora'"


@pytest.mark.parametrize("raw", [
    struct.pack("<Q", 2) + b"[]",  # a JSON list, not an object
    struct.pack("<Q", 2**63) + b"{}",  # an absurd header length
    struct.pack("<Q", 30) + b'{"a": {"shape": "x"}}'.ljust(30),  # a tensor without a list shape
    b"abc",  # shorter than the length field
], ids=["list", "huge-length", "bad-shape", "short"])
def test_bogus_safetensors_header_is_a_finding(tmp_path: Path, raw: bytes) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw)
    errors, _ = messages(cfg(network={"network_dim": 8, "network_weights": str(bad)},
                             data={"train_data_dir": str(tmp_path)}), paths=True)
    assert len(errors) == 1 and errors[0].startswith(f"network.network_weights: {bad}: not a readable .safetensors")


def test_local_model_family_is_read_from_the_model(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    (model / "unet").mkdir()
    (model / "unet" / "config.json").write_text('{"addition_embed_type": "text_time"}')
    data = {"train_data_dir": str(tmp_path)}
    errors, _ = messages(cfg(model={"pretrained_model_name_or_path": str(model), "family": "sd1"}, data=data), True)
    assert errors == [f"model.family: 'sd1' but {model} is an sdxl model; set model.family = 'auto' or the right "
                      "family"]
    right = cfg(model={"pretrained_model_name_or_path": str(model), "family": "sdxl"}, data=data)
    assert messages(right, True)[0] == []


def test_malformed_optimizer_literal_is_an_error() -> None:  # parsed without torch: also with paths off
    errors, _ = messages(cfg(train={"optimizer_args": ["betas=(0.9,0.99"]}))
    assert errors == ["train.optimizer_args: 'betas=(0.9,0.99': the value is not a valid Python literal "
                      "('(' was never closed); write it as e.g. 'betas=(0.9,0.99)'"]


def test_values_the_optimizer_refuses_are_errors_before_the_run(tmp_path: Path) -> None:
    # torch.optim.AdamW raises "Invalid beta parameter at index 0" for betas[0] outside [0, 1)
    errors, _ = messages(cfg(train={"optimizer_args": ["betas=(1.5,0.99)"]}, data={"train_data_dir": str(tmp_path)}),
                         paths=True)
    assert errors == ["train.optimizer_args: AdamW refuses these arguments: Invalid beta parameter at index 0: 1.5"]


@pytest.mark.skipif(__import__("lorakit.engine.device", fromlist=["training_device"]).training_device().type != "cpu",
                    reason="this machine trains on a GPU")
def test_fp16_on_the_cpu_is_refused_at_validate_time(tmp_path: Path) -> None:
    errors, _ = messages(cfg(train={"mixed_precision": "fp16"}, data={"train_data_dir": str(tmp_path)}), paths=True)
    assert errors == ["train.mixed_precision: 'fp16' does not train on the CPU: accelerate does not autocast fp16 on "
                      "the CPU; use 'bf16' or 'no'"]


def test_missing_optimizer_packages_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lorakit.config.validate as validate

    data = {"train_data_dir": str(tmp_path)}
    monkeypatch.setattr(validate, "package_installed", lambda name: name not in ("bitsandbytes", "prodigyopt"))
    errors, _ = messages(cfg(train={"optimizer_type": "Lion8bit"}, data=data), paths=True)
    assert errors == ["train.optimizer_type: 'Lion8bit' needs the bitsandbytes package, which is not installed: "
                      "pip install 'bitsandbytes>=0.50.2', or use 'Lion'"]
    errors, _ = messages(cfg(train={"optimizer_type": "Prodigy", "learning_rate": 1.0}, data=data), paths=True)
    assert errors == ["train.optimizer_type: 'Prodigy' needs the prodigyopt package, which is not installed: "
                      "pip install prodigyopt"]


def test_old_bitsandbytes_without_cuda_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import lorakit.config.validate as validate

    monkeypatch.setattr(validate, "package_installed", lambda name: True)
    monkeypatch.setattr(validate, "_cuda", lambda: False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.49.0")
    errors, _ = messages(cfg(train={"optimizer_type": "AdamW8bit"}, data={"train_data_dir": str(tmp_path)}),
                         paths=True)
    assert errors == ["train.optimizer_type: 'AdamW8bit' on a machine without CUDA needs bitsandbytes>=0.50.2 "
                      "(installed: 0.49.0, which runs it on CUDA GPUs only): pip install 'bitsandbytes>=0.50.2', or "
                      "use 'AdamW'"]
    monkeypatch.setattr(validate, "_cuda", lambda: True)
    assert messages(cfg(train={"optimizer_type": "AdamW8bit"}, data={"train_data_dir": str(tmp_path)}),
                    paths=True)[0] == []


def test_output_name_too_long_for_the_file_system(tmp_path: Path) -> None:
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    base = {"data": {"train_data_dir": str(tmp_path)}}
    errors, _ = messages(cfg(**base, output={"output_dir": str(tmp_path / "runs"), "output_name": "x" * limit}),
                         paths=True)
    assert len(errors) == 1 and errors[0].startswith("output.output_name: 'xxxx")
    assert f"longer than the {limit} this file system allows" in errors[0]
    # Difference's copy machine adds "_copy": a name that fits a lora run is 5 bytes too long there
    name = "x" * (limit - len("-step00000000.safetensors"))
    assert messages(cfg(**base, output={"output_dir": str(tmp_path), "output_name": name}), paths=True)[0] == []
    pair = {"type": "difference", "first_pass_only": True, "original_image": str(tmp_path / "a.png")}
    (tmp_path / "a.png").write_bytes(b"")
    errors, _ = messages(cfg(output={"output_dir": str(tmp_path), "output_name": name}, mode=pair), paths=True)
    assert [e.split(":")[0] for e in errors if "shorten it by 5 bytes" in e] == ["output.output_name"]
    errors, _ = messages(cfg(**base, output={"output_dir": str(tmp_path), "run_id": "r" * (limit + 1)}), paths=True)
    assert errors == [f"output.run_id: '{'r' * 40}…' makes file names of {limit + 1} bytes, longer than the {limit} "
                      f"this file system allows in {tmp_path}; shorten it by 1 bytes"]


def test_network_settings_of_another_type_are_refused() -> None:
    errors, _ = messages(cfg(network={"network_module": "lora", "lokr_factor": 4}))
    assert errors == ["network.lokr_factor: is only used by network_module 'lokr', not 'lora'; remove it"]
    assert messages(cfg(network={"network_module": "lokr", "lokr_factor": 4}))[0] == []


def test_dreambooth_trains_as_lora_with_regularisation_images() -> None:
    from lorakit.modes import MODES, LoraMode

    assert MODES["dreambooth"] is LoraMode
