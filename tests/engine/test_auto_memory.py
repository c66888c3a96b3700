"""train.auto_memory in a real run: the settings fitted before the run starts, recorded in its snapshot and log."""

from __future__ import annotations

from pathlib import Path

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config


def sets(tmp_path: Path, images: Path, *extra: str) -> list[str]:
    return [f'data.train_data_dir="{images}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
            "network.network_dim=2", "checkpoint.every_n_steps=0", "checkpoint.at_end=false",
            "train.max_train_steps=1", "train.train_batch_size=2", *extra]


def test_auto_memory_fits_the_run_to_a_small_gpu(tmp_path: Path, monkeypatch) -> None:
    from lorakit.engine import estimate

    monkeypatch.setattr(estimate, "detected_vram", lambda: 2**24)  # 16 MiB: nothing fits
    monkeypatch.setattr(estimate, "detected_gpu", lambda: None)
    images = write_images(tmp_path / "img", count=2)
    result = api.train(load_config(sets=sets(tmp_path, images, "train.auto_memory=true")))
    snapshot = load_config([result.run_dir / "config.toml"])
    # estimate.fit_to_memory's order: checkpointing, then batch halved with accumulation doubled (same images/step)
    assert snapshot.train.gradient_checkpointing is True
    assert (snapshot.train.train_batch_size, snapshot.train.gradient_accumulation_steps) == (1, 2)
    log = (result.run_dir / "train" / "run.log").read_text()
    assert "train.auto_memory: train.gradient_checkpointing: false → true" in log
    assert "still" in log  # and it says that even so the estimate does not fit


def test_without_auto_memory_nothing_is_estimated(tmp_path: Path, monkeypatch) -> None:
    from lorakit.engine import estimate

    monkeypatch.setattr(estimate, "fit_to_memory", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    images = write_images(tmp_path / "img", count=2)
    result = api.train(load_config(sets=sets(tmp_path, images)))
    assert load_config([result.run_dir / "config.toml"]).train.gradient_checkpointing is False
