"""The UI's translations: labels from `locales/<module>.<lang>.json`, config fields from the schema and fields.ja.json.

English is the source: a label or field missing in another language shows its English text, so a half-translated
UI still works; `missing()` lists what is left to translate.

Field keys are the schema's dotted path without list brackets, every `[mode]` section sharing "mode." (e.g.
"train.learning_rate", "data.subsets.image_dir", "mode.second_pass.network_dim"); `field_label(section, name)`
takes the part before the last dot as the section.
"""

from __future__ import annotations

import json
import string
import typing
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel

from lorakit.errors import LorakitError

LANGS = ("en", "ja")
LANG_NAMES = {"en": "English", "ja": "日本語"}
LOCALES = Path(__file__).parent / "locales"
FIELDS_FILE = "fields.{lang}.json"  # not a label file: {"sections": {...}, "<field key>": {"label", "help"}}

SECTION_TITLES = {
    "": "General", "model": "Model", "network": "Network", "data": "Data", "data.subsets": "Dataset subsets",
    "train": "Training", "output": "Output", "sample": "Sample images", "mode": "Training mode",
    "mode.prompts": "Edit prompts", "mode.second_pass": "Second pass", "checkpoint": "Checkpoints",
    "faults": "Fault injection (testing)", "bench": "Benchmark", "batch": "Batch", "storage": "Storage",
}
# `type` of the mode sections is a Literal with no description in the schema.
HELP_WITHOUT_DESCRIPTION = {
    "mode.type": "Training mode: lora, dreambooth, ileco (TrainTrain's iLECO) or difference (TrainTrain's "
                 "Difference LoRA).",
}
# Words of a field name written as people write them in a label.
_WORD_SPELLING = {
    "lr": "LR", "te": "TE", "snr": "SNR", "vae": "VAE", "lora": "LoRA", "dora": "DoRA", "lokr": "LoKr",
    "fp8": "FP8", "tf32": "TF32", "sdpa": "SDPA", "cudnn": "cuDNN", "url": "URL", "id": "ID", "zip": "ZIP",
    "cfg": "CFG", "ip": "IP", "oom": "OOM", "nan": "NaN", "csv": "CSV", "v": "v", "reso": "resolution",
}


def _lang(lang: str) -> str:
    return lang if lang in LANGS else "en"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LorakitError(f"Cannot read the UI translation file {path}: {exc}",
                           "Fix the file: it must be a JSON object (key → text).") from exc
    if not isinstance(data, dict):
        raise LorakitError(f"The UI translation file {path} is not a JSON object.", "Write it as {\"key\": \"text\"}.")
    return data


@lru_cache(maxsize=None)
def labels(lang: str) -> dict[str, str]:
    """Every `locales/<module>.<lang>.json` merged (fields.<lang>.json excluded); loaded once."""
    merged: dict[str, str] = {}
    for path in sorted(LOCALES.glob(f"*.{lang}.json")):
        if path.name != FIELDS_FILE.format(lang=lang):
            merged.update(_read_json(path))
    return merged


@lru_cache(maxsize=None)
def field_translations(lang: str) -> dict:
    path = LOCALES / FIELDS_FILE.format(lang=lang)
    return _read_json(path) if lang != "en" and path.exists() else {}


def _format(text: str, values: dict) -> str | None:
    try:
        return text.format(**values)
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


def t(key: str, lang: str, **values: object) -> str:
    """The label `key` in `lang` (English where it has none; the key itself where nothing has it); never raises."""
    english = labels("en").get(key)
    text = labels(_lang(lang)).get(key, english)
    if text is None:
        return key
    if not values:
        return text
    # A translation whose placeholders do not fit the values falls back to English, then to the raw text.
    return _format(text, values) or (english is not None and _format(english, values)) or text


def _field_key(path: str) -> str:
    return path.replace("[]", "")


def _walk(model: type[BaseModel], prefix: str, out: dict[str, str]) -> None:
    """Field key → description, the way tests/config/test_every_field.py's leaves() walks the schema."""
    from lorakit.config.schema import MODE_SECTIONS, LorakitConfig

    for name, info in model.model_fields.items():
        ann = info.annotation
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list else None
        if model is LorakitConfig and name == "mode":
            for section in MODE_SECTIONS.values():
                _walk(section, "mode.", out)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            _walk(ann, f"{prefix}{name}.", out)
        else:
            key = f"{prefix}{name}"
            out.setdefault(key, info.description or HELP_WITHOUT_DESCRIPTION.get(key, ""))
            if isinstance(item, type) and issubclass(item, BaseModel):
                _walk(item, f"{key}.", out)


@lru_cache(maxsize=None)
def field_descriptions() -> dict[str, str]:
    """Every schema field's key → its English help (the pydantic Field description)."""
    from lorakit.config.schema import LorakitConfig

    out: dict[str, str] = {}
    _walk(LorakitConfig, "", out)
    return out


def english_label(name: str) -> str:
    """"learning_rate" → "Learning rate", "lr_warmup_steps" → "LR warmup steps"."""
    words = [_WORD_SPELLING.get(word, word) for word in name.split("_") if word]
    if not words:
        return name
    first = words[0]
    words[0] = first if first in _WORD_SPELLING.values() else first[:1].upper() + first[1:]
    return " ".join(words)


def _key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def field_label(section: str, name: str, lang: str) -> str:
    entry = field_translations(_lang(lang)).get(_key(section, name))
    return (entry or {}).get("label") or english_label(name)


def field_help(section: str, name: str, lang: str) -> str:
    key = _key(section, name)
    entry = field_translations(_lang(lang)).get(key)
    return (entry or {}).get("help") or field_descriptions().get(key, "")


def section_title(section: str, lang: str) -> str:
    translated = field_translations(_lang(lang)).get("sections", {}).get(section)
    return translated or SECTION_TITLES.get(section) or english_label(section.rsplit(".", 1)[-1])


def placeholders(text: str) -> set[str]:
    """The `{names}` a text is formatted with."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def missing(lang: str) -> list[str]:
    """What `lang` lacks that English has: label keys as they are, "fields:<key>.label" / "fields:<key>.help"
    for config fields and "sections:<section>" for section titles."""
    if lang == "en":
        return []
    have = labels(lang) if lang in LANGS else {}
    out = [key for key in labels("en") if key not in have]
    fields = field_translations(lang) if lang in LANGS else {}
    for key, description in field_descriptions().items():
        entry = fields.get(key) or {}
        out += [f"fields:{key}.label"] if not entry.get("label") else []
        out += [f"fields:{key}.help"] if description and not entry.get("help") else []
    sections = fields.get("sections", {})
    out += [f"sections:{name}" for name in SECTION_TITLES if name and name not in sections]
    return out
