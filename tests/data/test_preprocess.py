"""`prepare` on a generated folder with every awkward case: right pixels out, right reasons, raw bytes untouched."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.data.preprocess import PrepareOptions, laplacian_variance, prepare

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 40), (30, 40, 210)


def textured(w: int, h: int, seed: int, grey: bool = False) -> np.ndarray:
    """A blocky random picture (distinct perceptual hash per seed), HxWx3 uint8 (or HxW when grey)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, (8, 8) if grey else (8, 8, 3), dtype=np.uint8)
    big = np.kron(cells, np.ones((h // 8 + 1, w // 8 + 1) + (() if grey else (1,)), dtype=np.uint8))
    return np.ascontiguousarray(big[:h, :w])


def centre(arr: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Mean colour of a region."""
    return arr[y0:y1, x0:x1].reshape(-1, arr.shape[-1]).mean(axis=0)


def build_raw(raw: Path) -> None:
    """The awkward folder."""
    chars = raw / "10_mychar"
    chars.mkdir(parents=True)
    # EXIF-rotated JPEG: upright it is 320 wide × 480 tall with a red top-left corner
    upright = textured(320, 480, 1)
    upright[:120, :120] = RED
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(chars / "phone.jpg", quality=95, exif=exif)
    (chars / "phone.txt").write_text("mychar, standing", encoding="utf-8")
    # RGBA PNG: left half transparent, right half green
    rgba = np.zeros((300, 400, 4), dtype=np.uint8)
    rgba[..., :3] = textured(400, 300, 2)
    rgba[..., 3] = 255
    rgba[:, :200, 3] = 0
    rgba[100:200, 250:350, :3] = GREEN
    Image.fromarray(rgba, "RGBA").save(chars / "sticker.png")
    (chars / "sticker.txt").write_text("from txt", encoding="utf-8")
    (chars / "sticker.caption").write_text("from caption", encoding="utf-8")
    # CMYK JPEG with a pure red block (C=0 M=255 Y=255 K=0)
    cmyk = Image.fromarray(textured(360, 300, 3)).convert("CMYK")
    cmyk.paste((0, 255, 255, 0), (100, 100, 260, 200))
    cmyk.save(raw / "print.jpg", quality=95)
    (raw / "print.caption").write_text("only a caption file", encoding="utf-8")
    # 16-bit greyscale TIFF and PNG with a mid-grey centre (32768/65535 → 128)
    for i, ext in enumerate(("tif", "png")):
        grey = textured(300, 300, 4 + i, grey=True).astype(np.uint16) * 257
        grey[100:200, 100:200] = 32768
        Image.fromarray(grey).save(raw / f"scan16.{ext}")
    # other formats: BMP, WebP (lossless), PCX, ICO (256 max), animated GIF (first frame blue)
    Image.fromarray(textured(300, 260, 6)).save(raw / "paint.bmp")
    Image.fromarray(textured(300, 260, 7)).save(raw / "web.webp", lossless=True)
    Image.fromarray(textured(300, 260, 8)).save(raw / "old.pcx")
    Image.fromarray(textured(256, 256, 9)).save(raw / "icon.ico", sizes=[(256, 256)])
    frames = [Image.fromarray(textured(300, 300, 10 + k)) for k in range(3)]
    frames[0].paste(BLUE, (100, 100, 200, 200))
    frames[0].save(raw / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    # bad ones
    good = (chars / "phone.jpg").read_bytes()
    (raw / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(textured(40, 40, 11)).save(raw / "thumb.png")
    (raw / "notes.pdf").write_bytes(b"%PDF-1.4 not an image")
    (raw / "fake.png").write_text("this is text, not a PNG", encoding="utf-8")
    Image.open(raw / "paint.bmp").save(raw / "paint_copy.png")  # same picture, other format
    # hidden things are skipped entirely
    (raw / ".DS_Store").write_bytes(b"\x00\x01")
    (raw / ".cache").mkdir()
    Image.fromarray(textured(300, 300, 12)).save(raw / ".cache" / "x.png")


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, object]:
    base = tmp_path_factory.mktemp("prep")
    raw, out = base / "raw", base / "out"
    build_raw(raw)
    before = tree_hashes(raw)
    report = prepare(raw, out, PrepareOptions(workers=4))
    return raw, out, before, report


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB", (path, im.format, im.mode)
        return np.asarray(im, dtype=np.float64)


def test_raw_folder_is_never_modified(prepared) -> None:
    raw, _, before, _ = prepared
    assert tree_hashes(raw) == before


def test_bad_files_are_rejected_with_reasons(prepared) -> None:
    _, out, _, report = prepared
    reasons = {r.source: r.reason.split(":")[0] for r in report.rejected}
    assert reasons == {
        "truncated.jpg": "corrupt",
        "fake.png": "corrupt",
        "thumb.png": "too_small",
        "notes.pdf": "unsupported",
        "paint_copy.png": "duplicate",
    }
    assert "paint.bmp" in next(r.reason for r in report.rejected if r.source == "paint_copy.png")
    for source in reasons:
        assert (out / "rejected" / source).read_bytes() == (prepared[0] / source).read_bytes()
        assert not (out / source).with_suffix(".png").exists()


def test_hidden_files_are_skipped(prepared) -> None:
    _, out, _, report = prepared
    assert not any(r.source.startswith(".") or "/." in r.source for r in report.rows)
    assert not (out / ".cache").exists()


def test_orientation_is_applied(prepared) -> None:
    _, out, _, _ = prepared
    arr = rgb(out / "10_mychar" / "phone.png")
    assert arr.shape == (480, 320, 3)
    assert np.abs(centre(arr, 20, 100, 20, 100) - RED).max() < 12


def test_alpha_is_composited_on_the_background(prepared) -> None:
    _, out, _, _ = prepared
    arr = rgb(out / "10_mychar" / "sticker.png")
    assert np.abs(centre(arr, 0, 300, 0, 200) - 255).max() < 1
    assert np.abs(centre(arr, 110, 190, 260, 340) - GREEN).max() < 1


def test_cmyk_becomes_the_right_rgb(prepared) -> None:
    _, out, _, _ = prepared
    arr = rgb(out / "print.png")
    assert np.abs(centre(arr, 120, 180, 120, 240) - (255, 0, 0)).max() < 12


@pytest.mark.parametrize("output", ["scan16.png", "scan16_tif.png"])  # a.png and a.tif: the later one is renamed
def test_sixteen_bit_is_scaled_not_clipped(prepared, output: str) -> None:
    _, out, _, _ = prepared
    arr = rgb(out / output)
    assert np.abs(centre(arr, 110, 190, 110, 190) - 128).max() <= 1


def test_other_formats_and_first_frame(prepared) -> None:
    _, out, _, report = prepared
    for name in ("paint.png", "web.png", "old.png", "icon.png"):
        assert rgb(out / name).shape[2] == 3
    assert np.abs(centre(rgb(out / "anim.png"), 120, 180, 120, 180) - BLUE).max() < 20
    assert report.ok == 10


def test_captions_are_copied(prepared) -> None:
    _, out, _, _ = prepared
    assert (out / "10_mychar" / "phone.txt").read_text(encoding="utf-8") == "mychar, standing"
    assert (out / "10_mychar" / "sticker.txt").read_text(encoding="utf-8") == "from txt"
    assert (out / "10_mychar" / "sticker.caption").read_text(encoding="utf-8") == "from caption"
    assert (out / "print.caption").read_text(encoding="utf-8") == "only a caption file"


def test_log_has_one_row_per_file(prepared) -> None:
    _, out, _, report = prepared
    with open(out / "preprocess_log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    phone = next(r for r in rows if r["source"] == "10_mychar/phone.jpg")
    assert (phone["status"], phone["ok"], phone["output"]) == ("ok", "1", "10_mychar/phone.png")
    assert (phone["width_before"], phone["height_before"]) == ("480", "320")  # as stored, before rotation
    assert (phone["width_after"], phone["height_after"]) == ("320", "480")
    thumb = next(r for r in rows if r["source"] == "thumb.png")
    assert thumb["status"] == "rejected" and thumb["ok"] == "0" and "40x40" in thumb["reason"]


def test_prepared_folder_trains(prepared) -> None:
    from lorakit.data.pipeline import build_dataset
    from lorakit.data.settings import DataSection

    _, out, _, _ = prepared
    plan = build_dataset(DataSection(train_data_dir=str(out)), batch_size=2, seed=0)
    assert len(plan.train) == 10  # rejected/ is not scanned
    by_name = {ex.image.name: ex for ex in plan.train}
    assert by_name["sticker.png"].caption == "from txt" and by_name["phone.png"].repeats == 10


def test_rerun_skips_unchanged_and_redoes_changed(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(textured(300, 300, 20 + i)).save(raw / "sub" / f"{i}.png")
    Image.fromarray(textured(30, 30, 30)).save(raw / "small.png")
    first = prepare(raw, out)
    assert (first.written, first.unchanged, len(first.rejected)) == (3, 0, 1)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    second = prepare(raw, out)
    assert (second.written, second.unchanged, len(second.rejected)) == (0, 4, 1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    Image.fromarray(textured(300, 300, 40)).save(raw / "sub" / "1.png")
    (raw / "sub" / "2.png").unlink()
    third = prepare(raw, out)
    assert (third.written, third.unchanged, third.removed) == (1, 2, 1)
    assert not (out / "sub" / "2.png").exists()
    assert np.array_equal(rgb(out / "sub" / "1.png"), textured(300, 300, 40).astype(np.float64))


def test_duplicate_returns_when_its_twin_is_removed(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 50)).save(raw / "a.png")
    shutil.copy(raw / "a.png", raw / "b.png")
    assert [r.source for r in prepare(raw, out).rejected] == ["b.png"]
    (raw / "a.png").unlink()
    report = prepare(raw, out)
    assert not report.rejected and (out / "b.png").is_file() and not (out / "a.png").exists()


def test_duplicates_need_the_same_colours_too(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for name, colour in (("red.png", RED), ("white.png", (255, 255, 255)), ("white2.png", (250, 250, 250))):
        Image.new("RGB", (300, 300), colour).save(raw / name)
    picture = textured(400, 400, 55)
    picture[:200, :200] = GREEN
    Image.fromarray(picture).save(raw / "photo.png")
    Image.fromarray(picture).resize((300, 300), Image.Resampling.LANCZOS).save(raw / "photo_small.jpg", quality=80)
    recoloured = picture.copy()
    recoloured[:200, :200] = PINK = (230, 70, 190)  # as bright as GREEN: the same in greyscale
    Image.fromarray(recoloured).save(raw / "recoloured.png")
    report = prepare(raw, out, PrepareOptions(blur_threshold=0, dedupe_distance=10))
    reasons = {r.source: r.reason for r in report.rejected}
    assert reasons == {"photo_small.jpg": "duplicate: same picture as photo.png",
                       "white2.png": "duplicate: same picture as white.png"}
    assert rgb(out / "red.png")[150, 150].tolist() == list(RED)
    assert rgb(out / "white.png")[150, 150].tolist() == [255, 255, 255]
    assert rgb(out / "recoloured.png")[50, 50].tolist() == list(PINK)


def test_unreadable_folders_are_warnings_and_keep_their_outputs(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "locked" / "deeper").mkdir(parents=True)
    Image.fromarray(textured(300, 300, 70)).save(raw / "a.png")
    Image.fromarray(textured(300, 300, 71)).save(raw / "locked" / "b.png")
    (raw / "locked" / "b.txt").write_text("b caption", encoding="utf-8")
    Image.fromarray(textured(300, 300, 72)).save(raw / "locked" / "deeper" / "c.png")
    assert prepare(raw, out).ok == 3
    scandir = os.scandir

    def no_permission(path="."):  # tests run as root: a folder that cannot be listed
        if Path(path) == raw / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", no_permission)
    report = prepare(raw, out)
    assert report.warnings == ["locked/: folder cannot be read (Permission denied); its files were skipped "
                               "(check its permissions)"]
    assert report.removed == 0 and report.ok == 3 and report.unchanged == 3
    assert np.array_equal(rgb(out / "locked" / "deeper" / "c.png"), textured(300, 300, 72).astype(np.float64))
    assert (out / "locked" / "b.txt").read_text(encoding="utf-8") == "b caption"
    with open(out / "preprocess_log.csv", newline="", encoding="utf-8") as f:
        assert [r["source"] for r in csv.DictReader(f)] == ["a.png", "locked/b.png", "locked/deeper/c.png"]
    fresh = prepare(raw, tmp_path / "fresh")
    assert [r.source for r in fresh.rows] == ["a.png"] and "locked/: folder cannot be read" in fresh.warnings[0]


def test_an_interrupted_run_keeps_its_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorakit.data import preprocess

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for i in range(8):
        Image.fromarray(textured(300, 300, 80 + i)).save(raw / f"{i}.png")
        (raw / f"{i}.txt").write_text(f"caption {i}", encoding="utf-8")
    Image.fromarray(textured(300, 300, 81)).save(raw / "1_copy.jpg", quality=95)  # a duplicate of 1.png
    monkeypatch.setattr(preprocess, "CHECKPOINT_EVERY", 2, raising=False)
    real, seen = preprocess.process_one, []

    def interrupted(raw_, out_, row, opts):
        if len(seen) == 6:  # in the middle of the 4th batch of 2
            raise KeyboardInterrupt
        seen.append(row.source)
        return real(raw_, out_, row, opts)

    monkeypatch.setattr(preprocess, "process_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(raw, out, PrepareOptions(workers=1))
    with open(out / "preprocess_log.csv", newline="", encoding="utf-8") as f:
        assert [(r["source"], r["output"]) for r in csv.DictReader(f)] == [
            ("0.png", "0.png"), ("1.png", "1.png"), ("2.png", "2.png"), ("3.png", "3.png"), ("4.png", "4.png")]
    for i in range(5):  # 1_copy.jpg, a duplicate, waits for the end of a run
        assert np.array_equal(rgb(out / f"{i}.png"), textured(300, 300, 80 + i).astype(np.float64))
    seen.clear()
    monkeypatch.setattr(preprocess, "process_one", lambda *a: seen.append(a[2].source) or real(*a))
    report = prepare(raw, out, PrepareOptions(workers=1))
    assert seen == ["1_copy.jpg", "5.png", "6.png", "7.png"]
    assert (report.unchanged, report.written, report.removed) == (5, 3, 0)
    assert [(r.source, r.reason) for r in report.rejected] == [("1_copy.jpg", "duplicate: same picture as 1.png")]
    for i in range(8):
        assert np.array_equal(rgb(out / f"{i}.png"), textured(300, 300, 80 + i).astype(np.float64))
        assert (out / f"{i}.txt").read_text(encoding="utf-8") == f"caption {i}"
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i}.png" for i in range(8)]


def test_options_background_and_max_side(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    rgba = np.zeros((400, 800, 4), dtype=np.uint8)
    rgba[..., :3] = textured(800, 400, 60)
    rgba[..., 3] = 255
    rgba[:, :100, 3] = 0
    Image.fromarray(rgba, "RGBA").save(raw / "wide.png")
    prepare(raw, tmp_path / "out", PrepareOptions(background=(0, 0, 0), max_side=400))
    arr = rgb(tmp_path / "out" / "wide.png")
    assert arr.shape == (200, 400, 3)
    assert centre(arr, 0, 200, 0, 45).max() < 1


def test_blur_is_a_warning_not_a_rejection(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    ramp = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (300, 1, 3))
    Image.fromarray(ramp).save(raw / "soft.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(raw / "sharp.png")
    report = prepare(raw, tmp_path / "out")
    assert report.ok == 2
    assert [w.split(":")[0] for w in report.warnings] == ["soft.png"]
    assert laplacian_variance(Image.fromarray(ramp)) < 1 < laplacian_variance(Image.open(raw / "sharp.png"))


def test_output_inside_raw_is_refused(tmp_path: Path) -> None:
    from lorakit.errors import DataError

    (tmp_path / "raw").mkdir()
    with pytest.raises(DataError, match="overlaps"):
        prepare(tmp_path / "raw", tmp_path / "raw" / "out")
    with pytest.raises(DataError, match="not found"):
        prepare(tmp_path / "missing", tmp_path / "out")


def test_leftovers_of_an_interrupted_run_are_cleaned(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 70)).save(raw / "a.png")
    prepare(raw, out)
    (out / "sub").mkdir(parents=True)
    leftover = out / "sub" / ".a.png.0123456789abcdef0123456789abcdef.tmp"
    leftover.write_bytes(b"half")
    (out / ".keep.tmp").write_bytes(b"not ours")
    prepare(raw, out)
    assert not leftover.exists() and (out / ".keep.tmp").exists() and (out / "a.png").is_file()


def test_plain_png_is_kept_byte_for_byte(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 80)).save(raw / "plain.png")
    rgba = np.dstack([textured(300, 300, 81), np.full((300, 300), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(raw / "alpha.png")
    prepare(raw, out)
    assert (out / "plain.png").read_bytes() == (raw / "plain.png").read_bytes()
    assert (out / "alpha.png").read_bytes() != (raw / "alpha.png").read_bytes()
    assert rgb(out / "alpha.png").shape == (300, 300, 3)


def test_output_names_never_clash() -> None:
    from lorakit.data.preprocess import output_name

    taken: set[str] = set()
    names = [output_name(n, taken) for n in ["d/a.jpg", "d/a.png", "d/a_png.png", "d/a.webp", "d/A.png"]]
    assert names == ["d/a.png", "d/a_png.png", "d/a_png_png.png", "d/a_webp.png", "d/A.png"]
    assert output_name("d/a.tif", {"d/a.png", "d/a_tif.png"}) == "d/a_tif2.png"


def test_captions_edited_in_the_output_survive_until_the_raw_caption_changes(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 90)).save(raw / "a.png")
    (raw / "a.txt").write_text("raw caption", encoding="utf-8")
    prepare(raw, out)
    (out / "a.txt").write_text("tagged later in the output folder", encoding="utf-8")
    prepare(raw, out)
    assert (out / "a.txt").read_text(encoding="utf-8") == "tagged later in the output folder"
    (raw / "a.txt").write_text("raw caption, edited", encoding="utf-8")
    prepare(raw, out)
    assert (out / "a.txt").read_text(encoding="utf-8") == "raw caption, edited"


def test_an_image_kept_earlier_stays_kept_when_a_near_duplicate_is_added(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 95)).save(raw / "b.png", compress_level=9)
    (raw / "b.txt").write_text("raw caption", encoding="utf-8")
    Image.fromarray(textured(300, 300, 96)).save(raw / "bad.png")
    (raw / "bad.png").write_bytes((raw / "bad.png").read_bytes()[:500])
    first = prepare(raw, out)
    assert (out / "b.png").is_file() and [r.source for r in first.rejected] == ["bad.png"]
    (out / "b.txt").write_text("edited in the output", encoding="utf-8")
    shutil.copy(raw / "b.png", raw / "a.png")  # sorts first, but b.png was kept by the earlier run
    Image.fromarray(textured(300, 300, 96)).save(raw / "bad.png")  # repaired
    second = prepare(raw, out)
    assert [(r.source, r.reason) for r in second.rejected] == [("a.png", "duplicate: same picture as b.png")]
    assert second.removed == 0 and (out / "b.png").is_file() and not (out / "a.png").exists()
    assert (out / "b.txt").read_text(encoding="utf-8") == "edited in the output"
    assert (out / "bad.png").is_file() and (out / "rejected" / "a.png").is_file()
    assert not (out / "rejected" / "bad.png").exists()


def test_a_removed_output_with_an_edited_caption_is_moved_to_rejected(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    for i, name in enumerate("abc"):
        Image.fromarray(textured(300, 300, 100 + i)).save(raw / f"{name}.png")
        (raw / f"{name}.txt").write_text(f"raw {name}", encoding="utf-8")
    prepare(raw, out)
    (out / "a.txt").write_text("edited a", encoding="utf-8")
    (out / "c.txt").write_text("edited c", encoding="utf-8")
    (raw / "c.png").unlink()  # c vanishes; a and b become too small
    report = prepare(raw, out, PrepareOptions(min_side=400))
    assert sorted(r.source for r in report.rejected) == ["a.png", "b.png"]
    assert not (out / "a.png").exists() and not (out / "b.png").exists() and not (out / "c.png").exists()
    assert not (out / "b.txt").exists() and report.removed == 1  # unedited: removed as before
    assert (out / "rejected" / "a.png").read_bytes() == (raw / "a.png").read_bytes()  # the rejected source
    assert (out / "rejected" / "a_1.txt").read_text(encoding="utf-8") == "edited a"  # the edited pair, aside
    assert (out / "rejected" / "a_1.png").is_file()
    assert (out / "rejected" / "c.txt").read_text(encoding="utf-8") == "edited c"
    assert sorted(report.set_aside) == ["rejected/a_1.png, rejected/a_1.txt", "rejected/c.png, rejected/c.txt"]
    assert any("a.png" in w and "rejected/a_1.txt" in w for w in report.warnings)
    again = prepare(raw, out)  # back to the default: a and b return, nothing set aside is touched
    assert (out / "a.png").is_file() and (out / "a.txt").read_text(encoding="utf-8") == "raw a"
    assert (out / "rejected" / "a_1.txt").read_text(encoding="utf-8") == "edited a"
    assert (out / "rejected" / "c.txt").is_file() and not again.set_aside


def test_an_edited_caption_is_moved_aside_when_the_raw_caption_changes(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 110)).save(raw / "a.png")
    (raw / "a.txt").write_text("raw caption", encoding="utf-8")
    prepare(raw, out)
    (out / "a.txt").write_text("edited", encoding="utf-8")
    (raw / "a.txt").write_text("raw caption, changed", encoding="utf-8")
    report = prepare(raw, out)
    assert (out / "a.txt").read_text(encoding="utf-8") == "raw caption, changed"
    assert (out / "rejected" / "a.txt").read_text(encoding="utf-8") == "edited"
    assert report.set_aside == ["rejected/a.txt"]
    (raw / "a.caption").write_text("second file", encoding="utf-8")
    prepare(raw, out)
    (out / "a.txt").write_text("edited again", encoding="utf-8")
    (out / "a.caption").unlink()  # a missing copy is restored; the edited one beside it is left alone
    assert not prepare(raw, out).set_aside
    assert (out / "a.txt").read_text(encoding="utf-8") == "edited again"
    assert (out / "a.caption").read_text(encoding="utf-8") == "second file"


def test_a_folder_prepare_did_not_write_is_refused(tmp_path: Path) -> None:
    from lorakit.errors import DataError

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 120)).save(raw / "a.png")
    out.mkdir()
    (out / "a.txt").write_text("my own notes", encoding="utf-8")
    with pytest.raises(DataError, match="not empty") as info:
        prepare(raw, out)
    assert str(out) in str(info.value) and "empty folder" in str(info.value)
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    (out / "a.txt").unlink()
    prepare(raw, out)
    (out / "preprocess_log.csv").unlink()  # a lost log: the folder's files are no longer known
    (out / "a.txt").write_text("edited", encoding="utf-8")
    with pytest.raises(DataError, match="not empty"):
        prepare(raw, out)
    assert (out / "a.txt").read_text(encoding="utf-8") == "edited"


def test_files_the_log_does_not_know_are_never_overwritten(tmp_path: Path) -> None:
    from lorakit.errors import DataError

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 130)).save(raw / "a.png")
    prepare(raw, out)
    Image.fromarray(textured(300, 300, 131)).save(out / "b.png")  # the user's own file in the output
    (out / "b.txt").write_text("mine", encoding="utf-8")
    (out / "metadata.csv").write_text("file,tag\n", encoding="utf-8")
    Image.fromarray(textured(300, 300, 132)).save(raw / "b.png")
    (raw / "b.txt").write_text("raw", encoding="utf-8")
    (raw / "metadata.csv").write_text("file,tag\nb.png,x\n", encoding="utf-8")
    mine = tree_hashes(out)
    with pytest.raises(DataError, match="did not write") as info:
        prepare(raw, out)
    assert "b.png" in str(info.value) and "metadata.csv" in str(info.value)
    assert tree_hashes(out) == mine
    (out / "b.png").unlink()
    (out / "b.txt").unlink()
    shutil.copy(raw / "metadata.csv", out / "metadata.csv")  # the same bytes: nothing to lose
    assert prepare(raw, out).ok == 2


def test_a_garbled_log_is_an_error(tmp_path: Path) -> None:
    from lorakit.errors import DataError

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 140)).save(raw / "a.png")
    prepare(raw, out)
    (out / "preprocess_log.csv").write_bytes(b"\xff\xfe garbage\x00")
    with pytest.raises(DataError, match="preprocess_log.csv"):
        prepare(raw, out)
    (out / "preprocess_log.csv").write_text("source,output,status,ok\na.png,a.png,ok,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match="preprocess_log.csv"):
        prepare(raw, out)
    assert (out / "a.png").is_file()


def test_another_raw_folder_is_refused(tmp_path: Path) -> None:
    from lorakit.errors import DataError

    raw, other, out = tmp_path / "raw", tmp_path / "other", tmp_path / "out"
    for i, folder in enumerate((raw, other)):
        folder.mkdir()
        Image.fromarray(textured(300, 300, 150 + i)).save(folder / f"{folder.name}.png")
    prepare(raw, out)
    before = tree_hashes(out)
    with pytest.raises(DataError, match="another raw folder") as info:
        prepare(other, out)
    assert str(raw.resolve()) in str(info.value)
    assert tree_hashes(out) == before


@pytest.mark.parametrize("output", ["../victim.png", "/tmp/victim.png", "sub/../../victim.png"])
def test_log_paths_outside_the_folder_are_never_touched(tmp_path: Path, output: str) -> None:
    from lorakit.errors import DataError

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 160)).save(raw / "a.png")
    prepare(raw, out)
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"precious")
    log = (out / "preprocess_log.csv").read_text(encoding="utf-8")
    (out / "preprocess_log.csv").write_text(log.replace(",a.png,ok,", f",{output.replace('/tmp', str(tmp_path))},ok,"),
                                            encoding="utf-8")
    (raw / "a.png").unlink()
    with pytest.raises(DataError, match="outside"):
        prepare(raw, out)
    assert victim.read_bytes() == b"precious"


def test_io_problems_are_data_errors_or_rejections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorakit.errors import DataError

    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    Image.fromarray(textured(300, 300, 170)).save(raw / "a.png")
    Image.fromarray(textured(300, 300, 171)).save(raw / "locked.png")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="is a file"):
        prepare(raw, tmp_path / "file")
    read_bytes = Path.read_bytes

    def locked(self: Path) -> bytes:
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    copyfile = shutil.copyfile

    def locked_copy(src, dst, **kwargs):
        if Path(src).name == "locked.png":
            raise PermissionError(13, "Permission denied", str(src))
        return copyfile(src, dst, **kwargs)

    monkeypatch.setattr(Path, "read_bytes", locked)
    monkeypatch.setattr(shutil, "copyfile", locked_copy)
    report = prepare(raw, out)
    assert [(r.source, r.reason.split(":")[0]) for r in report.rejected] == [("locked.png", "unreadable")]
    assert not (out / "rejected" / "locked.png").exists()
    monkeypatch.undo()
    assert prepare(raw, out).ok == 2  # readable again: processed, even with the same size and mtime

    def read_only(self: Path, *args, **kwargs) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(DataError, match="cannot create the output folder") as info:
        prepare(raw, tmp_path / "ro" / "out")
    assert str(tmp_path / "ro" / "out") in str(info.value)
