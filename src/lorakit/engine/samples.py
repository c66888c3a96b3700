"""Sample images during training: the sample prompts rendered with the networks as they are at step 0, on the
schedule, and at the end, into runs/<id>/samples/ with a contact sheet of every render.

Rendering never changes what the run trains: the global random states are saved and restored around it, each
image draws its noise from its own seeded CPU generator, and the models are in eval mode (no dropout draws).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..config.schema import LorakitConfig
from ..errors import ConfigError, LorakitError
from ..generate import unique_path
from ..io import atomic_path
from .sample_prompts import PromptError, SamplePrompt, resolve_prompts

SHEET_NAME = "contact_sheet.png"
THUMB = 256  # the longest side of a contact-sheet cell's image: the sheet stays small whatever the sample size
PAD = 4  # pixels around each cell's image
LABEL_WIDTH = 96  # the step labels' column
HEADER_HEIGHT = 24  # the prompts' row
MAX_SHEET_ROWS = 50  # renders on the sheet: step 0 and the latest ones (every render stays in the folder)
BACKGROUND, INK = (255, 255, 255), (0, 0, 0)


def sampling_enabled(cfg: LorakitConfig) -> bool:
    """Samples are rendered when the config names prompts."""
    return bool(cfg.sample.prompts or cfg.sample.prompts_file)


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states (CPU, every CUDA device, Apple MPS) on exit.
    CUDA's only once initialised: asking would otherwise start CUDA (and it has drawn nothing yet)."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if mps is not None:
            torch.mps.set_rng_state(mps)


@contextmanager
def eval_mode(modules: list[torch.nn.Module]) -> Iterator[None]:
    """Modules in eval mode within (no dropout), each back to its own mode on exit."""
    before = [(m, m.training) for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, training in before:
            m.train(training)


def cell_size(prompts: list[SamplePrompt]) -> tuple[int, int]:
    """(width, height) of a contact-sheet cell: room for the largest sample, scaled so its long side is at most
    THUMB, plus PAD on each side."""
    w, h = max(p.width for p in prompts), max(p.height for p in prompts)
    scale = min(1.0, THUMB / max(w, h))
    return round(w * scale) + 2 * PAD, round(h * scale) + 2 * PAD


def sheet_size(rows: int, cols: int, cell: tuple[int, int]) -> tuple[int, int]:
    """Pixel size of a sheet of `rows` renders × `cols` prompts (plus the label column and header row)."""
    return LABEL_WIDTH + cols * cell[0], HEADER_HEIGHT + rows * cell[1]


def letterbox(image: Image.Image, cell: tuple[int, int]) -> Image.Image:
    """The image scaled to fit the cell's inner box (aspect kept), centred on the background colour."""
    inner = (cell[0] - 2 * PAD, cell[1] - 2 * PAD)
    scale = min(inner[0] / image.width, inner[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    out = Image.new("RGB", cell, BACKGROUND)
    out.paste(image.convert("RGB").resize(size, Image.Resampling.LANCZOS),
              ((cell[0] - size[0]) // 2, (cell[1] - size[1]) // 2))
    return out


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """`text` cut (with an ellipsis) to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(rows: list[tuple[int, list[Image.Image]]], prompts: list[SamplePrompt],
                  cell: tuple[int, int]) -> Image.Image:
    """Renders down (labelled with their step), prompts across (labelled with the prompt's start)."""
    sheet = Image.new("RGB", sheet_size(len(rows), len(prompts), cell), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for col, p in enumerate(prompts):
        draw.text((LABEL_WIDTH + col * cell[0] + PAD, PAD), _fit(draw, p.prompt, cell[0] - 2 * PAD, font),
                  fill=INK, font=font)
    for row, (step, thumbs) in enumerate(rows):
        y = HEADER_HEIGHT + row * cell[1]
        draw.text((PAD, y + PAD), f"step {step}", fill=INK, font=font)
        for col, thumb in enumerate(thumbs):
            sheet.paste(thumb, (LABEL_WIDTH + col * cell[0], y))
    return sheet


class SampleRenderer:
    """Renders the sample prompts with the run's pipeline (its networks attached and active)."""

    def __init__(self, cfg: LorakitConfig, parts: Any, folder: Path, autocast: Callable[[], Any],
                 events: Any) -> None:
        try:
            self.prompts = resolve_prompts(cfg)
        except PromptError as exc:
            raise ConfigError(str(exc).splitlines(), "fix or remove these sample prompts") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise LorakitError(f"sample.prompts_file: cannot read {cfg.sample.prompts_file}: {exc}",
                               "point it at a UTF-8 text file with one prompt per line") from exc
        self.cfg, self.parts, self.folder, self.autocast, self.events = cfg, parts, folder, autocast, events
        self.cell = cell_size(self.prompts)
        self.rows: list[tuple[int, list[Image.Image]]] = []  # the sheet's renders, as cell images
        self.last_step: int | None = None

    def due(self, step: int, epoch_ended: int | None) -> bool:
        """After `step` (and the end of epoch `epoch_ended`, if one ended): every N steps, every N epochs."""
        s = self.cfg.sample
        by_steps = bool(s.every_n_steps) and step % s.every_n_steps == 0
        by_epochs = bool(s.every_n_epochs) and epoch_ended is not None and epoch_ended % s.every_n_epochs == 0
        return by_steps or by_epochs

    def render(self, step: int) -> list[Path]:
        """Render every prompt, write `step{N:08d}_{i:02d}.png` (never over an existing file) and the sheet."""
        images = self._images()
        self.last_step = step  # after the render: a failed one is tried again at the end
        paths = []
        for i, image in enumerate(images):
            path = unique_path(self.folder, f"step{step:08d}_{i:02d}")
            with atomic_path(path) as tmp:
                image.save(tmp, format="PNG")
            paths.append(path)
        self.rows.append((step, [letterbox(image, self.cell) for image in images]))
        if len(self.rows) > MAX_SHEET_ROWS:
            del self.rows[1]  # keep step 0 and the latest
        with atomic_path(self.folder / SHEET_NAME) as tmp:
            contact_sheet(self.rows, self.prompts, self.cell).save(tmp, format="PNG")
        self.events.on_notice(f"samples at step {step}: {len(paths)} image(s) in {self.folder}")
        return paths

    def _images(self) -> list[Image.Image]:
        """PIL images of every prompt, the training state untouched."""
        parts, pipe = self.parts, self.parts.pipeline
        pipe.set_progress_bar_config(disable=True)
        models = [parts.unet, *parts.text_encoders] + ([parts.vae] if parts.vae is not None else [])
        images = []
        with preserved_rng(), eval_mode(models), torch.no_grad():
            for p in self.prompts:
                with self.autocast():  # denoise in the training precision; decode outside it (below)
                    out = pipe(**parts.family.sample_prompt_kwargs(parts, p.prompt, p.negative_prompt),
                               width=p.width, height=p.height, num_inference_steps=p.steps,
                               guidance_scale=p.guidance_scale,
                               generator=torch.Generator("cpu").manual_seed(p.seed), output_type="latent")
                images.append(decode(pipe, out.images))
        return images


@torch.no_grad()
def decode(pipe: Any, latents: torch.Tensor) -> Image.Image:
    """The first latent as a PIL image, decoded in the VAE's own dtype: a VAE kept in fp32 (force_upcast: SDXL's
    overflows to NaN in fp16) must not run under the training autocast."""
    vae = pipe.vae
    latents = latents[:1].to(vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:  # VAEs that normalise their latents (diffusers' SDXL pipeline)
        shape = (1, len(mean), 1, 1)
        latents = latents * torch.tensor(std).view(shape).to(latents) / vae.config.scaling_factor \
            + torch.tensor(mean).view(shape).to(latents)
    else:
        latents = latents / vae.config.scaling_factor
    return pipe.image_processor.postprocess(vae.decode(latents).sample, output_type="pil")[0]
