"""Captions: sidecar files, trigger word, metadata templates, and the per-step shuffle / dropout.

Precedence for an image's caption text: `caption_template` (filled from its metadata row) → its caption file
(`caption_extension`, then the other of `.txt`/`.caption`; `.txt` wins by default) → the metadata row's
`caption`/`text` column → the folder's class tokens (if enabled) → empty. The trigger word is then prepended.

Per use, `vary` applies sd-scripts' caption options as its `BaseDataset.process_caption` (library/train_util.py)
composes them: whole-caption dropout, then wildcards (one random line of a multi-line file, one choice of each
`{a|b}`), then — only with shuffling or tag dropout — the tags split into a fixed head (`keep_tokens`, or the part
before `keep_tokens_separator`), the flexible middle and a fixed suffix (after a second separator), then the
secondary separator written back as the caption separator. The trigger word always stays first.
"""

from __future__ import annotations

import csv
import json
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .scan import CAPTION_EXTENSIONS, ImageRecord, parse_repeats
from .settings import DataSection

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
    secondary_separator: str | None = None  # tags joined by it are one tag until written back as `separator`
    wildcard: bool = False  # `{a|b}` picks one; a multi-line caption file picks one line per use
    keep_tokens_separator: str = ""  # fixed part before it, fixed suffix after a second one

    @property
    def varies(self) -> bool:
        """Whether the caption of an image can change from step to step (so text outputs cannot be cached)."""
        return self.shuffle or self.dropout_rate > 0 or self.tag_dropout_rate > 0 or self.wildcard

    def join(self, tags: list[str]) -> str:
        """Tags joined with the separator (and a space after a comma)."""
        sep = self.separator + " " if self.separator.strip() else self.separator
        return sep.join(tags)

    def split(self, text: str) -> list[str]:
        """Non-empty, stripped tags of a caption."""
        return [t.strip() for t in text.split(self.separator) if t.strip()]


def caption_rules_from(cfg: DataSection) -> CaptionRules:
    """The caption settings of a `[data]` section; reads every caption field, so each run reads them all."""
    return CaptionRules(
        trigger_word=cfg.trigger_word,
        extension=cfg.caption_extension,
        template=cfg.caption_template,
        class_tokens=cfg.class_tokens_from_folder,
        separator=cfg.caption_separator,
        shuffle=cfg.shuffle_caption,
        keep_tokens=cfg.keep_tokens,
        dropout_rate=cfg.caption_dropout_rate,
        tag_dropout_rate=cfg.caption_tag_dropout_rate,
        secondary_separator=cfg.secondary_separator,
        wildcard=cfg.enable_wildcard,
        keep_tokens_separator=cfg.keep_tokens_separator,
    )


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
    return Caption(_caption_text(record, rules, meta, wildcard_lines(text, rules)), side, side is not None and not text)


def wildcard_lines(text: str, rules: CaptionRules) -> str:
    """With wildcards, a caption file's non-empty lines, stripped, one per line (`vary` picks one per use), as
    sd-scripts' `read_caption` (library/train_util.py) keeps them; otherwise the text as it is."""
    if not rules.wildcard:
        return text
    return "\n".join(line.strip() for line in text.split("\n") if line.strip())


def write_back_secondary(caption: str, rules: CaptionRules) -> str:
    """The secondary separator replaced by the caption separator (sd-scripts: exactly that string, no space)."""
    if not rules.secondary_separator:
        return caption
    return caption.replace(rules.secondary_separator, rules.separator)


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
    """An image's caption as planned: the trigger word prepended (or alone when the caption is empty). When
    captions do not vary per use, the secondary separator is written back here, once; otherwise `vary` does it
    after shuffling."""
    trigger = rules.trigger_word.strip()
    caption = (rules.join([trigger, text]) if text else trigger) if trigger else text
    return caption if rules.varies else write_back_secondary(caption, rules)


def pick_wildcards(text: str, rng: random.Random) -> str:
    """One random line of a multi-line caption, then one random option of each `{a|b|c}`; `{{` and `}}` are
    literal braces (sd-scripts' `process_caption` with enable_wildcard)."""
    if "\n" in text:
        text = rng.choice(text.split("\n"))
    open_mark, close_mark = "⦅", "⦆"  # stand-ins for escaped braces, lengthened until the text has none
    while open_mark in text or close_mark in text:
        open_mark, close_mark = open_mark + "⦅", close_mark + "⦆"
    text = text.replace("{{", open_mark).replace("}}", close_mark)
    text = re.sub(r"\{([^}]+)\}", lambda m: rng.choice(m.group(1).split("|")), text)
    return text.replace(open_mark, "{").replace(close_mark, "}")


def tag_groups(body: str, rules: CaptionRules) -> tuple[list[str], list[str], list[str]]:
    """(fixed head, flexible tags, fixed suffix): split at `keep_tokens_separator` when the caption has it (a second
    one starts the suffix), else the first `keep_tokens` tags are the head."""
    mark = rules.keep_tokens_separator
    if mark and mark in body:
        fixed, flex = body.split(mark, 1)
        suffix = ""
        if mark in flex:
            flex, suffix = flex.split(mark, 1)
        return rules.split(fixed), rules.split(flex), rules.split(suffix)
    tags = rules.split(body)
    return tags[: rules.keep_tokens], tags[rules.keep_tokens:], []


def vary(caption: str, rules: CaptionRules, rng: random.Random) -> str:
    """One step's version of a caption (see the module docstring for the order, which is sd-scripts').

    Tag dropout draws before the shuffle (sd-scripts shuffles first): each flexible tag is kept independently and
    the survivors are in uniformly random order either way, so the captions have the same distribution; the order
    stays lorakit's so runs from before these options draw the same numbers."""
    if not rules.varies:
        return caption
    if rules.dropout_rate > 0 and rng.random() < rules.dropout_rate:
        return ""
    head: list[str] = []
    body = caption
    trigger = rules.trigger_word.strip()
    if trigger and caption.startswith(trigger):
        head, body = [trigger], caption[len(trigger):].lstrip(rules.separator + " ")
    if rules.wildcard:
        body = pick_wildcards(body, rng)
    if rules.shuffle or rules.tag_dropout_rate > 0:
        fixed, rest, suffix = tag_groups(body, rules)
        if rules.tag_dropout_rate > 0:
            rest = [t for t in rest if rng.random() >= rules.tag_dropout_rate]
        if rules.shuffle:
            rng.shuffle(rest)
        text = ", ".join(head + fixed + rest + suffix)  # process_caption joins with ", " whatever the separator
    else:  # sd-scripts leaves the text as it is (a keep_tokens_separator in it too)
        text = rules.join(head + [body]) if body else rules.join(head)
    return write_back_secondary(text, rules)
