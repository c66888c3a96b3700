"""`to_rgb` for every image mode, and the pixels an example trains on."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from lorakit.data.example import Example
from lorakit.data.transforms import load_pixels, parse_color, resize_and_crop, to_rgb
from lorakit.errors import DataError


def px(im: Image.Image) -> tuple[int, ...]:
    return to_rgb(im, (0, 0, 255)).getpixel((0, 0))


def test_modes() -> None:
    assert px(Image.fromarray(np.full((2, 2), 65535, np.uint16))) == (255, 255, 255)
    assert px(Image.fromarray(np.full((2, 2), 257 * 100, np.uint16))) == (100, 100, 100)
    assert px(Image.fromarray(np.full((2, 2), 0.5, np.float32))) == (128, 128, 128)
    assert px(Image.new("LA", (2, 2), (200, 0))) == (0, 0, 255)  # fully transparent → background
    assert px(Image.new("RGBA", (2, 2), (255, 0, 0, 128))) == (128, 0, 127)
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    assert px(pal) == (0, 0, 255)
    assert px(Image.new("CMYK", (2, 2), (0, 0, 0, 0))) == (255, 255, 255)
    assert px(Image.new("1", (2, 2), 1)) == (255, 255, 255)


def test_embedded_icc_profile_is_applied() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, "PNG", icc_profile=srgb)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        out = to_rgb(im)
    assert out.mode == "RGB" and np.abs(np.subtract(out.getpixel((0, 0)), (200, 100, 50))).max() <= 2


def linear_rgb_profile() -> bytes:
    """A real ICC v2 matrix/TRC profile: sRGB primaries with gamma 1.0 (linear), so 128 in it is ~188 in sRGB."""
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, 256) + b"\0\0"  # u8Fixed8 gamma 1.0
    text = b"linear sRGB\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 78
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curv), (b"gTRC", curv), (b"bTRC", curv)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + body


def test_icc_profile_is_applied_to_images_with_alpha() -> None:
    icc = linear_rgb_profile()
    plain = Image.new("RGB", (2, 2), (128, 128, 128))
    plain.info["icc_profile"] = icc
    assert np.abs(np.subtract(to_rgb(plain).getpixel((0, 0)), (188, 188, 188))).max() <= 2
    rgba = np.zeros((4, 8, 4), np.uint8)
    rgba[..., :3] = 128
    rgba[:, :4, 3] = 255  # left opaque, right half transparent
    rgba[:, 4:, 3] = 128
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", icc_profile=icc)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.load()
        out = to_rgb(im, (0, 0, 0))
    # the colour goes through the profile (128 linear → ~188 sRGB), then alpha composites it onto black
    assert np.abs(np.subtract(out.getpixel((0, 0)), (188, 188, 188))).max() <= 2
    assert np.abs(np.subtract(out.getpixel((6, 0)), (94, 94, 94))).max() <= 2


def test_parse_color() -> None:
    assert parse_color("white") == (255, 255, 255) and parse_color("#102030") == (16, 32, 48)
    with pytest.raises(DataError, match="colour"):
        parse_color("blurple")


def test_example_pixels_are_the_centre_crop_and_mirror(tmp_path: Path) -> None:
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :50] = (255, 0, 0)   # left quarter red: cropped away by a centred 100×100 crop
    arr[:, 50:100] = (0, 255, 0)
    arr[:, 100:150] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    ex = Example(image=tmp_path / "a.png", caption="", size=(64, 64))
    pixels = load_pixels(ex)
    assert pixels.shape == (3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    assert pixels[1, 32, 5] > 0.9 and pixels[2, 32, 58] > 0.9 and pixels[0].max() < -0.9
    flipped = load_pixels(Example(image=tmp_path / "a.png", caption="", size=(64, 64), flip=True))
    assert np.allclose(flipped, pixels[:, :, ::-1])
    im, (top, left) = resize_and_crop(Image.fromarray(arr), (64, 64))
    assert im.size == (64, 64) and (top, left) == (0, 32)
    with pytest.raises(DataError, match="missing.png"):
        load_pixels(Example(image=tmp_path / "missing.png", caption="", size=(64, 64)))


def test_example_resized_before_the_crop(tmp_path: Path) -> None:
    """A kohya-bucket example names the size sd-scripts resizes to before its centre crop; it is used as given."""
    arr = np.zeros((50, 100, 3), np.uint8)
    arr[:, :, 0] = np.linspace(0, 255, 100, dtype=np.uint8)[None, :]
    Image.fromarray(arr).save(tmp_path / "a.png")
    ex = Example(image=tmp_path / "a.png", caption="", size=(64, 32), resized=(80, 40))
    pixels = load_pixels(ex)
    expected = np.asarray(Image.fromarray(arr).resize((80, 40), Image.Resampling.LANCZOS, reducing_gap=3.0))
    expected = expected[4:36, 8:72].astype(np.float32) / 127.5 - 1.0  # (top, left) = (40-32)//2, (80-64)//2
    assert pixels.shape == (3, 32, 64) and np.allclose(pixels, expected.transpose(2, 0, 1))


def test_augmentations_come_before_the_mirror(tmp_path: Path) -> None:
    """sd-scripts' order per use: crop, colour, then the flip (BaseDataset.__getitem__)."""
    import random

    from lorakit.data.transforms import Augment

    arr = np.random.default_rng(0).integers(0, 256, (64, 100, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    plain = Example(image=tmp_path / "a.png", caption="", size=(64, 64))
    mirrored = Example(image=tmp_path / "a.png", caption="", size=(64, 64), flip=True)
    both = Augment(color=True, random_crop=True)
    for seed in range(5):
        a = load_pixels(plain, augment=both, rng=random.Random(seed))
        b = load_pixels(mirrored, augment=both, rng=random.Random(seed))
        assert np.array_equal(b, a[:, :, ::-1])
