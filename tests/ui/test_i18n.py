"""The UI's translations: every config field and label has its Japanese text, and what is missing falls back to
English (kohya_ss GUI and TrainTrain show English where a translation lacks a string)."""

from __future__ import annotations

import json
import string
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from lorakit.config.schema import MODE_SECTIONS, LorakitConfig, TrainSection
from lorakit.ui import i18n

LOCALES = Path(i18n.__file__).parent / "locales"
SECTIONS = ("model", "network", "data", "train", "output", "sample", "mode", "checkpoint", "faults", "bench", "batch",
            "storage")


def schema_fields(model: type[BaseModel] = LorakitConfig, prefix: str = "") -> dict[str, str | None]:
    """Field key → description, walked here on its own: nested sections by dotted path, a list of tables by the
    list's own key and its item's fields, every [mode] section's fields under "mode."."""
    out: dict[str, str | None] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        if model is LorakitConfig and name == "mode":
            for section in MODE_SECTIONS.values():
                for key, description in schema_fields(section, "mode.").items():
                    out.setdefault(key, description)
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(schema_fields(ann, f"{prefix}{name}."))
            continue
        out[f"{prefix}{name}"] = info.description
        args = typing.get_args(ann)
        if typing.get_origin(ann) is list and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            out.update(schema_fields(args[0], f"{prefix}{name}."))
    return out


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def fields_ja() -> dict:
    return read(LOCALES / "fields.ja.json")


def names_in_braces(text: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        pytest.fail(f"unbalanced braces in {text!r}: {exc}")


def test_the_schema_walk_sees_every_kind_of_field() -> None:
    keys = schema_fields()
    for key in ("version", "train.learning_rate", "data.subsets", "data.subsets.image_dir", "mode.type",
                "mode.prior_loss_weight", "mode.prompts.target_prompt", "mode.second_pass.network_dim",
                "batch.worker_id", "storage.empty_trash"):
        assert key in keys
    assert {key.split(".")[0] for key in keys} == set(SECTIONS) | {"version"}


def test_every_schema_field_has_a_japanese_label_and_help() -> None:
    translations = fields_ja()
    lacking = [key for key in schema_fields() if not (translations.get(key, {}).get("label")
                                                      and translations.get(key, {}).get("help"))]
    assert not lacking, f"fields.ja.json lacks the label or help of: {lacking}"


def test_fields_ja_has_no_stale_keys() -> None:
    stale = set(fields_ja()) - set(schema_fields()) - {"sections"}
    assert not stale, f"fields.ja.json has keys the schema no longer has: {sorted(stale)}"


def test_every_section_has_a_japanese_title() -> None:
    for section in SECTIONS:
        title = i18n.section_title(section, "ja")
        assert title and title != i18n.section_title(section, "en"), section
    assert i18n.section_title("train", "ja") == fields_ja()["sections"]["train"]


def test_field_help_is_the_schema_description_in_english_and_fields_ja_in_japanese() -> None:
    assert i18n.field_help("train", "learning_rate", "en") == TrainSection.model_fields["learning_rate"].description
    assert i18n.field_help("train", "learning_rate", "ja") == fields_ja()["train.learning_rate"]["help"]
    assert i18n.field_label("train", "learning_rate", "ja") == fields_ja()["train.learning_rate"]["label"]
    assert i18n.field_label("train", "learning_rate", "en") == "Learning rate"
    assert i18n.field_label("train", "learning_rate", "xx") == "Learning rate"  # unknown language: English
    for key, description in schema_fields().items():
        section, _, name = key.rpartition(".")
        if description:
            assert i18n.field_help(section, name, "en") == description, key
        assert i18n.field_help(section, name, "en"), f"{key} has no English help"


def test_field_help_keeps_the_placeholders_and_option_names() -> None:
    translations = fields_ja()
    for key, description in schema_fields().items():
        if description:
            assert names_in_braces(translations[key]["help"]) == names_in_braces(description), key


def label_files(lang: str) -> dict[str, Path]:
    return {path.name.removesuffix(f".{lang}.json"): path for path in LOCALES.glob(f"*.{lang}.json")
            if path.name != f"fields.{lang}.json"}


def test_every_label_file_has_both_languages_with_the_same_keys_and_placeholders() -> None:
    english, japanese = label_files("en"), label_files("ja")
    assert set(english) == set(japanese), "each locales/<module>.en.json needs its <module>.ja.json and vice versa"
    for module, path in english.items():
        en, ja = read(path), read(japanese[module])
        assert set(en) == set(ja), f"{module}: only in en {set(en) - set(ja)}, only in ja {set(ja) - set(en)}"
        for key, text in en.items():
            assert names_in_braces(ja[key]) == names_in_braces(text), f"{module}: {key}"


def test_missing_is_empty_for_the_shipped_japanese() -> None:
    assert i18n.missing("ja") == []
    assert i18n.missing("en") == []


@pytest.fixture
def fake_locales(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A locales folder of our own, the caches cleared before and after."""
    (tmp_path / "demo.en.json").write_text(json.dumps({
        "demo.start": "Start", "demo.steps": "{done} of {total} steps", "demo.only_en": "Only English"}))
    (tmp_path / "demo.ja.json").write_text(json.dumps({
        "demo.start": "開始", "demo.steps": "{total} ステップ中 {done}"}, ensure_ascii=False))
    monkeypatch.setattr(i18n, "LOCALES", tmp_path)
    caches = (i18n.labels, i18n.field_translations)
    for cache in caches:
        cache.cache_clear()
    yield tmp_path
    for cache in caches:
        cache.cache_clear()


def test_t_translates_formats_and_falls_back(fake_locales: Path) -> None:
    assert i18n.t("demo.start", "ja") == "開始"
    assert i18n.t("demo.start", "en") == "Start"
    assert i18n.t("demo.steps", "ja", done=3, total=10) == "10 ステップ中 3"
    assert i18n.t("demo.steps", "en", done=3, total=10) == "3 of 10 steps"
    assert i18n.t("demo.only_en", "ja") == "Only English"  # missing in ja → English
    assert i18n.t("demo.start", "fr") == "Start"  # unknown language → English
    assert i18n.t("demo.nowhere", "ja") == "demo.nowhere"  # missing everywhere → the key
    assert i18n.t("demo.steps", "ja", done=3) == "{total} ステップ中 {done}"  # a value short: never raises


def test_t_reads_the_files_once(fake_locales: Path) -> None:
    assert i18n.t("demo.start", "ja") == "開始"
    (fake_locales / "demo.ja.json").write_text(json.dumps({"demo.start": "changed"}))
    assert i18n.t("demo.start", "ja") == "開始"


def test_missing_lists_labels_and_fields(fake_locales: Path) -> None:
    lacking = i18n.missing("ja")
    assert "demo.only_en" in lacking and "demo.start" not in lacking
    # this folder has no fields.ja.json: every field and section title is missing, and shows in English
    assert "fields:train.learning_rate.label" in lacking and "fields:train.learning_rate.help" in lacking
    assert "sections:train" in lacking
    assert i18n.field_label("train", "learning_rate", "ja") == "Learning rate"
    assert i18n.field_help("train", "learning_rate", "ja") == TrainSection.model_fields["learning_rate"].description
