"""Every config migration, with the message the user sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.config.loader import read_toml, resolve_layers
from lorakit.config.migrate import (CONFIG_VERSION, MIGRATIONS, MigrationError, detect_version, migrate, section_of,
                                    v0_to_v1, v1_to_v2, v2_to_v3)


def test_every_version_below_current_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(0, CONFIG_VERSION))


def test_v0_flat_layout_moves_into_sections() -> None:
    flat = {"learning_rate": 2e-4, "network_dim": 8, "train_data_dir": "imgs", "seed": 3, "output_name": "old",
            "sample": {"prompt": "a cat"}}
    assert detect_version(flat) == 0
    values, what = v0_to_v1(flat)
    assert values == {
        "train": {"learning_rate": 2e-4, "seed": 3},
        "network": {"network_dim": 8},
        "data": {"train_data_dir": "imgs"},
        "output": {"output_name": "old"},
        "sample": {"prompt": "a cat"},
        "version": 1,
    }
    assert "learning_rate → train.learning_rate" in what


def test_v0_file_loads_with_a_message(tmp_path: Path) -> None:
    f = tmp_path / "old.toml"
    f.write_text("learning_rate = 2e-4\nnetwork_dim = 8\nmax_train_epochs = 3\n", encoding="utf-8")
    layer = read_toml(f)
    assert layer.notes == [
        f"{f}: migrated config version 0 → 1: flat layout moved into sections (learning_rate → "
        "train.learning_rate, network_dim → network.network_dim, max_train_epochs → train.max_train_epochs). "
        f"Save the new form with `lorakit config migrate {f}`."
    ]
    r = resolve_layers(files=[f])
    assert (r.config.train.learning_rate, r.config.network.network_dim, r.config.train.max_train_epochs) == (2e-4, 8, 3)
    assert r.notes == layer.notes
    assert r.origins["train.learning_rate"] == str(f)


def test_explicit_version_0_and_unknown_flat_key() -> None:
    values, notes = migrate({"version": 0, "learning_rate": 1e-4, "lerning_rate": 1}, "x.toml")
    assert values["version"] == CONFIG_VERSION and values["train"] == {"learning_rate": 1e-4}
    assert values["lerning_rate"] == 1  # left in place: the validator reports it with a suggestion
    assert len(notes) == 1


def test_current_files_are_untouched() -> None:
    values = {"version": CONFIG_VERSION, "train": {"learning_rate": 1e-4}}
    assert migrate(dict(values), "x.toml") == (values, [])
    assert detect_version({"train": {"seed": 1}}) == CONFIG_VERSION


def test_newer_version_is_an_error(tmp_path: Path) -> None:
    import pytest

    from lorakit.errors import ConfigError

    f = tmp_path / "new.toml"
    f.write_text("version = 99\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        resolve_layers(files=[f])
    assert f"{f}: version = 99" in exc.value.problems[0] and f"≤ {CONFIG_VERSION}" in exc.value.problems[0]


def test_v0_flat_keys_and_a_table_of_the_same_section_are_merged() -> None:
    values, notes = migrate({"learning_rate": 2e-4, "seed": 5, "max_train_epochs": 2,
                             "train": {"max_train_epochs": 3}}, "x.toml")
    assert values["train"] == {"learning_rate": 2e-4, "seed": 5, "max_train_epochs": 3}  # the table wins
    assert "max_train_epochs" not in values
    assert "max_train_epochs is set at the top and in [train]: the [train] value is kept" in notes[0]


def test_v0_merge_does_not_change_the_input() -> None:
    src = {"seed": 5, "train": {"learning_rate": 1e-4}}
    values, _ = v0_to_v1(src)
    assert values["train"] == {"learning_rate": 1e-4, "seed": 5}
    assert src == {"seed": 5, "train": {"learning_rate": 1e-4}}


# What the version 1 run snapshot writer (runs/<id>/config.toml) wrote for the default config: every default,
# unset optional values left out (lorakit 7796979's LorakitConfig().model_dump(exclude_none=True)).
V1_DEFAULT_SNAPSHOT = """version = 1

[model]
pretrained_model_name_or_path = "tiny-sd1"
family = "auto"
allow_pickle = false

[network]
network_module = "lora"
use_dora = false
lokr_factor = -1
network_dim = 16
network_alpha = 8.0
network_dropout = 0.0
target_modules = []
train_text_encoder = false
text_encoder_target_modules = []
blocks = []
block_dims = []
block_alphas = []
conv_block_dims = []
conv_block_alphas = []
network_element = "full"

[data]
train_data_dir = ""
reg_data_dir = ""
num_repeats = 1
validation_data_dir = ""
validation_split = 0.0
caption_extension = ".txt"
trigger_word = ""
class_tokens_from_folder = false
caption_metadata = ""
caption_template = ""
caption_separator = ","
shuffle_caption = false
keep_tokens = 0
caption_dropout_rate = 0.0
caption_tag_dropout_rate = 0.0
resolution = 512
enable_bucket = true
bucket_mode = "traintrain"
bucket_reso_steps = 64
min_bucket_reso = 256
max_aspect_ratio = 2.0
bucket_no_upscale = false
sub_image_num = 0
flip_aug = false
cache_latents_to_disk = true
cache_folder = ""

[train]
learning_rate = 0.0001
optimizer_type = "AdamW"
optimizer_args = []
lr_scheduler = "constant"
lr_scheduler_args = []
lr_warmup_steps = 0
lr_scheduler_num_cycles = 1
max_train_epochs = 1
train_batch_size = 1
gradient_accumulation_steps = 1
mixed_precision = "no"
gradient_checkpointing = false
sdpa = true
noise_offset = 0.0
max_grad_norm = 1.0
seed = 42
cache_latents = true
cache_text_encoder_outputs = true
log_every_n_steps = 1
validate_every_n_steps = 50
log_with = "none"

[output]
output_dir = "runs"
output_name = "lora"
save_precision = "fp16"
save_format = "kohya"

[sample]
prompt = ""
negative_prompt = ""
steps = 20
guidance_scale = 7.0
seed = 1

[mode]
type = "lora"
target_prompt = ""
replacement_prompt = ""
class_prompt = ""
prior_loss_weight = 1.0

[bench]
weights = [0.0, 0.5, 1.0]
seeds = [1, 2]
prompts = []
steps = 20

[batch]
working_dir = "batch"
add = []
oom_retries = 1
cleanup_on_success = true

[storage]
rclone_remote = ""
remote_path = "lorakit"
training_subdir = "training"
output_subdir = "output"
empty_trash = false
"""


def test_v1_default_snapshot_loads_as_the_defaults(tmp_path: Path) -> None:
    from lorakit.config.schema import LorakitConfig

    f = tmp_path / "config.toml"
    f.write_text(V1_DEFAULT_SNAPSHOT, encoding="utf-8")
    r = resolve_layers(files=[f])
    # every default of version 1 but two whose default became 'auto' later (the file says 'no' and 1), and the
    # [bench] and [batch] values written while those features were refused unless default (the file's values stand)
    defaults = LorakitConfig()
    assert r.config == defaults.model_copy(update={
        "train": defaults.train.model_copy(update={"mixed_precision": "no", "log_every_n_steps": 1}),
        "bench": defaults.bench.model_copy(update={"weights": [0.0, 0.5, 1.0], "seeds": [1, 2], "steps": 20}),
        "batch": defaults.batch.model_copy(update={"oom_retries": 1}),
    }) and r.config.version == CONFIG_VERSION == 3
    assert r.notes == [
        f"{f}: migrated config version 1 → 2: dropped sample.prompt, mode.target_prompt, mode.replacement_prompt, "
        "mode.class_prompt (old defaults, no longer settings). "
        f"Save the new form with `lorakit config migrate {f}`."
    ]


def test_v1_snapshot_of_other_modes_drops_what_the_mode_lacks() -> None:
    old = {"target_prompt": "", "replacement_prompt": "", "class_prompt": "", "prior_loss_weight": 1.0}
    values, _ = v1_to_v2({"version": 1, "mode": {"type": "difference", "original_image": "/a.png",
                                                 "target_image": "/b.png", **old}})
    assert values["mode"] == {"type": "difference", "original_image": "/a.png", "target_image": "/b.png"}
    values, _ = v1_to_v2({"version": 1, "mode": {"type": "dreambooth", **old, "prior_loss_weight": 0.5}})
    assert values["mode"] == {"type": "dreambooth", "prior_loss_weight": 0.5}


def test_v1_ileco_prompts_take_version_2_names() -> None:
    values, what = v1_to_v2({"version": 1, "mode": {"type": "ileco", "target_prompt": "Mona Lisa",
                                                    "replacement_prompt": "a woman", "class_prompt": "",
                                                    "prior_loss_weight": 1.0}})
    assert values == {"version": 2, "mode": {"type": "ileco", "original_prompt": "Mona Lisa",
                                             "target_prompt": "a woman"}}
    assert what == ("mode.target_prompt → mode.original_prompt; mode.replacement_prompt → mode.target_prompt; "
                    "dropped mode.class_prompt, mode.prior_loss_weight (old defaults, no longer settings)")
    erase, _ = v1_to_v2({"version": 1, "mode": {"type": "ileco", "target_prompt": "Mona Lisa"}})
    assert erase["mode"] == {"type": "ileco", "original_prompt": "Mona Lisa"}


def test_version_1_files_in_version_2_names_are_kept_silently() -> None:
    # written after the modes landed but before the version bump (the shipped presets say version = 1)
    src = {"version": 1, "mode": {"type": "ileco", "original_prompt": "Mona Lisa", "target_prompt": "a woman"},
           "sample": {"prompts": ["a cat"], "every_n_steps": 10}}
    values, notes = migrate(src, "x.toml")
    assert values == {**src, "version": CONFIG_VERSION} and notes == []


def test_v1_sample_prompt_becomes_a_list(tmp_path: Path) -> None:
    f = tmp_path / "old.toml"
    f.write_text('version = 1\n[sample]\nprompt = "a cat"\nsteps = 10\n', encoding="utf-8")
    r = resolve_layers(files=[f])
    assert r.config.sample.prompts == ["a cat"] and r.config.sample.steps == 10
    assert "sample.prompt → sample.prompts" in r.notes[0]


def test_v1_values_that_cannot_be_carried_over_are_errors(tmp_path: Path) -> None:
    import pytest

    from lorakit.errors import ConfigError

    f = tmp_path / "old.toml"
    f.write_text('version = 1\n[mode]\ntype = "lora"\ntarget_prompt = "x"\nclass_prompt = "a dog"\n'
                 'original_image = "a.png"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        resolve_layers(files=[f])
    problems = exc.value.problems
    assert len(problems) == 3 and all(p.startswith(f"{f}: config version 1 → 2: mode.") for p in problems)
    assert "mode.target_prompt = 'x': not a setting of mode 'lora' in version 2 (only of ileco)" in problems[0]
    assert "mode.class_prompt = 'a dog': removed in version 2" in problems[1]
    assert "(only of difference)" in problems[2]
    with pytest.raises(ConfigError, match="mixes version 1's iLECO names"):
        migrate({"version": 1, "mode": {"type": "ileco", "original_prompt": "a", "replacement_prompt": "b"}},
                "x.toml")


def test_mode_keys_have_a_section() -> None:
    assert [section_of(k) for k in ("prior_loss_weight", "original_prompt", "first_pass_only", "prompts_file")] \
        == ["mode", "mode", "mode", "sample"]
    assert section_of("prompt") is None  # [mode] prompt is the difference caption, not a flat sample prompt


def test_v0_flat_prior_loss_weight_goes_to_mode(tmp_path: Path) -> None:
    f = tmp_path / "old.toml"
    f.write_text("prior_loss_weight = 0.5\nlearning_rate = 2e-4\nprompt = \"a cat\"\n", encoding="utf-8")
    layer = read_toml(f)
    assert layer.values == {"version": 3, "mode": {"prior_loss_weight": 0.5}, "train": {"learning_rate": 2e-4},
                            "sample": {"prompts": ["a cat"]}}
    assert [n.split(": ")[1] for n in layer.notes] == ["migrated config version 0 → 1",
                                                       "migrated config version 1 → 2"]
    r = resolve_layers(files=[f], sets=["data.reg_data_dir=reg"])
    assert r.config.mode.type == "lora" and r.config.mode.prior_loss_weight == 0.5


def test_v2_full_precision_becomes_lora_precision_and_old_dropout_keeps_its_placement() -> None:
    values, note = v2_to_v3({"version": 2, "train": {"full_bf16": True, "full_fp16": False, "mixed_precision": "bf16"},
                             "network": {"network_dropout": 0.1}})
    assert values == {"version": 3, "train": {"lora_precision": "bf16", "mixed_precision": "bf16"},
                      "network": {"network_dropout": 0.1, "dropout_placement": "peft"}}
    assert note == ("train.full_bf16 → train.lora_precision = 'bf16'; network.dropout_placement = 'peft' (where "
                    "version 2 applied network_dropout)")
    # a version 2 snapshot: both false, no dropout; nothing the user wrote changes, so nothing is said
    values, note = v2_to_v3({"version": 2, "train": {"full_fp16": False, "full_bf16": False},
                             "network": {"network_dropout": 0.0}})
    assert values == {"version": 3, "train": {}, "network": {"network_dropout": 0.0}} and note == ""
    with pytest.raises(MigrationError):
        v2_to_v3({"version": 2, "train": {"full_fp16": True, "full_bf16": True}})
