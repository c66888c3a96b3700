"""sd-scripts dataset TOML ([general], [[datasets]], [[datasets.subsets]]) → lorakit's data section, and the
flattening of a training config TOML's tables."""

from __future__ import annotations

from typing import Any

from .import_result import ImportResult
from .import_training import resolution
from .migrate import section_of


def is_dataset_toml(values: dict[str, Any]) -> bool:
    """An sd-scripts dataset TOML ([general] / [[datasets]] tables, nothing else that trains)."""
    return "datasets" in values and isinstance(values["datasets"], list) or (
        set(values) <= {"general", "datasets"} and bool(values))


def flatten_tables(values: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts reads every table of its config TOML as one flat namespace; do the same."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten_tables(value))
        else:
            flat[key] = value
    return flat


SUBSET_KEYS = {"image_dir", "num_repeats", "is_reg", "class_tokens"}  # data.subsets' own fields
DATASET_KEYS = {"resolution", "batch_size", "enable_bucket", "min_bucket_reso", "max_bucket_reso",
                "bucket_reso_steps", "bucket_no_upscale", "prior_loss_weight", "network_multiplier"}


def _tables(value: Any, key: str, problems: list[str], many: bool) -> list[dict[str, Any]]:
    """A dataset TOML table (many=False) or array of tables (many=True) as a list of dicts; records what is not."""
    items = value if many and isinstance(value, list) else [value]
    if not all(isinstance(x, dict) for x in items):
        problems.append(f"{key} = {value!r}: expected {'[[' + key + ']] tables' if many else 'a [' + key + '] table'}")
        return []
    return [dict(x) for x in items]


def apply_dataset_toml(r: ImportResult, dataset: dict[str, Any]) -> None:
    """sd-scripts dataset TOML ([general], [[datasets]], [[datasets.subsets]]; library/config_util.py): each subset
    becomes a data.subsets entry; a setting is looked up in the subset, then its dataset, then [general], then the
    training config's own arguments (sd-scripts' fallback order). The training config's train_data_dir and
    reg_data_dir are ignored, as sd-scripts ignores them beside a dataset config.

    A value that cannot be read, or a table that is not one, is an error (ConfigError from import_file).
    """
    source = r.strict_source or "dataset TOML"
    problems: list[str] = []
    general = _tables(dataset.get("general", {}), "general", problems, many=False)
    datasets = _tables(dataset.get("datasets", []), "datasets", problems, many=True)
    first = datasets[0] if datasets else {}
    subsets = _tables(first.pop("subsets", []), "datasets.subsets", problems, many=True)
    r.errors += [f"{source}: {p}" for p in problems]
    if problems:
        return
    for extra in datasets[1:]:
        r.unsupported("datasets", f"{len(datasets)} datasets", "lorakit trains one dataset (one resolution and "
                      "batch size); only the first was imported")
        break
    data = r.values.setdefault("data", {})
    for key in ("train_data_dir", "reg_data_dir"):
        if data.pop(key, None) is not None:
            r.mapped.pop(key, None)
            r.inert(key, r.source.get(key), "sd-scripts ignores it beside a dataset config")
    shared = {**(general[0] if general else {}), **first}  # the dataset's settings over [general]
    for key, value in sorted(shared.items(), key=lambda kv: kv[0] != "enable_bucket"):  # buckets decide the rest
        if key in SUBSET_KEYS or key in DATASET_KEYS or section_of(key) is not None or key == "caption_extention":
            if key not in SUBSET_KEYS:
                _dataset_setting(r, f"dataset.{key}", key, value)
        else:
            r.unsupported(f"dataset.{key}", value, "not a dataset setting lorakit knows")
    entries = []
    per_subset: dict[str, set[str]] = {}
    for i, subset in enumerate(subsets):
        label = f"dataset.subsets[{i}]"
        if not subset.get("image_dir"):
            r.unsupported(f"{label}.image_dir", subset.get("image_dir"), "lorakit reads image folders only "
                          "(metadata_file fine-tuning subsets are not supported)")
            continue
        entry = {k: subset[k] for k in ("image_dir", "num_repeats", "is_reg", "class_tokens") if k in subset}
        entries.append(entry)
        r.mapped[f"{label}.image_dir"] = f"data.subsets[{len(entries) - 1}]"
        for key, value in subset.items():
            if key not in SUBSET_KEYS and key != "conditioning_data_dir":
                per_subset.setdefault(key, set()).add(repr(value))
                _dataset_setting(r, f"{label}.{key}", key, value)
    _mask_folders(r, subsets)
    for key, values in per_subset.items():
        if len(values) > 1 or len(subsets) > sum(1 for s in subsets if key in s):
            r.unsupported(f"dataset.subsets[*].{key}", ", ".join(sorted(values)), "differs between subsets; "
                          "lorakit applies one value to every folder (the last one read)")
    if entries:
        data["subsets"] = entries


def _mask_folders(r: ImportResult, subsets: list[dict[str, Any]]) -> None:
    """conditioning_data_dir: sd-scripts builds a masked (ControlNet) dataset only when every subset names one
    (config_util.py BlueprintGenerator); lorakit has one mask folder for all."""
    folders = [s.get("conditioning_data_dir") for s in subsets]
    named = [(i, f) for i, f in enumerate(folders) if f is not None]
    if not named:
        return
    if len(named) < len(folders):
        for i, folder in named:
            r.inert(f"dataset.subsets[{i}].conditioning_data_dir", folder, "sd-scripts uses mask folders only when "
                    "every subset has one")
    elif len(set(folders)) > 1:
        r.unsupported("dataset.subsets[*].conditioning_data_dir", ", ".join(map(str, folders)), "one mask folder "
                      "per subset; lorakit has one for all (data.conditioning_data_dir)")
    else:
        for i, folder in named:
            r.mapped[f"dataset.subsets[{i}].conditioning_data_dir"] = "data.conditioning_data_dir"
        r.values.setdefault("data", {})["conditioning_data_dir"] = folders[0]


def unmasked(r: ImportResult) -> None:
    """masked_loss without alpha_mask or a mask folder: sd-scripts' apply_masked_loss finds no mask in the batch and
    trains unmasked; lorakit would refuse the pair, so the key is left out as inert."""
    data, train = r.values.get("data", {}), r.values.get("train", {})
    if train.get("masked_loss") and not data.get("alpha_mask") and not data.get("conditioning_data_dir"):
        train.pop("masked_loss")
        for source in [k for k, v in r.mapped.items() if v == "train.masked_loss"]:
            r.mapped.pop(source)
            r.inert(source, True, "no alpha_mask and no mask folder in every subset: sd-scripts trains unmasked")


def _dataset_setting(r: ImportResult, label: str, key: str, value: Any) -> None:
    """One dataset/subset setting: as the same key of a training config, or the dataset-only names."""
    from .importers import conversions  # lazy: importers imports this module

    if key == "batch_size":
        r.put(label, "train.train_batch_size", value)
    elif key == "caption_extention":  # sd-scripts' old spelling
        r.put(label, "data.caption_extension", value)
    elif key == "resolution":
        resolution(r, label, value)
    elif key in conversions(False):
        conversions(False)[key](r, label, value)
    elif key == "network_multiplier":
        r.skip(label, None if value == 1 else value, "" if value == 1 else "LoRA multiplier during training")
    elif (section := section_of(key)) is not None:
        r.put(label, f"{section}.{key}", value)
    else:
        r.unsupported(label, value, "not a dataset setting lorakit knows")
