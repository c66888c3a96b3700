"""The family contract: everything model-specific (loading, prompt encoding, conditioning, LoRA key names).

A family is a small stateless object; `ModelParts` holds one loaded model. Nothing outside `families/` asks which
family it has: it calls these methods.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline

from ..config.schema import ModelSection
from ..errors import ModelError
from . import unet_layout as layout
from .clip_text import PromptEncoding, window_ids
from .names import RANDOM_MODELS, TINY_MODELS
from .random_init import random_pipeline

@dataclass
class ModelParts:
    """A loaded base model: its pipeline (for sampling) and the pieces training touches."""

    family: "Family"
    pipeline: DiffusionPipeline
    noise_scheduler: DDPMScheduler
    identity: str
    prompt_encoding: PromptEncoding = field(default_factory=PromptEncoding)

    def set_prompt_encoding(self, clip_skip: int | None, max_token_length: int | None) -> None:
        """Encode prompts with train.clip_skip and train.max_token_length (training, its cache and its samples)."""
        self.prompt_encoding = PromptEncoding.from_settings(clip_skip, max_token_length)

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipeline.unet

    @property
    def vae(self) -> AutoencoderKL:
        return self.pipeline.vae

    @property
    def text_encoders(self) -> list[torch.nn.Module]:
        return [getattr(self.pipeline, n) for n in self.family.text_encoder_attrs]

    @property
    def tokenizers(self) -> list[Any]:
        return [getattr(self.pipeline, n) for n in self.family.tokenizer_attrs]

    @property
    def prediction_type(self) -> str:
        return self.noise_scheduler.config.prediction_type

    @property
    def resolution(self) -> int:
        """The UNet's native image size in pixels."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


class Family(ABC):
    """One model family. Subclasses set the class variables and implement the abstract methods."""

    name: ClassVar[str]
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    tiny_name: ClassVar[str]
    text_encoder_attrs: ClassVar[tuple[str, ...]] = ("text_encoder",)
    tokenizer_attrs: ClassVar[tuple[str, ...]] = ("tokenizer",)
    kohya_te_prefixes: ClassVar[tuple[str, ...]] = ("lora_te",)
    # kohya names of UNet modules: the diffusers path (SD1/SD2) or the original SGM layout's (SDXL)
    kohya_sgm_names: ClassVar[bool] = False
    # the full-size UNet's level structure: block names when no UNet is at hand
    full_unet_shape: ClassVar[layout.UnetShape]
    BASE: ClassVar[str] = layout.BASE  # the block name of every text-encoder module

    # -- loading -------------------------------------------------------------------------------------------------
    @abstractmethod
    def build_tiny(self, seed: int = 0) -> DiffusionPipeline:
        """A tiny random pipeline of this architecture (offline, deterministic for a seed)."""

    def load(self, cfg: ModelSection, dtype: torch.dtype = torch.float32, skip_vae: bool = False) -> ModelParts:
        """Load the base model named by `cfg` (tiny name, diffusers folder, or single file).

        `skip_vae`: the caller will not encode images (every latent is cached), so a diffusers folder's VAE is not
        read at all (`parts.vae` is None). A single file holds the VAE in the same file and always loads it.
        """
        source = cfg.pretrained_model_name_or_path
        path = Path(source).expanduser()
        identity = model_identity(cfg)
        if source == self.tiny_name:
            pipe = self.build_tiny()
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
        elif source in RANDOM_MODELS:
            pipe = random_pipeline(source, self.pipeline_class, dtype)
        elif path.is_dir():
            pipe = self._from_folder(path, dtype, skip_vae)
        elif path.is_file():
            from .single_file import load_single_file

            pipe = load_single_file(path, self.name, cfg.v_parameterization, dtype, allow_pickle=cfg.allow_pickle)
        else:
            raise model_not_found(source)
        if cfg.vae and pipe.vae is not None:
            pipe.vae = load_vae_like(Path(cfg.vae), pipe.vae, dtype)
        if cfg.v_parameterization is not None:
            pred = "v_prediction" if cfg.v_parameterization else "epsilon"
            pipe.scheduler.register_to_config(prediction_type=pred)
        pipe.set_progress_bar_config(disable=True)
        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        return ModelParts(self, pipe, noise_scheduler, identity)

    def _from_folder(self, path: Path, dtype: torch.dtype, skip_vae: bool = False) -> DiffusionPipeline:
        extra = {"vae": None} if skip_vae else {}
        try:
            return self.pipeline_class.from_pretrained(path, torch_dtype=dtype, safety_checker=None, **extra)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load diffusers folder {path}: {exc}", "check it has model_index.json") from exc

    # -- conditioning ----------------------------------------------------------------------------------------
    def tokenize(self, parts: ModelParts, captions: list[str]) -> list[torch.Tensor]:
        """Token ids per tokenizer, (batch, windows, window): one window of each tokenizer's max length, or
        max_token_length / 75 of them for long prompts (see `clip_text`)."""
        windows = parts.prompt_encoding.windows
        return [window_ids(tok, captions, windows) for tok in parts.tokenizers]

    @abstractmethod
    def encode_prompts(self, parts: ModelParts, captions: list[str]) -> dict[str, torch.Tensor]:
        """Text-encoder outputs for a batch of captions: tensors with the batch as first dimension."""

    def sample_prompt_kwargs(self, parts: ModelParts, prompt: str, negative_prompt: str | None = None
                             ) -> dict[str, Any]:
        """Keyword arguments of the pipeline's call that give it `prompt` (and the negative prompt) encoded as
        training encodes them (clip skip, long prompts), in place of diffusers' own 77-token encoding."""
        return {"prompt_embeds": self.encode_prompts(parts, [prompt])["encoder_hidden_states"],
                "negative_prompt_embeds": self.encode_prompts(parts, [negative_prompt or ""])["encoder_hidden_states"]}

    def unet_kwargs(self, cond: dict[str, torch.Tensor], sizes: list[dict[str, tuple[int, int]]]) -> dict[str, Any]:
        """Keyword arguments of the UNet's forward besides sample and timestep."""
        return {"encoder_hidden_states": cond["encoder_hidden_states"]}

    # -- LoRA names and blocks --------------------------------------------------------------------------------
    def kohya_unet_name(self, module_path: str, unet: torch.nn.Module) -> str:
        """kohya/LyCORIS name of a UNet module given its diffusers path (e.g. `lora_unet_down_blocks_0_…` for
        SD1/SD2, `lora_unet_input_blocks_1_0_in_layers_2` for SDXL). Any Linear/Conv2d path has one."""
        if not self.kohya_sgm_names:
            return "lora_unet_" + module_path.replace(".", "_")
        sgm = layout.sgm_path(module_path, layout.unet_shape(unet))
        if sgm is None:
            raise ModelError(f"{self.name} UNet module {module_path} has no kohya name",
                             "name a Linear or Conv2d module of the UNet (see `lorakit plan`)")
        return "lora_unet_" + sgm.replace(".", "_")

    def kohya_unet_names(self, unet: torch.nn.Module) -> dict[str, str]:
        """{module path: kohya name} of every Linear and Conv2d of the UNet (peft-wrapped layers by their original
        path); the same for every UNet of one architecture, so it is computed once per config. Names are unique."""
        key = (type(self).__name__, layout.config_key(unet))
        if key not in _NAME_CACHE:
            _NAME_CACHE[key] = {p: self.kohya_unet_name(p, unet) for p in layout.layer_paths(unet)}
        return dict(_NAME_CACHE[key])

    def kohya_unet_paths(self, unet: torch.nn.Module) -> dict[str, str]:
        """{kohya name: module path}: the inverse of `kohya_unet_names`, for reading a file's keys."""
        return {name: path for path, name in self.kohya_unet_names(unet).items()}

    def unet_block(self, module_path: str, unet: torch.nn.Module) -> str | None:
        """The block ("IN00"…, "MID", "OUT00"…) of a UNet module as sd-scripts, TrainTrain and LoRA Block Weight
        count them (the original `input_blocks`/`output_blocks` index); None outside every block (time and SDXL
        label embedding, conv_out)."""
        found = layout.find_slot(module_path, layout.unet_shape(unet))
        return found[0].block if found else None

    def block_names(self, unet: torch.nn.Module | None = None) -> tuple[str, ...]:
        """("BASE", "IN00", …, "MID", "OUT00", …) of this UNet, or of the family's full-size UNet when None
        (SD1/SD2: IN00–IN11 and OUT00–OUT11; SDXL: IN00–IN08 and OUT00–OUT08)."""
        return layout.block_names(layout.unet_shape(unet) if unet is not None else self.full_unet_shape)

    @staticmethod
    def canonical_block(name: str) -> str:
        """A user's block name in lorakit's spelling ('M00' → 'MID', 'in4' → 'IN04'); see `block_names`."""
        return layout.canonical_block(name)

    @staticmethod
    def unet_element(module_path: str) -> str | None:
        """"cross_attention" (an `attn2` module), "self_attention" (`attn1`) or None (any other module)."""
        return layout.element(module_path)

    def kohya_te_name(self, index: int, module_path: str) -> str:
        """kohya name of a text-encoder module: always with the `text_model` level ComfyUI expects."""
        path = module_path.removeprefix("text_model.")
        return f"{self.kohya_te_prefixes[index]}_text_model_{path.replace('.', '_')}"

    # -- metadata ---------------------------------------------------------------------------------------------
    @abstractmethod
    def base_model_version(self, parts: ModelParts) -> str:
        """`ss_base_model_version` as kohya writes it (sd_v1, sd_v2, sd_v2_v, sdxl_base_v1-0)."""

    @abstractmethod
    def modelspec_architecture(self, parts: ModelParts) -> str:
        """`modelspec.architecture` of a LoRA for this model."""


_NAME_CACHE: dict[tuple[str, str], dict[str, str]] = {}


def model_not_found(source: str) -> ModelError:
    """The error for a model path that is neither a built-in name, a folder nor a file."""
    return ModelError(
        f"model not found: {source}",
        "set model.pretrained_model_name_or_path to a diffusers folder, a .safetensors checkpoint or a built-in "
        f"model ({', '.join(TINY_MODELS)}; {', '.join(RANDOM_MODELS)})",
    )


def model_identity(cfg: ModelSection) -> str:
    """A string that changes when the model's weights (or the VAE override) change; keys the latent cache."""
    source = cfg.pretrained_model_name_or_path
    path = Path(source).expanduser()
    if path.is_dir():
        identity = _folder_identity(path)
    elif path.is_file():
        identity = _file_identity(path)
    else:
        identity = f"{source}:seed0"  # the built-in tiny and random models are fixed by their seed
    if cfg.vae:
        vae = Path(cfg.vae).expanduser()
        identity += f"+vae:{_file_identity(vae) if vae.is_file() else _folder_identity(vae) if vae.is_dir() else vae}"
    return identity


def load_vae_like(path: Path, current: AutoencoderKL, dtype: torch.dtype) -> AutoencoderKL:
    """A VAE override (folder or single file), read with the architecture of the model's own VAE (offline)."""
    import tempfile

    from .single_file import load_vae

    with tempfile.TemporaryDirectory() as tmp:
        current.save_config(Path(tmp) / "vae")
        return load_vae(path, Path(tmp), dtype)


def _file_identity(path: Path) -> str:
    """Cheap identity of a large file: name, size and the hash of its first and last MiB."""
    h = hashlib.sha1(f"{path.name}|{path.stat().st_size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, path.stat().st_size - (1 << 20)))
        h.update(f.read())
    return h.hexdigest()[:16]


def _folder_identity(path: Path) -> str:
    """Identity of a diffusers folder: its configs in full and a content sample of every weight file."""
    h = hashlib.sha1()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            content = f.read_bytes() if f.suffix == ".json" else _file_identity(f).encode()
            h.update(f"{f.relative_to(path)}|".encode() + content)
    return h.hexdigest()[:16]


def read_model_index(path: Path) -> dict[str, Any]:
    """The `model_index.json` of a diffusers folder (empty if absent)."""
    index = path / "model_index.json"
    return json.loads(index.read_text()) if index.is_file() else {}
