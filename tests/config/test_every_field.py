"""Every config field does something or is refused: a setting that validates and is then ignored is the worst bug.

A real (tiny) run records which fields the trainer reads. Each schema field must be read by it, refused by
validation when changed from its default ("not implemented yet"), or listed below with where it is read instead.
"""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from lorakit.config.loader import resolve_layers
from lorakit.config.schema import MODE_SECTIONS, LorakitConfig, Section
from lorakit.config.validate import UNIMPLEMENTED_FIELDS, UNIMPLEMENTED_SECTIONS, check
from lorakit.data.settings import DataSection, Subset
from lorakit.engine import trainer
from lorakit.runs import new_run_dir

READ_ELSEWHERE = {  # field → where it takes effect (and the test that shows it)
    "version": "the loader's migrations (tests/config/test_migrate.py)",
    "model.allow_pickle": "loading a .ckpt checkpoint (tests/families/test_single_file.py)",
    "batch.oom_file": "the --oom layer (tests/config/test_loader.py::test_oom_layer_from_batch_oom_file)",
    "network.lokr_factor": "LoKr networks only, refused with the others (tests/networks/test_network_types.py)",
    "train.auto_memory": "api.train fits the config before the run starts (tests/engine/test_auto_memory.py)",
    # the testing aid's settings are read when their step comes (tests/engine/test_faults.py, test_resume.py)
    "faults.oom_attempts": "the out-of-memory fault's step (tests/engine/test_faults.py)",
    "faults.oom_min_batch": "the out-of-memory fault's step (tests/engine/test_faults.py)",
    # [batch] and [storage] are read by `lorakit batch`, not by a training run (tests/batch/)
    **{f"batch.{name}": "lorakit batch (tests/batch/test_batch.py)" for name in (
        "base_config", "working_dir", "stage_dir", "add", "output_suffix", "oom_retries", "cleanup_on_success",
        "lora_install_dir", "max_zip_bytes", "worker_id", "lease_hours")},
    **{f"storage.{name}": "lorakit batch (tests/batch/test_batch.py)" for name in (
        "rclone_remote", "remote_path", "training_subdir", "output_subdir", "delete_remote_inputs", "empty_trash")},
    "faults.nan_steps": "the NaN fault's steps (tests/engine/test_faults.py)",
    "faults.kill_in_checkpoint": "a checkpoint being written (tests/engine/test_resume.py)",
    # [bench] is read by `lorakit bench` and `lorakit pipeline`, not by training (tests/bench/test_bench_config.py)
    **{f"bench.{name}": "lorakit bench / pipeline (tests/bench/test_bench_config.py)" for name in (
        "weights", "seeds", "prompts", "negative_prompt", "sampler", "scheduler", "steps", "cfg", "width", "height",
        "batch_size", "backend", "comfy_url", "workflow", "lora_install_dir", "compare_training_images",
        "embedding_model")},
}


def leaves(model: type[BaseModel] = LorakitConfig, prefix: str = "") -> dict[str, tuple[type, str]]:
    """Dotted key → (class, field name) for every leaf field of the schema; each mode's section as
    `mode(<type>).<field>`, a list of tables by its item's fields."""
    out = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list else None
        if model is LorakitConfig and name == "mode":
            for mode_type, section in MODE_SECTIONS.items():
                out.update(leaves(section, f"mode({mode_type})."))
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(leaves(ann, f"{prefix}{name}."))
        elif isinstance(item, type) and issubclass(item, BaseModel):
            out[f"{prefix}{name}"] = (model, name)
            out.update(leaves(item, f"{prefix}{name}[]."))
        else:
            out[f"{prefix}{name}"] = (model, name)
    return out


def refused_when_changed() -> set[str]:
    """Fields of features that have not landed (validate refuses any value but the default)."""
    keys = {f"{s}.{f}" for s in UNIMPLEMENTED_SECTIONS for f in type(getattr(LorakitConfig(), s)).model_fields}
    return keys | {f"{s}.{f}" for s, fields in UNIMPLEMENTED_FIELDS.items() for f in fields}


@pytest.fixture(scope="module")
def fields_read(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    """(class name, field) pairs the trainer reads during a short run that exercises text-encoder training,
    validation, checkpoints and the disk cache."""
    from conftest import write_images

    tmp = tmp_path_factory.mktemp("walk")
    images = write_images(tmp / "imgs", count=6)
    prompts_file = tmp / "prompts.txt"
    prompts_file.write_text("# a comment\na dog --w 64 --h 64 --s 1\n", encoding="utf-8")
    cfg = resolve_layers(sets=[
        f"data.train_data_dir='{images}'", f"output.output_dir='{tmp / 'runs'}'", "data.resolution=64",
        "data.validation_split=0.3", "train.validate_every_n_steps=1", "train.max_train_steps=2",
        "network.network_dim=2", "network.train_text_encoder=true", "train.text_encoder_lr=1e-4",
        "train.stop_text_encoder_training=1", "output.save_every_n_steps=1", "data.cache_latents_to_disk=true",
        f"data.cache_folder='{tmp / 'cache'}'"]).config
    reg = write_images(tmp / "reg", count=2)
    pair = write_images(tmp / "pair", count=2, size=(64, 64))
    before, after = pair / "img0.png", pair / "img1.png"
    other_modes = [[f"output.output_dir='{tmp / 'runs'}'", "data.resolution=64", "network.network_dim=2", *sets]
                   for sets in (
        ["mode.type='dreambooth'", "mode.prior_loss_weight=0.5", f"data.train_data_dir='{images}'",
         f"data.reg_data_dir='{reg}'", "train.max_train_steps=1", "sample.prompts=['a dog --s 1 --w 64 --h 64']",
         "sample.every_n_epochs=1"],
        ["mode.type='ileco'", "mode.original_prompt='a cat'", "mode.target_prompt='a dog'",
         "mode.guidance_scale=0.5", "mode.prompts=[{original_prompt='x', target_prompt='y', guidance_scale=1.0}]",
         "train.max_train_steps=1"],
        ["mode.type='difference'", f"mode.original_image='{before}'", f"mode.target_image='{after}'",
         "mode.prompt='a face'", "mode.save_first_pass=true", "train.max_train_steps=1",
         "mode.second_pass={network_dim=1, network_alpha=1.0, learning_rate=1e-3, max_train_steps=1, "
         "train_batch_size=2}", "sample.prompts=['a cat --s 1']", "sample.every_n_steps=1",
         "sample.negative_prompt='bad'", "sample.steps=1", "sample.guidance_scale=2.0",
         "sample.seed=3", "sample.width=64", "sample.height=64", f"sample.prompts_file='{prompts_file}'"],
        ["data.layout='kohya'", "train.max_train_steps=1",  # sd-scripts' dataset subsets
         f"data.subsets=[{{image_dir='{images}', num_repeats=2, class_tokens='sks'}}, "
         f"{{image_dir='{reg}', is_reg=true}}]"],
    )]
    reads: set[tuple[str, str]] = set()

    def tracking(self: BaseModel, name: str):
        value = object.__getattribute__(self, name)
        if name in type(self).model_fields and not isinstance(value, BaseModel):
            reads.add((type(self).__name__, name))
        return value

    patched = (Section, DataSection, Subset)
    for cls in patched:
        cls.__getattribute__ = tracking  # type: ignore[method-assign]
    try:
        trainer.train(cfg, new_run_dir(tmp / "runs"))
        for sets in other_modes:
            trainer.train(resolve_layers(sets=sets).config, new_run_dir(tmp / "runs"))
    finally:
        for cls in patched:
            del cls.__getattribute__
    return reads


def test_every_field_is_read_by_a_run_or_refused(fields_read: set[tuple[str, str]]) -> None:
    refused = refused_when_changed()
    unaccounted = [key for key, (cls, name) in leaves().items()
                   if (cls.__name__, name) not in fields_read and key not in refused and key not in READ_ELSEWHERE]
    assert unaccounted == [], "fields a run ignores: read them, or refuse them in config.validate"


def test_refused_fields_really_are_refused() -> None:
    """Changing any field of an unimplemented feature from its default is a validation error naming the key."""
    default = LorakitConfig()
    for key in sorted(refused_when_changed()):
        section, name = key.split(".")
        value = getattr(getattr(default, section), name)
        changed = {str: "x", int: 7, float: 0.5, bool: not value, list: ["x"], type(None): "x"}[type(value)]
        if isinstance(value, list) and section == "bench":
            changed = [3] if name == "seeds" else [0.25] if name == "weights" else ["x"]
        cfg = LorakitConfig.model_validate({section: {name: changed}})
        errors, _ = check(cfg)
        assert [f.key for f in errors if "not implemented yet" in f.message] == [key], key


def test_the_listed_exceptions_are_real_fields() -> None:
    assert set(READ_ELSEWHERE) <= set(leaves())
