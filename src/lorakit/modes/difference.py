"""Difference: a slider from two images (TrainTrain's "copy machine" method).

Pass 1 trains a LoRA (the copy machine, adapter "copy_machine") to reproduce the original image. It is then frozen and
stays applied while pass 2 trains a new LoRA on the target image: everything the two images share is already
produced by the copy machine, so pass 2 learns only what differs. Only pass 2's network is the run's result; at a
negative weight it moves the other way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..config.plan import stage_steps
from ..config.schema import DifferenceModeSection, LorakitConfig
from ..data.buckets import cover_crop
from ..runs import COPY_MACHINE_SUFFIX
from ..data.example import Example, file_fingerprint
from ..data.transforms import open_rgb
from ..engine.mode import Stage
from ..errors import DataError, LorakitError
from ..networks.registry import ADAPTER
from .lora import DenoisingTask

if TYPE_CHECKING:
    from ..engine.trainer import Run

PASS1, PASS2 = "pass 1: copy machine", "pass 2: difference"  # the stage labels of config.plan.stage_steps
COPY = "copy_machine"  # the adapter of pass 1 ("copy" clashes with ParameterDict.copy in LoHa/LoKr); pass 2 trains ADAPTER


@dataclass(frozen=True)
class TrainImage:
    """One of the two images: the file's upright size and the size it trains at (a multiple of 8)."""

    key: str  # "mode.original_image"
    path: Path
    file_size: tuple[int, int]  # (w, h)
    size: tuple[int, int]  # (w, h) after scaling down and centre-cropping
    scaled: bool  # larger than data.max_size's area: scaled down to fit

    def example(self, caption: str) -> Example:
        """The image as an Example: its latents cache by file content, and SDXL sees its true size and crop."""
        _, crop = cover_crop(self.file_size, self.size)
        return Example(self.path, caption, self.size, original_size=(self.file_size[1], self.file_size[0]),
                       crop_top_left=crop, fingerprint=file_fingerprint(self.path))

    def describe(self) -> str:
        w, h = self.file_size
        line = f"{self.path} ({w}×{h}"
        if self.size != self.file_size:
            why = "scaled down to data.max_size's area and " if self.scaled else ""
            line += f"; trains at {self.size[0]}×{self.size[1]}, {why}centre-cropped to a multiple of 8"
        return line + ")"


def training_size(size: tuple[int, int], max_area: int) -> tuple[tuple[int, int], bool]:
    """((w, h) to train at, scaled down): the image's own size as TrainTrain uses it, scaled down (keeping its
    aspect) when larger than `max_area`, each side rounded down to a multiple of 8 for the VAE."""
    w, h = size
    scaled = w * h > max_area
    if scaled:
        scale = math.sqrt(max_area / (w * h))
        w, h = int(w * scale), int(h * scale)
    return (w - w % 8, h - h % 8), scaled


def read_images(mode: DifferenceModeSection, max_area: int) -> list[TrainImage]:
    """The configured images (original first), refused unless they are the same size: pass 2 learns how the
    target differs from what the copy machine makes, pixel by pixel."""
    keys = [(key, Path(value)) for key, value in
            (("mode.original_image", mode.original_image), ("mode.target_image", mode.target_image)) if value]
    sizes = [open_rgb(path).size for _, path in keys]
    if len(keys) == 2 and sizes[0] != sizes[1]:
        (a, pa), (b, pb) = keys
        raise DataError(f"{a} {pa} is {sizes[0][0]}×{sizes[0][1]} pixels but {b} {pb} is "
                        f"{sizes[1][0]}×{sizes[1][1]}: the two images must be the same size",
                        "crop or resize one to match the other")
    images = []
    for (key, path), file_size in zip(keys, sizes):
        size, scaled = training_size(file_size, max_area)
        if min(size) < 8:
            raise DataError(f"{key} {path} is {file_size[0]}×{file_size[1]} pixels: less than the 8 a side the "
                            "VAE needs", "use a larger image")
        images.append(TrainImage(key, path, file_size, size, scaled))
    return images


class RepeatSampler:
    """Every batch is one example `batch_size` times (each copy gets its own noise and timestep, as TrainTrain
    repeats the latent); one epoch is the whole stage, so the loop's epoch count stays 1."""

    def __init__(self, example: Example, batch_size: int, batches: int) -> None:
        self.example, self.batch_size, self.count = example, batch_size, batches

    def batches(self, epoch: int) -> Iterator[list[Example]]:
        for _ in range(self.count):
            yield [self.example] * self.batch_size

    def __len__(self) -> int:
        return self.count


def second_pass_config(cfg: LorakitConfig) -> LorakitConfig:
    """The run's config with [mode.second_pass]'s settings (those set) in network and train; validated again."""
    sp = cfg.mode.second_pass
    net = {k: v for k, v in (("network_dim", sp.network_dim), ("network_alpha", sp.network_alpha)) if v is not None}
    train = {k: v for k, v in (("learning_rate", sp.learning_rate), ("max_train_steps", sp.max_train_steps),
                               ("train_batch_size", sp.train_batch_size)) if v is not None}
    return cfg.model_copy(update={
        "network": type(cfg.network).model_validate(cfg.network.model_dump() | net),
        "train": type(cfg.train).model_validate(cfg.train.model_dump() | train),
    })


class DifferenceMode:
    """Two stages: the copy machine on the original image (or loaded from mode.first_pass_file), frozen; then
    the difference on the target image with the copy machine applied."""

    uses_dataset = False
    uses_images = True
    data_parallel = False  # one process (training on several: not implemented yet)

    def __init__(self, run: Run) -> None:
        self.run, cfg = run, run.cfg
        mode = cfg.mode
        assert isinstance(mode, DifferenceModeSection)
        self.mode, self.pass2 = mode, second_pass_config(cfg)
        self.steps = dict(stage_steps(cfg))
        self.images = {i.key: i for i in read_images(mode, cfg.data.max_size[0] * cfg.data.max_size[1])}
        for image in self.images.values():
            if image.scaled:
                run.events.on_notice(f"{image.key} is larger than data.max_size's area: {image.describe()}")
        self.loaded = ""
        if mode.first_pass_file:
            self.loaded = self._load_copy(Path(mode.first_pass_file))
        else:
            run.attach(cfg.network, adapter=COPY)

    def _load_copy(self, path: Path) -> str:
        """Attach the copy machine from a file, frozen; returns its network type's name."""
        from ..generate import check_lora_fits
        from ..networks.formats import read_lora_file
        from ..networks.loading import attach_file
        from ..networks.registry import network_type

        check_lora_fits(self.run.parts, path)
        sd, _ = read_lora_file(path, "mode.first_pass_file")
        net = attach_file(self.run.parts, sd, adapter=COPY)
        wanted = network_type(self.run.cfg.network.network_module)
        if net.name != wanted.name:  # peft stacks adapters of one tuner type on a layer
            raise LorakitError(f"mode.first_pass_file {path} is a {net.name} network but network.network_module "
                               f"is {self.run.cfg.network.network_module!r}: pass 2 adds its network on the same "
                               "layers, which needs the same type", f"set network.network_module = '{net.name}'")
        self.run.freeze(COPY)
        return net.name

    def plan_lines(self) -> list[str]:
        from ..config.plan import mode_plan_lines  # the same lines `lorakit plan` shows, with the images' sizes

        described = {key.removeprefix("mode.").removesuffix("_image"): image.describe()
                     for key, image in self.images.items()}
        return mode_plan_lines(self.run.cfg, self.run.result.lora_path, described)

    def total_steps(self) -> int:
        return sum(self.steps.values())

    def _stage(self, c: LorakitConfig, image: TrainImage, label: str, adapter: str, output_name: str,
               save: bool = True, final: bool = True) -> Stage:
        """A plain denoising stage on one image (the loss of mode 'lora') with the settings of `c`."""
        from ..engine.setup import warmup_steps

        run, t, steps = self.run, c.train, self.steps[label]
        example = image.example(self.mode.prompt)
        sampler = RepeatSampler(example, t.train_batch_size, steps * t.gradient_accumulation_steps)
        run.encoder.prefill([example], 1, run.events.on_cache)
        return Stage(cfg=c, task=DenoisingTask(run.parts, c, run.encoder, sampler),
                     groups=run.param_groups(t, c.network, adapter), steps=steps, steps_per_epoch=steps,
                     output_name=output_name, adapter=adapter, label=label, warmup_steps=warmup_steps(t, steps),
                     save=save, final=final, num_images=1, resolution=image.size)

    def stages(self) -> Iterator[Stage]:
        run, cfg, mode = self.run, self.run.cfg, self.mode
        if "mode.target_image" in self.images:  # first, so its cached latent is the same with or without pass 1
            run.encoder.prefill([self.images["mode.target_image"].example(mode.prompt)], 1, run.events.on_cache)
        if not self.loaded:
            yield self._stage(cfg, self.images["mode.original_image"], PASS1, COPY,
                              cfg.output.output_name + COPY_MACHINE_SUFFIX,
                              save=mode.save_first_pass or mode.first_pass_only, final=mode.first_pass_only)
            run.freeze(COPY)  # stays applied under pass 2, no longer trained
        if mode.first_pass_only:
            return
        # pass 2 starts from the seed whether pass 1 trained or was loaded (TrainTrain re-seeds before it too)
        seed = cfg.train.seed
        run.gen.manual_seed(seed)
        run.encoder.reseed(seed)
        run.attach(self.pass2.network)
        stage = self._stage(self.pass2, self.images["mode.target_image"], PASS2, ADAPTER, cfg.output.output_name)
        stage.sample_weights = {COPY: 0.0}  # samples show the slider as it will be used: on the base model
        yield stage
