"""TrainTrain JSON presets and saved settings → lorakit, key by key, with what cannot be mapped reported.

The presets are written here with TrainTrain's own key names and value forms (scripts/traintrain.py all_configs;
trainer/trainer.py Trainer.export_json writes them: numbers as strings, check boxes as booleans, the blocks as a
list, Difference's "2nd pass" table) and the expected values follow its trainer's reading of them."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from lorakit.config.import_traintrain import convert_traintrain
from lorakit.config.importers import import_file
from lorakit.config.loader import Layer, resolve
from lorakit.errors import ConfigError

SD_BLOCKS = ["IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10", "IN11", "M00",
             "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10",
             "OUT11"]


def preset(**changes: Any) -> dict[str, Any]:
    """A LoRA preset as TrainTrain's presets/LoRA.json spells it, with `changes`."""
    base: dict[str, Any] = {
        "network_type": "lierla", "network_rank": "16", "network_alpha": "8", "lora_data_directory": "",
        "lora_trigger_word": "", "image_size(height, width)": "512", "train_iterations": "1000",
        "train_batch_size": "2", "train_learning_rate": "1e-4", "train_optimizer": "adamw",
        "train_optimizer_settings": "", "train_lr_scheduler": "cosine", "train_lr_scheduler_settings": "",
        "save_lora_name": "LoRA", "use_gradient_checkpointing": False,
        "network_blocks(BASE = TextEncoder)": ["BASE", *SD_BLOCKS], "network_resume": "", "network_strength": "1.0",
        "network_conv_rank": "0", "network_conv_alpha": "0", "network_element": "Full",
        "network_train_text_encoder": False, "image_buckets_step": "256", "image_num_multiply": "1",
        "image_min_length": "512", "image_max_ratio": "2", "sub_image_num": "0", "image_mirroring": False,
        "image_use_filename_as_tag": False, "image_disable_upscale": False, "train_fixed_timsteps_in_batch": False,
        "train_textencoder_learning_rate": "", "train_seed": "-1", "train_min_timesteps": "0",
        "train_max_timesteps": "1000", "train_loss_function": "MSE", "train_lr_step_rules": "",
        "train_lr_warmup_steps": "0", "train_lr_scheduler_num_cycles": "1", "train_lr_scheduler_power": "1.0",
        "train_snr_gamma": "5", "save_per_steps": "0", "train_model_precision": "fp16",
        "train_lora_precision": "fp32", "save_precision": "fp16", "train_VAE_precision": "fp32",
        "diff_load_1st_pass": "", "diff_save_1st_pass": False, "diff_1st_pass_only": False,
        "logging_save_csv": "", "logging_verbose": False, "save_overwrite": False, "save_as_json": False,
        "model_v_pred": False, "use_2nd_pass_settings": False, "mode": "LoRA", "model": "", "vae": "None",
        "original prompt": "", "target prompt": "",
    }
    base.update(changes)
    return base


BLOCKS = "network_blocks(BASE = TextEncoder)"


def unsupported(result) -> dict[str, str]:
    return {key: need for key, _, need in result.report()["unsupported"]}


def inert(result) -> dict[str, str]:
    return {key: why for key, _, why in result.report()["inert"]}


def test_lora_preset_maps_field_by_field(tmp_path: Path) -> None:
    src = preset(**{
        "network_type": "c3lier", "network_rank": "32", "network_alpha": "16", "network_conv_rank": "8",
        "network_conv_alpha": "0", "network_element": "CrossAttention",
        "network_blocks(BASE = TextEncoder)": ["BASE", "IN04", "IN05", "M00", "OUT03"],
        "lora_data_directory": "/data/char", "lora_trigger_word": "sks girl",
        "image_size(height, width)": "768, 512", "train_iterations": "1500", "train_batch_size": "4",
        "train_learning_rate": "2e-4", "train_textencoder_learning_rate": "5e-5", "train_optimizer": "AdamW8bit",
        "train_optimizer_settings": "weight_decay=0.01; betas=(0.9,0.99)", "use_gradient_checkpointing": True,
        "image_buckets_step": "128", "image_min_length": "384", "image_max_ratio": "3", "sub_image_num": "2",
        "image_mirroring": True, "image_num_multiply": "3", "train_seed": "1234", "train_snr_gamma": "0",
        "train_min_timesteps": "100", "train_max_timesteps": "900", "save_per_steps": "250",
        "train_model_precision": "bf16", "train_lora_precision": "bf16", "save_precision": "fp32",
        "model_v_pred": True, "model": "/models/sd15.safetensors", "vae": "/models/vae.safetensors",
        "save_lora_name": "char",
    })
    path = tmp_path / "char.json"
    path.write_text(json.dumps(src), encoding="utf-8")
    r = import_file(path)
    v = r.values
    assert v["mode"] == {"type": "lora"}
    assert v["network"] == {
        "network_module": "locon", "network_dim": 32, "network_alpha": 16.0, "conv_dim": 8,  # conv alpha 0: unset
        "network_element": "cross_attention", "blocks": ["BASE", "IN04", "IN05", "M00", "OUT03"],
        "train_text_encoder": True,  # lora.py LoRANetwork: BASE in the blocks trains the text encoders
    }
    # Trainer.__init__ sorts "768, 512" → [512, 768]; lorakit's (width, height) takes the long side first
    assert v["data"] == {
        "image_size": [768, 512], "train_data_dir": "/data/char", "trigger_word": "sks girl",
        "bucket_reso_steps": 128, "min_bucket_reso": 384, "max_aspect_ratio": 3.0, "sub_image_num": 2,
        "flip_aug": True, "num_repeats": 3,
    }
    assert v["train"] == {
        "optimizer_type": "AdamW8bit", "optimizer_args": ["weight_decay=0.01", "betas=(0.9, 0.99)"],
        "lr_scheduler": "cosine", "max_train_steps": 1500, "train_batch_size": 4, "learning_rate": 2e-4,
        "text_encoder_lr": 5e-5, "gradient_checkpointing": True, "seed": 1234, "min_timestep": 100,
        "max_timestep": 900, "model_precision": "bf16", "mixed_precision": "bf16", "lora_precision": "bf16",
    }  # snr gamma 0: apply_snr_weight only when > 0, so min_snr_gamma stays unset
    assert v["output"] == {"save_every_n_steps": 250, "save_precision": "fp32", "output_name": "char"}
    assert v["model"] == {"v_parameterization": True, "pretrained_model_name_or_path": "/models/sd15.safetensors",
                          "vae": "/models/vae.safetensors"}
    assert unsupported(r) == {}
    resolve([Layer(str(path), v)])  # lorakit accepts every value


def test_defaults_zero_means_the_networks_and_the_main_rate() -> None:
    # conv rank/alpha 0 = the network's (lora.py), TE lr '' or 0 = the main rate (lora.py te_lr), like lorakit's unset
    for te_lr in ("", "0"):
        r = convert_traintrain(preset(train_textencoder_learning_rate=te_lr, network_type="loha"))
        assert "text_encoder_lr" not in r.values["train"]
        assert "conv_dim" not in r.values["network"] and "conv_alpha" not in r.values["network"]
        assert r.values["train"]["min_snr_gamma"] == 5.0 and "seed" not in r.values["train"]
        assert r.values["network"]["network_module"] == "loha"
        # every SD block listed: all blocks, lorakit's empty list
        assert "blocks" not in r.values["network"] and r.values["network"]["train_text_encoder"] is True
        assert "train_seed" in inert(r)  # -1: TrainTrain draws a random seed


@pytest.mark.parametrize("changes, train, notes", [
    # get_scheduler passes power only to polynomial and num_cycles only to cosine_with_restarts
    ({"train_lr_scheduler": "polynomial", "train_lr_scheduler_power": "2.0", "train_lr_warmup_steps": "50"},
     {"lr_scheduler": "polynomial", "lr_scheduler_power": 2.0, "lr_warmup_steps": 50}, set()),
    ({"train_lr_scheduler": "linear", "train_lr_scheduler_power": "2.0"},
     {"lr_scheduler": "linear"}, {"train_lr_scheduler_power"}),
    ({"train_lr_scheduler": "cosine_with_restarts", "train_lr_scheduler_num_cycles": "3"},
     {"lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 3}, set()),
    # diffusers' constant and piecewise_constant take no warm-up (lorakit's would add one)
    ({"train_lr_scheduler": "constant", "train_lr_warmup_steps": "20"},
     {"lr_scheduler": "constant"}, {"train_lr_warmup_steps"}),
    ({"train_lr_scheduler": "piecewise_constant", "train_lr_step_rules": "1:300,0.5:600,0.1",
      "train_lr_warmup_steps": "20"},
     {"lr_scheduler": "step", "lr_step_rules": "1:300,0.5:600,0.1"}, {"train_lr_warmup_steps"}),
    # torch classes with load_lr_scheduler's defaults, then the settings
    ({"train_lr_scheduler": "step", "train_lr_scheduler_settings": "gamma=0.5", "train_lr_warmup_steps": "5"},
     {"lr_scheduler_type": "StepLR", "lr_scheduler_args": ["step_size=10", "gamma=0.5"]}, {"train_lr_warmup_steps"}),
    ({"train_lr_scheduler": "cosine_annealing", "train_lr_scheduler_settings": "eta_min=0.00001",
      "train_iterations": "30"},
     {"lr_scheduler_type": "CosineAnnealingLR", "lr_scheduler_args": ["T_max=30", "eta_min=1e-05"]}, set()),
    ({"train_lr_scheduler": "one_cycle", "train_iterations": "40"},
     {"lr_scheduler_type": "OneCycleLR", "lr_scheduler_args": ["max_lr=0.001", "total_steps=40"]}, set()),
])
def test_schedules(changes: dict, train: dict, notes: set) -> None:
    r = convert_traintrain(preset(**changes))
    got = {k: r.values["train"][k] for k in r.values["train"] if k.startswith("lr_")}
    assert got == train
    assert notes <= set(inert(r)) and unsupported(r) == {}
    resolve([Layer("t.json", {**r.values, "data": {"train_data_dir": "/d"}})])


def test_adafactor_uses_its_own_schedule() -> None:
    # get_optimizer: relative_step defaults to True; load_lr_scheduler returns AdafactorSchedule for Adafactor
    r = convert_traintrain(preset(train_optimizer="AdaFactor", train_lr_scheduler="cosine"))
    assert r.values["train"]["optimizer_type"] == "Adafactor"
    assert r.values["train"]["optimizer_args"] == ["relative_step=True"]
    assert r.values["train"]["lr_scheduler"] == "adafactor"


def test_ileco_prompts_and_height_width() -> None:
    # train.py train_lecos: height, width = t.image_size (sorted), so '768,512' is 512 high and 768 wide
    r = convert_traintrain(preset(**{"mode": "iLECO", "image_size(height, width)": "768,512", "network_type": "loha",
                                     "original prompt": "van gogh", "target prompt": "photo",
                                     "lora_data_directory": "/ignored"}))
    assert r.values["mode"] == {"type": "ileco", "original_prompt": "van gogh", "target_prompt": "photo"}
    assert r.values["data"] == {"image_size": [768, 512]}  # (width, height)
    # LycorisNetwork trains the text encoders only in LoRA mode
    assert "train_text_encoder" not in r.values["network"]
    assert "lora_data_directory" in inert(r)
    resolve([Layer("i.json", r.values)])


def test_difference_with_second_pass() -> None:
    second = preset(network_rank="4", network_alpha="4", train_learning_rate="1e-4", train_iterations="300",
                    train_optimizer="lion", image_min_length="256",  # image_min_length: pass 1's in pass 2
                    use_2nd_pass_settings=True)  # setpass(1) reads this one, the 2nd-pass column's last value
    src = preset(**{"mode": "Difference", "network_rank": "16", "network_alpha": "16", "train_iterations": "500",
                    "train_learning_rate": "5e-4", "use_2nd_pass_settings": True, "2nd pass": second,
                    "diff_save_1st_pass": True, "diff_load_1st_pass": "", "original prompt": "a girl",
                    "original image": "/img/a.png", "target image": "/img/b.png"})
    r = convert_traintrain(src)
    assert r.values["mode"] == {
        "type": "difference", "save_first_pass": True, "prompt": "a girl", "original_image": "/img/a.png",
        "target_image": "/img/b.png",
        "second_pass": {"network_dim": 4, "network_alpha": 4.0, "learning_rate": 1e-4, "max_train_steps": 300},
    }
    assert set(unsupported(r)) == {"2nd pass.train_optimizer"}
    # BASE is listed, but Difference encodes its prompt once under no_grad (train.py train_main): UNet only
    assert "train_text_encoder" not in r.values["network"]
    assert "never trained" in inert(r)[f"{BLOCKS} BASE"]
    resolve([Layer("d.json", r.values)])  # a config lorakit accepts as it is
    assert r.to_fill == {}
    loaded = convert_traintrain(preset(mode="Difference", diff_load_1st_pass="copy"))
    assert loaded.values["mode"]["first_pass_file"] == "copy.safetensors"  # setpass appends it
    assert any("copy.safetensors" in n for n in loaded.notes)


def test_reports_what_it_cannot_map() -> None:
    r = convert_traintrain(preset(**{"mode": "ADDifT", "train_optimizer": "CAME", "train_loss_function": "L1",
                                     "train_model_precision": "int8", "network_strength": "0.5",
                                     "train_lr_scheduler": "reduce_on_plateau", "image_disable_upscale": True,
                                     "some_new_key": "1", "logging_verbose": True, "train_VAE_precision": "bf16"}))
    assert set(unsupported(r)) == {"mode", "train_optimizer", "train_loss_function", "train_model_precision",
                                   "network_strength", "train_lr_scheduler", "image_disable_upscale",
                                   "some_new_key"}
    assert {"logging_verbose", "train_VAE_precision"} <= set(inert(r))
    mapped = {k for k, _, _ in r.report()["mapped"]}
    listed = mapped | set(inert(r)) | set(unsupported(r))
    # every key accounted for; BASE is its own line (ADDifT, as iLECO, never trains the text encoder)
    assert listed == set(preset()) | {"some_new_key", f"{BLOCKS} BASE"}
    toml = r.to_toml("p.json")
    assert "#   train_optimizer = 'CAME'" in toml


def test_kohya_json_still_goes_to_the_kohya_importer(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps({"LoRA_type": "Standard", "network_dim": 8, "learning_rate": 1e-4}), encoding="utf-8")
    assert import_file(path).values["network"]["network_dim"] == 8
    tt = tmp_path / "t.json"
    tt.write_text(json.dumps(preset()), encoding="utf-8")
    with pytest.raises(ConfigError, match="no dataset TOML"):
        import_file(tt, tmp_path / "d.toml")


@pytest.mark.parametrize("mode, blanks", [
    ("LoRA", {"data.train_data_dir"}),
    ("iLECO", {"mode.original_prompt"}),
    ("Difference", {"mode.original_image", "mode.target_image"}),
])
def test_a_shipped_preset_imports_with_its_blanks_named(mode: str, blanks: set, tmp_path: Path) -> None:
    """TrainTrain's presets/*.json leave the folder, prompts and images empty: the import names them to fill in,
    and once filled the config is one lorakit accepts (no text encoder in iLECO/Difference)."""
    r = convert_traintrain(preset(mode=mode))
    assert set(r.to_fill) == blanks
    toml = r.to_toml("p.json")
    assert "# Before training, set (the file leaves them blank):" in toml
    assert all(f"#   {key}: " in toml for key in blanks)
    filled: dict[str, Any] = {}
    for key in blanks:
        section, leaf = key.split(".")
        filled.setdefault(section, {})[leaf] = "cat" if leaf.endswith("prompt") else str(tmp_path / leaf)
    config = resolve([Layer("p.json", r.values), Layer("user", filled)])
    assert config.network.train_text_encoder is (mode == "LoRA")  # BASE is in the preset's blocks
    with pytest.raises(ConfigError, match="original_prompt") if mode == "iLECO" else nullcontext():
        resolve([Layer("p.json", r.values)])


def test_loading_pass_one_needs_only_the_target_image() -> None:
    r = convert_traintrain(preset(mode="Difference", diff_load_1st_pass="copy"))
    assert set(r.to_fill) == {"mode.target_image"}


def test_only_the_second_pass_tables_own_switch_counts() -> None:
    """TrainTrain's shipped Difference_Use2ndPass.json has use_2nd_pass_settings true at the top and false inside
    "2nd pass": import_json puts the top one into a hidden check box nothing reads, setpass(1) reads the inner one
    (values_1[-1]), so TrainTrain trains both passes with the first pass's settings."""
    second = preset(network_rank="4", use_2nd_pass_settings=False)
    r = convert_traintrain(preset(**{"mode": "Difference", "use_2nd_pass_settings": True, "2nd pass": second}))
    assert "second_pass" not in r.values["mode"]
    assert "use_2nd_pass_settings" in inert(r) and "2nd pass" in inert(r)
    assert any("trains both passes with the first pass's settings" in n for n in r.notes)


def test_keys_the_file_lacks_take_traintrains_defaults() -> None:
    """import_json's setconfigs gives a missing key its default from scripts/traintrain.py (rank 16, alpha 8,
    batch 2, lr 1e-4, 1000 iterations, min-SNR 5, fp16 model and save precision, cosine), in the 2nd-pass table too
    (not pass 1's value)."""
    r = convert_traintrain({"mode": "Difference", "network_type": "c3lier", "train_iterations": "500",
                            "train_learning_rate": "5e-4", "original image": "/a.png", "target image": "/b.png",
                            "2nd pass": {"use_2nd_pass_settings": True, "network_rank": "4"}})
    assert r.values["network"]["network_dim"] == 16 and r.values["network"]["network_alpha"] == 8.0
    assert r.values["train"]["train_batch_size"] == 2 and r.values["train"]["min_snr_gamma"] == 5.0
    assert r.values["train"]["max_train_steps"] == 500 and r.values["train"]["learning_rate"] == 5e-4
    assert r.values["train"]["lr_scheduler"] == "cosine" and r.values["output"]["save_precision"] == "fp16"
    # pass 2: rank from its table, iterations and lr at TrainTrain's defaults (1000, 1e-4), not pass 1's
    assert r.values["mode"]["second_pass"] == {"network_dim": 4, "max_train_steps": 1000, "learning_rate": 1e-4}
    assert "train_snr_gamma" in r.defaults and "train_iterations" not in r.defaults
    assert "# Not in the file, so at TrainTrain's defaults: " in r.to_toml("partial.json")
    assert {"2nd pass.train_iterations", "2nd pass.train_learning_rate"} <= set(r.defaults)
    # a default this mode does not read (Difference reads no buckets) was never in the file: not reported at all
    reported = {k for group in r.report().values() for k, _, _ in group}
    assert "image_buckets_step" not in reported and "image_buckets_step" not in r.defaults
    # pass 1 at timestep 500, the table silent: TrainTrain trains pass 2 from timestep 0 (its default), which
    # lorakit's second pass cannot: reported
    r = convert_traintrain({"mode": "Difference", "train_min_timesteps": "500",
                            "2nd pass": {"use_2nd_pass_settings": True}})
    assert "2nd pass.train_min_timesteps" in unsupported(r) and "2nd pass.train_min_timesteps" in r.defaults
