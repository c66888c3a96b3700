"""Find the images of a dataset folder: nested folders, kohya `N_name` repeat folders, dot-files skipped.

`scan_kohya` reads a folder as sd-scripts does instead (`data.layout = "kohya"`): see its docstring;
`scan_kohya_subsets` reads sd-scripts' dataset subsets (`data.subsets`), each folder as one 'N_name' folder.

Only image headers are read (size and EXIF orientation), so scanning a large folder is quick. Symlinked
sub-folders are followed (each real folder once, so a link to an ancestor cannot loop); their images take their
repeats from the link's name (`10_linked -> /elsewhere/imgs` gives 10 repeats).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .settings import Subset

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
    class_tokens: str | None = None  # kohya layout: the folder name after 'N_' (sd-scripts' class tokens)


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


def pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit in pixels (`Image.MAX_IMAGE_PIXELS`; None when switched off).

    Pillow refuses to open an image above twice this many pixels and warns (without naming the file) above it."""
    return Image.MAX_IMAGE_PIXELS


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as shown: EXIF orientations 5–8 swap the sides. Reads the header only.

    An image that Pillow refuses as a possible decompression bomb (more than 2 × `pixel_limit()` pixels) is a
    `DataError` naming the file. Pillow's nameless warning between 1× and 2× the limit is silenced here: such an
    image opens, and the plan names it (see `pipeline.DatasetPlan.large_images`).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                orientation = _orientation(im)
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image {path} is too large: Pillow refuses to open it as a possible decompression bomb ({exc})",
            "shrink it, or run `lorakit prepare` on the folder (it sets such files aside as too_large)",
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot read image {path}: {exc}",
            "remove or re-export the file, or run `lorakit prepare` on the folder to filter bad images",
        ) from exc
    return (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)


def _folder_key(path: str) -> tuple[int, int] | None:
    """(device, inode) of the real folder behind `path` (links followed); None when it cannot be reached."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _real_folders(root: Path, skip_rejected: bool) -> dict[tuple[int, int], str]:
    """(device, inode) → path of every folder below `root` reached without following a link (hidden ones and a
    prepared folder's `rejected/` left out), and `root` itself."""
    found: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, _ in os.walk(root):
        key = _folder_key(dirpath)
        if key is not None:
            found.setdefault(key, dirpath)
        top = dirpath == str(root)
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and not (skip_rejected and top and d == REJECTED_DIR)]
    return found


def list_images(root: Path, notes: list[str] | None = None) -> list[Path]:
    """Every supported image below `root`, sorted, skipping hidden files and a prepared folder's `rejected/`.

    Symlinked folders are followed, and each real folder is scanned once: a folder inside `root` is scanned at
    its own path, so a link to it (or to an ancestor: a loop) is skipped, as is a second link to the same folder
    elsewhere. Paths keep the link's name. Skipped links and folders that cannot be listed are appended to `notes`
    (when given), one line each.
    """
    root = Path(root)
    skip_rejected = (root / PREPARE_LOG).is_file()
    real = _real_folders(root, skip_rejected)
    seen: dict[tuple[int, int], str] = {}
    found = []

    def unreadable(exc: OSError) -> None:
        if notes is not None and exc.filename and Path(exc.filename) != root:
            notes.append(f"{exc.filename}: folder cannot be read ({exc.strerror or exc}); its images are not used")

    def skip(path: str, target: str) -> None:
        if notes is not None:
            notes.append(f"{path} links to {target}, which is scanned already; skipped (each folder is used once)")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        keep = []
        for name in sorted(dirnames):
            if name.startswith(".") or (skip_rejected and dirpath == str(root) and name == REJECTED_DIR):
                continue
            full = os.path.join(dirpath, name)
            key = _folder_key(full)
            if key is None:  # a dangling link
                continue
            owner = real.get(key)
            if owner is not None and owner != full:
                skip(full, owner)
            elif key in seen:
                skip(full, seen[key])
            else:
                seen[key] = full
                keep.append(name)
        dirnames[:] = keep
        for name in filenames:
            p = Path(dirpath, name)
            if not name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
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


def scan_folder(root: Path, *, is_reg: bool = False, default_repeats: int = 1, what: str = "train_data_dir",
                notes: list[str] | None = None) -> list[ImageRecord]:
    """Scan a dataset folder into records; a missing or empty folder, or unreadable images, raise `DataError`.

    Unreadable images — damaged files, and images so large that Pillow refuses them as possible decompression
    bombs — are refused all at once (one error listing every one), never skipped: skipping would quietly train on
    fewer images than the folder holds and change the step counts the user planned with. `lorakit prepare` is the
    tool that sets such files aside, visibly (in `rejected/`, with the reason in its log), and the error says so.
    Skipped symlinks and unreadable sub-folders are appended to `notes` (see `list_images`).
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", f"set data.{what} to a folder of images")
    records, bad = [], []
    for path in list_images(root, notes):
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


# -- kohya layout: sd-scripts' DreamBooth folders ------------------------------------------------------------------

# sd-scripts' train_util.IMAGE_EXTENSIONS (without .avif/.jxl, which need optional Pillow plugins there). glob_images
# globs '*' + each: on Linux and macOS that matches these exact spellings only (.png and .PNG, not .Png), and '*'
# never matches a name starting with '.'.
KOHYA_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP")


def kohya_repeats(name: str) -> tuple[int, str] | None:
    """config_util.generate_dreambooth_subsets_config_by_subdirs: `int()` of the text before the first '_' is the
    repeat count, the rest (joined back with '_') the class tokens; None when the prefix is not an integer."""
    tokens = name.split("_")
    try:
        repeats = int(tokens[0])
    except ValueError:
        return None
    return repeats, "_".join(tokens[1:])


def is_kohya_image(name: str) -> bool:
    """Whether sd-scripts' glob_images picks up a file of this name."""
    return not name.startswith(".") and name.endswith(KOHYA_IMAGE_EXTENSIONS)


def _note_unused(root: Path, notes: list[str], skipped: list[str], zero: list[str], loose: list[Path],
                 nested: list[Path], other: list[Path]) -> None:
    """The plan's warnings: what the kohya layout leaves out that the lorakit layout would have used."""
    if skipped:
        notes.append(f"{root}: folder(s) without a number before '_' are not used (kohya layout, as sd-scripts): "
                     f"{', '.join(skipped)} — rename them 'N_name' (N = repeats)")
    if zero:
        notes.append(f"{root}: folder(s) with fewer than 1 repeat are not used: {', '.join(zero)}")
    if loose:
        notes.append(f"{root}: {len(loose)} image(s) directly in the folder are not used (kohya layout reads only "
                     f"'N_name' sub-folders): {', '.join(p.name for p in loose[:5])}{' …' if len(loose) > 5 else ''}")
    if nested:
        notes.append(f"{root}: sub-folders inside 'N_name' folders are not read (kohya layout, no recursion): "
                     f"{', '.join(str(p.relative_to(root)) for p in nested[:5])}{' …' if len(nested) > 5 else ''}")
    if other:
        notes.append(f"{root}: {len(other)} file(s) are not images to sd-scripts (it reads "
                     f"{'/'.join(KOHYA_IMAGE_EXTENSIONS[:5])}, all lower or all upper case): "
                     f"{', '.join(str(p.relative_to(root)) for p in other[:5])}{' …' if len(other) > 5 else ''}")


def _kohya_folder(folder: Path, root: Path, repeats: int, class_tokens: str, is_reg: bool, bad: list[str],
                  nested: list[Path], other: list[Path]) -> list[ImageRecord]:
    """The images of one sd-scripts DreamBooth folder (load_dreambooth_dir: glob_images, not recursive, sorted);
    unreadable images go to `bad`, sub-folders to `nested`, images sd-scripts does not read to `other`."""
    records = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            nested.append(path)
        elif is_kohya_image(path.name) and path.is_file():
            try:
                size = upright_size(path)
            except DataError as exc:
                bad.append(exc.message)
                continue
            records.append(ImageRecord(path, path.relative_to(root).as_posix(), folder, folder.name, repeats,
                                       is_reg, size, class_tokens))
        elif path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            other.append(path)
    return records


def _refuse_unreadable(root: Path, bad: list[str]) -> None:
    if bad:
        shown = "\n  ".join(bad[:10]) + (f"\n  … and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{len(bad)} unreadable image(s) in {root}:\n  {shown}",
                        f"run `lorakit prepare {root} --out <folder>` to set bad files aside, then train on <folder>")


def scan_kohya(root: Path, *, is_reg: bool = False, what: str = "train_data_dir",
               notes: list[str] | None = None) -> list[ImageRecord]:
    """Scan a folder as sd-scripts' DreamBooth layout does (config_util + train_util.DreamBoothDataset).

    Only sub-folders named 'N_name' (N ≥ 1) count, each with N repeats and 'name' as class tokens; images in the
    root and folders inside those sub-folders are not used; an image is a file whose name ends in one of
    `KOHYA_IMAGE_EXTENSIONS`. sd-scripts lists the sub-folders in file-system order; lorakit sorts them by name
    (the order only matters for which regularisation images get the extra repeats). What is left out is
    appended to `notes`. Errors as `scan_folder`.
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}", f"set data.{what} to a folder of images")
    records, bad = [], []
    skipped: list[str] = []
    zero: list[str] = []
    nested: list[Path] = []
    other: list[Path] = []
    loose = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        parsed = kohya_repeats(folder.name)
        if parsed is None:
            if not folder.name.startswith(".") and folder.name != REJECTED_DIR:
                skipped.append(folder.name)
            continue
        repeats, class_tokens = parsed
        if repeats < 1:
            zero.append(folder.name)
            continue
        records += _kohya_folder(folder, root, repeats, class_tokens, is_reg, bad, nested, other)
    if notes is not None:
        _note_unused(root, notes, skipped, zero, loose, nested, other)
    _refuse_unreadable(root, bad)
    if not records:
        raise DataError(
            f"no images in the 'N_name' sub-folders of {root} (data.layout = 'kohya' reads only those, as sd-scripts)",
            f"put the images in a sub-folder such as {root / '10_name'}, or set data.layout = 'lorakit'",
        )
    return records


def _subset_notes(key: str, folder: Path, nested: list[Path], other: list[Path]) -> list[str]:
    out = []
    if nested:
        out.append(f"{key} = {folder}: sub-folders are not read (sd-scripts reads image_dir alone, not recursively): "
                   f"{', '.join(p.name for p in nested[:5])}{' …' if len(nested) > 5 else ''}")
    if other:
        out.append(f"{key} = {folder}: {len(other)} file(s) are not images to sd-scripts (it reads "
                   f"{'/'.join(KOHYA_IMAGE_EXTENSIONS[:5])}, all lower or all upper case): "
                   f"{', '.join(p.name for p in other[:5])}{' …' if len(other) > 5 else ''}")
    return out


def scan_kohya_subsets(subsets: list[Subset], notes: list[str] | None = None
                       ) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, regularisation) records of sd-scripts' dataset subsets, in their order (train_util.DreamBoothDataset
    .__init__ with its load_dreambooth_dir): each image_dir is read as one 'N_name' folder (glob_images: not
    recursive, its extensions and case rule, sorted), with the subset's num_repeats, is_reg and class_tokens.

    As sd-scripts, a subset without images is skipped with a warning (in `notes`), and so is a later subset of
    the same image_dir (the first counts; sd-scripts compares the strings, lorakit the paths). A missing folder is
    an error, where sd-scripts warns and skips it: a mistyped path would quietly train on less. So is a dataset
    whose training subsets hold no image (sd-scripts then stops with "No data found").
    """
    train: list[ImageRecord] = []
    reg: list[ImageRecord] = []
    seen: dict[Path, int] = {}
    empty: list[str] = []
    for i, subset in enumerate(subsets):
        key, folder = f"data.subsets[{i}].image_dir", Path(subset.image_dir)
        if folder in seen:
            if notes is not None:
                notes.append(f"{key} = {folder}: the same folder as data.subsets[{seen[folder]}]; this subset is "
                             "skipped, as sd-scripts skips a duplicated subset — remove it")
            continue
        seen[folder] = i
        if not folder.is_dir():
            raise DataError(f"{key} = {subset.image_dir}: folder not found",
                            f"set {key} to a folder of images (relative paths start at the working directory)")
        bad: list[str] = []
        nested: list[Path] = []
        other: list[Path] = []
        found = _kohya_folder(folder, folder, subset.num_repeats, subset.class_tokens, subset.is_reg, bad, nested,
                              other)
        _refuse_unreadable(folder, bad)
        if notes is not None:
            notes += _subset_notes(key, folder, nested, other)
        if not found:
            empty += [] if subset.is_reg else [key]
            if notes is not None:
                notes.append(f"{key} = {folder}: no images sd-scripts reads in it (only "
                             f"{'/'.join(KOHYA_IMAGE_EXTENSIONS[:5])} directly in the folder); the subset is "
                             "skipped, as sd-scripts does")
        (reg if subset.is_reg else train).extend(found)
    if not train:
        why = f"{', '.join(empty)} hold(s) no images" if empty else "every subset has is_reg = true"
        raise DataError(f"no training images in data.subsets: {why}",
                        "put .png/.jpg/.jpeg/.webp/.bmp images directly in a subset's image_dir (is_reg = false)")
    return train, reg


def kohya_reg_repeats(reg: list[ImageRecord], train_uses: int) -> list[ImageRecord]:
    """The regularisation images sd-scripts registers, with their repeats (DreamBoothDataset.__init__): whole images
    with their folder's repeats, in order, until the training count (images × repeats) is reached — the last one
    may overshoot it; if all are registered and the count is still short, one more repeat per image in turn until
    it is reached. Images after the one that reaches the count are not used."""
    used: list[ImageRecord] = []
    n = 0
    for rec in reg:
        if n >= train_uses:
            break
        used.append(rec)
        n += rec.repeats
    extra = [0] * len(used)
    i = 0
    while n < train_uses and used:
        extra[i] += 1
        n += 1
        i = (i + 1) % len(used)
    return [replace(rec, repeats=rec.repeats + k) if k else rec for rec, k in zip(used, extra)]


# -- loss masks: sd-scripts' conditioning_data_dir --------------------------------------------------------------------

@dataclass
class MaskFiles:
    """Mask files matched to images (data.conditioning_data_dir): `found` image → mask, `missing` images without
    one, `unused` files of the folder that no image took."""

    found: dict[Path, Path]
    missing: list[Path]
    unused: list[Path]


def _mask_in(folder: Path, stem: str, names: set[str]) -> Path | None:
    """sd-scripts' glob_images(folder, stem): '<stem><ext>' for each of its extensions, sorted, the first."""
    hits = sorted(stem + ext for ext in KOHYA_IMAGE_EXTENSIONS if stem + ext in names)
    return folder / hits[0] if hits else None


def match_masks(folder: Path, images: list[ImageRecord]) -> MaskFiles:
    """Each image's mask in `folder`: the file with the image's name (without extension) and one of sd-scripts'
    image extensions (ControlNetDataset.__init__: glob_images(conditioning_data_dir, basename), first when
    sorted). An image in a sub-folder of its dataset folder looks first in the same sub-folder of `folder`
    (lorakit's nested folders: two images of one name each get their own), then in `folder` itself, as sd-scripts."""
    listings: dict[Path, set[str]] = {}

    def names(where: Path) -> set[str]:
        if where not in listings:
            listings[where] = {p.name for p in where.iterdir() if p.is_file()} if where.is_dir() else set()
        return listings[where]

    found: dict[Path, Path] = {}
    missing: list[Path] = []
    for rec in images:
        stem = os.path.splitext(rec.path.name)[0]
        sub = folder / Path(rec.rel).parent
        mask = (_mask_in(sub, stem, names(sub)) if sub != folder else None) or _mask_in(folder, stem, names(folder))
        if mask is None:
            missing.append(rec.path)
        else:
            found[rec.path] = mask
    taken = set(found.values())
    unused = sorted(folder / n for n in names(folder) if is_kohya_image(n) and folder / n not in taken)
    return MaskFiles(found, missing, unused)
