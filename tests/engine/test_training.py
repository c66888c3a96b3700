"""Training on the tiny model: it learns, it is reproducible, it writes what it promises."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import ModelSection
from lorakit.data.pipeline import build_dataset
from lorakit.errors import ConfigError
from lorakit.engine.encode import BatchEncoder
from lorakit.engine.validation import held_out_loss
from lorakit.families import load_model
from lorakit.modes.lora import DenoisingTask


def config(tmp_path: Path, image_dir: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=30", "network.network_dim=4", *extra,
    ])


def test_held_out_loss_goes_down(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir)
    dataset = build_dataset(cfg.data, 1, 0)

    def loss_with(lora: Path | None) -> float:
        parts = load_model(cfg.model)
        enc = BatchEncoder(parts, torch.device("cpu"), torch.float32, True, True, seed=0)
        if lora:
            parts.pipeline.load_lora_weights(str(lora), adapter_name="lorakit")
        task = DenoisingTask(parts, cfg, enc, dataset.sampler)
        return held_out_loss(task, enc, dataset.train, 4)

    result = api.train(cfg)
    before, after = loss_with(None), loss_with(result.lora_path)
    assert after < before * 0.95, (before, after)


def test_same_seed_same_lora(tmp_path: Path, image_dir: Path) -> None:
    a = api.train(config(tmp_path, image_dir, "train.max_train_steps=5"))
    b = api.train(config(tmp_path, image_dir, "train.max_train_steps=5"))
    c = api.train(config(tmp_path, image_dir, "train.max_train_steps=5", "train.seed=7"))
    ta, tb, tc = (load_file(r.lora_path) for r in (a, b, c))
    assert a.run_dir != b.run_dir and ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta if k.endswith("lora_up.weight"))


def test_run_writes_log_checkpoints_and_config(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "train.max_train_steps=6", "output.save_every_n_steps=2",
                 "output.save_format='both'", "train.gradient_accumulation_steps=2", "train.min_snr_gamma=5.0",
                 "train.noise_offset=0.05", "train.lr_scheduler='cosine'", "train.lr_warmup_steps=2")
    result = api.train(cfg)
    train_dir = result.run_dir / "train"
    assert sorted(p.name for p in train_dir.glob("*.safetensors")) == [
        "lora-step00000002.safetensors", "lora-step00000004.safetensors", "lora.safetensors"]
    rows = list(csv.DictReader(open(train_dir / "log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    lrs = [float(r["lr"]) for r in rows]
    # the rate each step used: warm-up from 0 over 2 steps to 2e-3, then cosine decay
    assert lrs[:3] == pytest.approx([0.0, 1e-3, 2e-3]) and lrs[-1] < lrs[2]
    assert all(float(r["loss"]) > 0 for r in rows)
    # the run can be repeated from its snapshot, which records what the 'auto' values were on this machine
    snapshot = load_config([result.run_dir / "config.toml"])
    assert (cfg.train.mixed_precision, cfg.train.log_every_n_steps) == ("auto", "auto")
    assert snapshot == cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"mixed_precision": "no", "log_every_n_steps": 1})})
    assert {"params.json", "environment.json"} <= {p.name for p in result.run_dir.iterdir()}
    # the diffusers folder (diffusers' own layout) holds the kohya file's weights under diffusers' keys
    folder = load_file(result.peft_dir / "pytorch_lora_weights.safetensors")
    kohya = load_file(result.lora_path)
    assert torch.allclose(
        folder["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"].half(),
        kohya["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"])


@pytest.mark.parametrize("model", ["tiny-sd2-v", "tiny-sdxl"])
def test_other_families_train(tmp_path: Path, image_dir: Path, model: str) -> None:
    result = api.train(config(tmp_path, image_dir, f"model.pretrained_model_name_or_path='{model}'",
                              "train.max_train_steps=3", "network.train_text_encoder=true",
                              "train.text_encoder_lr=1e-4", "train.mixed_precision='bf16'"))
    keys = load_file(result.lora_path).keys()
    te_prefix = "lora_te1_" if model == "tiny-sdxl" else "lora_te_"
    assert any(k.startswith(te_prefix) for k in keys) and any(k.startswith("lora_unet_") for k in keys)


def test_text_encoder_stops_and_warmup_ratio(tmp_path: Path, image_dir: Path) -> None:
    result = api.train(config(tmp_path, image_dir, "train.max_train_steps=5", "network.train_text_encoder=true",
                              "train.stop_text_encoder_training=2", "output.save_every_n_steps=2",
                              "output.save_precision='fp32'", "train.lr_warmup_ratio=0.4"))
    at_stop, final = load_file(result.checkpoints[0]), load_file(result.lora_path)
    te_keys = [k for k in final if k.startswith("lora_te_") and k.endswith("weight")]
    unet_keys = [k for k in final if k.startswith("lora_unet_") and k.endswith("lora_up.weight")]
    assert te_keys and all(torch.equal(at_stop[k], final[k]) for k in te_keys)
    assert any(not torch.equal(at_stop[k], final[k]) for k in unet_keys)
    lrs = [float(r["lr"]) for r in csv.DictReader(open(result.run_dir / "train" / "log.csv"))]
    assert lrs[:4] == pytest.approx([0.0, 0.001, 0.002, 0.002])  # warm-up int(0.4 × 5) = 2 steps, then constant


def test_resume_from_network_weights(tmp_path: Path, image_dir: Path) -> None:
    first = api.train(config(tmp_path, image_dir, "train.max_train_steps=2", "output.save_precision='fp32'"))
    resumed = api.train(config(tmp_path, image_dir, "train.max_train_steps=1", "train.learning_rate=0",
                               "network.train_text_encoder=true", "train.text_encoder_lr=1e-4",
                               f"network.network_weights='{first.lora_path}'", "output.save_precision='fp32'"))
    a, b = load_file(first.lora_path), load_file(resumed.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # UNet lr 0: the loaded weights come back unchanged
    wrong = config(tmp_path, image_dir, "network.network_dim=8", f"network.network_weights='{first.lora_path}'")
    with pytest.raises(Exception, match="does not fit this network"):
        api.train(wrong)


def test_two_aspect_ratios_batch_four_and_disk_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers import AutoencoderKL

    from conftest import write_images

    data = tmp_path / "data"
    write_images(data / "wide", count=4, size=(128, 64), seed=1)
    write_images(data / "tall", count=4, size=(64, 128), seed=2)
    model = tmp_path / "model"  # a diffusers folder, so there is a VAE file not to read
    load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")).pipeline.save_pretrained(model)
    sets = ["data.image_size=[128, 64]", "data.bucket_reso_steps=32", "data.min_bucket_reso=32",
            "train.train_batch_size=4", "train.max_train_steps=3", f"data.cache_folder='{tmp_path / 'cache'}'",
            f"model.pretrained_model_name_or_path='{model}'"]
    first = api.train(config(tmp_path, data, *sets))
    cached = sorted((tmp_path / "cache").rglob("*.safetensors"))
    assert len(cached) == 8 + 4  # 8 latents (one bucket each) + 4 distinct captions
    dataset = build_dataset(config(tmp_path, data, *sets).data, 4, 42)
    assert {e.size for e in dataset.train} == {(128, 64), (64, 128)}
    assert all(len({e.size for e in batch}) == 1 and len(batch) == 4 for batch in dataset.sampler.batches(1))

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE was loaded although every latent was cached")

    monkeypatch.setattr(AutoencoderKL, "from_pretrained", no_vae)
    monkeypatch.setattr(AutoencoderKL, "encode", no_vae)
    second = api.train(config(tmp_path, data, *sets))
    assert sorted((tmp_path / "cache").rglob("*.safetensors")) == cached
    a, b = load_file(first.lora_path), load_file(second.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same cached inputs, same LoRA


def test_validation_loss_is_logged(tmp_path: Path) -> None:
    from conftest import write_images

    data = write_images(tmp_path / "data", count=8)
    result = api.train(config(tmp_path, data, "data.validation_split=0.25", "train.validate_every_n_steps=2",
                              "train.max_train_steps=4", "data.shuffle_caption=true"))
    assert [s for s, _ in result.validation_losses] == [2, 4]
    assert all(v > 0 for _, v in result.validation_losses)
    rows = [r for r in csv.DictReader(open(result.run_dir / "train" / "log.csv")) if r["val_loss"]]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx([v for _, v in result.validation_losses], rel=1e-5)


def test_optimizers(tmp_path: Path, image_dir: Path) -> None:
    result = api.train(config(tmp_path, image_dir, "train.optimizer_type='Adafactor'", "train.max_train_steps=2",
                              "train.optimizer_args=['weight_decay=0.01']"))
    assert result.steps == 2
    with pytest.raises(ConfigError, match="has no parameter 'betas2'"):
        api.train(config(tmp_path, image_dir, "train.optimizer_args=['betas2=1']"))
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="bitsandbytes"):
            api.train(config(tmp_path, image_dir, "train.optimizer_type='AdamW8bit'"))


def test_bad_target_fails_before_training_and_leaves_no_run(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "model.pretrained_model_name_or_path='tiny-sdxl'",
                 "network.target_modules=['to_q', 'to_qq']")
    with pytest.raises(ConfigError, match="to_qq"):
        api.train(cfg)
    assert not any((tmp_path / "runs").iterdir())


def test_resume_checks_alpha_and_accepts_a_run_folder(tmp_path: Path, image_dir: Path) -> None:
    first = api.train(config(tmp_path, image_dir, "train.max_train_steps=1", "network.network_alpha=2"))
    with pytest.raises(Exception, match="alpha 2"):
        api.train(config(tmp_path, image_dir, f"network.network_weights='{first.lora_path}'"))
    again = api.train(config(tmp_path, image_dir, "train.max_train_steps=1", "network.network_alpha=2",
                             f"network.network_weights='{first.run_dir}'"))
    assert again.steps == 1


def test_outputs_stay_inside_output_dir(tmp_path: Path, image_dir: Path) -> None:
    for bad in ("output.run_id='../escaped'", "output.output_name='../../x'", "output.run_id='a/b'"):
        with pytest.raises(ConfigError, match="plain name"):
            config(tmp_path, image_dir, bad)


def test_folder_identity_follows_weights(tmp_path: Path) -> None:
    from lorakit.families.base import model_identity

    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    parts.pipeline.save_pretrained(tmp_path / "a")
    with torch.no_grad():
        for p in parts.vae.parameters():
            p.mul_(1.5)
    parts.pipeline.save_pretrained(tmp_path / "b")  # same sizes and configs, other weights
    ids = [model_identity(ModelSection(pretrained_model_name_or_path=str(tmp_path / n))) for n in "ab"]
    assert ids[0] != ids[1]
