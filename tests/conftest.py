"""Test-wide setup: offline, quiet, tiny models only."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lorakit-test-cache-")  # never the user's ~/.cache

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def write_images(folder: Path, count: int = 4, size: tuple[int, int] = (96, 96), seed: int = 0) -> Path:
    """Solid-ish coloured images with `.txt` captions."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        arr = np.full((size[1], size[0], 3), rng.integers(0, 255, 3), dtype=np.uint8)
        arr[: size[1] // 2] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"colour block {i}", encoding="utf-8")
    return folder


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images")


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    """Run `lorakit ARGS` in-process through the console-script entry point; (exit code, stdout+stderr)."""
    import sys

    from lorakit.cli.main import main

    monkeypatch.setattr(sys, "argv", ["lorakit", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """`cli("train", "--config", f)` → (exit code, stdout+stderr)."""
    return lambda *args: run_cli(monkeypatch, capsys, *args)
