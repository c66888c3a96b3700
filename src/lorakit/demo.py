"""`lorakit demo`: a synthetic captioned image set, the built-in tiny model, a short run and a before/after pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .config.loader import Layer, resolve
from .engine.events import Callback
from .engine.trainer import TrainResult
from .io import atomic_path

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
TRIGGER = "lkdemo"


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
        im.save(folder / f"{i:03d}_{colour}_{shape}.png")
        (folder / f"{i:03d}_{colour}_{shape}.txt").write_text(f"a {colour} {shape}, flat colours", encoding="utf-8")
    return folder


@dataclass
class DemoResult:
    """Where the demo put things."""

    data_dir: Path
    train: TrainResult
    before_after: Path
    pixel_change: float  # mean absolute difference between the before and after images, in 0-255 levels


def demo_config(workdir: Path, steps: int = 40):
    """The demo's config: tiny SD1 model, rank 8, a few dozen steps."""
    layer = Layer("demo", {
        "model": {"pretrained_model_name_or_path": "tiny-sd1"},
        "network": {"network_dim": 8, "network_alpha": 8},
        "data": {"train_data_dir": str(workdir / "images"), "trigger_word": TRIGGER, "resolution": 64},
        "train": {"learning_rate": 1e-3, "max_train_steps": steps, "train_batch_size": 2, "lr_scheduler": "cosine",
                  "lr_warmup_steps": 4, "seed": 42},
        "output": {"output_dir": str(workdir / "runs"), "output_name": "demo_lora"},
        "sample": {"prompt": f"{TRIGGER}, a red circle, flat colours", "steps": 12, "seed": 7},
    })
    return resolve([layer])


def run_demo(workdir: Path, callbacks: list[Callback] | None = None, steps: int = 40) -> DemoResult:
    """Write the images, train, and render the same prompt and seed without and with the LoRA."""
    from . import api
    from .families import load_model
    from .generate import apply_lora, render_images

    data_dir = write_sample_images(workdir / "images")
    cfg = demo_config(workdir, steps)
    result = api.train(cfg, callbacks)
    s = cfg.sample
    parts = load_model(cfg.model)
    before = render_images(parts, s.prompt, (s.seed,), steps=s.steps, guidance_scale=s.guidance_scale)[0]
    apply_lora(parts, result.lora_path, 1.0)
    after = render_images(parts, s.prompt, (s.seed,), steps=s.steps, guidance_scale=s.guidance_scale)[0]
    pair = side_by_side(before, after, scale=4)
    path = result.run_dir / "samples" / "before_after.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pair.save(tmp, format="PNG")
    change = float(np.abs(np.asarray(before, np.float32) - np.asarray(after, np.float32)).mean())
    return DemoResult(data_dir, result, path, change)


def side_by_side(left: Image.Image, right: Image.Image, scale: int = 1) -> Image.Image:
    """Two images next to each other (enlarged `scale` times, nearest-neighbour) with a 4 px gap."""
    w, h = left.width * scale, left.height * scale
    out = Image.new("RGB", (2 * w + 4, h), (255, 255, 255))
    out.paste(left.resize((w, h), Image.Resampling.NEAREST), (0, 0))
    out.paste(right.resize((w, h), Image.Resampling.NEAREST), (w + 4, 0))
    return out
