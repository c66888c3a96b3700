"""DreamBooth: regularisation images mixed into the batches as kohya does, their loss weighted per sample by
prior_loss_weight before the batch mean (sd-scripts train_network: loss.mean([1, 2, 3]) * loss_weights, then
loss.mean())."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from conftest import write_images
from lorakit import api
from lorakit.config.loader import resolve_layers
from lorakit.config.validate import check
from lorakit.data.example import Example
from lorakit.engine.loss import diffusion_loss
from lorakit.modes.lora import sample_weights


def test_per_sample_weighting_matches_a_hand_computation() -> None:
    pred = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]], [[[3.0, 1.0]]]])  # 3 samples, 2 values each
    target = torch.zeros_like(pred)
    examples = [Example(Path("a.png"), "x", (8, 8)), Example(Path("r.png"), "y", (8, 8), is_reg=True),
                Example(Path("r2.png"), "y", (8, 8), is_reg=True)]
    weights = sample_weights(examples, 0.25)
    assert weights.tolist() == [1.0, 0.25, 0.25]
    sched = DDPMScheduler()
    loss = diffusion_loss(pred, target, sched, torch.tensor([10, 10, 10]), None, weights)
    # per-sample mean squared error: (1+4)/2 = 2.5, 0, (9+1)/2 = 5; weighted: 2.5, 0, 1.25; batch mean 3.75/3
    assert loss.item() == pytest.approx(3.75 / 3)


def _reg_folder(folder: Path, seed: int) -> Path:
    """Two regularisation images of the training images' size, with captions; content depends on `seed`."""
    return write_images(folder, count=2, seed=seed)


def _train(tmp_path: Path, images: Path, reg: Path, weight: float) -> dict[str, torch.Tensor]:
    cfg = resolve_layers(sets=[
        "mode.type='dreambooth'", f"mode.prior_loss_weight={weight}", f"data.train_data_dir='{images}'",
        f"data.reg_data_dir='{reg}'", f"output.output_dir='{tmp_path / 'runs'}'", "data.resolution=64",
        "train.max_train_steps=3", "train.train_batch_size=2", "network.network_dim=2", "train.learning_rate=1e-2",
        "output.save_precision='fp32'",
    ]).config
    assert check(cfg)[0] == []
    return load_file(api.train(cfg).lora_path)


def test_regularisation_images_at_weight_zero_change_nothing(tmp_path: Path) -> None:
    images = write_images(tmp_path / "imgs", count=2)
    reg_a, reg_b = _reg_folder(tmp_path / "reg_a", seed=5), _reg_folder(tmp_path / "reg_b", seed=9)
    a, b = _train(tmp_path, images, reg_a, 0.0), _train(tmp_path, images, reg_b, 0.0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # other reg images: same LoRA
    c, d = _train(tmp_path, images, reg_a, 1.0), _train(tmp_path, images, reg_b, 1.0)
    assert any(not torch.equal(c[k], d[k]) for k in c)  # at weight 1 they do count


def test_dreambooth_without_regularisation_images_is_refused(tmp_path: Path) -> None:
    from lorakit.config.schema import LorakitConfig

    cfg = LorakitConfig.model_validate({"mode": {"type": "dreambooth"}, "data": {"train_data_dir": "x"}})
    assert any(f.key == "data.reg_data_dir" and "regularisation" in f.message for f in check(cfg, paths=True)[0])
    cfg = LorakitConfig.model_validate({"mode": {"prior_loss_weight": 0.5}, "data": {"train_data_dir": "x"}})
    assert [f.key for f in check(cfg)[0]] == ["mode.prior_loss_weight"]
