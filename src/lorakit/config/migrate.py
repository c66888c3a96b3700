"""Config file versions and the migrations between them.

Every config file carries `version`. A file without one is read as the current version, unless it uses the old
flat layout (version 0: every key at the top level, as sd-scripts' own config files write them), which is moved
into sections. Each migration returns the new values and a message for the user (an empty message: nothing the
user wrote changed, so nothing is said); a test covers each one. A value a migration cannot carry over is a
ConfigError naming the file and the key.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel

from ..errors import ConfigError
from .schema import CONFIG_VERSION, MODE_SECTIONS, LorakitConfig

# Flat keys that exist in more than one section go to this one (the training setting, not the sampling one;
# sampling before iLECO's guidance_scale). None: no section takes the flat key (it stays where it is and the
# validator reports it): [mode] prompt is the difference mode's caption, not a flat file's sample prompt.
_PREFERRED_SECTION: dict[str, str | None] = {"seed": "train", "steps": "sample", "guidance_scale": "sample",
                                             "prompt": None}
# Version 1 keys that version 2 no longer has: a version 0 (flat) file's key goes to its version 1 section, and
# v1_to_v2 carries it over or refuses it.
_V1_ONLY_SECTION = {"prompt": "sample", "target_prompt": "mode", "replacement_prompt": "mode",
                    "class_prompt": "mode", "original_image": "mode", "target_image": "mode"}


def _sections() -> dict[str, tuple[type[BaseModel], ...]]:
    """Section name → its model(s), for every section of the schema; [mode] is one of MODE_SECTIONS."""
    out: dict[str, tuple[type[BaseModel], ...]] = {}
    for name, info in LorakitConfig.model_fields.items():
        ann = info.annotation
        if name == "mode":
            out[name] = tuple(MODE_SECTIONS.values())
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = (ann,)
    return out


def section_of(key: str) -> str | None:
    """The section that owns a field called `key` (the preferred one when several do), or None."""
    if key in _PREFERRED_SECTION:
        return _PREFERRED_SECTION[key]
    for name, models in _sections().items():
        if any(key in model.model_fields for model in models):
            return name
    return None


def _v0_section(key: str) -> str | None:
    """The version 1 section of a flat version 0 key."""
    return _V1_ONLY_SECTION.get(key) or section_of(key)


def detect_version(values: dict[str, Any]) -> int:
    """The version a file was written in: its `version` key, 0 for the flat layout, else the current one."""
    if "version" in values:
        return values["version"] if isinstance(values["version"], int) else CONFIG_VERSION
    sections = _sections()
    flat = [k for k, v in values.items() if k not in sections and _v0_section(k) is not None]
    return 0 if flat else CONFIG_VERSION


def v0_to_v1(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 0 (flat keys, e.g. `learning_rate = 1e-4` at the top) → version 1 (`[train] learning_rate`).

    Tables already in the file are kept and the flat keys merged into them; a key set both ways keeps the table's
    value (and the message says so).
    """
    sections = _sections()
    flat = {k: v for k, v in values.items() if k not in sections and k != "version" and _v0_section(k) is not None}
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v
                           for k, v in values.items() if k not in flat and k != "version"}
    moved: list[str] = []
    both: list[str] = []
    for key, value in flat.items():
        target = _v0_section(key)
        table = out.setdefault(target, {})
        if not isinstance(table, dict):
            out[key] = value  # left in place: the validator reports the section that is not a table
        elif key in table:
            both.append(f"{key} is set at the top and in [{target}]: the [{target}] value is kept")
        else:
            table[key] = value
            moved.append(f"{key} → {target}.{key}")
    out["version"] = 1
    shown = ", ".join(moved[:4]) + (f", … ({len(moved)} keys)" if len(moved) > 4 else "")
    return out, f"flat layout moved into sections ({shown})" + "".join(f"; {b}" for b in both)


class MigrationError(ValueError):
    """Values a migration cannot carry over; `problems` name the key and say what to do."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# Version 1's [mode] keys (one table for every mode) and their defaults. Version 1 refused any other value of
# those that no mode used yet, but its run snapshots (runs/<id>/config.toml) wrote every default.
_V1_MODE_DEFAULTS: dict[str, Any] = {"target_prompt": "", "replacement_prompt": "", "class_prompt": "",
                                     "original_image": None, "target_image": None, "prior_loss_weight": 1.0}


def _ileco_names(mode: dict[str, Any], renamed: list[str], problems: list[str]) -> None:
    """Version 1's iLECO prompts in version 2's names: target_prompt (the concept to edit) → original_prompt,
    replacement_prompt (what it becomes) → target_prompt. A table already in version 2's names (written since the
    modes landed, still labelled version 1: it has original_prompt and no replacement_prompt) is left alone."""
    if "replacement_prompt" not in mode and ("original_prompt" in mode or "target_prompt" not in mode):
        return
    concept, becomes = mode.pop("target_prompt", ""), mode.pop("replacement_prompt", "")
    if "original_prompt" in mode and (concept or becomes):
        problems.append("[mode] mixes version 1's iLECO names (target_prompt = the concept, replacement_prompt) "
                        "with version 2's (original_prompt = the concept, target_prompt = what it becomes): "
                        "use version 2's only")
        return
    if concept:
        mode["original_prompt"] = concept
        renamed.append("mode.target_prompt → mode.original_prompt")
    if becomes:
        mode["target_prompt"] = becomes
        renamed.append("mode.replacement_prompt → mode.target_prompt")


def _mode_v1_to_v2(mode: dict[str, Any], renamed: list[str], dropped: list[str], problems: list[str]) -> None:
    """[mode]: version 1's keys that the mode's version 2 section lacks are dropped at their defaults, renamed
    where the meaning is certain (iLECO's prompts), else refused."""
    kind = mode.get("type", "lora")
    if kind == "ileco":
        _ileco_names(mode, renamed, problems)
    section = MODE_SECTIONS.get(kind) if isinstance(kind, str) else None
    if section is None:
        return  # an unknown type: the validator lists the types
    for key, default in _V1_MODE_DEFAULTS.items():
        if key not in mode or key in section.model_fields:
            continue
        value = mode.pop(key)
        if value == default and not isinstance(value, bool):
            dropped.append(f"mode.{key}")
        elif key == "class_prompt":
            problems.append(f"mode.class_prompt = {value!r}: removed in version 2 (it was never used); the "
                            "regularisation images are captioned like the training images (caption files, or "
                            "data.class_tokens_from_folder); remove it")
        else:
            users = [name for name, model in MODE_SECTIONS.items() if key in model.model_fields]
            problems.append(f"mode.{key} = {value!r}: not a setting of mode '{kind}' in version 2 (only of "
                            f"{', '.join(users) or 'no mode'}); remove it, or set mode.type")


def v1_to_v2(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 1 → version 2: [mode] is one table per mode type and [sample] renders during training.

    Removed keys at their old defaults (every version 1 run snapshot has them) are dropped: sample.prompt = "",
    mode.target_prompt / replacement_prompt / class_prompt = "", and the keys that the mode type no longer has
    (prior_loss_weight = 1.0 outside lora/dreambooth, original_image/target_image outside difference). Other values
    are carried over where the meaning is certain: sample.prompt → sample.prompts = [it]; for type 'ileco',
    target_prompt (the concept) → original_prompt and replacement_prompt → target_prompt. Anything else is a
    MigrationError. Nothing changed: the message is empty.
    """
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    renamed: list[str] = []
    dropped: list[str] = []
    problems: list[str] = []
    sample = out.get("sample")
    if isinstance(sample, dict) and "prompt" in sample:
        prompt = sample.pop("prompt")
        if prompt == "":
            dropped.append("sample.prompt")
        elif isinstance(prompt, str) and isinstance(sample.get("prompts", []), list):
            sample["prompts"] = [prompt, *sample.get("prompts", [])]
            renamed.append("sample.prompt → sample.prompts")
        else:
            problems.append(f"sample.prompt = {prompt!r}: removed in version 2; list the prompts in sample.prompts")
    mode = out.get("mode")
    if isinstance(mode, dict):
        _mode_v1_to_v2(mode, renamed, dropped, problems)
    if problems:
        raise MigrationError(problems)
    out["version"] = 2
    parts = renamed + ([f"dropped {', '.join(dropped)} (old defaults, no longer settings)"] if dropped else [])
    return out, "; ".join(parts)


def v2_to_v3(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 2 → version 3: one setting per precision and kohya's dropout placement.

    train.full_fp16 / full_bf16 = true become train.lora_precision = 'fp16' / 'bf16' (false: dropped, every version
    2 snapshot has them). A network_dropout > 0 keeps the placement version 2 trained with, peft's on the adapter's
    input (dropout_placement = 'peft'; version 3's default is kohya's). mixed_precision's default became 'auto';
    a file that leaves it out is not changed (a layer must not override another's choice)."""
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    changed: list[str] = []
    train = out.get("train")
    if isinstance(train, dict):
        half = [p for p in ("fp16", "bf16") if train.pop(f"full_{p}", False)]
        if len(half) == 2:
            raise MigrationError(["train.full_fp16 and train.full_bf16 are both true; keep one"])
        if half:
            train["lora_precision"] = half[0]
            changed.append(f"train.full_{half[0]} → train.lora_precision = '{half[0]}'")
    network = out.get("network")
    if isinstance(network, dict) and (network.get("network_dropout") or 0) > 0 and "dropout_placement" not in network:
        network["dropout_placement"] = "peft"
        changed.append("network.dropout_placement = 'peft' (where version 2 applied network_dropout)")
    out["version"] = 3
    return out, "; ".join(changed)


MIGRATIONS: dict[int, Callable[[dict[str, Any]], tuple[dict[str, Any], str]]] = {
    0: v0_to_v1, 1: v1_to_v2, 2: v2_to_v3}


def migrate(values: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """Bring a file's values up to the current version; returns them and one message per migration that changed
    something the file says. A value that cannot be carried over is a ConfigError naming `source`."""
    version = detect_version(values)
    notes: list[str] = []
    while version < CONFIG_VERSION and version in MIGRATIONS:
        try:
            values, what = MIGRATIONS[version](values)
        except MigrationError as exc:
            step = f"config version {version} → {version + 1}"
            raise ConfigError([f"{source}: {step}: {p}" for p in exc.problems]) from None
        if what:
            notes.append(
                f"{source}: migrated config version {version} → {version + 1}: {what}. "
                f"Save the new form with `lorakit config migrate {source}`."
            )
        version += 1
    return values, notes
