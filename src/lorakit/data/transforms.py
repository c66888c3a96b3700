"""Turn files into correct RGB pixels, and an `Example` into a training array.

`to_rgb` is shared by `prepare` and training so both see the same pixels: EXIF orientation, the first frame of an
animation, alpha composited onto a background colour, CMYK and embedded ICC profiles converted to sRGB, and 16-bit
or float images scaled (not clipped) to 8 bits.

sd-scripts' per-use augmentations (`color_aug`, `random_crop`) draw from a `random.Random` the caller passes, in
sd-scripts' order: crop offsets (width, then height), then the colour change, then the mirror (library/train_util.py,
`BaseDataset.__getitem__`). They change the pixels at every use, so they need uncached latents.

A loss mask (train.masked_loss, `example_mask`) is cut exactly as its image: the same resize, crop (the same random
offsets: they are the first draws of a use's generator) and mirror; the colour change leaves it alone.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageColor, ImageOps

from ..errors import DataError
from .buckets import cover_crop
from .example import Example, MaskKind, MaskSource
from .settings import DataSection

RGB = tuple[int, int, int]
Size = tuple[int, int]
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


@dataclass(frozen=True)
class Augment:
    """sd-scripts' per-use image augmentations (`data.color_aug`, `data.random_crop`)."""

    color: bool = False
    random_crop: bool = False

    @property
    def active(self) -> bool:
        """Whether an image's pixels change from use to use (so its latents cannot be cached)."""
        return self.color or self.random_crop


def augment_from(cfg: DataSection) -> Augment:
    """The augmentation settings of a `[data]` section (read by every run, on or off)."""
    return Augment(color=cfg.color_aug, random_crop=cfg.random_crop)


def crop_offsets(resized: Size, size: Size, rng: random.Random | None = None) -> tuple[int, int]:
    """(top, left) of a `size` (w, h) window in a `resized` (w, h) image: centred, or with `rng` random offsets
    drawn width first, each only when that side is larger (sd-scripts' `trim_and_resize_if_required`)."""
    trim_w, trim_h = resized[0] - size[0], resized[1] - size[1]
    left = top = 0
    if trim_w > 0:
        left = rng.randint(0, trim_w) if rng else trim_w // 2
    if trim_h > 0:
        top = rng.randint(0, trim_h) if rng else trim_h // 2
    return top, left


def resize_and_crop(im: Image.Image, size: Size, rng: random.Random | None = None, resized: Size | None = None
                    ) -> tuple[Image.Image, tuple[int, int]]:
    """Scale `im` to `resized` (default: just cover `size` (w, h)) and crop to `size` (centred; random offsets from
    `rng` when given); returns the image and the crop's (top, left)."""
    rw, rh = resized or cover_crop(im.size, size)[0]
    if (rw, rh) != im.size:
        im = im.resize((rw, rh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    top, left = crop_offsets((rw, rh), size, rng)
    return im.crop((left, top, left + size[0], top + size[1])), (top, left)


# -- colour augmentation: OpenCV's 8-bit HSV conversion (hue in 0..179), as sd-scripts calls it -------------------
_HSV_SHIFT = 12  # OpenCV's fixed-point precision for RGB2HSV_b
_SECTORS = ((1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0))  # OpenCV's HSV2RGB sector table
_SIMD_BLOCK = 32  # pixels per SIMD step of OpenCV's HSV2RGB_b with AVX2 (4 × 8 float lanes)


def _division_table(numerator: int, divisor: float) -> np.ndarray:
    """OpenCV's `saturate_cast<int>((numerator << hsv_shift) / (divisor * i))` for i = 0..255, 0 at i = 0
    (cvRound rounds half to even, as np.rint)."""
    i = np.arange(1, 256, dtype=np.float64)
    return np.concatenate([[0], np.rint((numerator << _HSV_SHIFT) / (divisor * i))]).astype(np.int64)


_SDIV, _HDIV = _division_table(255, 1.0), _division_table(180, 6.0)


def bgr_to_hsv(arr: np.ndarray) -> np.ndarray:
    """OpenCV's `cvtColor(arr, COLOR_BGR2HSV)` for uint8 (H, W, 3): channel 0 is read as blue, hue in 0..179."""
    b, g, r = (arr[..., i].astype(np.int64) for i in range(3))
    v = np.maximum(np.maximum(b, g), r)
    diff = v - np.minimum(np.minimum(b, g), r)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT
    h = np.where(h < 0, h + 180, h)
    return np.stack([h, s, v], axis=-1).astype(np.uint8)


def _one_minus_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float32 `1 - a*b` as one fused multiply-add, as the compiler emits it in OpenCV's AVX2 code (the float32
    product is exact in float64)."""
    return (1.0 - a.astype(np.float64) * b.astype(np.float64)).astype(np.float32)


def hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    """OpenCV's `cvtColor(hsv, COLOR_HSV2BGR)` for uint8 (H, W, 3), float32 maths. OpenCV's x86-64 (AVX2) build
    converts each row in blocks of 32 pixels with SIMD code that truncates to uint8; the row's last `W % 32`
    pixels go through its scalar code, which rounds half to even."""
    h = hsv[..., 0].astype(np.float32) * np.float32(6.0 / 180.0)
    s = hsv[..., 1].astype(np.float32) * np.float32(1.0 / 255.0)
    v = hsv[..., 2].astype(np.float32) * np.float32(1.0 / 255.0)
    sector = np.floor(h).astype(np.int64)  # h < 6: hue is 0..179
    frac = h - sector.astype(np.float32)
    one = np.float32(1.0)
    tab = np.stack([v, v * (one - s), v * _one_minus_product(s, frac), v * _one_minus_product(s, one - frac)], -1)
    order = np.asarray(_SECTORS)[sector]  # (..., 3): which tab entry is b, g, r
    bgr = np.take_along_axis(tab, order, axis=-1)
    bgr = np.where((s == 0)[..., None], v[..., None], bgr) * np.float32(255.0)
    out = np.trunc(bgr)
    simd_end = hsv.shape[-2] // _SIMD_BLOCK * _SIMD_BLOCK
    out[..., simd_end:, :] = np.rint(bgr[..., simd_end:, :])
    return np.clip(out, 0, 255).astype(np.uint8)


def shift_hue(arr: np.ndarray, shift: float) -> np.ndarray:
    """sd-scripts' hue shift of a uint8 RGB array by `shift` OpenCV hue units (2° each), with its channel order:
    the RGB array goes to OpenCV as BGR, so the colours turn the other way (`shift` = +8 turns red towards
    magenta). The shifted hue is truncated to an integer, as numpy's assignment into uint8 does."""
    hsv = bgr_to_hsv(arr)
    turn = float(shift) if shift >= 0 else 180.0 + shift  # a float, as random.uniform's: no uint8 wrap-around
    hsv[..., 0] = ((hsv[..., 0] + turn) % 180).astype(np.uint8)
    return hsv_to_bgr(hsv)


def color_aug(arr: np.ndarray, rng: random.Random) -> np.ndarray:
    """sd-scripts' `AugHelper.color_aug` on a uint8 RGB array: with probability 0.33, half the time a hue shift
    drawn from U(-8, 8) OpenCV units (±16°), else `arr ** U(0.95, 1.05)` on the 0..255 values, clipped and
    truncated to uint8 (sd-scripts' stand-in for albumentations' RandomGamma: not normalised, so it also changes
    the brightness, 255 → 194 at 0.95)."""
    if rng.random() > 0.33:
        return arr
    if rng.random() > 0.5:
        return shift_hue(arr, rng.uniform(-8, 8))
    gamma = rng.uniform(0.95, 1.05)
    return np.clip(arr.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)


def example_image(example: Example, background: RGB = WHITE, augment: Augment | None = None,
                  rng: random.Random | None = None) -> Image.Image:
    """The exact picture an example trains on, as a PIL image; with `augment`, this use's random crop and colour
    change drawn from `rng` (sd-scripts' order: crop, colour, mirror)."""
    augment = augment or Augment()
    if augment.active and rng is None:
        raise ValueError("augmented pixels need the random generator of this use")
    crop_rng = rng if augment.random_crop else None
    im, _ = resize_and_crop(open_rgb(example.image, background), example.size, crop_rng, example.resized)
    if augment.color:
        im = Image.fromarray(color_aug(np.asarray(im), rng))  # type: ignore[arg-type]
    return ImageOps.mirror(im) if example.flip else im


def load_pixels(example: Example, background: RGB = WHITE, augment: Augment | None = None,
                rng: random.Random | None = None) -> np.ndarray:
    """Pixels of an example as a float32 CHW array in [-1, 1] (augmented per use with `augment` and `rng`)."""
    arr = np.asarray(example_image(example, background, augment, rng), dtype=np.float32) / 127.5 - 1.0
    return arr.transpose(2, 0, 1).copy()


# -- loss masks (train.masked_loss) ----------------------------------------------------------------------------------
def open_mask(source: MaskSource) -> Image.Image:
    """A mask as an 8-bit 'L' image, upright as its image: the image's alpha channel (sd-scripts' load_image with
    alpha: convert("RGBA"), so an image without alpha is 255 everywhere), or a mask file's red channel (its
    load_image: convert("RGB"); apply_masked_loss reads channel 0)."""
    mode, band = ("RGBA", "A") if source.kind == "alpha" else ("RGB", "R")
    try:
        with Image.open(source.path) as im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im)
            return (upright if upright.mode == mode else upright.convert(mode)).getchannel(band)
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"cannot read mask {source.path}: {exc}", "re-export the mask as a PNG") from exc


def mask_values(arr: np.ndarray, kind: MaskKind) -> np.ndarray:
    """uint8 mask → float32 in [0, 1], in sd-scripts' float32 steps: an alpha channel as alpha / 255
    (train_util.BaseDataset.__getitem__); a mask image through the pixel transform (ToTensor: / 255, then
    Normalize(0.5, 0.5): (x − 0.5) / 0.5) and back (custom_train_functions.apply_masked_loss: / 2 + 0.5)."""
    x = arr.astype(np.float32) / np.float32(255.0)
    if kind == "alpha":
        return x
    return ((x - np.float32(0.5)) / np.float32(0.5)) / np.float32(2.0) + np.float32(0.5)


def example_mask(example: Example, augment: Augment | None = None, rng: random.Random | None = None
                 ) -> np.ndarray | None:
    """The loss mask of an example as a float32 (height, width) array of its size, pixel-aligned with
    `example_image(example, …, augment, rng)` for a generator seeded alike; None when it has no mask.

    A mask file must be as large as its image (sd-scripts' ControlNetDataset asserts it too). sd-scripts stretches
    a mask file to the bucket and never crops it randomly; here it follows the image's resize and crop exactly."""
    source = example.mask
    if source is None:
        return None
    im = open_mask(source)
    if source.kind == "image" and example.original_size is not None:
        h, w = example.original_size
        if im.size != (w, h):
            raise DataError(f"mask {source.path} is {im.size[0]}x{im.size[1]}, its image {example.image} {w}x{h}",
                            "save the mask at the size of its image (data.conditioning_data_dir)")
    crop_rng = rng if augment is not None and augment.random_crop else None
    im, _ = resize_and_crop(im, example.size, crop_rng, example.resized)
    if example.flip:
        im = ImageOps.mirror(im)
    return mask_values(np.asarray(im), source.kind)
