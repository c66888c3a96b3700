"""A run's snapshot reproduces its config."""

from __future__ import annotations

import json
from pathlib import Path

from lorakit.config.loader import resolve_layers
from lorakit.config.snapshot import write_snapshot


def test_snapshot_round_trips(tmp_path: Path) -> None:
    r = resolve_layers("sd21-floorplan", adds=["lowvram-8gb"], sets=['data.image_size=[512, 384]',
                                                                     'train.optimizer_args=["weight_decay=0.01"]'])
    run = tmp_path / "runs" / "r1"
    write_snapshot(run, r)
    assert sorted(p.name for p in run.iterdir()) == ["config.toml", "environment.json", "params.json"]
    again = resolve_layers(files=[run / "config.toml"])
    assert again.config == r.config  # `lorakit train --config runs/<id>/config.toml` runs the same thing
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
    assert resolve_layers(files=[tmp_path / "config.toml"]).config == r.config


def test_every_optional_field_defaults_to_unset() -> None:
    """TOML has no null: config.toml leaves None out, which only round-trips if None is the default."""
    import typing

    from pydantic import BaseModel

    from lorakit.config.schema import LorakitConfig

    for section, info in LorakitConfig.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, field in model.model_fields.items():
                if type(None) in typing.get_args(field.annotation):
                    assert field.default is None, f"{section}.{name} can be None but defaults to {field.default!r}"
