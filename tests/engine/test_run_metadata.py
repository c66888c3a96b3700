"""The training settings sd-scripts records in a LoRA's metadata, in its spelling (train_network.py)."""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open

from lorakit import api
from lorakit.config.loader import load_config


def test_metadata_records_the_run_as_sd_scripts_does(tmp_path: Path, image_dir: Path) -> None:
    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path}"',
                            "data.resolution=64", "network.network_dim=2", "train.max_train_epochs=2",
                            "train.optimizer_args=['weight_decay=0.01', 'betas=(0.9,0.99)']",
                            "train.lr_scheduler='cosine'", "train.learning_rate=3e-4"])
    result = api.train(cfg)
    with safe_open(str(result.lora_path), "pt") as f:
        meta = f.metadata()
    # sd-scripts: optimizer.__class__.__module__ + "." + __name__ + "(" + ",".join(k=v of the user's args) + ")"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01,betas=(0.9, 0.99))"
    assert meta["ss_num_epochs"] == "2" and meta["ss_steps"] == "8"  # 4 images, batch 1, 2 epochs
    assert (meta["ss_sd_model_name"], meta["ss_mixed_precision"], meta["ss_clip_skip"]) == ("tiny-sd1", "no", "None")
    assert (meta["ss_lr_scheduler"], meta["ss_unet_lr"], meta["ss_text_encoder_lr"]) == ("cosine", "0.0003", "None")
    assert meta["ss_max_train_steps"] == "None" and meta["ss_batch_size_per_device"] == "1"
