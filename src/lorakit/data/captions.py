"""Captions: sidecar files, trigger word, metadata templates, and the per-step shuffle / dropout.

Precedence for an image's caption text: `caption_template` (filled from its metadata row) → its caption file
(`caption_extension`, then the other of `.txt`/`.caption`; `.txt` wins by default) → the metadata row's
`caption`/`text` column → the folder's class tokens (if enabled) → empty. The trigger word is then prepended.
"""

from __future__ import annotations

import csv
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .scan import CAPTION_EXTENSIONS, ImageRecord, parse_repeats

_KEY_COLUMNS = ("file_name", "file", "filename", "image", "path")
Metadata = dict[str, dict[str, str]]


def caption_file(image: Path, extension: str = ".txt") -> Path | None:
    """The caption file of an image: `extension` first, then the other caption extensions."""
    order = [extension] + [e for e in CAPTION_EXTENSIONS if e != extension]
    for ext in order:
        side = image.with_suffix(ext)
        if side.is_file():
            return side
    return None


def read_text(path: Path) -> str:
    """A caption file's text, stripped; a file that is not UTF-8 is a `DataError` naming it."""
    try:
        return path.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        raise DataError(f"caption file {path} is not UTF-8 text", "re-save it as UTF-8") from exc
    except OSError as exc:
        raise DataError(f"cannot read caption file {path}: {exc.strerror or exc}", "check its permissions") from exc


def _row_key(row: dict[str, Any], source: Path, index: int) -> str:
    for col in _KEY_COLUMNS:
        if row.get(col):
            return str(row[col]).replace("\\", "/")
    raise DataError(
        f"{source}: row {index + 1} names no image",
        f"give every row a '{_KEY_COLUMNS[0]}' column with the image's file name or relative path",
    )


def load_metadata(path: Path) -> Metadata:
    """Rows of a CSV / JSON (a list of objects, or an object keyed by file name) / JSONL metadata file, keyed by
    the image's relative path or file name."""
    if not path.is_file():
        raise DataError(f"caption metadata file not found: {path}", "set data.caption_metadata to a CSV/JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read metadata file {path}: {exc}", "save it as UTF-8 CSV or JSON") from exc
    try:
        if path.suffix.lower() == ".csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(text.splitlines()))
        elif path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
            rows = [{"file_name": k, **v} for k, v in data.items()] if isinstance(data, dict) else list(data)
    except (json.JSONDecodeError, csv.Error, TypeError, AttributeError) as exc:
        raise DataError(f"cannot parse caption metadata {path}: {exc}", "check the file's syntax") from exc
    out: Metadata = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i + 1} is not an object", "each row must map column names to values")
        out[_row_key(row, path, i)] = {k: "" if v is None else str(v) for k, v in row.items()}
    return out


def metadata_row(meta: Metadata, record: ImageRecord) -> dict[str, str] | None:
    """The metadata row of an image: by relative path, then file name, then stem."""
    for key in (record.rel, record.path.name, record.path.stem):
        if key in meta:
            return meta[key]
    return None


def fill_template(template: str, values: dict[str, str], image: Path) -> str:
    """`template` with `{column}` placeholders filled; a missing column is a `DataError` naming image and column."""
    missing = [name for _, name, _, _ in string.Formatter().parse(template) if name and name not in values]
    if missing:
        raise DataError(
            f"caption template needs {', '.join(repr(m) for m in missing)} but image {image} has no such value",
            f"available: {', '.join(sorted(values)) or 'none'}; fix data.caption_template or the metadata file",
        )
    try:
        return template.format_map(values).strip()
    except (ValueError, IndexError) as exc:
        raise DataError(f"invalid caption template {template!r}: {exc}", "use {column} placeholders") from exc


@dataclass(frozen=True)
class CaptionRules:
    """How captions are built and varied per step."""

    trigger_word: str = ""
    extension: str = ".txt"
    template: str = ""
    class_tokens: bool = False
    separator: str = ","
    shuffle: bool = False
    keep_tokens: int = 0
    dropout_rate: float = 0.0
    tag_dropout_rate: float = 0.0

    @property
    def varies(self) -> bool:
        """Whether the caption of an image can change from step to step (so text outputs cannot be cached)."""
        return self.shuffle or self.dropout_rate > 0 or self.tag_dropout_rate > 0

    def join(self, tags: list[str]) -> str:
        """Tags joined with the separator (and a space after a comma)."""
        sep = self.separator + " " if self.separator.strip() else self.separator
        return sep.join(tags)

    def split(self, text: str) -> list[str]:
        """Non-empty, stripped tags of a caption."""
        return [t.strip() for t in text.split(self.separator) if t.strip()]


@dataclass(frozen=True)
class Caption:
    """An image's caption text (without trigger word), its caption file, and whether that file holds no text
    (0 bytes or whitespace only: the image then trains as if it had no caption file)."""

    text: str
    file: Path | None
    file_empty: bool = False


def image_caption(record: ImageRecord, rules: CaptionRules, meta: Metadata | None) -> Caption:
    """The caption of an image with where it came from (see the module docstring for the precedence)."""
    side = caption_file(record.path, rules.extension)
    text = read_text(side) if side else ""
    return Caption(_caption_text(record, rules, meta, text), side, side is not None and not text)


def _caption_text(record: ImageRecord, rules: CaptionRules, meta: Metadata | None, text: str) -> str:
    """The caption text from the caption file's `text`, the metadata row, the template or the folder name."""
    row = metadata_row(meta, record) if meta is not None else None
    if meta is not None and row is None and rules.template:
        raise DataError(
            f"image {record.path} has no row in the caption metadata",
            f"add a row whose file_name is '{record.rel}' or '{record.path.name}'",
        )
    if rules.template:
        values = {**(row or {}), "caption": text, "stem": record.path.stem, "folder": record.folder_name}
        filled = fill_template(rules.template, values, record.path)
        return rules.join(rules.split(filled))  # empty placeholders leave no stray commas
    if not text and row:
        text = (row.get("caption") or row.get("text") or "").strip()
    if not text and rules.class_tokens:
        text = parse_repeats(record.folder_name)[1].replace("_", " ").strip()
    return text


def with_trigger(text: str, rules: CaptionRules) -> str:
    """The trigger word prepended to a caption (or alone when the caption is empty)."""
    trigger = rules.trigger_word.strip()
    if not trigger:
        return text
    return rules.join([trigger, text]) if text else trigger


def vary(caption: str, rules: CaptionRules, rng: random.Random) -> str:
    """One step's version of a caption: tags after the trigger word and `keep_tokens` shuffled and dropped,
    and the whole caption dropped with `dropout_rate` (kohya semantics)."""
    if not rules.varies:
        return caption
    if rules.dropout_rate > 0 and rng.random() < rules.dropout_rate:
        return ""
    head: list[str] = []
    body = caption
    trigger = rules.trigger_word.strip()
    if trigger and caption.startswith(trigger):
        head, body = [trigger], caption[len(trigger):].lstrip(rules.separator + " ")
    tags = rules.split(body)
    kept, rest = tags[: rules.keep_tokens], tags[rules.keep_tokens:]
    if rules.tag_dropout_rate > 0:
        rest = [t for t in rest if rng.random() >= rules.tag_dropout_rate]
    if rules.shuffle:
        rng.shuffle(rest)
    return rules.join(head + kept + rest)
