"""Image embeddings for the bench's similarity-to-training metric, on tiny random CLIP / DINOv2 models (offline).

The reference embeddings are computed here by hand, following transformers:
- preprocessing: CLIPImageProcessor / BitImageProcessor.preprocess = resize the shortest edge (bicubic), center crop
  at ((W - w) // 2, (H - h) // 2) (image_transforms.center_crop), rescale by 1/255, normalise with image_mean/std;
- CLIP: CLIPModel.get_image_features = visual_projection(vision_model(pixels).pooler_output), where
  CLIPVisionTransformer.forward pools post_layernorm(last_hidden_state[:, 0]);
- DINOv2: Dinov2Model.forward, CLS token = last_hidden_state[:, 0] (after the final layernorm).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (BitImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig,
                          CLIPVisionModel, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model)

from lorakit.bench.embeddings import load_embedder, similarity
from lorakit.errors import LorakitError

TINY = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": 32, "patch_size": 8}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # what DINOv2 checkpoints ship


def clip_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def save_clip_model(folder, with_processor: bool = True):
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": 64},
                        vision_config=TINY, projection_dim=12)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    if with_processor:
        clip_processor().save_pretrained(folder)
    return model


def save_clip_vision_model(folder):
    torch.manual_seed(1)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY, projection_dim=12)).eval()
    model.save_pretrained(folder)
    clip_processor().save_pretrained(folder)
    return model


def save_dinov2_model(folder):
    torch.manual_seed(2)
    model = Dinov2Model(Dinov2Config(**TINY)).eval()
    model.save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                      image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(folder)
    return model


def random_image(seed: int, height: int = 48, width: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def pixels_by_hand(image: Image.Image, mean, std) -> torch.Tensor:
    """Shortest edge → 32 (bicubic), center crop 32×32, /255, (x - mean) / std; (1, 3, 32, 32)."""
    width, height = image.size
    scale = 32 / min(width, height)
    resized = image.resize((int(width * scale), int(height * scale)), Image.BICUBIC)
    left, top = (resized.width - 32) // 2, (resized.height - 32) // 2
    crop = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32) / 255
    x = torch.from_numpy(crop).permute(2, 0, 1)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


@torch.no_grad()
def test_clip_embedding_is_the_normalised_projected_pooled_output(tmp_path):
    model = save_clip_model(tmp_path)
    embedder = load_embedder(tmp_path)
    images = [random_image(0), random_image(1, 40, 40), random_image(2, 64, 36)]
    got = embedder.embed(images, batch_size=2)  # two batches
    mean, std = clip_processor().image_mean, clip_processor().image_std
    pixels = torch.cat([pixels_by_hand(im, mean, std) for im in images])
    vision = model.vision_model
    hidden = vision.embeddings(pixels)
    hidden = vision.pre_layrnorm(hidden)
    hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
    expected = unit(model.visual_projection(vision.post_layernorm(hidden[:, 0])))
    assert embedder.name == "clip" and embedder.column == "clip_similarity"
    assert got.shape == (3, 12) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3))


@torch.no_grad()
def test_clip_vision_model_with_projection(tmp_path):
    model = save_clip_vision_model(tmp_path)
    image = random_image(3)
    got = load_embedder(tmp_path).embed([image])
    pixels = pixels_by_hand(image, clip_processor().image_mean, clip_processor().image_std)
    expected = unit(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_dinov2_embedding_is_the_normalised_cls_token(tmp_path):
    model = save_dinov2_model(tmp_path)
    embedder = load_embedder(tmp_path)
    images = [random_image(4), random_image(5).convert("L")]  # grayscale is converted to RGB first
    got = embedder.embed(images)
    pixels = torch.cat([pixels_by_hand(im.convert("RGB"), IMAGENET_MEAN, IMAGENET_STD) for im in images])
    hidden = model.encoder(model.embeddings(pixels)).last_hidden_state
    expected = unit(model.layernorm(hidden)[:, 0])
    assert embedder.name == "dinov2" and got.shape == (2, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_similarity_mean_and_max_and_identical_image(tmp_path):
    save_dinov2_model(tmp_path)
    embedder = load_embedder(tmp_path)
    train = [random_image(10), random_image(11), random_image(12, 32, 32)]
    train_embeddings = embedder.embed(train)
    images = [random_image(11), random_image(20)]  # the first is a copy of a training image
    result = similarity(embedder.embed(images), train_embeddings)
    cos = torch.nn.functional.cosine_similarity
    for i, emb in enumerate(embedder.embed(images)):
        expected = cos(emb[None], train_embeddings, dim=1)
        assert result.mean[i] == pytest.approx(expected.mean().item(), abs=1e-6)
        assert result.max[i] == pytest.approx(expected.max().item(), abs=1e-6)
    assert result.max[0] == pytest.approx(1.0, abs=1e-6)
    assert result.mean[0] < 1.0
    same = similarity(train_embeddings[:1], train_embeddings[:1])
    assert same.mean == pytest.approx([1.0], abs=1e-6) and same.max == pytest.approx([1.0], abs=1e-6)


def test_errors_name_the_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(LorakitError, match="not found: .*nope"):
        load_embedder(missing)
    with pytest.raises(LorakitError, match="has no config.json"):
        load_embedder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(LorakitError, match=r"'vit' is not supported.*clip, clip_vision_model, dinov2") as info:
        load_embedder(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(LorakitError, match="not a valid JSON config"):
        load_embedder(tmp_path)


def test_missing_processor_and_unprojected_clip_vision_model(tmp_path):
    save_clip_model(tmp_path / "clip", with_processor=False)
    with pytest.raises(LorakitError, match="has no preprocessor_config.json"):
        load_embedder(tmp_path / "clip")
    CLIPVisionModel(CLIPVisionConfig(**TINY)).save_pretrained(tmp_path / "plain")
    clip_processor().save_pretrained(tmp_path / "plain")
    with pytest.raises(LorakitError, match="no visual projection"):
        load_embedder(tmp_path / "plain")


def test_missing_weights_are_refused(tmp_path):
    # a CLIPVisionModelWithProjection config over weights saved without the projection: random layers, refused
    CLIPVisionModel(CLIPVisionConfig(**TINY, projection_dim=12)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["CLIPVisionModelWithProjection"]}))
    clip_processor().save_pretrained(tmp_path)
    with pytest.raises(LorakitError, match="lack .*visual_projection"):
        load_embedder(tmp_path)
