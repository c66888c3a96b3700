"""`lorakit demo`: a synthetic captioned image set, the built-in tiny model, a short run and pictures of the result.

The run folder gets `samples/before_after.png` (the same prompt and seed at LoRA weight 0 and 1.0, a heat map of
where the LoRA changed the pixels, labels, and a verdict on whether the change is visible) and `samples/loss.png`
(the loss curve from `train/log.csv`). The drawing functions are pure (images or rows in, an image out).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .config.loader import Layer, resolve
from .engine.events import Callback
from .engine.trainer import TrainResult
from .io import atomic_path

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
TRIGGER = "lkdemo"

# A side-by-side change is "visible" from this mean |after - before| (0-255 levels, averaged over pixels and
# channels). One level is visible only on a flat field; the tiny model's output is a high-contrast texture (std
# ~40 levels) that masks small changes: its 40-step demo LoRA moves pixels by 5.9 levels on average (p90 13) and
# the two panels look identical. A LoRA that shows its concept changes shapes and colours, i.e. tens of levels.
VISIBLE_CHANGE = 10.0

FONT_SIZE = 15
INK = (30, 30, 30)
PAPER = (255, 255, 255)
GAP = 4  # px between panels
PAD = 6  # px around text


def write_sample_images(folder: Path, count: int = 12, size: int = 96, seed: int = 0) -> Path:
    """Coloured shapes on a light background, each with a `.txt` caption; returns the folder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i in range(count):
        shape, colour = SHAPES[i % len(SHAPES)], names[(i // len(SHAPES)) % len(names)]
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 250, 3)))
        draw = ImageDraw.Draw(im)
        m = int(rng.integers(8, 20))
        box = (m, m, size - m, size - m)
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=fill)
        with atomic_path(folder / f"{i:03d}_{colour}_{shape}.png") as tmp:
            im.save(tmp, format="PNG")
        with atomic_path(folder / f"{i:03d}_{colour}_{shape}.txt") as tmp:
            tmp.write_text(f"a {colour} {shape}, flat colours", encoding="utf-8")
    return folder


@dataclass
class DemoResult:
    """Where the demo put things, and what it measured."""

    data_dir: Path
    train: TrainResult
    before_after: Path
    pixel_change: float  # mean absolute difference between the before and after images, in 0-255 levels
    loss_curve: Path | None = None
    visible: bool = False  # pixel_change >= VISIBLE_CHANGE


# The before/after render: the LoRA at weight 0 and 1 on the same seed (a comparison, not a training sample).
@dataclass(frozen=True)
class DemoRender:
    """The prompt, seed and steps of the before/after pair."""

    prompt: str
    steps: int = 12
    seed: int = 7
    guidance_scale: float = 7.0


DEMO_SAMPLE = DemoRender(f"{TRIGGER}, a red circle, flat colours")


def demo_config(workdir: Path, steps: int = 40):
    """The demo's config: tiny SD1 model, rank 8, a few dozen steps."""
    layer = Layer("demo", {
        "model": {"pretrained_model_name_or_path": "tiny-sd1"},
        "network": {"network_dim": 8, "network_alpha": 8},
        "data": {"train_data_dir": str(workdir / "images"), "trigger_word": TRIGGER, "resolution": 64},
        "train": {"learning_rate": 1e-3, "max_train_steps": steps, "train_batch_size": 2, "lr_scheduler": "cosine",
                  "lr_warmup_steps": 4, "seed": 42},
        "output": {"output_dir": str(workdir / "runs"), "output_name": "demo_lora"},
    })
    return resolve([layer])


def run_demo(workdir: Path, callbacks: list[Callback] | None = None, steps: int = 40) -> DemoResult:
    """Write the images, train, render the same prompt and seed without and with the LoRA, draw the pictures."""
    from . import api
    from .families import load_model
    from .generate import apply_lora, render_images

    data_dir = write_sample_images(workdir / "images")
    cfg = demo_config(workdir, steps)
    result = api.train(cfg, callbacks)
    s = DEMO_SAMPLE
    parts = load_model(cfg.model)
    before = render_images(parts, s.prompt, (s.seed,), steps=s.steps, guidance_scale=s.guidance_scale)[0]
    apply_lora(parts, result.lora_path, 1.0)
    after = render_images(parts, s.prompt, (s.seed,), steps=s.steps, guidance_scale=s.guidance_scale)[0]
    samples = result.run_dir / "samples"
    figure = before_after_figure(before, after, s.prompt, 1.0, result.steps, seed=s.seed)
    pair_path, loss_path = samples / "before_after.png", samples / "loss.png"
    with atomic_path(pair_path) as tmp:
        figure.save(tmp, format="PNG")
    with atomic_path(loss_path) as tmp:
        loss_plot(read_log(result.run_dir / "train" / "log.csv")).save(tmp, format="PNG")
    change = pixel_change(before, after)
    return DemoResult(data_dir, result, pair_path, change, loss_path, change >= VISIBLE_CHANGE)


# --- before/after picture --------------------------------------------------------------------------------------


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (its small bitmap font where Pillow has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


def pixel_change(before: Image.Image, after: Image.Image) -> float:
    """Mean |after - before| over pixels and channels, in 0-255 levels."""
    return float(np.abs(np.asarray(after, np.float32) - np.asarray(before, np.float32)).mean())


def hot_colours(t: np.ndarray) -> np.ndarray:
    """The "hot" colour map: 0 black, 1/3 red, 2/3 yellow, 1 white; `t` in [0, 1] → uint8 RGB (shape + (3,))."""
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0)
    rgb = np.stack([np.clip(3 * t - k, 0.0, 1.0) for k in range(3)], axis=-1)
    return np.rint(rgb * 255).astype(np.uint8)


def change_heat_map(before: Image.Image, after: Image.Image) -> tuple[Image.Image, float]:
    """Per-pixel |after - before| (mean over RGB) normalised to its maximum, as a hot-colour image; and that max."""
    diff = np.abs(np.asarray(after.convert("RGB"), np.float64) - np.asarray(before.convert("RGB"), np.float64))
    per_pixel = diff.mean(axis=-1)
    peak = float(per_pixel.max())
    return Image.fromarray(hot_colours(per_pixel / peak if peak > 0 else per_pixel)), peak


def wrap(text: str, width: int, fnt) -> list[str]:
    """Greedy word wrap of `text` to lines at most `width` px wide in `fnt` (a long word stays whole)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}".strip()
            if line and fnt.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def text_block(text: str, width: int, fnt=None, colour: tuple[int, int, int] = INK) -> Image.Image:
    """`text` wrapped to `width` px on white, with PAD px around it."""
    fnt = fnt or font()
    lines = wrap(text, width - 2 * PAD, fnt)
    line_h = int(fnt.size * 1.3) if hasattr(fnt, "size") else 14
    im = Image.new("RGB", (width, 2 * PAD + line_h * len(lines)), PAPER)
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD + i * line_h), line, fill=colour, font=fnt)
    return im


def colour_bar(width: int, height: int = 8) -> Image.Image:
    """The heat map's colour scale, 0 at the left to the maximum at the right."""
    row = hot_colours(np.linspace(0.0, 1.0, width))
    return Image.fromarray(np.repeat(row[None], height, axis=0))


def stack(images: list[Image.Image]) -> Image.Image:
    """Images one below the other on white, left-aligned."""
    out = Image.new("RGB", (max(im.width for im in images), sum(im.height for im in images)), PAPER)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def change_verdict(change: float) -> str:
    """The sentence written under the picture: is the LoRA's change visible side by side?"""
    if change < VISIBLE_CHANGE:
        return (f"Mean pixel change {change:.1f}/255 (below {VISIBLE_CHANGE:g}/255, not visible side by side): "
                "the tiny random model cannot show the learned concept; this heat map shows where the LoRA "
                "changed the pixels.")
    return (f"Mean pixel change {change:.1f}/255: the LoRA visibly changes the image; "
            "the heat map shows where it acted.")


def before_after_figure(before: Image.Image, after: Image.Image, prompt: str, weight: float, train_steps: int,
                        scale: int = 4, seed: int | None = None) -> Image.Image:
    """Before | after | heat map (each enlarged `scale`×, nearest-neighbour) with the prompt on top, a caption
    under each panel (LoRA weight, training steps, the heat map's scale) and the visibility verdict at the bottom.

    The heat map is always there: when the change is invisible it is the only evidence of what training did, and
    when it is visible it shows whether the LoRA acted on the subject or bled into the background.
    """
    before, after = before.convert("RGB"), after.convert("RGB")
    heat, peak = change_heat_map(before, after)
    w, h = before.width * scale, before.height * scale
    panels = [im.resize((w, h), Image.Resampling.NEAREST) for im in (before, after, heat)]
    total = len(panels) * w + (len(panels) - 1) * GAP
    row = Image.new("RGB", (total, h), PAPER)
    for i, panel in enumerate(panels):
        row.paste(panel, (i * (w + GAP), 0))
    captions = ["before: LoRA weight 0", f"after: LoRA weight {weight:.1f}, trained {train_steps} steps",
                f"heat map: |after - before| per pixel (RGB mean), black 0 to white {peak:.0f}/255"]
    cells = [text_block(c, w) for c in captions]
    bar = colour_bar(w - 2 * PAD)
    cells[2] = stack([cells[2], _padded(bar)])
    caption_row = Image.new("RGB", (total, max(c.height for c in cells)), PAPER)
    for i, cell in enumerate(cells):
        caption_row.paste(cell, (i * (w + GAP), 0))
    title = f'prompt "{prompt}"' + (f", seed {seed}" if seed is not None else "")
    verdict = change_verdict(pixel_change(before, after))
    return stack([text_block(title, total), row, caption_row, text_block(verdict, total)])


def _padded(im: Image.Image) -> Image.Image:
    out = Image.new("RGB", (im.width + 2 * PAD, im.height + PAD), PAPER)
    out.paste(im, (PAD, 0))
    return out


# --- loss curve --------------------------------------------------------------------------------------------------

RAW_COLOUR = (160, 190, 235)
EMA_COLOUR = (20, 60, 170)
VAL_COLOUR = (230, 110, 20)
AXIS_COLOUR = (120, 120, 120)
PLOT_SIZE = (560, 300)
EMA_BETA = 0.8  # smoothing of the EMA line: each point keeps 80 % of the previous average


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a training `log.csv` as dicts by column name ([] if the file is missing)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def finite_number(value: object) -> float | None:
    """A CSV cell as a finite float; empty, unreadable or non-finite cells are None."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def loss_points(rows: Iterable[Mapping[str, str]], column: str = "loss") -> list[tuple[float, float]]:
    """(step, value) for rows whose `step` and `column` are numbers; validation rows (empty loss) are skipped."""
    points = []
    for row in rows:
        step, value = finite_number(row.get("step")), finite_number(row.get(column))
        if step is not None and value is not None:
            points.append((step, value))
    return points


def ema(values: list[float], beta: float = EMA_BETA) -> list[float]:
    """Exponential moving average, starting at the first value."""
    out: list[float] = []
    for v in values:
        out.append(v if not out else beta * out[-1] + (1 - beta) * v)
    return out


def plot_area(size: tuple[int, int] = PLOT_SIZE) -> tuple[int, int, int, int]:
    """The loss plot's data box (left, top, right, bottom), inclusive: step range spans left→right, max→min loss
    spans top→bottom."""
    return 72, 34, size[0] - 18, size[1] - 42


def loss_plot(rows: Iterable[Mapping[str, str]], size: tuple[int, int] = PLOT_SIZE) -> Image.Image:
    """The training loss against step: raw values (light), their EMA (dark), validation losses (orange dots),
    axes with first/last step and min/max loss labels. Rows are `log.csv` dicts, read by column name."""
    rows = list(rows)
    train, val = loss_points(rows), loss_points(rows, "val_loss")
    im = Image.new("RGB", size, PAPER)
    draw = ImageDraw.Draw(im)
    fnt, small = font(), font(12)
    left, top, right, bottom = plot_area(size)
    draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=AXIS_COLOUR)
    if not train and not val:
        draw.text(((left + right) // 2, (top + bottom) // 2), "no loss logged", fill=INK, font=fnt, anchor="mm")
        return im
    points = train + val
    s0, s1 = min(p[0] for p in points), max(p[0] for p in points)
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (step - s0) / (s1 - s0) * (right - left) if s1 > s0 else (left + right) / 2
        y = top + (hi - value) / (hi - lo) * (bottom - top) if hi > lo else (top + bottom) / 2
        return round(x), round(y)

    if train:
        raw = [xy(s, v) for s, v in train]
        smooth = [xy(s, v) for (s, _), v in zip(train, ema([v for _, v in train]))]
        for line, colour, width in ((raw, RAW_COLOUR, 1), (smooth, EMA_COLOUR, 2)):
            if len(line) > 1:
                draw.line(line, fill=colour, width=width)
            else:
                draw.ellipse((line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2), fill=colour)
    for s, v in val:
        x, y = xy(s, v)
        draw.rectangle((x - 2, y - 2, x + 2, y + 2), fill=VAL_COLOUR)
    # axis labels: loss max/min at the top/bottom of the box, first/last step under its ends
    draw.text((left - 6, top), f"{hi:.4g}", fill=INK, font=small, anchor="rm")
    draw.text((left - 6, bottom), f"{lo:.4g}", fill=INK, font=small, anchor="rm")
    draw.text((left, bottom + 6), f"{s0:g}", fill=INK, font=small, anchor="lt")
    draw.text((right, bottom + 6), f"{s1:g}", fill=INK, font=small, anchor="rt")
    draw.text(((left + right) // 2, bottom + 22), "step", fill=INK, font=small, anchor="mt")
    draw.text((PAD, PAD), "training loss", fill=INK, font=fnt)
    x = right
    for label, colour in reversed((("raw", RAW_COLOUR), (f"EMA {EMA_BETA:g}", EMA_COLOUR))
                                  + ((("validation", VAL_COLOUR),) if val else ())):
        x -= int(small.getlength(label))
        draw.text((x, PAD + 2), label, fill=colour if colour != RAW_COLOUR else (90, 130, 200), font=small)
        x -= 14
    return im
