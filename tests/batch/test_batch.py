"""`lorakit batch` end to end on the tiny model: real child runs, a real out-of-memory retry, and (where rclone is
installed) a real rclone against a WebDAV remote served on 127.0.0.1, configured only by RCLONE_CONFIG_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from batch.batch_env import write_env
from conftest import run_cli, write_images


def summary_of(tmp_path: Path) -> dict:
    (path,) = (tmp_path / "runs" / "batches").glob("*/batch_summary.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_out_of_memory_is_retried_with_the_users_layer(tmp_path: Path, monkeypatch, capsys) -> None:
    """A real torch.OutOfMemoryError in step 1 while the batch is 2 (faults.oom_min_batch): the run exits 5, and
    the retry with the user's outofmemory.toml (batch 1, accumulation 2) trains; nothing is deleted without a
    remote."""
    oom = tmp_path / "outofmemory.toml"
    oom.write_text("version = 3\n[train]\ntrain_batch_size = 1\ngradient_accumulation_steps = 2\n", encoding="utf-8")
    loras = tmp_path / "ui_loras"
    loras.mkdir()
    env = write_env(tmp_path, env_extra=f'oom_file = "{oom.as_posix()}"\nlora_install_dir = "{loras.as_posix()}"',
                    train_extra="train_batch_size = 2",
                    base_extra="[faults]\noom_at_step = 1\noom_attempts = 2\noom_min_batch = 2")
    write_images(tmp_path / "work" / "cat", count=2)
    code, out = run_cli(monkeypatch, capsys, "batch", "--env", env)
    assert code == 0, out
    (folder,) = summary_of(tmp_path)["folders"]
    assert (folder["name"], folder["status"], len(folder["attempts"])) == ("cat", "done", 2)
    first, retry = tmp_path / "runs" / "cat_v1", tmp_path / "runs" / "cat_v1-oom1"
    assert folder["run_dir"] == str(retry)
    assert "CUDA out of memory" in (first / "batch.log").read_text()  # the first attempt, kept with its log
    snapshot = (retry / "config.toml").read_text()
    assert "train_batch_size = 1" in snapshot and "gradient_accumulation_steps = 2" in snapshot
    assert (retry / "train" / "cat_v1.safetensors").is_file()
    assert (loras / "cat_v1-oom1.safetensors").read_bytes() == (retry / "train" / "cat_v1.safetensors").read_bytes()
    assert (tmp_path / "work" / "cat" / "img0.png").is_file()  # no remote: the inputs stay
    assert "out of GPU memory; retrying with" in out


def test_missing_env_and_folders_are_clear_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    code, out = run_cli(monkeypatch, capsys, "batch", "--env", tmp_path / "nope.toml")
    assert code == 2 and "nope.toml: no such file" in out
    env = write_env(tmp_path)
    (tmp_path / "work").rmdir()
    code, out = run_cli(monkeypatch, capsys, "batch", "--env", env)
    assert code == 2 and "batch.working_dir" in out and "no such folder" in out


# ---- with a real rclone remote ----

from batch.rclone_server import serve_webdav  # noqa: E402 (after the tests that need no rclone)


def zip_folder(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, f"{folder.name}/{path.relative_to(folder)}")


def plant_training(served: Path, tmp_path: Path) -> Path:
    """The remote's training folder: dog/ (images), cat.zip (a zipped folder), broken/ (no image)."""
    training = served / "lorakit" / "training"
    write_images(training / "dog", count=2)
    write_images(tmp_path / "zipsrc" / "cat", count=2, seed=1)
    zip_folder(tmp_path / "zipsrc" / "cat", training / "cat.zip")
    (training / "broken").mkdir()
    (training / "broken" / "notes.txt").write_text("no images here", encoding="utf-8")
    return training


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_batch_pulls_trains_uploads_and_cleans_up(tmp_path: Path, monkeypatch, capsys) -> None:
    with serve_webdav(tmp_path / "served") as remote:
        training = plant_training(remote.folder, tmp_path)
        for key, value in remote.env.items():
            monkeypatch.setenv(key, value)
        env = write_env(tmp_path, remote=remote.root, env_extra='worker_id = "w1"', storage_extra="empty_trash = true")
        code, out = run_cli(monkeypatch, capsys, "batch", "--env", env)
    assert code == 1, out  # one folder failed
    assert "could not empty the remote's trash" in out  # webdav has no trash: a warning, not a stop
    folders = {f["name"]: f for f in summary_of(tmp_path)["folders"]}
    assert {n: f["status"] for n, f in folders.items()} == {"broken": "failed", "cat": "done", "dog": "done"}
    assert "no images" in folders["broken"]["reason"]
    assert all(folders[n]["uploaded"] and folders[n]["removed"] for n in ("cat", "dog"))

    # the remote: each result uploaded whole; the inputs moved out of training/ (done or failed), none left claimed
    output = remote.folder / "lorakit" / "output"
    for name in ("cat", "dog"):
        files = tree(output / f"{name}_v1")
        assert {"config.toml", f"train/{name}_v1.safetensors", "train/log.csv", "batch.log"} <= files
    assert sorted(p.name for p in training.iterdir()) == [".claimed", ".done", ".failed"]
    assert sorted(p.name for p in (training / ".done").iterdir()) == ["cat.zip", "dog"]
    assert [p.name for p in (training / ".failed").iterdir()] == ["broken"]
    assert not any((training / ".claimed" / "w1").iterdir())
    assert tree(training / ".done" / "dog") == {"img0.png", "img0.txt", "img1.png", "img1.txt"}  # kept (default)

    # local: what succeeded is gone (it is on the remote), the failure is kept with its files
    work = tmp_path / "work"
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == ["broken"]
    assert not (tmp_path / "runs" / "dog_v1").exists() and not (tmp_path / "runs" / "cat_v1").exists()


@pytest.mark.slow
def test_a_batch_killed_mid_upload_finishes_on_the_next_start(tmp_path: Path) -> None:
    """SIGKILL right after the upload's copy (before the batch recorded it): the next start does not train again,
    uploads nothing twice (the remote's files are untouched), then cleans up."""
    with serve_webdav(tmp_path / "served") as remote:
        training = remote.folder / "lorakit" / "training"
        write_images(training / "dog", count=2)
        env_file = write_env(tmp_path, remote=remote.root, env_extra='worker_id = "w1"',
                             storage_extra="delete_remote_inputs = true")
        env = {**os.environ, **remote.env}
        batch = [sys.executable, "-m", "lorakit.cli", "batch", "--env", str(env_file)]
        killed = subprocess.run(batch, env={**env, "LORAKIT_BATCH_KILL_AT": "after-upload"}, capture_output=True,
                                text=True)
        assert killed.returncode == -9, killed.stdout + killed.stderr
        uploaded = remote.folder / "lorakit" / "output" / "dog_v1"
        before = {p: p.stat().st_mtime_ns for p in uploaded.rglob("*") if p.is_file()}
        assert (tmp_path / "runs" / "dog_v1" / "train" / "dog_v1.safetensors").is_file()  # nothing lost
        again = subprocess.run(batch, env=env, capture_output=True, text=True)
        assert again.returncode == 0, again.stdout + again.stderr
        after = {p: p.stat().st_mtime_ns for p in uploaded.rglob("*") if p.is_file()}
        assert after == before  # no file uploaded a second time
        assert "training (plain)" not in again.stdout  # not trained again
        assert not (tmp_path / "runs" / "dog_v1").exists() and (training / ".done" / "dog").is_dir()
        assert tree(training / ".done" / "dog") == set()  # delete_remote_inputs: the files went, the folder stays


@pytest.mark.slow
def test_two_batches_share_one_remote_without_training_a_folder_twice(tmp_path: Path) -> None:
    with serve_webdav(tmp_path / "served") as remote:
        training = remote.folder / "lorakit" / "training"
        for name in ("a", "b", "c"):
            write_images(training / name, count=1)
        env = {**os.environ, **remote.env}
        workers = []
        for worker in ("w1", "w2"):
            home = tmp_path / worker
            home.mkdir()
            env_file = write_env(home, remote=remote.root, env_extra=f'worker_id = "{worker}"')
            workers.append(subprocess.Popen([sys.executable, "-m", "lorakit.cli", "batch", "--env", str(env_file)],
                                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [w.communicate()[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        trained = [f["name"] for worker in ("w1", "w2") for f in summary_of(tmp_path / worker)["folders"]]
        assert sorted(trained) == ["a", "b", "c"]  # each folder exactly once, across both
        assert sorted(p.name for p in (remote.folder / "lorakit" / "output").iterdir()) == ["a_v1", "b_v1", "c_v1"]


def test_a_remote_that_refuses_the_login_stops_the_batch_at_once(tmp_path: Path, monkeypatch, capsys) -> None:
    """A remote rclone has no section for is an error no retry can fix: the batch stops before anything else, the
    local folders stay as they are, and the summary says why (real rclone output)."""
    from batch.rclone_server import rclone_binary

    rclone_binary()  # skips without rclone
    (tmp_path / "rclone.conf").write_text("", encoding="utf-8")
    monkeypatch.setenv("RCLONE_CONFIG", str(tmp_path / "rclone.conf"))
    env = write_env(tmp_path, remote="nosuchremote:")
    write_images(tmp_path / "work" / "dog", count=1)
    code, out = run_cli(monkeypatch, capsys, "batch", "--env", env)
    assert code == 1 and "stopped" in out
    summary = summary_of(tmp_path)
    assert "nosuchremote" in summary["stopped"]
    assert [(f["name"], f["status"]) for f in summary["folders"]] == [("dog", "skipped")]
    assert (tmp_path / "work" / "dog" / "img0.png").is_file() and not (tmp_path / "runs" / "dog_v1").exists()


def test_the_base_model_is_staged_as_a_copy_and_removed(tmp_path: Path) -> None:
    from lorakit.batch.runner import _stage_model, load_env

    model = tmp_path / "models" / "mine"
    (model / "unet").mkdir(parents=True)
    (model / "unet" / "weights.bin").write_bytes(b"w" * 1000)
    (tmp_path / "fast").mkdir()
    env = load_env(write_env(tmp_path, env_extra=f'stage_dir = "{(tmp_path / "fast").as_posix()}"',
                             base_extra=""))
    env.config.model.pretrained_model_name_or_path = str(model)
    staged = _stage_model(env, type("R", (), {"event": lambda self, m: None})())
    assert staged.parent.parent == tmp_path / "fast" and staged.name == "mine"
    assert (staged / "unet" / "weights.bin").read_bytes() == b"w" * 1000
    assert (model / "unet" / "weights.bin").is_file()  # the original never moves
    from lorakit.batch.runner import run_batch

    import shutil

    shutil.rmtree(staged.parent)
    events: list[str] = []
    recorder = type("R", (), {"event": lambda self, m: events.append(m), "line": lambda self, t: None})()
    run_batch(env, recorder)  # nothing to train: the batch stages the model, then removes its copy
    assert any(e.startswith(f"staging {model} → {tmp_path / 'fast'}") for e in events), events
    assert list((tmp_path / "fast").iterdir()) == [] and (model / "unet" / "weights.bin").is_file()
