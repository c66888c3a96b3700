"""The simple form: about fifteen fields on top of a preset, each bound by name to one config key.

The kohya_ss "Minimal" tab turned 16 inputs into 243 positional arguments and silently dropped some of them
(`001_…`). Here every simple field names the config key it sets (`SIMPLE_FIELDS`); an unset field (None) keeps the
preset's value; every other key keeps the preset's value too. A test walks every schema field to prove it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .loader import Layer, ResolvedConfig, build_layers, resolve_checked


def _bind(path: str, description: str) -> Any:
    """A simple-form field bound to config key `path`; None (unset) keeps the preset's value."""
    return Field(None, description=description, json_schema_extra={"config_key": path})


class SimpleForm(BaseModel):
    """The short form the UI and `lorakit train --simple` show. Each field sets exactly one config key."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("sd15-character", description="The preset the form is laid over (every other setting).")
    model: str | None = _bind("model.pretrained_model_name_or_path", "Base model (folder, file or hub id).")
    images: str | None = _bind("data.train_data_dir", "Folder of training images with .txt captions.")
    trigger_word: str | None = _bind("data.trigger_word", "Word prepended to every caption.")
    rank: int | None = _bind("network.network_dim", "LoRA rank.")
    alpha: float | None = _bind("network.network_alpha", "LoRA alpha.")
    learning_rate: float | None = _bind("train.learning_rate", "UNet learning rate.")
    train_text_encoder: bool | None = _bind("network.train_text_encoder", "Also train the text encoder.")
    text_encoder_lr: float | None = _bind("train.text_encoder_lr", "Text-encoder learning rate.")
    epochs: int | None = _bind("train.max_train_epochs", "Epochs.")
    batch_size: int | None = _bind("train.train_batch_size", "Images per batch.")
    resolution: int | None = _bind("data.resolution", "Training resolution.")
    output_name: str | None = _bind("output.output_name", "Name of the LoRA file.")
    output_dir: str | None = _bind("output.output_dir", "Folder for run folders.")
    save_every_n_steps: int | None = _bind("output.save_every_n_steps", "Checkpoint every N steps.")
    seed: int | None = _bind("train.seed", "Random seed.")


def simple_fields() -> dict[str, str]:
    """Simple-form field name → the config key it sets."""
    out = {}
    for name, info in SimpleForm.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and "config_key" in extra:
            out[name] = str(extra["config_key"])
    return out


SIMPLE_FIELDS = simple_fields()


def form_layer(form: SimpleForm) -> Layer:
    """The values the form sets (unset fields are absent, so the preset's values stay)."""
    values: dict[str, Any] = {}
    for name, key in SIMPLE_FIELDS.items():
        value = getattr(form, name)
        if value is None:
            continue
        section, leaf = key.split(".")
        values.setdefault(section, {})[leaf] = value
    return Layer("simple form", values)


def resolve_simple(form: SimpleForm, sets: list[str] | None = None) -> ResolvedConfig:
    """The full config: the form's preset, then the form, then `--set` overrides; validated like any run."""
    layers = build_layers(preset=form.preset, sets=sets or [])
    set_layers = [x for x in layers if x.name == "--set"]
    layers = [x for x in layers if x.name != "--set"] + [form_layer(form)] + set_layers
    return resolve_checked(layers)
