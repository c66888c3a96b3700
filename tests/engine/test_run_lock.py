"""One process per run folder: a second `--resume` of a run that is still training is refused, a killed run's lock
is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.io import LOCK_NAME, _host, folder_lock


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{_host()} {os.getpid()}"
        with pytest.raises(LorakitError, match=f"in use by another lorakit process .*pid {os.getpid()}"):
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(f"{_host()} {dead_pid()}")
    with folder_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text() == f"{_host()} {os.getpid()}"


@pytest.mark.parametrize("owner", ["other-machine 123", "{host} {parent}"])
def test_a_live_or_foreign_lock_is_refused_naming_the_file(tmp_path: Path, owner: str) -> None:
    (tmp_path / LOCK_NAME).write_text(owner.format(host=_host(), parent=os.getppid()))
    with pytest.raises(LorakitError) as info:
        with folder_lock(tmp_path):
            pass
    assert str(tmp_path / LOCK_NAME) in str(info.value)  # the hint names the file to delete if nothing runs
    assert (tmp_path / LOCK_NAME).exists()  # someone else's lock is left alone


def test_resuming_a_run_that_is_training_is_refused(tmp_path: Path, image_dir: Path) -> None:
    from lorakit import api
    from lorakit.config.loader import load_config

    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"',
                            "data.resolution=64", "train.max_train_steps=2", "network.network_dim=2"])
    run = api.train(cfg)
    (run.run_dir / LOCK_NAME).write_text(f"{_host()} {os.getppid()}")  # a live process holds it
    with pytest.raises(LorakitError, match="in use by another lorakit process"):
        api.train(cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_train_steps": 4})}),
                  resume=api.find_checkpoint(run.run_dir))
    assert not (run.run_dir / "resumed").exists() and not (run.run_dir / "superseded").exists()
