"""Training on two processes (torchrun, gloo on the CPU): one run folder, one LoRA, equal to one process with twice
the batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config
from lorakit.engine.distributed import Shard


def sets(tmp_path: Path, images: Path, out: str, batch: int) -> list[str]:
    return [f'data.train_data_dir="{images}"', f'output.output_dir="{tmp_path / out}"', "data.resolution=64",
            "network.network_dim=2", "checkpoint.every_n_steps=0", "checkpoint.at_end=false",
            "train.max_train_steps=3", f"train.train_batch_size={batch}", "train.learning_rate=1e-2",
            "output.save_precision='fp32'", "train.mixed_precision='no'",
            # the schedule steps once per optimizer step, and a frozen text encoder stays frozen on every process
            "train.lr_scheduler='linear'", "train.lr_warmup_steps=1", "network.train_text_encoder=true",
            "train.stop_text_encoder_training=1"]


@pytest.mark.parametrize("n,world,expected", [
    (4, 2, [(0, 2), (2, 4)]), (3, 2, [(0, 2), (2, 3)]), (1, 2, [(0, 1), (1, 1)]), (5, 3, [(0, 2), (2, 4), (4, 5)]),
])
def test_rows_cover_the_batch_once(n: int, world: int, expected: list[tuple[int, int]]) -> None:
    rows = [Shard(rank, world).rows(n) for rank in range(world)]
    assert [(r.start, r.stop) for r in rows] == expected


def test_two_processes_train_what_one_process_trains_with_twice_the_batch(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img", count=5)  # 5 images: the last global batch of 4 has 1 row (one rank none)
    single = api.train(load_config(sets=sets(tmp_path, images, "single", 4)))
    script = tmp_path / "launch.py"
    script.write_text(
        "import sys\nfrom lorakit import api\nfrom lorakit.config.loader import load_config\n"
        f"api.train(load_config(sets={sets(tmp_path, images, 'multi', 2)!r}))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "multi").iterdir())
    assert len(runs) == 1, runs  # one run folder, written by the main process
    files = sorted(p.name for p in (runs[0] / "train").glob("*.safetensors"))
    assert files == ["lora.safetensors"]
    log = (runs[0] / "train" / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 3  # header and the 3 steps, once
    ours, theirs = load_file(str(runs[0] / "train" / "lora.safetensors")), load_file(str(single.lora_path))
    assert ours.keys() == theirs.keys()
    ups = [k for k in ours if k.endswith("lora_up.weight")]
    assert any(theirs[k].abs().sum() > 0 for k in ups)  # training moved the zero-initialised up weights
    # the same draws and the same images per step; only the order of the gradient sum differs (fp32 rounding), which
    # AdamW's g/√v can amplify for gradients near zero: within 1e-4 of weights that moved by up to ~lr × steps
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    moved = max(theirs[k].abs().max().item() for k in ups)
    assert worst < 1e-4 and worst < moved / 100, (worst, moved)
    rates = [float(r.split(",")[3]) for r in log[1:]]
    assert rates == [float(r.split(",")[3]) for r in (single.run_dir / "train" / "log.csv").read_text().splitlines()[1:]]
    assert rates[0] == 0.0 and rates[1] > rates[2] > 0  # warm-up from 0, then the linear decay
    losses = [float(r.split(",")[2]) for r in log[1:]]
    single_losses = [float(r.split(",")[2]) for r in (single.run_dir / "train" / "log.csv").read_text().splitlines()[1:]]
    assert losses == pytest.approx(single_losses, rel=1e-5)


def test_a_mode_without_data_parallel_is_refused_on_two_processes(tmp_path: Path, monkeypatch) -> None:
    from lorakit.engine import trainer
    from lorakit.errors import ConfigError

    class TwoProcesses:
        num_processes, process_index, is_main_process = 2, 0, True
        device = torch.device("cpu")

    monkeypatch.setattr(trainer, "make_accelerator", lambda cfg: TwoProcesses())
    cfg = load_config(sets=['mode.type="ileco"', 'mode.original_prompt="a cat"', 'mode.target_prompt="a dog"',
                            f'output.output_dir="{tmp_path}"'])
    with pytest.raises(ConfigError, match="training on 2 processes is not implemented yet"):
        trainer.Run(cfg, tmp_path / "run")
