"""`lorakit prepare` and `lorakit dataset inspect` through the real command-line entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run `lorakit ARGS` in-process; returns (exit code, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["lorakit", *args])
    monkeypatch.setenv("COLUMNS", "200")
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def raw_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        folder = root / "5_thing"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256 + 64 * i, 320, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    (root / "5_thing" / "0.txt").write_text("thing, red", encoding="utf-8")
    Image.new("RGB", (40, 40)).save(root / "tiny.png")
    return root


def test_prepare_then_inspect(tmp_path: Path, monkeypatch, capsys) -> None:
    raw, out = raw_folder(tmp_path / "raw"), tmp_path / "out"
    code, text = run(monkeypatch, capsys, "prepare", str(raw), "--out", str(out))
    assert code == 0, text
    assert "images kept" in text and "tiny.png" in text and "too_small" in text
    assert sorted(p.name for p in (out / "5_thing").iterdir()) == ["0.png", "0.txt", "1.png", "2.png"]
    code, text = run(monkeypatch, capsys, "prepare", str(raw), "--out", str(out))
    assert code == 0 and "unchanged (skipped)" in text
    assert (out / "preprocess_log.csv").is_file()

    code, text = run(monkeypatch, capsys, "dataset", "inspect", str(out), "-b", "2",
                     "--set", "data.resolution=256", "--set", "data.flip_aug=true")
    assert code == 0, text
    # 3 images × 2 (mirrored) × 5 repeats = 30 uses, all in the one 256×256 bucket → 15 batches of 2
    assert "steps per epoch: 15" in text
    assert "5_thing" in text and "256×256" in text


def test_errors_exit_2_with_a_message(tmp_path: Path, monkeypatch, capsys) -> None:
    code, text = run(monkeypatch, capsys, "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert code == 2 and "raw image folder not found" in text and "Traceback" not in text
    (tmp_path / "empty").mkdir()
    code, text = run(monkeypatch, capsys, "dataset", "inspect", str(tmp_path / "empty"))
    assert code == 2 and "no images" in text
    (tmp_path / "raw").mkdir()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    code, text = run(monkeypatch, capsys, "prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file" in text and "Traceback" not in text
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine", encoding="utf-8")
    code, text = run(monkeypatch, capsys, "prepare", str(tmp_path / "raw"), "--out", str(tmp_path / "o"))
    assert code == 2 and "not empty" in text and (tmp_path / "o" / "notes.txt").read_text(encoding="utf-8") == "mine"


def bomb_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A 68-byte PNG whose header claims `width` × `height` (over twice Pillow's decompression-bomb limit)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_named_by_inspect_plan_and_train(tmp_path: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "data" / "5_thing"
    data.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(data / "ok.png")
    bomb = bomb_png(data / "huge.png")
    runs = tmp_path / "runs"
    for args in (["dataset", "inspect", str(tmp_path / "data")],
                 ["plan", "--set", f"data.train_data_dir='{tmp_path / 'data'}'"],
                 ["train", "--set", f"data.train_data_dir='{tmp_path / 'data'}'", "--set",
                  f"output.output_dir='{runs}'", "--set", "data.resolution=64"]):
        code, text = run(monkeypatch, capsys, *args)
        assert code == 2, (args, text)
        assert "Traceback" not in text and "1 unreadable image(s)" in text, (args, text)
        assert f"image {bomb} is too large" in text and "decompression bomb" in text, (args, text)
        assert "lorakit prepare" in text, (args, text)
    assert not runs.exists() or not any(runs.iterdir())  # no run folder left behind


def test_inspect_lists_images_without_captions_and_warnings(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "3_x"
    folder.mkdir()
    for i in range(13):
        Image.new("RGB", (64, 64), (i, 0, 0)).save(folder / f"{i:02d}.png")
    (folder / "00.txt").write_text("a cube", encoding="utf-8")
    (folder / "01.txt").write_text("", encoding="utf-8")
    Image.new("RGB", (64, 256)).save(folder / "tall.png")  # 1:4 in a 1:2 bucket: half cut away
    code, text = run(monkeypatch, capsys, "dataset", "inspect", str(tmp_path), "--set", "data.resolution=64",
                     "--set", "data.image_size=[128, 128]", "--set", "data.min_bucket_reso=64")
    assert code == 0, text
    uncaptioned = ", ".join(f"{i:02d}.png" for i in range(2, 12))
    assert f"images without captions in {folder} (12): {uncaptioned} … and 2 more" in text
    assert (f"warning: 1 caption file(s) are empty (0 bytes or only spaces), so their images train with no caption "
            f"text of their own: {folder / '01.txt'} — write the captions or delete the files") in text
    assert f"{folder / 'tall.png'} (64×256 → 64×128, 50 % cut)" in text
