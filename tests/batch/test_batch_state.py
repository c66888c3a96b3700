"""What a batch does with what an earlier, killed batch left, against a real rclone "local" remote (a folder on this
disk, configured by RCLONE_CONFIG_LOC_* variables). Training is replaced by a stand-in that writes a run folder with
a final LoRA, as `lorakit train` does, so these run in seconds; tests/batch/test_batch.py trains for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from batch.batch_env import write_env
from batch.rclone_server import rclone_binary
from lorakit.batch import runner
from lorakit.errors import LorakitError


class Quiet:
    def __init__(self) -> None:
        self.events: list[str] = []

    def event(self, message: str) -> None:
        self.events.append(message)

    def line(self, text: str) -> None:
        pass


@pytest.fixture()
def local_remote(tmp_path: Path, monkeypatch) -> Path:
    rclone_binary()  # skips without rclone
    (tmp_path / "rclone.conf").write_text("", encoding="utf-8")
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "rclone.conf"))
    monkeypatch.setenv("RCLONE_CONFIG_LOC_TYPE", "local")
    root = tmp_path / "remote"
    (root / "lorakit" / "training").mkdir(parents=True)
    return root


@pytest.fixture()
def trained(monkeypatch) -> list[str]:
    """Replace the child run: record the folder and write runs/<run id>/train/<name>.safetensors."""
    calls: list[str] = []

    def fake_train(env, folder, staged, reporter, outcome, remote=None):
        calls.append(folder)
        run_dir = env.runs / runner.free_run_id(env.runs, runner.run_name(env, folder), remote)
        (run_dir / "train").mkdir(parents=True)
        (run_dir / "train" / f"{runner.run_name(env, folder)}.safetensors").write_bytes(b"lora")
        outcome.attempts.append("plain")
        runner.write_state(env, folder, status="trained", run_dir=str(run_dir), attempts=outcome.attempts)
        outcome.status, outcome.run_dir = "trained", str(run_dir)

    monkeypatch.setattr(runner, "_train_folder", fake_train)
    return calls


def env_for(tmp_path: Path, remote: Path) -> runner.BatchEnv:
    return runner.load_env(write_env(tmp_path, remote=f"LOC:{remote.as_posix()}/", env_extra='worker_id = "w1"'))


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_zip_claimed_and_unzipped_before_a_kill_is_not_downloaded_again(tmp_path, local_remote, trained) -> None:
    env = env_for(tmp_path, local_remote)
    claims = local_remote / "lorakit" / "training" / ".claimed" / "w1"
    claims.mkdir(parents=True)
    with zipfile.ZipFile(claims / "cat.zip", "w") as z:
        z.writestr("cat/img0.png", b"png")
    (tmp_path / "work" / "cat").mkdir()  # the earlier batch had unzipped it (and removed cat.zip) when it died
    (tmp_path / "work" / "cat" / "img0.png").write_bytes(b"png")
    result = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in result.folders] == [("cat", "done")] and trained == ["cat"]
    assert not (tmp_path / "work" / "cat.zip").exists()  # not fetched a second time
    assert (local_remote / "lorakit" / "training" / ".done" / "cat.zip").is_file()


def test_a_folder_you_put_in_the_working_folder_is_never_deleted(tmp_path, local_remote, trained) -> None:
    """With a remote, a folder that did not come from it is trained and uploaded; its images stay (the only copy),
    only the uploaded run folder goes. A later folder of the same name is a new job, trained again."""
    env = env_for(tmp_path, local_remote)
    (tmp_path / "work" / "mine").mkdir()
    (tmp_path / "work" / "mine" / "img0.png").write_bytes(b"png")
    result = runner.run_batch(env, Quiet())
    assert [(f.name, f.status, f.uploaded) for f in result.folders] == [("mine", "done", True)]
    assert (tmp_path / "work" / "mine" / "img0.png").read_bytes() == b"png"
    assert files(local_remote / "lorakit" / "output" / "mine_v1") == {"train/mine_v1.safetensors"}
    assert not (tmp_path / "runs" / "mine_v1").exists()

    # from the remote this time, under a name that finished before: downloaded, trained, uploaded beside the first
    (tmp_path / "work" / "mine").rename(tmp_path / "kept")
    runner.clear_state(env, "mine")
    new = local_remote / "lorakit" / "training" / "mine"
    new.mkdir()
    (new / "img1.png").write_bytes(b"png2")
    result = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in result.folders] == [("mine", "done")] and trained == ["mine", "mine"]
    assert sorted(p.name for p in (local_remote / "lorakit" / "output").iterdir()) == ["mine_v1", "mine_v1-2"]
    assert not (tmp_path / "work" / "mine").exists()  # it came from the remote: removed after the upload


def test_a_run_that_finished_just_before_a_kill_is_not_trained_again(tmp_path, local_remote, trained) -> None:
    env = env_for(tmp_path, local_remote)
    (tmp_path / "work" / "dog").mkdir()
    (tmp_path / "work" / "dog" / "img0.png").write_bytes(b"png")
    run_dir = tmp_path / "runs" / "dog_v1"
    (run_dir / "train").mkdir(parents=True)
    (run_dir / "train" / "dog_v1.safetensors").write_bytes(b"lora")  # the child's last write
    runner.write_state(env, "dog", status="training", run_dir=str(run_dir), attempts=["plain"])
    result = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in result.folders] == [("dog", "done")] and trained == []


def test_one_batch_per_working_folder_and_a_kept_worker_id(tmp_path, local_remote) -> None:
    env = runner.load_env(write_env(tmp_path, remote=f"LOC:{local_remote.as_posix()}/"))
    first = runner.worker_id(env)
    assert first.startswith(os.uname().nodename) and runner.worker_id(env) == first
    assert (tmp_path / "work" / ".batch" / "worker_id").read_text() == first  # the same after a new host name
    holder = subprocess.Popen([sys.executable, "-c", "import sys,time; from pathlib import Path; "
                               "from lorakit.io import folder_lock\n"
                               f"with folder_lock(Path({str(tmp_path / 'work' / '.batch')!r})):\n"
                               "    print('locked', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LorakitError, match="in use by another lorakit process"):
            runner.run_batch(env, Quiet())
    finally:
        holder.communicate("")


def test_stray_files_in_training_are_not_claimed(tmp_path, local_remote, trained) -> None:
    env = env_for(tmp_path, local_remote)
    training = local_remote / "lorakit" / "training"
    (training / "notes.txt").write_text("read me")
    (training / "Cat.ZIP").write_bytes(b"")
    with zipfile.ZipFile(training / "Cat.ZIP", "w") as z:
        z.writestr("Cat/img0.png", b"png")
    result = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in result.folders] == [("Cat", "done")]
    assert (training / "notes.txt").is_file() and (training / ".done" / "Cat.ZIP").is_file()
    summary = json.loads(result.summary_path.read_text())
    assert summary["ok"] and summary["worker"] == "w1"


def test_run_names_follow_the_suffix_and_add_layers(tmp_path) -> None:
    """The spec's naming: <folder>_<output_suffix>, and each --add file's stem appended (makelora.py's --add)."""
    (tmp_path / "lowlr.toml").write_text("version = 3\n[train]\nlearning_rate = 1e-5\n", encoding="utf-8")
    env = runner.load_env(write_env(tmp_path), [str(tmp_path / "lowlr.toml")])
    assert runner.run_name(env, "dog") == "dog_v1_lowlr" and env.config.train.learning_rate == 1e-5
    env.config.batch.output_suffix = ""
    assert runner.run_name(env, "dog") == "dog_lowlr"


def test_a_stopped_run_is_failed_and_trained_again_not_uploaded(tmp_path, local_remote, monkeypatch) -> None:
    """A `lorakit train` stopped by a signal (exit 4), out of memory (5) or by NaN steps (6) still writes
    train/<output_name>.safetensors: engine/trainer.py keeps the last network as the result. The batch marks such a
    folder failed, so the next start trains it again instead of uploading the stopped run as done."""
    import tomllib

    from lorakit import process

    env = env_for(tmp_path, local_remote)
    (tmp_path / "work" / "cat").mkdir()
    (tmp_path / "work" / "cat" / "img0.png").write_bytes(b"png")
    exits = [4, 0]  # stopped, then a full run

    def child(command, log, on_line=None, **_):
        output = tomllib.loads(Path(command[command.index("--config") + 1]).read_text(encoding="utf-8"))["output"]
        run_dir = Path(output["output_dir"]) / output["run_id"]
        (run_dir / "train").mkdir(parents=True)
        (run_dir / "train" / f"{output['output_name']}.safetensors").write_bytes(b"lora")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("stopped\n", encoding="utf-8")
        return process.ChildResult(exits.pop(0), "stopped after 3 steps")

    monkeypatch.setattr(process, "run_child", child)
    first = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in first.folders] == [("cat", "failed")]
    assert runner.read_state(env, "cat")["status"] == "failed"
    assert not (local_remote / "lorakit" / "output").exists() or not any((local_remote / "lorakit" / "output").iterdir())
    second = runner.run_batch(env, Quiet())
    assert [(f.name, f.status) for f in second.folders] == [("cat", "done")] and exits == []  # trained again
    assert sorted(p.name for p in (local_remote / "lorakit" / "output").iterdir()) == ["cat_v1-2"]
