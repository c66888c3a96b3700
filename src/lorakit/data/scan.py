"""Find the images of a dataset folder: nested folders, kohya `N_name` repeat folders, dot-files skipped.

Only image headers are read (size and EXIF orientation), so scanning a large folder is quick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".tif", ".tiff", ".bmp", ".webp", ".pcx", ".ico"})
CAPTION_EXTENSIONS = (".txt", ".caption")
PREPARE_LOG = "preprocess_log.csv"
REJECTED_DIR = "rejected"
_REPEAT = re.compile(r"^(\d+)_(.*)$")
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageRecord:
    """One image file found by a scan, with the size it has once upright."""

    path: Path
    rel: str
    folder: Path
    folder_name: str
    repeats: int
    is_reg: bool
    size: tuple[int, int]


def parse_repeats(name: str) -> tuple[int | None, str]:
    """`'10_mychar'` → `(10, 'mychar')`; a name without the prefix → `(None, name)`."""
    match = _REPEAT.match(name)
    if not match:
        return None, name
    return int(match.group(1)), match.group(2)


def is_hidden(rel_parts: tuple[str, ...]) -> bool:
    """A dot-file or anything inside a dot-folder (e.g. `.ipynb_checkpoints`, `.DS_Store`, temp files)."""
    return any(part.startswith(".") for part in rel_parts)


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from the header. A PNG's EXIF is read only when it comes before the pixel data (Pillow
    would otherwise decode the whole image to find it); `prepare` writes PNGs without any."""
    if im.format == "PNG":
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(0x0112, 1))
    return int(im.getexif().get(0x0112, 1))


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as shown: EXIF orientations 5–8 swap the sides. Reads the header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = _orientation(im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot read image {path}: {exc}",
            "remove or re-export the file, or run `lorakit prepare` on the folder to filter bad images",
        ) from exc
    return (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)


def list_images(root: Path) -> list[Path]:
    """Every supported image below `root`, sorted, skipping hidden files and a prepared folder's `rejected/`."""
    skip_rejected = (root / PREPARE_LOG).is_file()
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if is_hidden(rel) or (skip_rejected and rel[0] == REJECTED_DIR):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            found.append(p)
    return sorted(found)


def folder_repeats(root: Path, image: Path, default: int) -> tuple[int, Path]:
    """Repeats of an image from its innermost `N_name` folder (or `default`), and that folder."""
    folder = image.parent
    while folder != root and folder != folder.parent:
        n, _ = parse_repeats(folder.name)
        if n is not None:
            return n, folder
        folder = folder.parent
    return default, image.parent


def scan_folder(root: Path, *, is_reg: bool = False, default_repeats: int = 1, what: str = "train_data_dir"
                ) -> list[ImageRecord]:
    """Scan a dataset folder into records; a missing or empty folder, or unreadable images, raise `DataError`."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", f"set data.{what} to a folder of images")
    records, bad = [], []
    for path in list_images(root):
        repeats, folder = folder_repeats(root, path, default_repeats)
        try:
            size = upright_size(path)
        except DataError as exc:
            bad.append(exc.message)
            continue
        records.append(ImageRecord(
            path=path,
            rel=path.relative_to(root).as_posix(),
            folder=folder,
            folder_name=folder.name if folder != root else root.name,
            repeats=repeats,
            is_reg=is_reg,
            size=size,
        ))
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  … and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(
            f"{len(bad)} unreadable image(s) in {root}:\n  {shown}",
            f"run `lorakit prepare {root} --out <folder>` to set bad files aside, then train on <folder>",
        )
    if not records:
        raise DataError(
            f"no images in {root}",
            f"put image files (with .txt captions) in it; supported: {', '.join(sorted(IMAGE_EXTENSIONS))}",
        )
    return records
