"""Similarity of bench images to the training images, measured with a local CLIP or DINOv2 vision model.

`load_embedder(folder)` reads a transformers `save_pretrained` folder (offline only), `Embedder.embed(images)` turns
PIL images into L2-normalised embeddings, and `similarity(images, train)` gives each image's mean and max cosine
similarity to the training set. The embeddings are the ones each model family publishes for image retrieval:

- CLIP (`CLIPModel`, `CLIPVisionModelWithProjection`): the pooled vision output through `visual_projection`, as
  transformers' `CLIPModel.get_image_features` computes it (the space CLIP's text and image embeddings share).
- DINOv2 (`Dinov2Model`): the CLS token of `last_hidden_state` (after the final layer norm). transformers'
  `Dinov2Model.pooler_output` is exactly this token (`sequence_output[:, 0, :]`), so either name gives the same vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from PIL import Image

from lorakit.errors import ModelError, some_of

SUPPORTED = {"clip": "clip", "clip_vision_model": "clip", "dinov2": "dinov2"}  # config.json model_type → name
_HINT_FOLDER = ("pass a folder written by transformers' save_pretrained (config.json, preprocessor_config.json and "
                "the weights) of a CLIP or DINOv2 model, e.g. a local copy of openai/clip-vit-base-patch32 or "
                "facebook/dinov2-small")


@dataclass
class Embedder:
    """A vision model and its image processor; `name` ("clip" or "dinov2") names the metric columns."""

    name: str
    path: Path
    model: torch.nn.Module
    processor: Callable
    features: Callable[[torch.Tensor], torch.Tensor]  # pixel_values (N, 3, H, W) → embeddings (N, D), not normalised
    device: torch.device

    @property
    def column(self) -> str:
        """The CSV column of the mean similarity, e.g. "clip_similarity"."""
        return f"{self.name}_similarity"

    @torch.no_grad()
    def embed(self, images: Sequence[Image.Image], batch_size: int = 8) -> torch.Tensor:
        """(N, D) fp32 embeddings on the CPU, each of unit L2 norm. Images are converted to RGB first."""
        if not images:
            raise ValueError("embed() needs at least one image")
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = [image.convert("RGB") for image in images[start:start + batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            features = self.features(pixels.to(self.device, torch.float32)).float().cpu()
            chunks.append(torch.nn.functional.normalize(features, dim=-1))
        return torch.cat(chunks)


class Similarities(NamedTuple):
    """Per image: `mean` cosine similarity to all training images, and `max` (to the nearest one)."""

    mean: list[float]
    max: list[float]


def similarity(image_embeddings: torch.Tensor, train_embeddings: torch.Tensor) -> Similarities:
    """Cosine similarities of each image (rows of `image_embeddings`) to the training images, both L2-normalised.

    The mean says how much an image looks like the training set as a whole (the concept the LoRA learns): it does not
    hinge on one training image, and for unit vectors it equals the dot product with the mean training embedding.
    The max says how close the image comes to its nearest training image: a max near 1 while the mean stays lower
    points to an image copied from one training picture rather than the concept (memorisation)."""
    if image_embeddings.ndim != 2 or train_embeddings.ndim != 2 or not len(train_embeddings):
        raise ValueError(f"expected (N, D) and (M, D) embeddings with M ≥ 1, got shapes "
                         f"{tuple(image_embeddings.shape)} and {tuple(train_embeddings.shape)}")
    cosines = image_embeddings.float() @ train_embeddings.float().T  # (N, M)
    return Similarities(cosines.mean(dim=1).tolist(), cosines.max(dim=1).values.tolist())


def load_embedder(path: str | Path, device: str | torch.device = "cpu") -> Embedder:
    """Load a local CLIP or DINOv2 folder (never the network) in fp32 and in eval mode."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelError(f"embedding model folder not found: {folder}", _HINT_FOLDER)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{folder} has no config.json, so it is not a transformers model folder", _HINT_FOLDER)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        model_type = config.get("model_type")
    except (ValueError, AttributeError) as exc:
        raise ModelError(f"{config_file} is not a valid JSON config: {exc}", _HINT_FOLDER) from exc
    if model_type not in SUPPORTED:
        raise ModelError(f"{config_file}: model_type {model_type!r} is not supported for image similarity; supported: "
                         f"{', '.join(SUPPORTED)} (CLIP or DINOv2)", _HINT_FOLDER)
    if not (folder / "preprocessor_config.json").is_file():
        raise ModelError(f"{folder} has no preprocessor_config.json, so the images cannot be prepared the way the "
                         f"model expects", "copy preprocessor_config.json from the model's original repository into "
                         "the folder, or save the image processor there with save_pretrained")
    if model_type == "clip_vision_model" and "CLIPVisionModel" in config.get("architectures", []):
        raise ModelError(f"{config_file}: a CLIPVisionModel has no visual projection, so its output is not CLIP's "
                         "image embedding", "save the model as CLIPVisionModelWithProjection or CLIPModel")
    device = torch.device(device)
    try:
        model, features = _load_model(folder, model_type)
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load the embedding model in {folder}: {exc}", _HINT_FOLDER) from exc
    model.to(device=device, dtype=torch.float32).eval()
    return Embedder(SUPPORTED[model_type], folder, model, processor, features, device)


def _load_model(folder: Path, model_type: str) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The model and its feature function (see the module docstring for which embedding each family uses)."""
    from transformers import CLIPModel, CLIPVisionModelWithProjection, Dinov2Model

    model_class = {"dinov2": Dinov2Model, "clip": CLIPModel}.get(model_type, CLIPVisionModelWithProjection)
    model, info = model_class.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    if info["missing_keys"]:  # randomly initialised layers would make every similarity meaningless
        raise ModelError(f"the weights in {folder} lack {len(info['missing_keys'])} tensors a {model_class.__name__} "
                         f"needs: {some_of(sorted(info['missing_keys']))}", _HINT_FOLDER)
    if model_type == "dinov2":
        return model, lambda pixels: model(pixel_values=pixels).last_hidden_state[:, 0]
    # CLIPModel.get_image_features: visual_projection(vision_model(pixels).pooler_output); same layers in both classes
    return model, lambda pixels: model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
