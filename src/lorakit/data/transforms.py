"""Turn files into correct RGB pixels, and an `Example` into a training array.

`to_rgb` is shared by `prepare` and training so both see the same pixels: EXIF orientation, the first frame of an
animation, alpha composited onto a background colour, CMYK and embedded ICC profiles converted to sRGB, and 16-bit
or float images scaled (not clipped) to 8 bits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageColor, ImageOps

from ..errors import DataError
from .buckets import cover_crop
from .example import Example

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
_SRGB = ImageCms.createProfile("sRGB")


def parse_color(value: str | RGB) -> RGB:
    """'white', '#808080' or (r, g, b) → (r, g, b); a bad colour is a `DataError`."""
    if isinstance(value, tuple):
        return value
    try:
        rgb = ImageColor.getrgb(value.strip())
    except ValueError as exc:
        raise DataError(f"unknown colour {value!r}", "use a name like 'white' or a hex value like '#ffffff'") from exc
    return rgb[:3]  # type: ignore[return-value]


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float greyscale → 8-bit 'L', scaled by the type's range (no white clipping)."""
    arr = np.asarray(im)
    if im.mode == "F":
        peak = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0
        scaled = arr.astype(np.float64) * (255.0 / peak)
    else:  # I;16*, I: 16-bit data (PNG/TIFF store 16-bit greyscale this way)
        top = 65535.0 if im.mode.startswith("I;16") or int(arr.max(initial=0)) > 255 else 255.0
        scaled = arr.astype(np.float64) * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def _apply_icc(im: Image.Image) -> Image.Image:
    """Convert an image with an embedded ICC profile (CMYK, Adobe RGB, …) to sRGB; unchanged if it has none."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK", "L"):
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, src, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # a broken profile: fall back to the plain conversion
    return out if out is not None else im


def to_rgb(im: Image.Image, background: RGB = WHITE) -> Image.Image:
    """Any decoded PIL image → 8-bit sRGB 'RGB' (alpha composited onto `background`)."""
    icc = im.info.get("icc_profile")
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _high_depth_to_l(im)
    if im.mode in ("P", "PA") or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        grey = im.mode in ("LA", "La")
        rgba = im.convert("LA" if grey else "RGBA")
        if icc:  # convert the colour channels through the profile, keep alpha, then composite
            colour = rgba.convert("L" if grey else "RGB")
            colour.info["icc_profile"] = icc
            converted = _apply_icc(colour)
            if converted is not colour:
                rgba = Image.merge("RGBA", (*converted.convert("RGB").split(), rgba.getchannel("A")))
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba.convert("RGBA")).convert("RGB")
    im = _apply_icc(im)
    return im if im.mode == "RGB" else im.convert("RGB")


def decode(path: Path, background: RGB = WHITE) -> tuple[Image.Image, tuple[int, int]]:
    """Fully decode an image file upright as RGB; returns the image and the file's stored (w, h).

    Raises the decoder's own exception for corrupt or truncated files (callers decide how to report it).
    """
    with Image.open(path) as im:
        stored = im.size
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
        upright = ImageOps.exif_transpose(im)
        return to_rgb(upright, background), stored


def open_rgb(path: Path, background: RGB = WHITE) -> Image.Image:
    """Open an image upright as RGB; a clear error names the file if it cannot."""
    try:
        return decode(path, background)[0]
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(
            f"cannot read image {path}: {exc}", "remove the file, or run `lorakit prepare` to filter bad images"
        ) from exc


def resize_and_crop(im: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Scale `im` to cover `size` (w, h) and centre-crop; returns the image and the crop's (top, left)."""
    (rw, rh), (top, left) = cover_crop(im.size, size)
    if (rw, rh) != im.size:
        im = im.resize((rw, rh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return im.crop((left, top, left + size[0], top + size[1])), (top, left)


def example_image(example: Example, background: RGB = WHITE) -> Image.Image:
    """The exact picture an example trains on, as a PIL image."""
    im, _ = resize_and_crop(open_rgb(example.image, background), example.size)
    return ImageOps.mirror(im) if example.flip else im


def load_pixels(example: Example, background: RGB = WHITE) -> np.ndarray:
    """Pixels of an example as a float32 CHW array in [-1, 1]."""
    arr = np.asarray(example_image(example, background), dtype=np.float32) / 127.5 - 1.0
    return arr.transpose(2, 0, 1).copy()
