"""What the data side reports instead of surprising the user: oversized images, symlinked folders, empty caption
files, images without captions and images that buckets crop heavily."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from lorakit.data.buckets import cropped_fraction
from lorakit.data.pipeline import build_dataset
from lorakit.data.scan import list_images, scan_folder
from lorakit.data.settings import DataSection
from lorakit.errors import DataError


def png_header(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose IHDR claims `width` × `height` (valid chunks and CRCs; the pixel data is not there)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def img(path: Path, size: tuple[int, int] = (64, 64), caption: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


def cfg(root: Path, **kw) -> DataSection:
    return DataSection(**{"train_data_dir": str(root), "resolution": 64, "min_bucket_reso": 64, **kw})


# -- decompression bombs ----------------------------------------------------------------------------------------
def test_decompression_bomb_is_refused_by_name(tmp_path: Path) -> None:
    """60000 × 60000 is over twice Pillow's limit: Pillow raises DecompressionBombError (not an OSError)."""
    img(tmp_path / "1_x" / "good.png")
    bomb = png_header(tmp_path / "1_x" / "bomb.png", 60000, 60000)
    assert bomb.stat().st_size < 200
    with pytest.raises(DataError) as info:
        scan_folder(tmp_path)
    err = info.value
    assert err.message.startswith(f"1 unreadable image(s) in {tmp_path}:")
    assert f"image {bomb} is too large" in err.message and "decompression bomb" in err.message
    assert "3600000000 pixels" in err.message
    assert err.hint is not None and f"lorakit prepare {tmp_path}" in err.hint


def test_image_between_one_and_two_times_the_limit_opens_and_is_named(tmp_path: Path, recwarn) -> None:
    """Pillow only warns (without a file name) between 1× and 2× its limit: the scan keeps the image, silently,
    and the dataset names it so the plan can."""
    big = png_header(tmp_path / "big.png", 12000, 12000)  # 144 MP: over 89.5 MP, under 179 MP
    img(tmp_path / "small.png")
    records = {r.path.name: r for r in scan_folder(tmp_path)}
    assert records["big.png"].size == (12000, 12000)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    plan = build_dataset(cfg(tmp_path), 1, 0, fingerprints=False)
    assert plan.large_images == [(big, (12000, 12000))]


# -- symlinked folders ------------------------------------------------------------------------------------------
def test_symlinked_folder_is_followed_with_the_links_repeats(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "train", tmp_path / "elsewhere" / "imgs"
    img(root / "2_own" / "a.png")
    img(elsewhere / "b.png")
    img(elsewhere / "deeper" / "c.png")
    os.symlink(elsewhere, root / "10_linked")
    notes: list[str] = []
    records = {r.rel: r for r in scan_folder(root, notes=notes)}
    assert {k: r.repeats for k, r in records.items()} == {
        "2_own/a.png": 2, "10_linked/b.png": 10, "10_linked/deeper/c.png": 10}
    assert records["10_linked/b.png"].path == root / "10_linked" / "b.png"
    assert records["10_linked/b.png"].folder_name == "10_linked"
    assert notes == []
    plan = build_dataset(cfg(root), 1, 0, fingerprints=False)
    assert {(f.path.name, f.images, f.repeats) for f in plan.folders} == {("2_own", 1, 2), ("10_linked", 2, 10)}


def test_symlink_loop_ends_and_each_real_folder_is_scanned_once(tmp_path: Path) -> None:
    root = tmp_path / "train"
    img(root / "5_x" / "a.png")
    os.symlink(root, root / "5_x" / "3_loop")  # a link to an ancestor
    os.symlink(root / "5_x", root / "4_again")  # a second way to a folder that is scanned already
    notes: list[str] = []
    assert list_images(root, notes) == [root / "5_x" / "a.png"]
    assert sorted(notes) == sorted([
        f"{root / '4_again'} links to {root / '5_x'}, which is scanned already; skipped (each folder is used once)",
        f"{root / '5_x' / '3_loop'} links to {root}, which is scanned already; skipped (each folder is used once)",
    ])
    plan = build_dataset(cfg(root), 1, 0, fingerprints=False)
    assert plan.scan_notes == notes and len(plan.train) == 1


# -- captions ---------------------------------------------------------------------------------------------------
def test_empty_caption_files_and_uncaptioned_images_are_listed(tmp_path: Path) -> None:
    img(tmp_path / "3_x" / "a.png", caption="a red cube")
    img(tmp_path / "3_x" / "b.png", caption="")
    img(tmp_path / "3_x" / "c.png", caption="  \n\t ")
    img(tmp_path / "3_x" / "d.png")
    img(tmp_path / "3_x" / "e.png")
    plan = build_dataset(cfg(tmp_path, trigger_word="zkz"), 1, 0, fingerprints=False)
    (folder,) = plan.folders
    assert (folder.captions_found, folder.captions_missing) == (3, 2)
    assert folder.empty_captions == [tmp_path / "3_x" / "b.txt", tmp_path / "3_x" / "c.txt"]
    assert folder.uncaptioned == [tmp_path / "3_x" / "d.png", tmp_path / "3_x" / "e.png"]
    assert {p.name: c for p, c in plan.captions().items()} == {
        "a.png": "zkz, a red cube", "b.png": "zkz", "c.png": "zkz", "d.png": "zkz", "e.png": "zkz"}


# -- cropping ---------------------------------------------------------------------------------------------------
def test_cropped_fraction() -> None:
    assert cropped_fraction((300, 100), (200, 100)) == pytest.approx(1 / 3)
    assert cropped_fraction((100, 300), (100, 200)) == pytest.approx(1 / 3)
    assert cropped_fraction((128, 64), (128, 64)) == 0.0


def test_images_far_outside_the_bucket_range_are_reported_worst_first(tmp_path: Path) -> None:
    img(tmp_path / "square.png", (64, 64))
    img(tmp_path / "wide.png", (128, 64))  # 2:1, in the 128×64 bucket: nothing cropped
    img(tmp_path / "pano.png", (384, 64))  # 6:1 in 128×64: two thirds cut away
    img(tmp_path / "tall.png", (64, 192))  # 1:3 in 64×128: a third cut away
    spec = cfg(tmp_path, image_size=[128, 128], bucket_reso_steps=64, max_aspect_ratio=2.0)
    plan = build_dataset(spec, 1, 0, fingerprints=False)
    got = [(c.path.name, c.size, c.bucket, round(c.cropped, 3)) for c in plan.heavy_crops]
    assert got == [("pano.png", (384, 64), (128, 64), 0.667), ("tall.png", (64, 192), (64, 128), 0.333)]
