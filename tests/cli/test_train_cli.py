"""The real `lorakit` entry point: results on disk, and bad input → a clear message and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from safetensors import safe_open




def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path



def test_train_then_generate_with_the_lora(cli, tmp_path: Path, image_dir: Path) -> None:
    cfg = write_config(tmp_path / "my.toml", f"""
[data]
train_data_dir = "{image_dir}"
resolution = 64
trigger_word = "zzt"
[train]
max_train_steps = 4
[output]
output_dir = "{tmp_path / 'runs'}"
output_name = "mylora"
""")
    code, out = cli("train", "--config", cfg, "--set", "train.learning_rate=5e-4")
    assert code == 0, out
    (lora,) = (tmp_path / "runs").glob("*/train/mylora.safetensors")
    with safe_open(str(lora), "pt") as f:
        meta = f.metadata()
    assert meta["ss_learning_rate"] == "0.0005" and meta["ss_steps"] == "4"
    assert '"zzt": 4' in meta["ss_tag_frequency"]

    code, out = cli("generate", "--model", "tiny-sd1", "--lora", lora, "--weight", "0.8", "--seed", "1", "--seed",
                    "2", "--prompt", "zzt", "--steps", "2", "--out", tmp_path / "gen")
    assert code == 0, out
    images = sorted((tmp_path / "gen").glob("*.png"))
    assert [p.name for p in images] == ["image_seed1_w0.8.png", "image_seed2_w0.8.png"]
    assert Image.open(images[0]).size == (64, 64)


@pytest.mark.parametrize("toml,expected", [
    ('[train]\nlearnig_rate = 1e-4\n', "unknown key 'train.learnig_rate'; did you mean 'train.learning_rate'?"),
    ('[train]\ntrain_batch_size = "four"\n', "train.train_batch_size = 'four'"),
    ('[model]\nfamily = "sd5"\n', "model.family = 'sd5'"),
    ('[network]\nnetwork_dim = 0\n', "network.network_dim = 0: Input should be greater than or equal to 1"),
])
def test_config_errors_name_file_and_key(cli, tmp_path: Path, toml: str, expected: str) -> None:
    cfg = write_config(tmp_path / "bad.toml", toml)
    code, out = cli("train", "--config", cfg)
    assert code == 2
    assert expected in " ".join(out.split())
    assert str(cfg.name) in out and "Traceback" not in out


def test_several_config_errors_reported_at_once(cli, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bad.toml", '[train]\nlearnig_rate = 1\nseed = "x"\n[netwrk]\n')
    code, out = cli("train", "--config", cfg)
    assert code == 2
    assert "learnig_rate" in out and "train.seed" in out and "netwrk" in out


def test_missing_model_path(cli, tmp_path: Path, image_dir: Path) -> None:
    code, out = cli("train", "--set", f"data.train_data_dir='{image_dir}'", "--set",
                    f"model.pretrained_model_name_or_path='{tmp_path / 'nope'}'", "--set",
                    f"output.output_dir='{tmp_path / 'runs'}'")
    assert code == 2 and "not found" in out and "model.pretrained_model_name_or_path" in out and "nope" in out and "Traceback" not in out


def test_folder_without_images(cli, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    code, out = cli("train", "--set", f"data.train_data_dir='{tmp_path / 'empty'}'", "--set",
                    f"output.output_dir='{tmp_path / 'runs'}'")
    assert code == 2 and "no images" in out and "empty" in out


def test_unreadable_image_is_named(cli, tmp_path: Path, image_dir: Path) -> None:
    (image_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    code, out = cli("train", "--set", f"data.train_data_dir='{image_dir}'", "--set", "data.resolution=64",
                    "--set", f"output.output_dir='{tmp_path / 'runs'}'", "--set", "train.max_train_steps=1")
    assert code == 2 and "broken.png" in out and "Traceback" not in out


def test_demo_end_to_end(tmp_path: Path) -> None:
    """`lorakit demo` as a user runs it: a separate process, files where it says."""
    proc = subprocess.run([sys.executable, "-m", "lorakit.cli", "demo", "--workdir", str(tmp_path / "demo"),
                           "--steps", "6"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (run,) = (tmp_path / "demo" / "runs").iterdir()
    assert (run / "train" / "demo_lora.safetensors").is_file()
    assert len((run / "train" / "log.csv").read_text().splitlines()) == 7
    pair = Image.open(run / "samples" / "before_after.png")
    assert pair.size[0] == 3 * 256 + 2 * 4 and pair.size[1] > 256  # before | after | heat map, plus label strips
    assert str(run / "samples" / "loss.png") in " ".join(proc.stdout.split())
    assert str(run / "samples" / "before_after.png") in " ".join(proc.stdout.split())
    import re

    change = float(re.search(r"mean pixel change ([0-9.]+)/255", proc.stdout).group(1))
    assert change > 0  # the trained LoRA changes the image


def test_io_errors_exit_2_without_traceback(cli, tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("[train]\n# caf\xe9\n".encode("latin-1"))
    code, out = cli("train", "--config", bad)
    assert code == 2 and "latin1.toml" in out and "Traceback" not in out


def test_disk_full_at_a_checkpoint_exits_3_and_keeps_earlier_files(cli, tmp_path: Path, image_dir: Path,
                                                                   monkeypatch) -> None:
    """ENOSPC while saving the step-4 checkpoint: exit 3, the file and size named, step 2 and the logs kept,
    no temporary file left."""
    import errno

    from lorakit.networks import formats

    real_save, calls = formats.save_file, []

    def save_file(sd, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            Path(path).write_bytes(b"half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(sd, path, metadata=metadata)

    monkeypatch.setattr(formats, "save_file", save_file)
    code, out = cli("train", "--set", f"data.train_data_dir='{image_dir}'", "--set", "data.resolution=64",
                    "--set", f"output.output_dir='{tmp_path / 'runs'}'", "--set", "train.max_train_steps=6",
                    "--set", "output.save_every_n_steps=2")
    text = " ".join(out.split())
    (run,) = (tmp_path / "runs").iterdir()
    train = run / "train"
    assert code == 3, out
    assert f"out of disk space writing {train / 'lora-step00000004.safetensors'}; it needs about" in text
    assert "Traceback" not in out
    assert sorted(p.name for p in train.iterdir()) == ["log.csv", "lora-step00000002.safetensors", "run.log"]
    rows = (train / "log.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr,val_loss,time" and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert "error: out of disk space writing" in (train / "run.log").read_text()
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.name.endswith(".tmp")]


def test_progress_lines_when_stdout_is_a_file(tmp_path: Path, image_dir: Path) -> None:
    """Off a terminal (a log file, a pipe) the run prints plain lines with step/total, loss, lr, it/s and ETA."""
    proc = subprocess.run([sys.executable, "-m", "lorakit.cli", "train", "--set", f"data.train_data_dir='{image_dir}'",
                           "--set", "data.resolution=64", "--set", f"output.output_dir='{tmp_path / 'runs'}'",
                           "--set", "train.max_train_steps=10"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    import re

    steps = [int(m) for m in re.findall(r"^step (\d+)/10 \(\d+%\)  epoch \d+  loss [0-9.]+  lr [0-9.e+-]+  "
                                         r"[0-9.]+ it/s  ETA \d+:\d\d:\d\d$", proc.stdout, re.M)]
    assert steps == list(range(1, 11))  # every 10 % of 10 steps
    assert "\x1b[" not in proc.stdout  # no terminal control codes in a file
