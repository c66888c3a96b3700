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


def reported(r) -> dict[str, set[str]]:
    """The source keys of each report group (a GUI key is reported as 'gui_key (sd_scripts_arg)')."""
    return {group: {k.split(" ")[0] for k, _, _ in rows} for group, rows in r.report().items()}


def test_kohya_gui_json(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps(GUI), encoding="utf-8")
    r = import_file(f)
    v = r.values
    # v_parameterization is absent: the GUI checkbox is False, train_model drops False, sd-scripts' default is False
    assert v["model"] == {"pretrained_model_name_or_path": "C:/models/sdxl_base.safetensors", "family": "sdxl",
                          "v_parameterization": False}
    # kohya_ss lora_gui.py resolve_network_train_flags: text_encoder_lr 0 and unet_lr set → network_train_unet_only
    assert v["network"] == {"network_module": "lora", "network_dim": 32, "network_alpha": 16,
                            "train_text_encoder": False}
    assert v["train"]["learning_rate"] == 0.0002  # sd-scripts trains the UNet at unet_lr when it is set
    assert "text_encoder_lr" not in v["train"]
    # lora_gui.py train_model: max_train_steps "" → update_my_data int() fails → 0, so train_model counts the images
    # of train_data_dir × epoch; `epoch` is never passed as max_train_epochs. The folder is not on this machine.
    assert "max_train_epochs" not in v["train"]
    unsupported = {k: why for k, _, why in r.unmapped}
    assert set(unsupported) == {"epoch"} and "C:/train/img" in unsupported["epoch"]
    # common_gui.py resolve_lr_warmup_steps: 10 % → 0.1; sd-scripts get_scheduler_fix reads a float as a ratio
    assert v["train"]["lr_warmup_ratio"] == 0.1
    assert v["train"]["optimizer_type"] == "AdamW8bit"
    assert v["train"]["optimizer_args"] == ["weight_decay=0.01", "betas=(0.9,0.99)"]
    # an SDXL config: sd-scripts uses the penultimate layer whatever clip_skip says (sdxl_train_util warns)
    assert "clip_skip" not in v["train"] and v["train"]["min_snr_gamma"] == 5 and v["train"]["seed"] == 42
    assert "clip_skip" in {k for k, _, _ in r.inert_keys}
    assert v["train"]["noise_offset"] == 0.05  # noise_offset_type absent: the GUI's "Original" passes it
    assert "sdpa" not in v["train"]  # xformers "sdpa": only the attention kernel
    # enable_bucket / max_bucket_reso absent: the GUI widgets' defaults True / 2048 (class_basic_training.py)
    assert v["data"]["resolution"] == 1024 and v["data"]["bucket_reso_steps"] == 64
    assert v["data"]["enable_bucket"] is True and v["data"]["max_bucket_reso"] == 2048
    assert "random_flip" not in v["data"]  # flip_aug False is dropped by train_model: sd-scripts' default off
    # save_every_n_epochs absent: the GUI widget's 1 (class_basic_training.py); "float" is sd-scripts' fp32
    assert v["output"] == {"output_name": "mychar", "save_precision": "fp32", "save_every_n_epochs": 1}
    assert {"logging_dir", "save_model_as", "mystery_setting", "output_dir", "xformers"} <= reported(r)["inert"]
    resolve([Layer("imported", v)])  # the result is a valid lorakit config
    text = r.to_toml(str(f))
    assert "#   epoch = 8: kohya_ss computes max_train_steps" in text
    assert tomllib.loads(text)["train"]["learning_rate"] == 0.0002


def test_every_gui_key_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    src = {**GUI, "save_state": True, "save_every_n_epochs": 1, "save_last_n_steps_state": 0,
           "save_last_n_epochs_state": 2, "save_last_n_steps": 0, "save_last_n_epochs": 0, "resume": "",
           "sample_prompts": "a cat", "sample_every_n_epochs": 2, "sample_at_first": False, "keep_tokens": 0}
    f.write_text(json.dumps(src), encoding="utf-8")
    groups = reported(import_file(f))
    assert set(src) <= groups["mapped"] | groups["inert"] | groups["unsupported"]
    # what kohya drops as empty is inert (empty or off), never unsupported
    assert {"reg_data_dir", "save_every_n_steps", "flip_aug", "resume", "save_last_n_steps"} <= groups["inert"]


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
    # transformers' Adafactor default warmup_init=False is written out: the same optimizer sd-scripts builds
    assert v["train"]["optimizer_args"] == ["relative_step=False", "scale_parameter=False", "warmup_init=False"]
    assert v["train"]["lr_scheduler"] == "cosine_with_restarts"  # relative_step=False keeps the schedule
    assert v["train"]["train_batch_size"] == 4  # the dataset's batch_size wins (read after the main file)
    assert v["mode"] == {"prior_loss_weight": 1.0}
    # sd-scripts config_util.py: each [[datasets.subsets]] is its own folder with its repeats, is_reg and
    # class_tokens; keys absent everywhere fall back to train_network.py's argparse defaults (1024, 256, 64)
    assert v["data"] == {"resolution": 768, "shuffle_caption": True, "caption_extension": ".caption",
                         "keep_tokens": 1, "enable_bucket": True, "max_bucket_reso": 1024, "min_bucket_reso": 256,
                         "bucket_reso_steps": 64, "layout": "kohya", "bucket_mode": "kohya",
                         "subsets": [{"image_dir": "/data/10_girl", "num_repeats": 10, "class_tokens": "sks girl"},
                                     {"image_dir": "/data/reg/1_girl", "is_reg": True, "num_repeats": 1}]}
    assert r.unmapped == []
    assert "xformers" in reported(r)["inert"]  # the attention kernel only
    # networks.lora + conv_dim=4 is LoCon; sd-scripts' conv_alpha without a value is 1
    assert v["network"]["network_module"] == "locon"
    assert v["network"]["conv_dim"] == 4 and v["network"]["conv_alpha"] == 1.0
    assert "model.family" in r.mapped["v2"]
    resolve([Layer("imported", v)])


def test_sd_scripts_stop_text_encoder_training_is_inert(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\nstop_text_encoder_training = 800\n")
    assert "stop_text_encoder_training" not in r.values["train"]
    assert "stop_text_encoder_training" in reported(r)["inert"]


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
    assert r.values["data"]["image_size"] == [768, 512] and "resolution" not in r.values["data"]
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
    # sd-scripts config_util.py DreamBoothSubsetParams: class_tokens caption that subset's images without a caption
    # file; the subset keeps it (not a trigger word for every caption)
    assert "trigger_word" not in r.values["data"]
    assert r.values["data"]["subsets"][0]["class_tokens"] == "sks girl"
    assert "class_tokens" not in r.values["data"]["subsets"][1] and r.unmapped == []


def test_values_are_cast_to_the_field_type(tmp_path: Path) -> None:
    f = tmp_path / "k.json"
    f.write_text(json.dumps({"seed": "1234", "keep_tokens": "0", "noise_offset": "0.05", "network_alpha": 16,
                             "gradient_checkpointing": "true", "sdpa": "false",
                             "learning_rate": "2e-4", "network_dim": "x8", "max_grad_norm": True,
                             "min_snr_gamma": "five", "epoch": "2.5", "max_train_steps": True}),
                 encoding="utf-8")
    r = import_file(f)
    t, v = r.values["train"], r.values
    assert t["seed"] == 1234 and type(t["seed"]) is int  # kohya_ss common_gui.py update_my_data: int("1234")
    # update_my_data: int("0") = 0, which train_model drops (0 in ["", False, None]): sd-scripts' default 0
    assert "keep_tokens" not in v["data"] and resolve([Layer("imported", v)]).data.keep_tokens == 0
    assert type(t["noise_offset"]) is float and t["noise_offset"] == 0.05  # update_my_data: float("0.05")
    assert type(v["network"]["network_alpha"]) is float
    assert t["gradient_checkpointing"] is True
    assert "sdpa" not in t and "sdpa" in reported(r)["inert"]  # not a GUI key: train_model never reads it
    assert t["learning_rate"] == 2e-4
    # update_my_data: int(True) = 1 for max_train_steps; int("2.5") fails → epoch 0 (unused: steps are not 0)
    assert t["max_train_steps"] == 1 and "max_train_epochs" not in t
    unmapped = {k: why for k, _, why in r.unmapped}
    assert set(unmapped) == {"network_dim", "max_grad_norm", "min_snr_gamma"}
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
    assert "sample_sampler" in reported(r)["inert"]
    cfg = resolve([Layer("imported", r.values)])
    assert cfg.sample.prompts[1] == "mychar in the snow --n blurry"


def test_gui_sample_at_first_off_is_listed_like_the_toml(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({**GUI, "sample_prompts": "a cat", "sample_every_n_epochs": 2,
                             "sample_at_first": False}), encoding="utf-8")
    # sd-scripts' sample_images_common renders nothing at step 0 without sample_at_first; a sample never changes
    # what is trained, so the difference is inert, and it is listed on the GUI path as on the TOML path
    result = import_file(f)
    inert = {k: why for k, _, why in result.report()["inert"]}
    assert inert.get("sample_at_first", "").startswith("kohya renders no samples at step 0")
    assert "sample_at_first" not in {k for k, _, _ in result.unmapped}


def test_sd_scripts_txt_prompt_file_is_mapped_and_toml_skipped(tmp_path: Path) -> None:
    f = tmp_path / "t.toml"
    f.write_text('sample_prompts = "/data/prompts.txt"\nsample_every_n_steps = 50\nsample_at_first = false\n',
                 encoding="utf-8")
    r = import_file(f)
    assert r.values["sample"] == {"prompts_file": "/data/prompts.txt", "every_n_steps": 50}
    assert r.unmapped == []  # sample_at_first = false: kohya renders no step-0 sample; samples never change training
    assert [(k, v) for k, v, _ in r.inert_keys if k == "sample_at_first"] == [("sample_at_first", False)]
    for name in ("prompts.toml", "prompts.JSON"):
        f.write_text(f'sample_prompts = "/data/{name}"\nsample_every_n_steps = 50\n', encoding="utf-8")
        r = import_file(f)
        # lorakit has no prompts to render, so the schedule alone is left out (listed, not imported)
        assert "sample" not in r.values and "sample_every_n_steps" in reported(r)["inert"]
        assert r.unmapped == [("sample_prompts", f"/data/{name}",
                               "lorakit reads kohya's .txt prompt format; convert it to one prompt per line")]


def test_sample_prompts_without_a_schedule_are_not_imported(tmp_path: Path) -> None:
    # the schedule keys come after the prompts and are 0: kohya renders nothing, so lorakit must not either.
    # LoRA_type marks the JSON as the GUI's (a JSON without GUI keys is read with sd-scripts' names)
    gui = tmp_path / "kohya.json"
    gui.write_text(json.dumps({"LoRA_type": "Standard", "sample_prompts": "a cat\n", "sample_every_n_steps": 0,
                               "sample_every_n_epochs": 0, "sample_at_first": False}), encoding="utf-8")
    toml = tmp_path / "t.toml"
    toml.write_text('sample_prompts = "p.txt"\n', encoding="utf-8")
    for f, value in ((gui, "a cat\n"), (toml, "p.txt")):
        r = import_file(f)
        assert "sample" not in r.values and "sample_prompts" not in r.mapped
        assert r.unmapped == [("sample_prompts", value, "kohya renders no samples without "
                               "sample_every_n_steps/epochs (lorakit would render them at step 0 and the end)")]
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
    # the LoRA files: train_network.py saves one every save_every_n_steps and every save_every_n_epochs; save_precision
    # absent → sd-scripts saves the trained (fp32) weights
    assert r.values["output"] == {"save_every_n_steps": 100, "save_every_n_epochs": 2, "save_precision": "fp32"}
    assert r.unmapped == [("resume", "/out/style-000002-state", RESUME_REASON)]
    assert r.mapped["save_last_n_steps_state"] == r.mapped["save_last_n_epochs_state"] == "checkpoint.keep_last"
    assert r.mapped["save_every_n_steps"] == "output.save_every_n_steps and checkpoint.every_n_steps"
    assert "save_state" in r.mapped and "save_state_on_train_end" in r.mapped
    assert r.mapped["save_every_n_epochs"] == "output.save_every_n_epochs and checkpoint.every_n_epochs"
    cfg = resolve([Layer("imported", r.values)])
    assert (cfg.checkpoint.every_n_steps, cfg.checkpoint.keep_last, cfg.checkpoint.every_n_epochs) == (100, 7, 2)


def test_save_last_n_steps_state_counts_states_like_sd_scripts(tmp_path: Path) -> None:
    for n, every, keep in ((250, 100, 3), (300, 100, 4), (50, 100, 1)):
        r = imported(tmp_path, f"save_state = true\nsave_every_n_steps = {every}\nsave_last_n_steps_state = {n}\n")
        assert r.values["checkpoint"]["keep_last"] == keep, (n, every)
    # without save_last_n_steps_state sd-scripts prunes the states by save_last_n_steps (the LoRA files' count)
    r = imported(tmp_path, "save_state = true\nsave_every_n_steps = 100\nsave_last_n_steps = 200\n")
    assert r.values["checkpoint"]["keep_last"] == 3
    # ... and the LoRA files by it (train_network.py removes the file save_last_n_steps back)
    assert r.mapped["save_last_n_steps"] == ("checkpoint.keep_last and output.save_last_n_steps (kohya prunes the "
                                             "states by it too)")
    assert r.values["output"]["save_last_n_steps"] == 200
    # the _state count wins for the states; the files keep their own count
    r = imported(tmp_path, "save_state = true\nsave_every_n_steps = 100\nsave_last_n_steps = 200\n"
                 "save_last_n_steps_state = 100\n")
    assert r.values["checkpoint"]["keep_last"] == 2
    assert r.values["output"]["save_last_n_steps"] == 200
    assert r.mapped["save_last_n_steps"] == "output.save_last_n_steps"
    assert r.unmapped == []


def test_state_counts_without_their_schedule_are_skipped(tmp_path: Path) -> None:
    r = imported(tmp_path, "save_state = true\nsave_last_n_steps_state = 300\nsave_last_n_epochs_state = 2\n")
    assert r.values["checkpoint"] == {"at_end": True}  # lorakit's step schedule stays its default
    # training states never change what is trained: counts without their schedule are inert (train_network.py
    # calls save_and_remove_state_stepwise / _on_epoch_end only when a state is saved by that schedule)
    assert r.unmapped == []
    assert r.inert_keys == [
        ("save_last_n_steps_state", 300, "kohya keeps step states only with save_state and save_every_n_steps"),
        ("save_last_n_epochs_state", 2, "kohya keeps epoch states only with save_state and save_every_n_epochs")]
    assert any("lorakit still writes a checkpoint every 500 steps" in n for n in r.notes)
    assert resolve([Layer("imported", r.values)]).checkpoint.keep_last == 2  # the default


def test_without_save_state_the_checkpoint_defaults_stay(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\nsave_state = false\nsave_every_n_steps = 100\n"
                 "save_every_n_epochs = 2\nsave_last_n_steps_state = 300\nsave_last_n_epochs = 0\n")
    # train_network.py saves a LoRA file every save_every_n_epochs with or without save_state
    assert "checkpoint" not in r.values
    assert r.values["output"] == {"save_every_n_steps": 100, "save_every_n_epochs": 2, "save_precision": "fp32"}
    assert r.mapped["save_every_n_epochs"] == "output.save_every_n_epochs"
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
    # lora_gui.py train_model passes none of the 0 / "" values (that they are still reported: see
    # test_every_gui_key_is_reported)
    assert r.values["checkpoint"] == {"at_end": True, "every_n_epochs": 1, "keep_last": 2}
    assert r.values["output"]["save_every_n_epochs"] == 1
    assert not {"save_last_n_steps", "save_last_n_epochs", "save_every_n_steps"} & set(r.values["output"])
    unmapped = {k for k, _, _ in r.unmapped}
    assert not unmapped & {"save_state", "save_every_n_epochs", "save_last_n_epochs_state", "resume"}
    resolve([Layer("imported", r.values)])


def test_state_count_without_save_state_is_inert(tmp_path: Path) -> None:
    r = imported(tmp_path, "learning_rate = 1e-4\nsave_state = false\nsave_every_n_steps = 100\n"
                 "save_last_n_steps_state = 300\n")
    assert r.unmapped == [] and "save_last_n_steps_state" in reported(r)["inert"]


def test_unreadable_state_counts_are_listed(tmp_path: Path) -> None:
    r = imported(tmp_path, 'save_state = "maybe"\nsave_every_n_epochs = "x"\nsave_last_n_epochs_state = 1.5\n')
    assert "checkpoint" not in r.values
    assert {k for k, _, _ in r.unmapped} == {"save_state", "save_every_n_epochs", "save_last_n_epochs_state"}


def test_additional_parameters_are_a_command_line_that_wins(tmp_path: Path) -> None:
    # common_gui.py run_cmd_advanced_training appends them after --config_file; sd-scripts' read_config_from_file
    # parses the command line into the config's namespace, so they win. train_network.py: max_train_epochs replaces
    # max_train_steps; network_train_unet_only leaves the text encoder untrained.
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({"LoRA_type": "Standard", "learning_rate": 1e-4, "max_train_steps": 1600,
                             "text_encoder_lr": 5e-5, "unet_lr": 1e-4,
                             "additional_parameters": "--network_train_unet_only --max_train_epochs 3"}),
                 encoding="utf-8")
    r = import_file(f)
    assert r.values["network"]["train_text_encoder"] is False
    assert r.values["train"]["max_train_epochs"] == 3 and "max_train_steps" not in r.values["train"]
    assert "text_encoder_lr" not in r.values["train"] and r.unmapped == []


def gui_with_folder(tmp_path: Path, **extra) -> Path:
    from conftest import write_images

    write_images(tmp_path / "img" / "10_a", count=3, size=(64, 64))
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({"LoRA_type": "Standard", "train_data_dir": str(tmp_path / "img"), "reg_data_dir": "",
                             "train_batch_size": 2, "gradient_accumulation_steps": 1, "epoch": 4, **extra}),
                 encoding="utf-8")
    return f


def test_gui_max_train_steps_0_counts_the_folders_like_train_model(tmp_path: Path) -> None:
    # lora_gui.py train_model: ceil(Σ repeats × images / batch / accumulation × epoch × reg factor)
    # = ceil(10 × 3 / 2 / 1 × 4 × 1) = 60, passed as max_train_steps (never as epochs)
    r = import_file(gui_with_folder(tmp_path, max_train_steps=0))
    assert r.values["train"]["max_train_steps"] == 60 and "max_train_epochs" not in r.values["train"]
    assert r.unmapped == []
    # with regularisation images the factor is 2, and accumulation divides: ceil(30 / 2 / 3 × 4 × 2) = 40
    r = import_file(gui_with_folder(tmp_path, max_train_steps=0, reg_data_dir=str(tmp_path / "img"),
                                    gradient_accumulation_steps=3))
    assert r.values["train"]["max_train_steps"] == 40


def test_gui_epoch_is_not_max_train_epochs(tmp_path: Path) -> None:
    # train_model uses epoch only when max_train_steps is 0; a set max_train_steps reaches sd-scripts as it is
    r = import_file(gui_with_folder(tmp_path, max_train_steps=500, epoch=8))
    assert r.values["train"]["max_train_steps"] == 500 and "max_train_epochs" not in r.values["train"]
    assert "epoch" in reported(r)["mapped"] | reported(r)["inert"]


def test_adafactor_without_relative_step_uses_relative_step(tmp_path: Path) -> None:
    # train_util.py get_optimizer: relative_step defaults to True, then lr_scheduler becomes "adafactor:<lr>";
    # transformers' Adafactor defaults scale_parameter=True, warmup_init=False
    r = imported(tmp_path, 'optimizer_type = "Adafactor"\nlearning_rate = 1e-3\nlr_scheduler = "cosine"\n')
    t = r.values["train"]
    assert t["optimizer_type"] == "Adafactor" and t["lr_scheduler"] == "adafactor" and t["learning_rate"] == 1e-3
    assert "relative_step=True" in t["optimizer_args"] and "scale_parameter=True" in t["optimizer_args"]
    assert r.unmapped == []


def test_dataset_toml_subsets_become_data_subsets(tmp_path: Path) -> None:
    dataset = """
[general]
caption_extension = ".txt"
[[datasets]]
resolution = 512
batch_size = 2
  [[datasets.subsets]]
  image_dir = "/data/a"
  num_repeats = 5
  [[datasets.subsets]]
  image_dir = "/data/b"
  num_repeats = 2
  class_tokens = "b thing"
  [[datasets.subsets]]
  image_dir = "/data/reg"
  is_reg = true
"""
    r = imported(tmp_path, "learning_rate = 1e-4\n", dataset)
    # sd-scripts config_util.py: one DreamBooth subset per table, num_repeats default 1 when absent
    assert r.values["data"]["subsets"] == [{"image_dir": "/data/a", "num_repeats": 5},
                                           {"image_dir": "/data/b", "num_repeats": 2, "class_tokens": "b thing"},
                                           {"image_dir": "/data/reg", "is_reg": True}]
    assert r.values["train"]["train_batch_size"] == 2 and r.values["data"]["caption_extension"] == ".txt"
    cfg = resolve([Layer("imported", r.values)])
    assert [s.num_repeats for s in cfg.data.subsets] == [5, 2, 1]


def test_bucket_reso_steps_1_is_inert_without_buckets_and_unsupported_with(tmp_path: Path) -> None:
    # train_util.py DreamBoothDataset: without enable_bucket bucket_reso_steps is set to None (unused);
    # train_network.py assert_extra_args → verify_bucket_reso_steps(64) stops sd-scripts when buckets are on
    r = imported(tmp_path, "enable_bucket = false\nbucket_reso_steps = 1\n")
    assert "bucket_reso_steps" in reported(r)["inert"] and r.unmapped == []
    assert "bucket_reso_steps" not in r.values["data"]
    r = imported(tmp_path, "enable_bucket = true\nbucket_reso_steps = 1\n")
    assert [k for k, _, _ in r.unmapped] == ["bucket_reso_steps"] and "divisible by 64" in r.unmapped[0][2]


def test_a_kohya_ss_written_toml_keeps_its_steps(tmp_path: Path) -> None:
    # kohya_ss writes `epoch` beside the max_train_steps it computed; sd-scripts has no --epoch and ignores it
    r = imported(tmp_path, "epoch = 10\nmax_train_steps = 1240\n")
    assert r.values["train"]["max_train_steps"] == 1240 and "max_train_epochs" not in r.values["train"]
    assert [k for k, _, _ in r.inert_keys] == ["epoch"]


def test_gui_zero_accumulation_is_reported_not_a_crash(tmp_path: Path) -> None:
    # train_model divides by it (ZeroDivisionError in kohya_ss too): one unsupported key, the rest imports
    r = import_file(gui_with_folder(tmp_path, max_train_steps=0, gradient_accumulation_steps=""))
    assert [k for k, _, _ in r.unmapped] == ["gradient_accumulation_steps"]


def test_gui_max_train_epochs_needs_no_folder_count(tmp_path: Path) -> None:
    f = tmp_path / "kohya.json"
    f.write_text(json.dumps({"LoRA_type": "Standard", "train_data_dir": "/nowhere", "max_train_steps": 0,
                             "max_train_epochs": 3, "epoch": 5}), encoding="utf-8")
    r = import_file(f)
    assert r.values["train"]["max_train_epochs"] == 3 and r.unmapped == []


def test_a_value_lorakit_refuses_is_one_unsupported_key(tmp_path: Path) -> None:
    r = imported(tmp_path, "max_token_length = 100\nnetwork_dim = 8\nmax_train_steps = 10\n")
    assert [(k, v) for k, v, _ in r.unmapped] == [("max_token_length", 100)]
    assert "max_token_length" not in r.values["train"] and r.values["network"]["network_dim"] == 8


def test_warm_up_sd_scripts_refuses_is_left_out(tmp_path: Path) -> None:
    # get_scheduler_fix → wrap_check_needless_num_warmup_steps: constant with a warm-up stops sd-scripts at launch
    r = imported(tmp_path, 'lr_scheduler = "constant"\nlr_warmup_steps = 100\nmax_train_steps = 1000\n')
    assert [(k, v) for k, v, _ in r.unmapped] == [("lr_warmup_steps", 100)]
    assert "lr_warmup_steps" not in r.values["train"]
    r = imported(tmp_path, 'lr_scheduler = "cosine"\nlr_warmup_steps = 100\nmax_train_steps = 1000\n')
    assert r.values["train"]["lr_warmup_steps"] == 100 and r.unmapped == []


def test_scheduler_arguments_the_schedule_does_not_take_are_left_out(tmp_path: Path) -> None:
    # sd-scripts passes lr_scheduler_args to diffusers' get_cosine_with_hard_restarts_schedule_with_warmup: T_max
    # would be a TypeError; a scheduler class takes its own arguments
    r = imported(tmp_path, 'lr_scheduler = "cosine_with_restarts"\nlr_scheduler_args = ["T_max=100"]\n')
    assert [(k, v) for k, v, _ in r.unmapped] == [("lr_scheduler_args", "T_max=100")]
    assert "lr_scheduler_args" not in r.values["train"]
    r = imported(tmp_path, 'lr_scheduler_type = "CosineAnnealingLR"\nlr_scheduler_args = ["T_max=100"]\n')
    assert r.values["train"]["lr_scheduler_args"] == ["T_max=100"] and r.unmapped == []


def test_a_lorakit_config_is_not_imported(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text("version = 2\n[train]\nlearning_rate = 1e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="already a lorakit config"):
        import_file(f)


@pytest.mark.parametrize(("value", "expected"), [
    # get_scheduler_fix: a float is a fraction of the steps, an int a count; int_or_float on the command line reads
    # 'N%' as a percentage and a number ≥ 1 as an int
    ("100", ("lr_warmup_steps", 100)), ("0.05", ("lr_warmup_ratio", 0.05)), ("'10%'", ("lr_warmup_ratio", 0.1)),
    ("'250'", ("lr_warmup_steps", 250)),
])
def test_sd_scripts_warm_up_forms(tmp_path: Path, value: str, expected: tuple) -> None:
    r = imported(tmp_path, f'lr_scheduler = "cosine"\nlr_warmup_steps = {value}\n')
    key, number = expected
    assert r.values["train"][key] == pytest.approx(number) and r.unmapped == []


def test_a_warm_up_of_the_whole_run_or_more_is_unsupported(tmp_path: Path) -> None:
    # the GUI's lr_warmup 100 (%) reaches sd-scripts as the float 1.0: the whole run warms up
    r = imported(tmp_path, 'lr_scheduler = "cosine"\nlr_warmup_steps = 1.0\n')
    assert [(k, v) for k, v, _ in r.unmapped] == [("lr_warmup_steps", 1.0)]


def test_mask_settings_as_train_network_reads_them(tmp_path: Path) -> None:
    # train_network.py builds DreamBooth subsets from train_data_dir: a top-level conditioning_data_dir is never read,
    # and masked_loss without masks in the batch trains unmasked (apply_masked_loss returns the loss as it is)
    r = imported(tmp_path, 'masked_loss = true\nconditioning_data_dir = "masks"\n')
    assert "masked_loss" not in r.values["train"] and "conditioning_data_dir" not in r.values.get("data", {})
    assert {k for k, _, _ in r.inert_keys} >= {"masked_loss", "conditioning_data_dir"} and r.unmapped == []
    # a dataset TOML whose every subset names the same mask folder: masked (config_util's ControlNet dataset)
    r = imported(tmp_path, "masked_loss = true\n", dataset='[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n'
                 'conditioning_data_dir = "m"\n[[datasets.subsets]]\nimage_dir = "b"\nconditioning_data_dir = "m"\n')
    assert r.values["train"]["masked_loss"] is True and r.values["data"]["conditioning_data_dir"] == "m"
