"""Every shipped preset validates, alone and as a layer over the others."""

from __future__ import annotations

import pytest

from lorakit.config.loader import resolve_layers
from lorakit.config.presets import list_presets, preset_dir

PRESETS = sorted(list_presets())
BASES = ["sd15-character", "sd15-style", "sdxl-character", "sdxl-style", "sd21-floorplan", "sd15-dreambooth"]
MODE_PRESETS = ["ileco-erase", "ileco-replace", "difference-slider"]
LAYERS = ["lowvram-8gb", "oom-fallback"]


def test_the_issue_s_presets_are_shipped() -> None:
    assert PRESETS == sorted(BASES + LAYERS + MODE_PRESETS)
    assert all(list_presets()[name] for name in PRESETS)  # each has a one-line description
    assert preset_dir().name == "presets" and (preset_dir().parent / "__init__.py").is_file()


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_without_warnings(name: str) -> None:
    r = resolve_layers(name)
    assert r.warnings == [] and r.notes == []


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("layer", LAYERS)
def test_layers_apply_over_every_base(base: str, layer: str) -> None:
    r = resolve_layers(base, adds=[layer]) if layer != "oom-fallback" else resolve_layers(base, oom=True)
    assert r.config.train.train_batch_size == 1
    assert r.config.train.gradient_checkpointing is True
    assert r.warnings == []


def test_floorplan_is_the_003_recipe() -> None:
    c = resolve_layers("sd21-floorplan").config
    assert c.model.family == "sd2"
    assert (c.network.network_dim, c.network.target_modules) == (4, ["to_k", "to_q", "to_v", "to_out.0"])
    assert (c.train.learning_rate, c.train.max_train_epochs, c.train.train_batch_size) == (5e-5, 5, 1)
    assert (c.output.save_every_n_steps, c.data.resolution, c.data.validation_split) == (100, 512, 0.1)
    assert c.output.save_format == "both"  # adapter_config.json (PEFT) as in 003, plus the kohya file


def test_presets_are_package_data() -> None:
    import fnmatch
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["lorakit"]
    for path in preset_dir().glob("*.toml"):
        assert any(fnmatch.fnmatch(f"presets/{path.name}", p) for p in patterns), path
