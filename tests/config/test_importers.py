"""kohya_ss GUI JSON and sd-scripts TOML (+ dataset TOML) → lorakit, with every key accounted for."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from lorakit.config.importers import import_file
from lorakit.config.loader import Layer, resolve

GUI = {
    "LoRA_type": "Standard",
    "pretrained_model_name_or_path": "C:/models/sdxl_base.safetensors",
    "sdxl": True,
    "v2": False,
    "train_data_dir": "C:/train/img",
    "reg_data_dir": "",
    "output_dir": "C:/train/model",
    "output_name": "mychar",
    "logging_dir": "C:/train/log",
    "epoch": 8,
    "max_train_steps": "",
    "train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "learning_rate": 0.0001,
    "unet_lr": 0.0002,
    "text_encoder_lr": 0,
    "lr_scheduler": "cosine",
    "lr_scheduler_args": "",
    "lr_warmup": 10,
    "optimizer": "AdamW8bit",
    "optimizer_args": "weight_decay=0.01 betas=(0.9,0.99)",
    "network_dim": 32,
    "network_alpha": 16,
    "max_resolution": "1024,1024",
    "mixed_precision": "bf16",
    "save_precision": "float",
    "save_every_n_steps": 0,
    "seed": 42,
    "cache_latents": True,
    "gradient_checkpointing": True,
    "noise_offset": 0.05,
    "min_snr_gamma": 5,
    "xformers": "sdpa",
    "stop_text_encoder_training": 0,
    "clip_skip": 2,
    "save_model_as": "safetensors",
    "caption_extension": ".txt",
    "flip_aug": False,
    "bucket_reso_steps": 64,
    "headless": False,
    "mystery_setting": 7,
}


def test_kohya_gui_json(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps(GUI), encoding="utf-8")
    r = import_file(f)
    v = r.values
    assert v["model"] == {"pretrained_model_name_or_path": "C:/models/sdxl_base.safetensors", "family": "sdxl"}
    assert v["network"] == {"network_module": "lora", "network_dim": 32, "network_alpha": 16,
                            "train_text_encoder": False}  # GUI: text-encoder lr 0 + unet lr → UNet only
    assert v["train"]["learning_rate"] == 0.0002  # unet_lr wins, as in kohya
    assert "text_encoder_lr" not in v["train"]
    assert v["train"]["max_train_epochs"] == 8
    assert v["train"]["lr_warmup_ratio"] == 0.1  # GUI percent → ratio
    assert v["train"]["optimizer_type"] == "AdamW8bit"
    assert v["train"]["optimizer_args"] == ["weight_decay=0.01", "betas=(0.9,0.99)"]
    assert v["train"]["sdpa"] is True
    assert v["data"]["resolution"] == 1024 and v["data"]["bucket_reso_steps"] == 64
    assert v["output"] == {"output_dir": "C:/train/model", "output_name": "mychar", "save_precision": "fp32"}
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"logging_dir", "clip_skip", "save_model_as", "mystery_setting"}
    assert unmapped["mystery_setting"] == "unknown to lorakit"
    assert "run folder" in unmapped["logging_dir"]
    assert {"reg_data_dir", "max_train_steps", "lr_scheduler_args", "save_every_n_steps", "headless",
            "stop_text_encoder_training", "flip_aug"} <= set(r.empty) | set(r.mapped)
    # every source key is accounted for exactly once
    accounted = set(r.mapped) | set(r.empty) | set(unmapped)
    assert accounted >= set(GUI)
    resolve([Layer("imported", v)])  # the result is a valid lorakit config
    text = r.to_toml(str(f))
    assert "#   clip_skip = 2: not supported yet" in text
    assert tomllib.loads(text)["train"]["learning_rate"] == 0.0002


SD_SCRIPTS = """
[model_arguments]
pretrained_model_name_or_path = "/models/v1-5.safetensors"
v2 = false

[additional_network_arguments]
network_module = "networks.lora"
network_dim = 16
network_alpha = 8
network_args = ["conv_dim=4"]
network_train_unet_only = false
unet_lr = 1e-4
text_encoder_lr = 5e-5

[optimizer_arguments]
optimizer_type = "Adafactor"
optimizer_args = ["relative_step=False", "scale_parameter=False"]
lr_scheduler = "cosine_with_restarts"
lr_scheduler_num_cycles = 3
lr_warmup_steps = 0.05

[training_arguments]
max_train_steps = 1600
train_batch_size = 1
mixed_precision = "fp16"
save_precision = "fp16"
save_every_n_steps = 200
stop_text_encoder_training = 800
xformers = true
seed = 7
output_dir = "/out"
output_name = "style"
prior_loss_weight = 1.0
dataset_config = "/nowhere/dataset.toml"
"""

DATASET = """
[general]
shuffle_caption = true
caption_extension = ".caption"
keep_tokens = 1

[[datasets]]
resolution = 768
batch_size = 4
enable_bucket = true

  [[datasets.subsets]]
  image_dir = "/data/10_girl"
  num_repeats = 10
  class_tokens = "sks girl"

  [[datasets.subsets]]
  image_dir = "/data/reg/1_girl"
  is_reg = true
  num_repeats = 1
"""


def test_sd_scripts_toml_with_dataset_toml(tmp_path: Path) -> None:
    f = tmp_path / "train.toml"
    f.write_text(SD_SCRIPTS, encoding="utf-8")
    d = tmp_path / "dataset.toml"
    d.write_text(DATASET, encoding="utf-8")
    r = import_file(f, d)
    v = r.values
    assert v["network"]["train_text_encoder"] is True  # sd-scripts trains it unless network_train_unet_only
    assert v["train"]["text_encoder_lr"] == 5e-5 and v["train"]["learning_rate"] == 1e-4
    assert v["train"]["lr_warmup_ratio"] == 0.05  # lr_warmup_steps < 1 is a ratio
    assert v["train"]["lr_scheduler_num_cycles"] == 3
    assert v["train"]["stop_text_encoder_training"] == 800
    assert v["train"]["optimizer_args"] == ["relative_step=False", "scale_parameter=False"]
    assert v["train"]["train_batch_size"] == 4  # the dataset's batch_size wins (read after the main file)
    assert v["mode"]["prior_loss_weight"] == 1.0
    assert v["data"] == {"resolution": 768, "shuffle_caption": True, "caption_extension": ".caption",
                         "keep_tokens": 1, "enable_bucket": True, "train_data_dir": "/data/10_girl",
                         "trigger_word": "sks girl", "num_repeats": 10, "reg_data_dir": "/data/reg/1_girl"}
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"network_args", "xformers", "dataset.subsets[reg 0].num_repeats"}
    assert "folder name" in unmapped["dataset.subsets[reg 0].num_repeats"]
    assert "model.family" in r.mapped["v2"]
    resolve([Layer("imported", v)])


def test_dataset_config_path_not_found_is_a_note(tmp_path: Path) -> None:
    f = tmp_path / "train.toml"
    f.write_text(SD_SCRIPTS, encoding="utf-8")
    r = import_file(f)
    assert r.notes == ["dataset_config /nowhere/dataset.toml not found; pass it with --dataset-toml"]
    assert "num_repeats" not in r.values.get("data", {})


def test_network_type_is_mapped_or_listed(tmp_path: Path) -> None:
    from lorakit.config.importers import literal_values

    f = tmp_path / "k.json"
    f.write_text(json.dumps({"LoRA_type": "LyCORIS/LoHa", "learning_rate": 1e-4}), encoding="utf-8")
    r = import_file(f)
    offered = literal_values("network.network_module")
    if "loha" in offered:  # once lorakit has LoHa
        assert r.values["network"]["network_module"] == "loha"
    else:
        assert r.unmapped == [("LoRA_type", "LyCORIS/LoHa",
                               f"lorakit's network.network_module offers {', '.join(offered)}")]


def test_non_square_resolution_becomes_image_size(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    f.write_text(json.dumps({"max_resolution": "768,512", "learning_rate": 1e-4}), encoding="utf-8")
    r = import_file(f)
    assert r.values["data"] == {"image_size": [768, 512]}
    assert resolve([Layer("imported", r.values)]).data.max_size == (768, 512)
