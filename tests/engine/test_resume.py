"""Stopping and resuming (docs/stopping-and-resuming.md): a resumed run is bit-identical to an uninterrupted one,
after an in-process stop and after a real SIGKILL; config edits on resume; extending a finished run; what happens
to files written after a checkpoint; incomplete checkpoints; keep_last; a full disk; `--resume auto`.

Tiny SD1 model on the CPU in fp32, 64 px, batch 2, five images of two aspect ratios (two buckets: 3 square
images → batches of 2 and 1, 2 tall images → one batch of 2, so 3 batches per epoch). One uninterrupted 8-step
reference run (checkpoints every 2 steps, all kept) is shared by the tests.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import torch
from safetensors.torch import load_file

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import LorakitConfig
from lorakit.engine.events import Callback
from lorakit.engine.state import is_complete
from lorakit.errors import ConfigError, DiskFullError, LorakitError
from engine.helpers import assert_same_lora, stop_at

STEPS = 8  # the reference run's steps
BASE: dict[str, Any] = {
    "data.resolution": 64, "data.enable_bucket": True, "data.bucket_reso_steps": 8, "data.min_bucket_reso": 32,
    "train.learning_rate": 2e-3, "train.max_train_steps": STEPS, "train.train_batch_size": 2,
    "network.network_dim": 4, "checkpoint.every_n_steps": 2, "checkpoint.keep_last": 10,
}
CK = re.compile(r"^step-(\d{8})$")


# --- helpers ------------------------------------------------------------------------------------------------------

def settings(data: Path, out: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**BASE, "data.train_data_dir": str(data), "output.output_dir": str(out), **(extra or {})}


def config(data: Path, out: Path, extra: dict[str, Any] | None = None) -> LorakitConfig:
    sets = [tomli_w.dumps({"v": v}).strip().replace("v = ", f"{k}=", 1)
            for k, v in settings(data, out, extra).items()]
    return load_config(sets=sets)


def write_toml(path: Path, data: Path, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """The same settings as `config`, as a TOML file for the CLI."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in settings(data, out, extra).items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    path.write_text(tomli_w.dumps(nested), encoding="utf-8")
    return path


def make_dataset(folder: Path) -> Path:
    """3 square images (96×96) and 2 tall ones (64×96), with captions, in one folder."""
    write_images(folder, 3, (96, 96))
    tall = write_images(folder.parent / f"{folder.name}_tall", 2, (64, 96), seed=1)
    for f in tall.iterdir():
        f.rename(folder / f"tall_{f.name}")
    tall.rmdir()
    return folder


class Notices(Callback):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def on_notice(self, message: str) -> None:
        self.lines.append(message)

    def on_warning(self, message: str) -> None:
        self.lines.append(f"warning: {message}")


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the folders named step-N under checkpoints/ (complete or not)."""
    folder = run_dir / "checkpoints"
    return sorted(int(m[1]) for p in folder.iterdir() if (m := CK.match(p.name)))


def ck(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step-{step:08d}"


def logged_steps(log_csv: Path) -> list[int]:
    with open(log_csv, newline="", encoding="utf-8") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]


def superseded(run_dir: Path) -> list[Path]:
    folder = run_dir / "superseded"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a run folder (timestamps kept) to resume without touching the original."""
    return Path(shutil.copytree(run_dir, dest / run_dir.name))


def state_of(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))


# --- shared runs --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("resume-data") / "images")


@pytest.fixture(scope="module")
def batches_per_epoch(data_dir: Path) -> int:
    """Batches per epoch from the run's own sampler (and a check that the data makes two buckets)."""
    cfg = config(data_dir, Path("unused"))
    plan = api.inspect_dataset(cfg.data, cfg.train.train_batch_size, cfg.train.seed)
    assert len(plan.sampler.bucket_counts()) == 2
    counts = {len(list(plan.sampler.batches(e))) for e in (1, 2, 3)}
    assert len(counts) == 1
    return counts.pop()


@pytest.fixture(scope="module")
def ref_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume-ref") / "runs"


@pytest.fixture(scope="module")
def reference(data_dir: Path, ref_out: Path):
    """The uninterrupted run: 8 steps, checkpoints 2, 4, 6, 8 (all kept)."""
    result = api.train(config(data_dir, ref_out))
    assert not result.stopped and result.steps == STEPS
    assert checkpoint_steps(result.run_dir) == [2, 4, 6, 8]
    return result


# --- 1. exactness, in-process -------------------------------------------------------------------------------------

STOPS = [2, 3, 5]


def test_stop_points_cover_epoch_ends_and_mid_epoch(batches_per_epoch: int) -> None:
    assert batches_per_epoch == 3
    assert {k % batches_per_epoch == 0 for k in STOPS} == {True, False}  # 3: an epoch's end; 2, 5: mid-epoch


@pytest.mark.parametrize("k", STOPS)
def test_stopped_then_resumed_run_is_bit_identical(k: int, data_dir: Path, reference, batches_per_epoch: int,
                                                   tmp_path: Path) -> None:
    cfg = config(data_dir, tmp_path / "runs")
    stopped = stop_at(cfg, k)
    checkpoint = api.find_checkpoint(stopped.run_dir)
    assert checkpoint == ck(stopped.run_dir, k)
    state = state_of(checkpoint)
    assert (state["step"], state["epoch"], state["batch"]) == (k, k // batches_per_epoch + 1, k % batches_per_epoch)
    # the stop's checkpoint holds the run as of step k: the reference's adapter at that step, where it has one
    if k % 2 == 0:
        ta = load_file(str(ck(reference.run_dir, k) / "adapter.safetensors"))
        tb = load_file(str(checkpoint / "adapter.safetensors"))
        assert ta.keys() == tb.keys() and all(torch.equal(ta[n], tb[n]) for n in ta)

    resumed = api.train(cfg, resume=checkpoint)
    assert (resumed.run_dir, resumed.steps, resumed.stopped) == (stopped.run_dir, STEPS, False)
    assert_same_lora(resumed.lora_path, reference.lora_path)
    assert logged_steps(resumed.run_dir / "train" / "log.csv") == list(range(1, STEPS + 1))


@pytest.mark.parametrize("variant, at, position", [
    # 3 batches per epoch, windows of 2 batches: an epoch is 2 steps (2 batches, then the last one alone)
    ({"train.gradient_accumulation_steps": 2}, 3, (2, 2)),
    # latents encoded every step: the encoder's latent generator must come back as it was
    ({"train.cache_latents": False}, 4, (2, 1)),
], ids=["accumulation2", "no_latent_cache"])
def test_resume_is_bit_identical_with(variant: dict, at: int, position: tuple[int, int], data_dir: Path,
                                      tmp_path: Path) -> None:
    """Resumed from a periodic checkpoint (mid-epoch) of an uninterrupted run, the run ends where that one did."""
    cfg = config(data_dir, tmp_path / "runs", {**variant, "train.max_train_steps": 6, "checkpoint.every_n_steps": at})
    reference = api.train(cfg)
    checkpoint = ck(reference.run_dir, at)
    assert (state_of(checkpoint)["epoch"], state_of(checkpoint)["batch"]) == position
    resumed = api.train(cfg, resume=checkpoint)
    assert resumed.steps == 6
    (moved,) = superseded(reference.run_dir)  # the uninterrupted run's LoRA, set aside as it was
    assert_same_lora(moved / "train" / "lora.safetensors", resumed.lora_path)


# --- 2. a real SIGKILL ----------------------------------------------------------------------------------------------

def lorakit(*args: object) -> subprocess.Popen:
    """The installed console script in a new process (environment inherited: offline, the test cache folder)."""
    script = Path(sys.executable).with_name("lorakit")
    # as many threads as this process: CPU kernels round differently with another thread count
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "COLUMNS": "250"}
    return subprocess.Popen([str(script), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)


@pytest.fixture(scope="module")
def killed(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two `lorakit train` processes killed with SIGKILL by `[faults]` (run side by side: the imports dominate):
    one in step 5 (checkpoints 2 and 4 complete), one while writing the checkpoint of step 4 (after its first
    file). {fault: (its run folder, the same config without faults)}."""
    runs = {}
    for fault, step in (("kill_at_step", 5), ("kill_in_checkpoint", 4)):
        root = tmp_path_factory.mktemp(fault)
        toml = write_toml(root / "kill.toml", data_dir, root / "runs", {f"faults.{fault}": step})
        runs[fault] = (root, lorakit("train", "--config", toml))
    done = {}
    for fault, (root, proc) in runs.items():
        output, _ = proc.communicate(timeout=600)
        assert proc.returncode == -signal.SIGKILL, output
        (run_dir,) = (root / "runs").iterdir()
        done[fault] = (run_dir, write_toml(root / "plain.toml", data_dir, root / "runs"))
    return done


@pytest.fixture
def no_kill_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault left in a config must fail the test, not kill pytest (the in-process resumes below)."""
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if pid == os.getpid() and sig == signal.SIGKILL:
            raise AssertionError("a [faults] kill fired in the test process")
        real_kill(pid, sig)

    monkeypatch.setattr(os, "kill", kill)


def test_killed_in_a_step_resumes_bit_identical(killed, reference, cli, no_kill_here) -> None:
    run_dir, _ = killed["kill_at_step"]
    assert checkpoint_steps(run_dir) == [2, 4] and all(is_complete(ck(run_dir, s)) for s in (2, 4))
    assert logged_steps(run_dir / "train" / "log.csv") == [1, 2, 3, 4]  # step 5 never finished
    assert not (run_dir / "train" / "lora.safetensors").exists()
    # `lorakit train --resume <run>`: the checkpoint's own config, which leaves the test's fault out
    assert "kill_at_step =" not in (ck(run_dir, 4) / "config.toml").read_text()
    code, text = cli("train", "--resume", run_dir)
    assert code == 0, text
    assert f"resuming from {ck(run_dir, 4)}" in text and "changed since the checkpoint" not in text
    assert_same_lora(run_dir / "train" / "lora.safetensors", reference.lora_path)
    assert logged_steps(run_dir / "train" / "log.csv") == list(range(1, STEPS + 1))


def test_killed_in_a_checkpoint_resumes_from_the_previous_one(killed, reference, cli, no_kill_here) -> None:
    run_dir, plain = killed["kill_in_checkpoint"]
    folders = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert len(folders) == 2 and folders[-1] == "step-00000002" and is_complete(ck(run_dir, 2))
    (partial,) = [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".step-00000004.")]
    assert partial.name.endswith(".tmp") and not (partial / "complete.json").exists()
    assert logged_steps(run_dir / "train" / "log.csv") == [1, 2, 3, 4]
    # `--config` without the fault (faults.* is a safe change): the interrupted checkpoint named and ignored
    code, text = cli("train", "--config", plain, "--resume", run_dir)
    assert code == 0, text
    assert "ignoring" in text and partial.name in text
    assert f"resuming from {ck(run_dir, 2)}" in text and "changed since the checkpoint" not in text
    assert_same_lora(run_dir / "train" / "lora.safetensors", reference.lora_path)
    assert logged_steps(run_dir / "train" / "log.csv") == list(range(1, STEPS + 1))
    assert checkpoint_steps(run_dir) == [2, 4, 6, 8]


# --- 3. config edits on resume ----------------------------------------------------------------------------------------

def test_safe_changes_are_accepted_logged_and_change_no_numbers(data_dir: Path, ref_out: Path, reference,
                                                               tmp_path: Path) -> None:
    run_dir = copy_run(reference.run_dir, tmp_path)
    cfg = config(data_dir, ref_out, {"checkpoint.every_n_steps": 5, "train.log_every_n_steps": 2,
                                     "sample.prompts": ["a red block"], "sample.steps": 2,
                                     "sample.every_n_steps": 3})
    result = api.train(cfg, resume=ck(run_dir, 4))
    assert (result.run_dir, result.steps) == (run_dir, STEPS)
    log = (run_dir / "train" / "run.log").read_text(encoding="utf-8")
    for change in ("checkpoint.every_n_steps: 2 → 5", "train.log_every_n_steps: 1 → 2",
                   "sample.prompts: [] → ['a red block']", "sample.every_n_steps: unset → 3"):
        assert f"changed since the checkpoint: {change}" in log
    assert "changed since the checkpoint: network" not in log
    # the new checkpoint interval is in effect (5, then the end); the old 6 and 8 were set aside
    assert checkpoint_steps(run_dir) == [2, 4, 5, 8]
    (moved,) = superseded(run_dir)
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["step-00000006", "step-00000008"]
    # samples rendered at step 6 and at the end, and they changed nothing the run trains
    assert sorted(p.name for p in (run_dir / "samples").glob("step*.png")) == [
        "step00000006_00.png", "step00000008_00.png"]
    assert_same_lora(result.lora_path, reference.lora_path)


def test_breaking_changes_are_refused_naming_each(data_dir: Path, ref_out: Path, reference) -> None:
    before = sorted(p.relative_to(reference.run_dir) for p in reference.run_dir.rglob("*"))
    cfg = config(data_dir, ref_out, {"network.network_dim": 8, "train.learning_rate": 1e-3,
                                     "train.max_train_steps": 10})
    with pytest.raises(ConfigError) as exc:
        api.train(cfg, resume=ck(reference.run_dir, 8))
    assert sorted(exc.value.problems) == ["network.network_dim: 4 → 8", "train.learning_rate: 0.002 → 0.001"]
    assert str(ck(reference.run_dir, 8)) in str(exc.value)
    assert sorted(p.relative_to(reference.run_dir) for p in reference.run_dir.rglob("*")) == before  # untouched


def test_changed_dataset_is_refused_naming_the_file(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "images")
    cfg = config(data, tmp_path / "runs", {"train.max_train_steps": 2})
    run = api.train(cfg)
    checkpoint = api.find_checkpoint(run.run_dir)
    lora = run.lora_path.read_bytes()
    cfg = config(data, tmp_path / "runs", {"train.max_train_steps": 3})  # one step left to do: inputs are checked

    image = data / "img1.png"
    original = image.read_bytes()
    from PIL import Image

    Image.new("RGB", (96, 96), (1, 2, 3)).save(image)  # same name and size, other pixels
    with pytest.raises(ConfigError) as exc:
        api.train(cfg, resume=checkpoint)
    assert f"changed (content, caption or repeats): {image}" in str(exc.value)
    image.write_bytes(original)

    (data / "tall_img0.txt").write_text("an edited caption", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        api.train(cfg, resume=checkpoint)
    assert f"changed (content, caption or repeats): {data / 'tall_img0.png'}" in str(exc.value)
    assert str(image) not in str(exc.value)  # restored: no longer named
    # a refused resume moves and overwrites nothing
    assert run.lora_path.read_bytes() == lora and superseded(run.run_dir) == []
    assert logged_steps(run.run_dir / "train" / "log.csv") == [1, 2]


# --- 4. extending a finished run --------------------------------------------------------------------------------------

def test_finished_run_resumed_unchanged_has_nothing_to_do(data_dir: Path, ref_out: Path, reference,
                                                          tmp_path: Path) -> None:
    run_dir = copy_run(reference.run_dir, tmp_path)
    lora = run_dir / "train" / "lora.safetensors"
    stat, content = lora.stat(), lora.read_bytes()
    notices = Notices()
    result = api.train(config(data_dir, ref_out), [notices], resume=api.find_checkpoint(run_dir))
    assert (result.steps, result.stopped, result.lora_path) == (STEPS, False, lora)
    assert any("nothing left to do" in line for line in notices.lines)
    assert lora.read_bytes() == content and lora.stat().st_mtime_ns == stat.st_mtime_ns
    assert superseded(run_dir) == [] and checkpoint_steps(run_dir) == [2, 4, 6, 8]
    assert logged_steps(run_dir / "train" / "log.csv") == list(range(1, STEPS + 1))


def test_finished_run_extended_to_more_steps(data_dir: Path, ref_out: Path, reference, tmp_path: Path) -> None:
    run_dir = copy_run(reference.run_dir, tmp_path)
    result = api.train(config(data_dir, ref_out, {"train.max_train_steps": 11}), resume=api.find_checkpoint(run_dir))
    assert (result.run_dir, result.steps, result.stopped) == (run_dir, 11, False)
    assert logged_steps(run_dir / "train" / "log.csv") == list(range(1, 12))
    assert "changed since the checkpoint: train.max_train_steps: 8 → 11" in (
        run_dir / "train" / "run.log").read_text(encoding="utf-8")
    (moved,) = superseded(run_dir)
    old = moved / "train" / "lora.safetensors"
    assert old.read_bytes() == reference.lora_path.read_bytes()  # the old result, set aside as it was
    new = load_file(str(result.lora_path))
    assert any(not torch.equal(new[k], t) for k, t in load_file(str(old)).items())  # trained 3 more steps
    assert checkpoint_steps(run_dir)[-1] == 11 and is_complete(ck(run_dir, 11))


# --- 5 and 7. files after the checkpoint; keep_last ------------------------------------------------------------------

EVERY_STEP = {"output.save_every_n_steps": 1, "checkpoint.every_n_steps": 1, "checkpoint.keep_last": 2}


@pytest.fixture(scope="module")
def stopped_every_step(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Saves and checkpoints every step (keep_last 2), stopped at step 5; what it left, listed before any test
    changes it."""
    cfg = config(data_dir, tmp_path_factory.mktemp("every") / "runs", EVERY_STEP)
    result = stop_at(cfg, 5)
    files = {p.name: p.read_bytes() for p in (result.run_dir / "train").glob("*.safetensors")}
    return cfg, result, checkpoint_steps(result.run_dir), files


def test_keep_last_keeps_the_newest_checkpoints_and_every_lora(stopped_every_step) -> None:
    _, _, checkpoints, files = stopped_every_step
    assert checkpoints == [4, 5]
    assert sorted(files) == [f"lora-step{s:08d}.safetensors" for s in range(1, 6)] + ["lora.safetensors"]


def test_resume_from_earlier_checkpoint_sets_later_files_aside(stopped_every_step, reference) -> None:
    cfg, stopped, _, before = stopped_every_step
    run_dir, train = stopped.run_dir, stopped.run_dir / "train"
    result = api.train(cfg, resume=ck(run_dir, 4))
    assert result.steps == STEPS
    (moved,) = superseded(run_dir)
    # what the abandoned continuation wrote after step 4, moved as it was; nothing of it deleted
    assert sorted(p.name for p in (moved / "train").glob("*.safetensors")) == [
        "lora-step00000005.safetensors", "lora.safetensors"]
    assert all((moved / "train" / n).read_bytes() == before[n] for n in ("lora-step00000005.safetensors",
                                                                          "lora.safetensors"))
    assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["step-00000005"]
    assert logged_steps(moved / "train" / "log.csv") == [1, 2, 3, 4, 5]
    # the earlier files are kept untouched; the later ones written again, identically (the same training)
    assert all((train / f"lora-step{s:08d}.safetensors").read_bytes() == before[f"lora-step{s:08d}.safetensors"]
               for s in range(1, 5))
    assert sorted(p.name for p in train.glob("*.safetensors")) == [
        f"lora-step{s:08d}.safetensors" for s in range(1, STEPS)] + ["lora.safetensors"]
    assert_same_lora(train / "lora-step00000005.safetensors", moved / "train" / "lora-step00000005.safetensors")
    assert logged_steps(train / "log.csv") == list(range(1, STEPS + 1))  # up to 4, then 5… without duplicates
    assert checkpoint_steps(run_dir) == [7, 8]  # keep_last = 2 in the resumed run too
    assert result.checkpoints == [train / f"lora-step{s:08d}.safetensors" for s in range(1, STEPS)]
    assert_same_lora(result.lora_path, reference.lora_path)  # saving every step changes no number


# --- 6. incomplete checkpoints ------------------------------------------------------------------------------------

def test_incomplete_checkpoints_are_skipped_with_a_warning(data_dir: Path, ref_out: Path, reference,
                                                          tmp_path: Path) -> None:
    run_dir = copy_run(reference.run_dir, tmp_path)
    (ck(run_dir, 8) / "complete.json").unlink()
    warnings: list[str] = []
    assert api.find_checkpoint(run_dir, warn=warnings.append) == ck(run_dir, 6)
    assert len(warnings) == 1 and str(ck(run_dir, 8)) in warnings[0] and "incomplete" in warnings[0]

    marker = json.loads((ck(run_dir, 6) / "complete.json").read_text(encoding="utf-8"))
    assert "optimizer.pt" in marker["files"]
    with open(ck(run_dir, 6) / "optimizer.pt", "r+b") as f:  # cut short (a copy that stopped half-way)
        f.truncate(marker["files"]["optimizer.pt"] // 2)
    warnings.clear()
    assert api.find_checkpoint(run_dir, warn=warnings.append) == ck(run_dir, 4)
    assert len(warnings) == 2  # both ignored folders named, the cut-short one and the one without a marker
    assert str(ck(run_dir, 6)) + ":" in warnings[0] and str(ck(run_dir, 8)) + ":" in warnings[1]
    # named explicitly, it is refused before anything is written
    with pytest.raises(LorakitError, match="not a complete lorakit checkpoint"):
        api.train(config(data_dir, ref_out), resume=ck(run_dir, 6))
    assert not (run_dir / "resumed").exists()


def test_resume_past_an_incomplete_checkpoint_writes_that_step_again(data_dir: Path, ref_out: Path, reference,
                                                                    tmp_path: Path) -> None:
    run_dir = copy_run(reference.run_dir, tmp_path)
    (ck(run_dir, 8) / "complete.json").unlink()
    result = api.train(config(data_dir, ref_out), resume=api.find_checkpoint(run_dir))
    assert result.steps == STEPS
    assert_same_lora(result.lora_path, reference.lora_path)
    # the finished run can be continued from its end: a complete checkpoint of step 8
    assert api.find_checkpoint(run_dir) == ck(run_dir, 8)


# --- 8. a full disk -----------------------------------------------------------------------------------------------

def test_disk_full_in_a_checkpoint_keeps_the_previous_one(data_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        path = Path(f) if isinstance(f, (str, os.PathLike)) else None
        if path is not None and path.name == "optimizer.pt" and path.parent.name.startswith(".step-00000004."):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    out = tmp_path / "runs"
    with pytest.raises(DiskFullError) as exc:
        api.train(config(data_dir, out, {"train.max_train_steps": 6}))
    (run_dir,) = out.iterdir()
    assert exc.value.path == ck(run_dir, 4) and str(ck(run_dir, 4)) in str(exc.value)
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000002"]  # no temp folder left
    assert is_complete(ck(run_dir, 2)) and api.find_checkpoint(run_dir) == ck(run_dir, 2)


# --- 9. --resume auto ---------------------------------------------------------------------------------------------

def test_resume_auto_picks_the_run_this_config_continues(data_dir: Path, reference, tmp_path: Path, cli,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "runs"
    a_dir = copy_run(reference.run_dir, out)  # the reference's config (output_dir is a safe change)
    b_extra = {"train.max_train_steps": 2, "network.network_dim": 8}
    b = api.train(config(data_dir, out, b_extra))  # newer, and of another network
    b_files = {p: p.read_bytes() for p in b.run_dir.rglob("*") if p.is_file()}
    assert api.find_checkpoint("auto", config(data_dir, out)) == ck(a_dir, 8)
    assert api.find_checkpoint("auto", config(data_dir, out, b_extra)) == ck(b.run_dir, 2)
    monkeypatch.chdir(tmp_path)  # no config: the newest in ./runs
    assert api.find_checkpoint("auto").resolve() == ck(b.run_dir, 2)
    with pytest.raises(LorakitError, match="no checkpoint in .* was written by a run of this config"):
        api.find_checkpoint("auto", config(data_dir, out, {"train.learning_rate": 1e-4}))

    toml = write_toml(tmp_path / "a.toml", data_dir, out)
    code, text = cli("train", "--config", toml, "--set", "train.max_train_steps=10", "--resume", "auto")
    assert code == 0, text
    assert f"resuming from {ck(a_dir, 8)}" in text
    assert logged_steps(a_dir / "train" / "log.csv") == list(range(1, 11))
    assert checkpoint_steps(a_dir)[-1] == 10
    assert {p: p.read_bytes() for p in b.run_dir.rglob("*") if p.is_file()} == b_files  # the other run untouched
