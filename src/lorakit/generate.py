"""Inference with or without a LoRA (kohya file or PEFT folder), as the floor-plan guide's inference script."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config.schema import ModelSection
from .errors import ConfigError, LorakitError
from .families import ModelParts, load_model
from .io import atomic_path

if TYPE_CHECKING:
    from .api import GenerateRequest

LORA_ADAPTER = "lora"  # the adapter name a loaded LoRA gets in the pipeline


def apply_lora(parts: ModelParts, lora: Path, weight: float, model: str | None = None) -> None:
    """Load a network into the pipeline and set its weight.

    Plain LoRA/LoCon files and diffusers folders load with diffusers' own loader; LoHa, LoKr and DoRA files (which
    diffusers does not apply) through lorakit's conversion onto peft. A LoRA for another model (family, widths or
    module names; see `check_lora_fits`) is refused before loading: diffusers would skip what does not match and
    render the base model as if the LoRA were applied. `model` names the base model in messages.
    """
    if not lora.exists():
        raise LorakitError(f"LoRA not found: {lora}", "pass a .safetensors file or a PEFT folder from runs/<id>/train/")
    pipe = parts.pipeline
    if lora.is_dir():
        _apply_folder(parts, lora, model)
    else:
        check_lora_fits(parts, lora, model)
        from .networks.formats import read_lora_file

        sd, _ = read_lora_file(lora, "LoRA")
        if _needs_lorakit_loader(sd):
            from .networks.loading import attach_file

            attach_file(parts, sd, LORA_ADAPTER)
            if any(k.endswith(".dora_scale") for k in sd):
                return _merge_dora(parts, weight)
        else:
            try:
                pipe.load_lora_weights(str(lora), adapter_name=LORA_ADAPTER)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:  # diffusers/peft messages can list every key
                raise LorakitError(f"cannot load LoRA {lora}: {_first_line(exc)}",
                                   "is it a LoRA .safetensors for this model family?") from exc
    pipe.set_adapters([LORA_ADAPTER], adapter_weights=[weight])


def _needs_lorakit_loader(sd: dict[str, torch.Tensor]) -> bool:
    """Tensors diffusers' loader does not apply: another registered network type than LoRA (LoHa, LoKr), or
    DoRA's magnitude."""
    from .networks.registry import all_types

    other = tuple(f".{s}" for net in all_types() if net.name != "lora" for s in net.file_suffixes)
    return any(k.endswith((*other, ".dora_scale")) for k in sd)


def _merge_dora(parts: ModelParts, weight: float) -> None:
    """A DoRA file at strength s as the UIs apply it: W + s·(W_dora − W), the merged DoRA weight interpolated
    (ComfyUI `weight_decompose`, LyCORIS `scale = s·(scale − 1) + 1`), so weight 0 is the base model. peft's
    adapter weight scales only the low-rank part and keeps the magnitude fully applied, so lorakit merges each
    DoRA layer and interpolates the merged weight itself."""
    for layer in dora_layers(parts):
        _merge_dora_layer(layer, weight)


def dora_layers(parts: ModelParts) -> list[torch.nn.Module]:
    """The peft layers that carry the attached DoRA's magnitude."""
    from .networks.attach import components

    return [layer for _, module in components(parts) for layer in module.modules()
            if LORA_ADAPTER in (getattr(layer, "lora_magnitude_vector", None) or {})]


def _merge_dora_layer(layer: torch.nn.Module, weight: float) -> None:
    base = layer.get_base_layer()
    before = base.weight.data.clone()
    layer.merge(adapter_names=[LORA_ADAPTER])
    with torch.no_grad():
        base.weight.copy_(before + weight * (base.weight - before))


class DoraWeights:
    """An attached DoRA set to one weight after another without reloading the base model. Keeps CPU copies of the
    original weights of the layers it touches; every weight starts from them and merges exactly as `_merge_dora`,
    so each image equals `apply_lora` at that weight on a fresh model. The layers always count as merged in peft
    (their forward is the base layer's), so the restored originals compute the base model."""

    def __init__(self, parts: ModelParts) -> None:
        self.layers = dora_layers(parts)
        if any(layer.merged for layer in self.layers):
            raise LorakitError("the DoRA is already merged into the model; cannot keep its original weights",
                               "attach it with `attach_dora` on a freshly loaded model")
        self.originals = [layer.get_base_layer().weight.detach().to("cpu", copy=True) for layer in self.layers]
        self.restore()

    def restore(self) -> None:
        """The original weights back, bit for bit: the base model."""
        with torch.no_grad():
            for layer, original in zip(self.layers, self.originals):
                layer.get_base_layer().weight.copy_(original)
                layer.merged_adapters[:] = [LORA_ADAPTER]  # peft then runs only the (restored) base layer

    def set_weight(self, weight: float) -> None:
        """The model with the DoRA at `weight`: the originals restored, then merged at `weight` (0: the originals)."""
        self.restore()
        if weight == 0:
            return
        for layer in self.layers:
            layer.merged_adapters.clear()  # else peft's merge would unmerge the DoRA out of the restored weight
            _merge_dora_layer(layer, weight)


def attach_dora(parts: ModelParts, lora: Path, model: str | None = None) -> DoraWeights:
    """Attach a DoRA file (refused when it does not fit the model, as in `apply_lora`) with its weight at 0."""
    check_lora_fits(parts, lora, model)
    from .networks.formats import read_lora_file
    from .networks.loading import attach_file

    sd, _ = read_lora_file(lora, "LoRA")
    if not any(k.endswith(".dora_scale") for k in sd):
        raise LorakitError(f"{lora} is not a DoRA file (no dora_scale tensors)", "load it with `apply_lora`")
    attach_file(parts, sd, LORA_ADAPTER)
    return DoraWeights(parts)


def _apply_folder(parts: ModelParts, lora: Path, model: str | None) -> None:
    """A diffusers LoRA folder (`pytorch_lora_weights.safetensors`, as lorakit writes it) with diffusers' loader,
    or the PeftModel layout of earlier lorakit versions."""
    from .networks.formats import DIFFUSERS_WEIGHTS, load_peft_folder, peft_fit_problems

    pipe = parts.pipeline
    loaded = load_peft_folder(lora)
    if not loaded:
        raise LorakitError(f"{lora} holds no LoRA ({DIFFUSERS_WEIGHTS} or */adapter_model.safetensors)",
                           "pass the <name>_peft folder lorakit wrote, or a .safetensors LoRA file")
    _refuse_misfit(lora, parts, model, *peft_fit_problems(parts, loaded))
    if (lora / DIFFUSERS_WEIGHTS).is_file():
        pipe.load_lora_weights(str(lora), adapter_name=LORA_ADAPTER)
        return
    for component, state in loaded.items():
        config = _peft_config(lora / component)
        if component == "unet":  # with its config, so alpha (the strength) is the trained one
            pipe.unet.load_lora_adapter(state, adapter_name=LORA_ADAPTER, prefix=None, metadata=config.to_dict())
        else:
            getattr(pipe, component).load_adapter(adapter_state_dict=state, adapter_name=LORA_ADAPTER,
                                                  peft_config=config)


def check_lora_fits(parts: ModelParts, lora: Path, model: str | None = None) -> None:
    """Refuse a LoRA file made for another model: its metadata names another family (kohya
    `ss_base_model_version` / `modelspec.architecture`), or its modules are not the model's (a name the model lacks,
    another input/output width). Reads only the file's header."""
    from safetensors import safe_open

    from .families import lora_family
    from .networks.formats import kohya_fit_problems

    try:
        with safe_open(str(lora), "pt") as f:
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a file that is not one
        raise LorakitError(f"cannot read LoRA {lora}: {_first_line(exc)}",
                           "pass a LoRA .safetensors file or a PEFT folder") from exc
    if not any(marker in k for k in shapes for marker in ("lora", "hada_", "lokr_")):
        raise LorakitError(f"{lora} holds no LoRA weights ({len(shapes)} tensors, none named lora/hada/lokr)",
                           "is it a base model checkpoint? pass it with --model, and the LoRA with --lora")
    family, evidence = lora_family(shapes, metadata)
    if family is not None and family != parts.family.name:
        name = model or parts.family.name
        raise LorakitError(f"LoRA {lora.name} is for {family} ({evidence}), but {name} is an {parts.family.name} "
                           "model", f"use a LoRA trained on an {parts.family.name} model, or pass a base model of the LoRA's family with -m")
    _refuse_misfit(lora, parts, model, *kohya_fit_problems(parts, shapes))


def _refuse_misfit(lora: Path, parts: ModelParts, model: str | None, count: int, problems: list[str]) -> None:
    """A short error when some of a LoRA's `count` modules do not fit the model: a count and a few examples."""
    if not problems:
        return
    from .networks.formats import short_list

    name = model or "the model"
    raise LorakitError(
        f"LoRA {lora.name} does not fit {name} (an {parts.family.name} model): {len(problems)} of {count} LoRA "
        f"modules differ, e.g. {short_list(problems)}",
        "use a LoRA trained on this model's family and architecture")


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message cut to its first line and `limit` characters (library messages can list every key)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[:limit] + " …"


def _peft_config(folder: Path):
    from peft import LoraConfig

    return LoraConfig.from_pretrained(str(folder))


def render_images(parts: ModelParts, prompt: str, seeds: tuple[int, ...], negative_prompt: str = "", steps: int = 20,
                  guidance_scale: float = 7.0, width: int | None = None, height: int | None = None) -> list:
    """PIL images, one per seed, from an already-loaded pipeline."""
    images = []
    for seed in seeds:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out = parts.pipeline(
            prompt=prompt, negative_prompt=negative_prompt or None, num_inference_steps=steps,
            guidance_scale=guidance_scale, generator=gen, width=width or parts.resolution,
            height=height or parts.resolution,
        )
        images.append(out.images[0])
    return images


def unique_path(folder: Path, stem: str, suffix: str = ".png") -> Path:
    """`folder/stem.png`, or `stem_2.png`, … so nothing is overwritten."""
    path, n = folder / f"{stem}{suffix}", 2
    while path.exists():
        path, n = folder / f"{stem}_{n}{suffix}", n + 1
    return path


def check_request(req: "GenerateRequest") -> None:
    """Problems a user can fix, reported before anything loads."""
    problems = []
    if not math.isfinite(req.weight):
        problems.append(f"--weight {req.weight}: must be a finite number (e.g. 0.8)")
    if not math.isfinite(req.guidance_scale):
        problems.append(f"--guidance {req.guidance_scale}: must be a finite number (e.g. 7)")
    if req.steps < 1:
        problems.append(f"--steps {req.steps}: must be at least 1")
    for name, value in (("--width", req.width), ("--height", req.height)):
        if value is not None and (value < 8 or value % 8):
            problems.append(f"{name} {value}: must be a positive multiple of 8")
    if problems:
        raise ConfigError(problems)


def render(req: "GenerateRequest") -> list[Path]:
    """Load the model (and LoRA), render, save PNGs into `req.out_dir`."""
    check_request(req)
    parts = load_model(ModelSection(pretrained_model_name_or_path=req.model, family=req.family))
    if req.lora:
        apply_lora(parts, Path(req.lora), req.weight, req.model)
    req.out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    images = render_images(parts, req.prompt, req.seeds, req.negative_prompt, req.steps, req.guidance_scale,
                           req.width, req.height)
    for seed, image in zip(req.seeds, images):
        path = unique_path(req.out_dir, f"{req.name}_seed{seed}" + (f"_w{req.weight:g}" if req.lora else ""))
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        paths.append(path)
    return paths
