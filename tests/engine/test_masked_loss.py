"""train.masked_loss: the loss formula against a transcription of sd-scripts, and tiny runs with masks.

sd-scripts (train_network.py NetworkTrainer.process_batch):
    loss = conditional_loss(noise_pred.float(), target.float(), "l2", "none")   # per element
    if args.masked_loss or alpha_masks: loss = apply_masked_loss(loss, batch)
    loss = loss.mean(dim=[1, 2, 3])                                             # per sample, no division by the mask
    loss = loss * loss_weights                                                  # prior_loss_weight
    loss = post_process_loss(loss, ...)                                         # min-SNR, … (apply_snr_weight first)
    return loss.mean()
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.data.transforms import mask_values
from lorakit.engine.loss import LossSettings, diffusion_loss, latent_mask


def sd_scripts_apply_masked_loss(loss: torch.Tensor, batch: dict) -> torch.Tensor:
    """Transcribed from library/custom_train_functions.py apply_masked_loss."""
    if "conditioning_images" in batch:
        mask_image = batch["conditioning_images"].to(dtype=loss.dtype)[:, 0].unsqueeze(1)  # R channel
        mask_image = mask_image / 2 + 0.5
    elif batch.get("alpha_masks") is not None:
        mask_image = batch["alpha_masks"].to(dtype=loss.dtype).unsqueeze(1)
    else:
        return loss
    mask_image = F.interpolate(mask_image, size=loss.shape[2:], mode="area")
    return loss * mask_image


def sd_scripts_loss(pred, target, batch, loss_weights, scheduler=None, t=None, gamma=None) -> torch.Tensor:
    """process_batch's loss tail (train_network.py), with apply_snr_weight (custom_train_functions.py) when
    `gamma`: all_snr = (sqrt(ᾱ) / sqrt(1 − ᾱ))² (prepare_scheduler_for_custom_training), × min(snr, γ) / snr."""
    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
    loss = sd_scripts_apply_masked_loss(loss, batch)
    loss = loss.mean(dim=list(range(1, loss.ndim)))
    loss = loss * loss_weights
    if gamma is not None:
        alphas_cumprod = scheduler.alphas_cumprod
        all_snr = (torch.sqrt(alphas_cumprod) / torch.sqrt(1.0 - alphas_cumprod)) ** 2
        snr = torch.stack([all_snr[i] for i in t])
        loss = loss * torch.div(torch.minimum(snr, torch.full_like(snr, gamma)), snr).float()
    return loss.mean()


def fixed_case() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 4, 4, 6, generator=gen), torch.randn(2, 4, 4, 6, generator=gen)
    pixels = torch.randint(0, 256, (2, 32, 48), generator=gen, dtype=torch.uint8).numpy()  # 8× the latent size
    pixels[0, :, :24] = 0  # the left half of the first image ignored
    return pred, target, pixels


def lorakit_masks(pixels: np.ndarray, kind: str) -> torch.Tensor:
    return torch.stack([latent_mask(torch.from_numpy(mask_values(p, kind)), (4, 6)) for p in pixels])


def test_alpha_mask_loss_matches_sd_scripts() -> None:
    pred, target, alpha = fixed_case()
    scheduler = DDPMScheduler()
    t = torch.tensor([10, 500])
    batch = {"alpha_masks": torch.from_numpy(alpha.astype(np.float32) / 255.0)}  # BaseDataset.__getitem__
    weights = torch.tensor([1.0, 0.5])
    expected = sd_scripts_loss(pred, target, batch, weights)
    got = diffusion_loss(pred, target, scheduler, t, None, weights, lorakit_masks(alpha, "alpha"))
    assert torch.equal(got, expected)
    unmasked = diffusion_loss(pred, target, scheduler, t, None, weights)
    assert not torch.equal(got, unmasked)
    # min-SNR after the per-sample mean, as post_process_loss (the SNR table is computed another way: close)
    expected = sd_scripts_loss(pred, target, batch, weights, scheduler, t, gamma=5.0)
    got = diffusion_loss(pred, target, scheduler, t, LossSettings(min_snr_gamma=5.0), weights,
                         lorakit_masks(alpha, "alpha"))
    assert torch.allclose(got, expected, rtol=1e-5, atol=0)


def test_mask_image_loss_matches_sd_scripts() -> None:
    pred, target, red = fixed_case()
    # ControlNetDataset: the mask file through IMAGE_TRANSFORMS (ToTensor, Normalize([0.5], [0.5])): [-1, 1]
    rgb = torch.from_numpy(np.stack([red, red // 2, red // 3], axis=1))
    conditioning = (rgb.float().div(255) - 0.5) / 0.5
    expected = sd_scripts_loss(pred, target, {"conditioning_images": conditioning}, torch.ones(2))
    got = diffusion_loss(pred, target, DDPMScheduler(), torch.tensor([1, 2]), None, None,
                         lorakit_masks(red, "image"))
    assert torch.equal(got, expected)


def test_zero_and_one_masks() -> None:
    pred, target, _ = fixed_case()
    t, sched = torch.tensor([1, 2]), DDPMScheduler()
    zeros, ones = torch.zeros(2, 1, 4, 6), torch.ones(2, 1, 4, 6)
    assert diffusion_loss(pred, target, sched, t, None, None, zeros).item() == 0.0
    assert torch.equal(diffusion_loss(pred, target, sched, t, None, None, ones),
                       diffusion_loss(pred, target, sched, t, None, None))
    # not divided by the mask's mean: half a mask of ones gives about half the loss (sd-scripts does not renormalise)
    half = ones.clone()
    half[..., 3:] = 0
    per_element = F.mse_loss(pred, target, reduction="none")
    assert torch.equal(diffusion_loss(pred, target, sched, t, None, None, half),
                       (per_element * half).mean(dim=(1, 2, 3)).mean())


# -- tiny runs ------------------------------------------------------------------------------------------------------

def images(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"noise {i}", encoding="utf-8")
    return folder


def masks(folder: Path, value: str, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((64, 64), np.uint8)
    if value == "half":
        arr[:, :32] = 255
    for i in range(count):
        Image.fromarray(arr, "L").save(folder / f"img{i}.png")
    return folder


def train(tmp_path: Path, image_dir: Path, *extra: str):
    cfg = load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=2", "network.network_dim=2",
        f"data.cache_folder='{tmp_path / 'cache'}'", *extra])
    result = api.train(cfg)
    return result, load_file(result.lora_path)


def logged_losses(result) -> list[float]:
    import csv

    return [float(r["loss"]) for r in csv.DictReader(open(result.run_dir / "train" / "log.csv"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp("masked")
    image_dir = images(tmp / "imgs")
    out = {"plain": train(tmp, image_dir)}
    for value in ("zero", "half"):
        out[value] = train(tmp, image_dir, "train.masked_loss=true",
                           f"data.conditioning_data_dir='{masks(tmp / value, value)}'")
    out["opaque"] = train(tmp, image_dir, "train.masked_loss=true", "data.alpha_mask=true")
    out["cache"] = tmp / "cache"
    return out


def test_an_all_zero_mask_gives_zero_loss_and_no_update(runs: dict) -> None:
    result, lora = runs["zero"]
    assert logged_losses(result) == [0.0, 0.0]
    ups = [k for k in lora if k.endswith("lora_up.weight")]
    assert ups and all(torch.count_nonzero(lora[k]) == 0 for k in ups)  # LoRA's up weights start at 0, stay 0
    plain = runs["plain"][1]
    assert any(torch.count_nonzero(plain[k]) for k in ups)


def test_a_half_mask_trains_another_lora_than_no_mask(runs: dict) -> None:
    plain, half = runs["plain"][1], runs["half"][1]
    assert plain.keys() == half.keys()
    assert any(not torch.equal(plain[k], half[k]) for k in plain if k.endswith("lora_up.weight"))
    assert all(0 < h < p for h, p in zip(logged_losses(runs["half"][0]), logged_losses(runs["plain"][0])))


def test_opaque_alpha_masks_train_exactly_as_no_mask(runs: dict) -> None:
    """Images without alpha: the mask is all ones, so the run is bit-identical to one without masked_loss."""
    plain, opaque = runs["plain"][1], runs["opaque"][1]
    assert all(torch.equal(plain[k], opaque[k]) for k in plain)


def test_masks_are_cached_with_the_latents(runs: dict) -> None:
    assert len(list((runs["cache"] / "masks").rglob("*.safetensors"))) >= 2
