"""A run's snapshot reproduces its config."""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.config.loader import resolve_layers
from lorakit.config.snapshot import absolute_paths, write_snapshot
from lorakit.config.schema import LorakitConfig


def test_snapshot_round_trips(tmp_path: Path) -> None:
    r = resolve_layers("sd21-floorplan", adds=["lowvram-8gb"], sets=['data.image_size=[512, 384]',
                                                                     'train.optimizer_args=["weight_decay=0.01"]'])
    run = tmp_path / "runs" / "r1"
    write_snapshot(run, r)
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "environment.json", "params.json"]
    again = resolve_layers(files=[run / "config.toml"])
    # `lorakit train --config runs/<id>/config.toml` runs the same thing (with its relative paths made absolute)
    assert again.config == absolute_paths(r.config)
    assert again.config.output.output_dir == str(Path.cwd() / "runs")
    assert again.config.output.output_name == "floorplan_lowvram-8gb"
    params = json.loads((run / "params.json").read_text())
    assert params["config"]["network"]["network_dim"] == 4
    assert params["origins"]["train.optimizer_type"] == "--add preset:lowvram-8gb"
    assert params["layers"] == ["preset:sd21-floorplan", "--add preset:lowvram-8gb", "--add suffix", "--set"]
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["pydantic"] and env["python"].count(".") == 2
    assert env["torch"]["cuda_available"] in (True, False)


def test_snapshot_of_defaults_has_no_unset_values(tmp_path: Path) -> None:
    r = resolve_layers()
    write_snapshot(tmp_path, r.config)
    text = (tmp_path / "config.toml").read_text()
    assert "vae" not in text and "max_train_steps" not in text  # unset stays unset
    assert resolve_layers(files=[tmp_path / "config.toml"]).config == absolute_paths(r.config)


def test_every_optional_field_defaults_to_unset() -> None:
    """TOML has no null: config.toml leaves None out, which only round-trips if None is the default."""
    import typing

    from pydantic import BaseModel

    from lorakit.config.schema import LorakitConfig, ModelSection

    for section, info in LorakitConfig.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, field in model.model_fields.items():
                if type(None) in typing.get_args(field.annotation):
                    assert field.default is None, f"{section}.{name} can be None but defaults to {field.default!r}"


def test_snapshot_paths_are_absolute_and_run_from_another_folder(tmp_path: Path, monkeypatch) -> None:
    """Snapshot written in folder A with relative paths; validated and planned from folder B."""
    import tomllib

    from conftest import write_images
    from lorakit.config.plan import build_plan, render_plan

    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a / "imgs" / "2_cat")
    write_images(a / "reg", count=2)
    (a / "imgs" / "meta.csv").write_text("file_name,caption\nimg0.png,x\n", encoding="utf-8")  # beside the images
    (a / "oom.toml").write_text("[train]\ntrain_batch_size = 1\n", encoding="utf-8")
    (a / "extra.toml").write_text("[train]\nseed = 3\n", encoding="utf-8")
    (a / "before.png").write_bytes(b"png")
    (a / "models" / "vae").mkdir(parents=True)
    b.mkdir()
    monkeypatch.chdir(a)
    r = resolve_layers(sets=[
        'data.train_data_dir="imgs"', 'data.reg_data_dir="./reg"', 'data.cache_folder="cache"',
        'data.caption_metadata="meta.csv"', 'output.output_dir="../a/runs"', 'model.vae="models/vae"',
        'batch.oom_file="oom.toml"', "data.resolution=64", "train.max_train_steps=4"])
    run = a / "runs" / "r1"
    write_snapshot(run, r)
    saved = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    assert saved["data"]["train_data_dir"] == str(a / "imgs")
    assert saved["data"]["reg_data_dir"] == str(a / "reg")
    assert saved["data"]["cache_folder"] == str(a / "cache")
    assert saved["data"]["caption_metadata"] == "meta.csv"  # relative to train_data_dir, which is now absolute
    assert saved["output"]["output_dir"] == str(a / "runs")  # normalised: no "../a"
    assert saved["model"]["pretrained_model_name_or_path"] == "tiny-sd1"  # a built-in name stays a name
    assert saved["model"]["vae"] == str(a / "models" / "vae")
    assert saved["batch"]["oom_file"] == str(a / "oom.toml")
    # settings of features that have not landed are refused by validation, but their paths are made absolute too
    later = absolute_paths(LorakitConfig.model_validate({
        "mode": {"type": "difference", "original_image": "before.png"}, "batch": {"add": ["extra.toml", "lowvram-8gb"],
                                                            "stage_dir": "stage", "working_dir": "work"}}), a)
    assert later.mode.original_image == str(a / "before.png")
    assert later.batch.add == [str(a / "extra.toml"), "lowvram-8gb"]  # a preset name stays a name
    assert later.batch.stage_dir == str(a / "stage") and later.batch.working_dir == str(a / "work")
    assert json.loads((run / "params.json").read_text())["config"]["data"]["train_data_dir"] == str(a / "imgs")

    monkeypatch.chdir(b)
    again = resolve_layers(files=[run / "config.toml"], check_paths=True)  # every path found from folder B
    assert again.config == absolute_paths(r.config, a)
    plan = build_plan(again.config)
    assert sorted((Path(f).name, n, repeats, reg) for f, n, repeats, reg in plan.folders) == [
        ("2_cat", 4, 2, False), ("reg", 2, 1, True)]
    assert plan.output_path == str(a / "runs" / "<timestamp>" / "train" / "lora.safetensors")
    assert any(str(a / "imgs") in line for line in render_plan(plan))


def test_snapshot_keeps_hub_ids_and_absolute_paths(tmp_path: Path) -> None:
    from lorakit.config.schema import LorakitConfig, ModelSection

    cfg = LorakitConfig.model_validate({"model": {"pretrained_model_name_or_path": "stabilityai/sdxl-base"},
                                        "data": {"train_data_dir": str(tmp_path / "imgs")}})
    out = absolute_paths(cfg, tmp_path / "elsewhere")
    assert out.model.pretrained_model_name_or_path == "stabilityai/sdxl-base"
    assert out.data.train_data_dir == str(tmp_path / "imgs")
    assert out.data.reg_data_dir == "" and out.model.vae is None  # unset stays unset
    assert out.output.output_dir == str(tmp_path / "elsewhere" / "runs")
    weights = cfg.model_copy(update={"network": cfg.network.model_copy(update={"network_weights": "runs/x"})})
    assert absolute_paths(weights, tmp_path).network.network_weights == str(tmp_path / "runs" / "x")
    local = cfg.model_copy(update={"model": ModelSection(pretrained_model_name_or_path="m.safetensors")})
    assert absolute_paths(local, tmp_path).model.pretrained_model_name_or_path == str(tmp_path / "m.safetensors")
