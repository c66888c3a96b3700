"""kohya_ss GUI JSON and sd-scripts TOML (+ dataset TOML) → lorakit, with every key accounted for."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from lorakit.config.importers import import_file
from lorakit.config.loader import Layer, resolve
from lorakit.errors import ConfigError

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
    assert v["mode"] == {"prior_loss_weight": 1.0}
    assert v["data"] == {"resolution": 768, "shuffle_caption": True, "caption_extension": ".caption",
                         "keep_tokens": 1, "enable_bucket": True, "train_data_dir": "/data/10_girl",
                         "num_repeats": 10, "reg_data_dir": "/data/reg/1_girl"}
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"xformers", "dataset.subsets[reg 0].num_repeats",
                             "dataset.subsets[train 0].class_tokens"}
    # networks.lora + conv_dim=4 is LoCon; sd-scripts' conv_alpha without a value is 1
    assert v["network"]["network_module"] == "locon"
    assert v["network"]["conv_dim"] == 4 and v["network"]["conv_alpha"] == 1.0
    assert "folder name" in unmapped["dataset.subsets[reg 0].num_repeats"]
    assert "model.family" in r.mapped["v2"]
    resolve([Layer("imported", v)])


def test_dataset_config_path_not_found_is_a_note(tmp_path: Path) -> None:
    f = tmp_path / "train.toml"
    f.write_text(SD_SCRIPTS, encoding="utf-8")
    r = import_file(f)
    assert "dataset_config /nowhere/dataset.toml not found; pass it with --dataset-toml" in r.notes
    assert "num_repeats" not in r.values.get("data", {})


def test_network_type_is_mapped(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    f.write_text(json.dumps({"LoRA_type": "LyCORIS/LoHa", "learning_rate": 1e-4}), encoding="utf-8")
    r = import_file(f)
    assert r.values["network"]["network_module"] == "loha"


def test_non_square_resolution_becomes_image_size(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    f.write_text(json.dumps({"max_resolution": "768,512", "learning_rate": 1e-4}), encoding="utf-8")
    r = import_file(f)
    assert r.values["data"] == {"image_size": [768, 512]}
    assert resolve([Layer("imported", r.values)]).data.max_size == (768, 512)


def imported(tmp_path: Path, text: str, dataset: str | None = None, name: str = "train.toml"):
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    d = None
    if dataset is not None:
        d = tmp_path / "dataset.toml"
        d.write_text(dataset, encoding="utf-8")
    return import_file(f, d)


def test_epochs_win_over_steps_as_in_kohya(tmp_path: Path) -> None:
    r = imported(tmp_path, "max_train_epochs = 3\nmax_train_steps = 1600\nlearning_rate = 1e-4\n")
    assert r.values["train"]["max_train_epochs"] == 3 and "max_train_steps" not in r.values["train"]
    assert any("max_train_steps" in n and "max_train_epochs" in n for n in r.notes)
    assert "max_train_steps" in r.mapped  # still accounted for
    r = imported(tmp_path, "max_train_epochs = 0\nmax_train_steps = 1600\n")  # 0 = unset: steps stay
    assert r.values["train"]["max_train_steps"] == 1600


def test_sd_scripts_text_encoder_lr_zero_means_unet_only(tmp_path: Path) -> None:
    r = imported(tmp_path, "unet_lr = 1e-4\ntext_encoder_lr = 0\n")
    assert r.values["network"]["train_text_encoder"] is False
    assert "text_encoder_lr" not in r.values["train"]
    r = imported(tmp_path, "learning_rate = 1e-4\n")  # absent: sd-scripts trains it
    assert r.values["network"]["train_text_encoder"] is True


def test_class_tokens_are_not_a_trigger_word(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\n", DATASET)
    assert "trigger_word" not in r.values["data"]
    unmapped = {k: why for k, _, why in r.unmapped}
    assert "images without a caption file" in unmapped["dataset.subsets[train 0].class_tokens"]


def test_values_are_cast_to_the_field_type(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    f.write_text(json.dumps({"seed": "1234", "keep_tokens": "0", "noise_offset": "0.05", "network_alpha": 16,
                             "gradient_checkpointing": "true", "cache_latents": "false", "sdpa": "false",
                             "learning_rate": "2e-4", "network_dim": "x8", "max_grad_norm": True,
                             "min_snr_gamma": "five", "epoch": "2.5", "max_train_steps": True}),
                 encoding="utf-8")
    r = import_file(f)
    t, v = r.values["train"], r.values
    assert t["seed"] == 1234 and type(t["seed"]) is int
    assert v["data"]["keep_tokens"] == 0 and type(v["data"]["keep_tokens"]) is int
    assert type(t["noise_offset"]) is float and t["noise_offset"] == 0.05
    assert type(v["network"]["network_alpha"]) is float
    assert t["gradient_checkpointing"] is True and t["cache_latents"] is False and t["sdpa"] is False
    assert t["learning_rate"] == 2e-4
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"network_dim", "max_grad_norm", "min_snr_gamma", "epoch", "max_train_steps"}
    assert "network.network_dim" in unmapped["network_dim"] and "an integer" in unmapped["network_dim"]
    resolve([Layer("imported", v)])


def test_dataset_resolution_list_maps(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\n", "[[datasets]]\nresolution = [1024, 1024]\n")
    assert r.values["data"]["resolution"] == 1024
    r = imported(tmp_path, "learning_rate = 1e-4\n", "[general]\nresolution = [1024, 768]\n")
    assert r.values["data"]["image_size"] == [1024, 768]


@pytest.mark.parametrize("dataset, key", [
    ('[[datasets]]\nresolution = "abc"\n', "resolution"),
    ('[[datasets]]\nbatch_size = "x"\n', "batch_size"),
    ("datasets = 3\n", "datasets"),
    ("general = 3\n", "general"),
    ("[[datasets]]\nsubsets = [1]\n", "subsets"),
])
def test_bad_dataset_toml_is_a_config_error(tmp_path: Path, dataset: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        imported(tmp_path, "learning_rate = 1e-4\n", dataset)
    assert str(tmp_path / "dataset.toml") in exc.value.problems[0] and key in exc.value.problems[0]


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        import_file(tmp_path)
    assert exc.value.problems[0].startswith(f"{tmp_path}: ")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('output_name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        import_file(latin)
    assert exc.value.problems[0].startswith(f"{latin}: ")
    ok = tmp_path / "ok.toml"
    ok.write_text("learning_rate = 1e-4\n", encoding="utf-8")
    for bad in (tmp_path, latin):
        with pytest.raises(ConfigError) as exc:
            import_file(ok, bad)
        assert exc.value.problems[0].startswith(f"{bad}: ")


def test_files_with_a_utf8_bom_import(tmp_path: Path) -> None:
    """Windows editors save a byte-order mark; json and tomllib refuse it unless it is stripped."""
    gui = tmp_path / "gui.json"
    gui.write_bytes(b"\xef\xbb\xbf" + b'{"learning_rate": 0.0003, "network_dim": 12}')
    toml = tmp_path / "sd.toml"
    toml.write_bytes(b"\xef\xbb\xbf" + b"learning_rate = 0.0003\nnetwork_dim = 12\n")
    for f in (gui, toml):
        v = import_file(f).values
        assert v["train"]["learning_rate"] == 0.0003 and v["network"]["network_dim"] == 12


def test_prior_loss_weight_and_sample_settings_are_mapped(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('prior_loss_weight = 0.5\nsample_prompts = "prompts.txt"\nsample_every_n_steps = 100\n'
                 'sample_every_n_epochs = 2\nsample_at_first = true\nreg_data_dir = "reg"\n', encoding="utf-8")
    r = import_file(f)
    assert r.values["mode"] == {"prior_loss_weight": 0.5}
    # kohya ignores the steps when the epochs are set; sample_at_first = true is what lorakit does anyway
    assert r.values["sample"] == {"prompts_file": "prompts.txt", "every_n_epochs": 2}
    assert r.unmapped == [("sample_every_n_steps", 100,
                           "kohya ignores sample_every_n_steps when sample_every_n_epochs is set")]
    assert "sample_at_first" in r.empty and r.mapped["sample_prompts"] == "sample.prompts_file"
    # without regularisation images kohya ignores the weight; lorakit would refuse it, so it is listed, not mapped
    f.write_text("prior_loss_weight = 0.5\n", encoding="utf-8")
    r = import_file(f)
    assert "mode" not in r.values
    assert r.unmapped == [("prior_loss_weight", 0.5, "kohya ignores it without regularisation images")]
    resolve([Layer("imported", r.values)])


def test_gui_sample_prompts_are_the_prompt_text(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({**GUI, "sample_prompts": "a photo of mychar --w 512 --h 512\n\n# a comment\n"
                             "  mychar in the snow --n blurry  \n", "sample_every_n_epochs": 2,
                             "sample_every_n_steps": 0, "sample_at_first": False, "sample_sampler": "euler_a"}),
                 encoding="utf-8")
    r = import_file(f)
    assert r.values["sample"] == {"prompts": ["a photo of mychar --w 512 --h 512", "mychar in the snow --n blurry"],
                                  "every_n_epochs": 2}
    unmapped = {k: why for k, _, why in r.unmapped}
    assert unmapped["sample_at_first"] == "lorakit always renders step 0"
    assert "sample_every_n_steps" in r.empty
    cfg = resolve([Layer("imported", r.values)])
    assert cfg.sample.prompts[1] == "mychar in the snow --n blurry"


def test_sd_scripts_txt_prompt_file_is_mapped_and_toml_skipped(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('sample_prompts = "/data/prompts.txt"\nsample_every_n_steps = 50\nsample_at_first = false\n',
                 encoding="utf-8")
    r = import_file(f)
    assert r.values["sample"] == {"prompts_file": "/data/prompts.txt", "every_n_steps": 50}
    assert r.unmapped == [("sample_at_first", False, "lorakit always renders step 0")]
    for name in ("prompts.toml", "prompts.JSON"):
        f.write_text(f'sample_prompts = "/data/{name}"\nsample_every_n_steps = 50\n', encoding="utf-8")
        r = import_file(f)
        assert r.values["sample"] == {"every_n_steps": 50}
        assert r.unmapped == [("sample_prompts", f"/data/{name}",
                               "lorakit reads kohya's .txt prompt format; convert it to one prompt per line")]


def test_sample_prompts_without_a_schedule_are_not_imported(tmp_path: Path) -> None:
    # the schedule keys come after the prompts and are 0: kohya renders nothing, so lorakit must not either
    gui = tmp_path / "kohya.json"
    gui.write_text(json.dumps({"sample_prompts": "a cat\n", "sample_every_n_steps": 0, "sample_every_n_epochs": 0,
                               "sample_at_first": False}), encoding="utf-8")
    toml = tmp_path / "t.toml"
    toml.write_text('sample_prompts = "p.txt"\n', encoding="utf-8")
    for f, value in ((gui, "a cat\n"), (toml, "p.txt")):
        r = import_file(f)
        assert "sample" not in r.values and "sample_prompts" not in r.mapped
        assert r.unmapped == [("sample_prompts", value, "kohya renders no samples without "
                               "sample_every_n_steps/epochs (lorakit would render them at step 0 and the end)")]
    assert {"sample_every_n_steps", "sample_every_n_epochs", "sample_at_first"} <= set(import_file(gui).empty)
    # sample_at_first alone: kohya renders them at step 0, lorakit at step 0 and the end
    toml.write_text('sample_prompts = "p.txt"\nsample_at_first = true\n', encoding="utf-8")
    r = import_file(toml)
    assert r.values["sample"] == {"prompts_file": "p.txt"} and r.unmapped == []
    assert any("only at step 0" in n for n in r.notes)


RESUME_REASON = ("lorakit cannot continue an sd-scripts state folder (accelerate's format); continue from the LoRA "
                 "with network.network_weights, or resume lorakit's own checkpoints with `lorakit train --resume`")


def test_save_state_becomes_lorakit_checkpoints(tmp_path: Path) -> None:
    # sd-scripts keeps the newest step state and those at most save_last_n_steps_state steps older: 300 // 100 + 1;
    # and save_last_n_epochs_state epoch states; lorakit keeps one count for both
    r = imported(tmp_path, "learning_rate = 1e-4\nsave_state = true\nsave_every_n_steps = 100\n"
                 "save_last_n_steps_state = 300\nsave_every_n_epochs = 2\nsave_last_n_epochs_state = 3\n"
                 'save_state_on_train_end = false\nresume = "/out/style-000002-state"\n')
    assert r.values["checkpoint"] == {"at_end": True, "every_n_steps": 100, "every_n_epochs": 2, "keep_last": 7}
    assert r.values["output"] == {"save_every_n_steps": 100}  # the LoRA files, as before
    assert r.unmapped == [("resume", "/out/style-000002-state", RESUME_REASON)]
    assert r.mapped["save_last_n_steps_state"] == r.mapped["save_last_n_epochs_state"] == "checkpoint.keep_last"
    assert r.mapped["save_every_n_steps"] == "output.save_every_n_steps and checkpoint.every_n_steps"
    assert "save_state" in r.mapped and "save_state_on_train_end" in r.mapped
    assert any("LoRA file every save_every_n_epochs" in n for n in r.notes)
    cfg = resolve([Layer("imported", r.values)])
    assert (cfg.checkpoint.every_n_steps, cfg.checkpoint.keep_last, cfg.checkpoint.every_n_epochs) == (100, 7, 2)


def test_save_last_n_steps_state_counts_states_like_sd_scripts(tmp_path: Path) -> None:
    for n, every, keep in ((250, 100, 3), (300, 100, 4), (50, 100, 1)):
        r = imported(tmp_path, f"save_state = true\nsave_every_n_steps = {every}\nsave_last_n_steps_state = {n}\n")
        assert r.values["checkpoint"]["keep_last"] == keep, (n, every)
    # without save_last_n_steps_state sd-scripts prunes the states by save_last_n_steps (the LoRA files' count)
    r = imported(tmp_path, "save_state = true\nsave_every_n_steps = 100\nsave_last_n_steps = 200\n")
    assert r.values["checkpoint"]["keep_last"] == 3
    assert r.mapped["save_last_n_steps"].startswith("checkpoint.keep_last (kohya prunes the states by it too")
    # the _state count wins; the files' count has no lorakit equivalent
    r = imported(tmp_path, "save_state = true\nsave_every_n_steps = 100\nsave_last_n_steps = 200\n"
                 "save_last_n_steps_state = 100\n")
    assert r.values["checkpoint"]["keep_last"] == 2
    assert r.unmapped == [("save_last_n_steps", 200, "lorakit never deletes the LoRA files of "
                           "output.save_every_n_steps")]


def test_state_counts_without_their_schedule_are_skipped(tmp_path: Path) -> None:
    r = imported(tmp_path, "save_state = true\nsave_last_n_steps_state = 300\nsave_last_n_epochs_state = 2\n")
    assert r.values["checkpoint"] == {"at_end": True}  # lorakit's step schedule stays its default
    assert r.unmapped == [
        ("save_last_n_steps_state", 300, "kohya keeps step states only with save_state and save_every_n_steps"),
        ("save_last_n_epochs_state", 2, "kohya keeps epoch states only with save_state and save_every_n_epochs")]
    assert any("lorakit still writes a checkpoint every 500 steps" in n for n in r.notes)
    assert resolve([Layer("imported", r.values)]).checkpoint.keep_last == 2  # the default


def test_without_save_state_the_checkpoint_defaults_stay(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\nsave_state = false\nsave_every_n_steps = 100\n"
                 "save_every_n_epochs = 2\nsave_last_n_steps_state = 300\nsave_last_n_epochs = 0\n")
    assert "checkpoint" not in r.values and r.values["output"] == {"save_every_n_steps": 100}
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"save_every_n_epochs", "save_last_n_steps_state"}
    assert "by steps only" in unmapped["save_every_n_epochs"]
    assert {"save_state", "save_last_n_epochs"} <= set(r.empty)
    assert not any("checkpoint" in n for n in r.notes)
    # save_state_on_train_end alone: kohya writes only the last state, lorakit's at_end
    r = imported(tmp_path, "save_state_on_train_end = true\n")
    assert r.values["checkpoint"] == {"at_end": True} and r.mapped["save_state_on_train_end"] == "checkpoint.at_end"


def test_gui_state_keys_use_zero_for_unset(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({**GUI, "save_state": True, "save_every_n_steps": 0, "save_every_n_epochs": 1,
                             "save_last_n_steps_state": 0, "save_last_n_epochs_state": 2,
                             "save_last_n_steps": 0, "save_last_n_epochs": 0, "save_state_on_train_end": True,
                             "resume": ""}), encoding="utf-8")
    r = import_file(f)
    assert r.values["checkpoint"] == {"at_end": True, "every_n_epochs": 1, "keep_last": 2}
    assert {"save_every_n_steps", "save_last_n_steps_state", "save_last_n_steps", "save_last_n_epochs",
            "resume"} <= set(r.empty)
    unmapped = {k for k, _, _ in r.unmapped}
    assert not unmapped & {"save_state", "save_every_n_epochs", "save_last_n_epochs_state", "resume"}
    accounted = set(r.mapped) | set(r.empty) | unmapped
    assert accounted >= set(GUI) | {"save_state", "save_last_n_epochs_state", "resume"}
    resolve([Layer("imported", r.values)])


def test_unreadable_state_counts_are_listed(tmp_path: Path) -> None:
    r = imported(tmp_path, 'save_state = "maybe"\nsave_every_n_epochs = "x"\nsave_last_n_epochs_state = 1.5\n')
    assert "checkpoint" not in r.values
    assert {k for k, _, _ in r.unmapped} == {"save_state", "save_every_n_epochs", "save_last_n_epochs_state"}
