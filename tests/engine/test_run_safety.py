"""A run's files when things go wrong: a full disk, interrupted saves, failing callbacks; and its logs."""

from __future__ import annotations

import csv
import errno
import io
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.plan import build_plan, render_plan
from lorakit.engine import trainer
from lorakit.engine.checkpoint import save_size_estimate
from lorakit.engine.events import Callback, CallbackList, CsvLog, ProgressLines, RichProgress, RunLog, StepEvent
from lorakit.errors import EXIT_DISK_FULL, ConfigError, DiskFullError, LorakitError, is_disk_full
from lorakit.config import validate
from lorakit.io import atomic_path, check_free_space, remove_stale_temps, temp_name, write_text_atomic


def config(tmp_path: Path, image_dir: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=4", "network.network_dim=4", *extra,
    ])


def dead_pid() -> int:
    """The id of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stamp(seconds: int) -> datetime:
    return datetime(2025, 1, 31, 12, 0, 0, tzinfo=timezone.utc) + timedelta(seconds=seconds)



# --- atomic writes: permissions, full disk -------------------------------------------------------------------------


def test_saved_files_get_umask_permissions(tmp_path: Path, image_dir: Path) -> None:
    old = os.umask(0o022)
    try:
        result = api.train(config(tmp_path, image_dir, "train.max_train_steps=2", "output.save_every_n_steps=1",
                                  "output.save_format='both'"))
    finally:
        os.umask(old)
    train_dir = result.run_dir / "train"
    files = [result.lora_path, *result.checkpoints, result.peft_dir / "pytorch_lora_weights.safetensors",
             train_dir / "log.csv", train_dir / "run.log"]
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o644"}
    os.umask(0o077)
    try:
        write_text_atomic(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    (tmp_path / "private.txt").chmod(0o640)  # a replaced file keeps its mode
    write_text_atomic(tmp_path / "private.txt", "y")
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("exc", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EDQUOT, "Disk quota exceeded"),
    Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'),
])
def test_full_disk_in_atomic_write_names_file_and_size_and_leaves_nothing(tmp_path: Path, exc: Exception) -> None:
    target = tmp_path / "out" / "lora.safetensors"
    target.parent.mkdir()
    (tmp_path / "out" / "earlier.safetensors").write_bytes(b"keep me")
    with pytest.raises(DiskFullError) as info:
        with atomic_path(target, size_hint=123456) as tmp:
            tmp.write_bytes(b"half a file")
            raise exc
    err = info.value
    assert err.exit_code == EXIT_DISK_FULL == 3 and err.path == target and err.needed == 123456
    assert str(target) in str(err) and "120.6 KiB (123456 bytes)" in str(err) and "free" in str(err)
    assert sorted(p.name for p in target.parent.iterdir()) == ["earlier.safetensors"]  # no temp, nothing deleted


def test_other_errors_stay_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "a.txt"):
            raise PermissionError(errno.EACCES, "denied")
    assert not is_disk_full(OSError(errno.EACCES, "x")) and not is_disk_full(ValueError("code: 280"))
    assert list(tmp_path.iterdir()) == []


def test_full_disk_without_a_hint_reports_what_was_written(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as info:
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.needed == 1000


def test_cache_write_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorakit.data import cache

    def full(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "save_file", full)
    store = cache.TensorCache(tmp_path, "latents")
    with pytest.raises(DiskFullError) as info:
        store.put("ab" * 32, torch.zeros(4, 8, 8))
    assert info.value.path == store.path("ab" * 32) and info.value.needed >= 4 * 8 * 8 * 4
    assert [p.name for p in store.path("ab" * 32).parent.iterdir()] == []


# --- before training: a writable output folder with room for a save -----------------------------------------------


def test_save_size_estimate_covers_the_saved_file(tmp_path: Path, image_dir: Path, monkeypatch) -> None:
    seen = {}
    real = trainer.check_free_space

    def spy(folder: Path, needed: int, label: str) -> None:
        seen.setdefault("needed", needed)  # the first check: before anything is trained
        seen["folder"] = folder
        real(folder, needed, label)

    monkeypatch.setattr(trainer, "check_free_space", spy)
    result = api.train(config(tmp_path, image_dir, "train.max_train_steps=1"))
    size = result.lora_path.stat().st_size
    checkpoint = sum(f.stat().st_size for f in (result.run_dir / "checkpoints" / "step-00000001").iterdir())
    assert seen["folder"] == result.run_dir
    # what a stop writes: the LoRA (fp16 weights + headers, a little to spare) and a checkpoint (at most 1/4 more)
    assert size + checkpoint <= seen["needed"] <= size + 2 * 64 * 1024 + checkpoint * 5 // 4
    groups = [{"params": [torch.zeros(10, 4), torch.zeros(4, 10)]}]
    assert save_size_estimate(groups, "fp32", "kohya") == 80 * 4 + 2 * 256 + 64 * 1024
    assert save_size_estimate(groups, "fp16", "both") == 2 * (80 * 2 + 2 * 256 + 64 * 1024)


def test_too_little_space_stops_before_training(tmp_path: Path, image_dir: Path, monkeypatch) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr("lorakit.io.shutil.disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(DiskFullError) as info:
        api.train(config(tmp_path, image_dir))
    text = str(info.value)
    assert "output folder" in text and str(tmp_path / "runs") in text and "1000 bytes free" in text
    assert info.value.needed > 1000 and f"({info.value.needed} bytes)" in text
    assert list((tmp_path / "runs").iterdir()) == []  # no run folder left behind


def test_unwritable_output_folder_is_named(tmp_path: Path, monkeypatch) -> None:
    def refuse(self, data):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(LorakitError) as info:
        check_free_space(tmp_path, 10, "output folder")
    assert not isinstance(info.value, DiskFullError)
    assert f"cannot write to the output folder {tmp_path}: Permission denied" in str(info.value)


# --- temporary files of interrupted saves --------------------------------------------------------------------------


def test_stale_temps_removed_only_when_their_writer_is_gone(tmp_path: Path) -> None:
    target = tmp_path / "lora.safetensors"
    mine = temp_name(target)  # this process: alive
    host, _ = mine.name.split(".")[-3].rsplit("_", 1)
    dead = tmp_path / f".lora.safetensors.{host}_{dead_pid()}.{'a' * 32}.tmp"
    legacy = tmp_path / f".lora.safetensors.{'b' * 32}.tmp"
    foreign_new = tmp_path / f".lora.safetensors.otherbox_1.{'c' * 32}.tmp"
    foreign_old = tmp_path / f".lora.safetensors.otherbox_2.{'d' * 32}.tmp"
    not_ours = tmp_path / ".notes.tmp"
    dead_recent = tmp_path / f".lora.safetensors.{host}_{dead_pid()}.{'f' * 32}.tmp"  # maybe another container's
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as proc:
        running = tmp_path / f".lora.safetensors.{host}_{proc.pid}.{'e' * 32}.tmp"
        for p in (mine, dead, legacy, foreign_new, foreign_old, not_ours, running, dead_recent):
            p.write_bytes(b"x")
        eleven_minutes_ago = time.time() - 11 * 60
        for p in (mine, dead, legacy, foreign_new, not_ours, running):
            os.utime(p, (eleven_minutes_ago, eleven_minutes_ago))
        os.utime(foreign_old, (0, 0))
        assert remove_stale_temps(tmp_path.iterdir()) == 3
        proc.stdin.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, foreign_new, not_ours, running, dead_recent))


def test_train_removes_stale_temps_in_run_folders_and_cache(tmp_path: Path, image_dir: Path) -> None:
    cache = tmp_path / "cache"
    runs = tmp_path / "runs"
    host, pid = temp_name(tmp_path / "x").name.split(".")[-3].rsplit("_", 1)[0], dead_pid()
    stale = [runs / "old" / "train" / f".lora-step00000002.safetensors.{host}_{pid}.{'a' * 32}.tmp",
             runs / "old" / f".config.toml.{host}_{pid}.{'b' * 32}.tmp",
             runs / "old" / "train" / "lora_peft" / "unet" / f".adapter_model.safetensors.{'c' * 32}.tmp",
             cache / "latents" / "ab" / f".{'ab' * 32}.safetensors.{host}_{pid}.{'d' * 32}.tmp"]
    live = runs / "other" / "train" / f".lora.safetensors.{host}_{os.getpid()}.{'e' * 32}.tmp"
    outside = tmp_path / "elsewhere" / f".x.safetensors.{host}_{pid}.{'f' * 32}.tmp"
    for p in (*stale, live, outside):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
        os.utime(p, (time.time() - 3600, time.time() - 3600))  # an hour old: the writer is really gone
    (runs / "linked").symlink_to(tmp_path / "elsewhere")  # never followed out of the output folder
    result = api.train(config(tmp_path, image_dir, "train.max_train_steps=1", f'data.cache_folder="{cache}"',
                              "data.cache_latents_to_disk=true"))
    assert not any(p.exists() for p in stale) and live.exists() and outside.exists()
    log = (result.run_dir / "train" / "run.log").read_text()
    assert "removed 4 temporary file(s) left by interrupted saves" in log


# --- logs: log.csv time, run.log, plain progress, TensorBoard ------------------------------------------------------


def test_plain_progress_lines_every_tenth_or_thirty_seconds() -> None:
    # 100 steps: a line at 10, 20, …; the clock jumps 31 s at step 13, so 13 gets a line too
    times = iter([0.0] + [float(s) if s < 13 else 31.0 + s for s in range(1, 101)])
    lines = ProgressLines(100, clock=lambda: next(times))
    out = {}
    for s in range(1, 101):
        line = lines.line(StepEvent(s, 100, 1 + (s - 1) // 50, 0.5 / s if s % 5 == 0 else None, 1e-4, 2.0))
        if line:
            out[s] = line
    assert list(out) == [10, 13, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert out[10] == "step 10/100 (10%)  epoch 1  loss 0.0500  lr 1.00e-04  2.00 it/s  ETA 0:00:45"
    assert out[13] == "step 13/100 (13%)  epoch 1  loss 0.0500  lr 1.00e-04  2.00 it/s  ETA 0:00:44"
    assert out[60] == "step 60/100 (60%)  epoch 2  loss 0.0083  lr 1.00e-04  2.00 it/s  ETA 0:00:20"
    assert out[100].endswith("ETA 0:00:00")


def test_rich_progress_prints_plain_lines_when_not_a_terminal() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    bar = RichProgress(console, clock=lambda: 0.0)
    assert bar.plain
    bar.on_plan(["plan: 20 steps [x]"])
    bar.on_cache("latents", 0, 4)
    bar.on_cache("latents", 4, 4)
    bar.on_start(20, {})
    for s in range(1, 21):
        bar.on_step(StepEvent(s, 20, 1, 0.25, 1e-3, 4.0))
    bar.on_save(20, Path("/runs/x/lora.safetensors"))
    bar.on_end(20, False)
    assert buf.getvalue().splitlines() == [
        "plan: 20 steps [x]", "cache latents 0/4", "cache latents 4/4", "training 20 steps",
        *[f"step {s}/20 ({5 * s}%)  epoch 1  loss 0.2500  lr 1.00e-03  4.00 it/s  ETA 0:00:{-((s - 20) // 4):02d}"
          for s in range(2, 21, 2)],  # every 10 %, ETA rounded up
        "saved /runs/x/lora.safetensors",
    ]


def test_csv_time_column_and_run_log(tmp_path: Path) -> None:
    csv_ticks, log_ticks = iter(range(100)), iter(range(100))
    csv_log = CsvLog(tmp_path / "log.csv", lambda: stamp(next(csv_ticks)))
    run_log = RunLog(tmp_path / "run.log", lambda: stamp(next(log_ticks)), clock=lambda: 0.0)
    events = CallbackList([csv_log, run_log])
    events.on_notice("removed 2 temporary file(s) left by interrupted saves")
    events.on_plan(["steps 3"])
    events.on_start(3, {})
    for s in (1, 2, 3):
        events.on_step(StepEvent(s, 3, 1, 0.1 * s, 1e-4, 1.0))
    events.on_validation(3, 0.25)
    events.on_warning("something odd")
    events.on_save(3, Path("/r/lora.safetensors"))
    events.on_end(3, False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv", encoding="utf-8")))
    assert [(r["step"], r["loss"], r["val_loss"], r["time"]) for r in rows] == [
        ("1", "0.100000", "", "2025-01-31T12:00:00.000Z"), ("2", "0.200000", "", "2025-01-31T12:00:01.000Z"),
        ("3", "0.300000", "", "2025-01-31T12:00:02.000Z"), ("3", "", "0.250000", "2025-01-31T12:00:03.000Z")]
    lines = (tmp_path / "run.log").read_text().splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [
        "removed 2 temporary file(s) left by interrupted saves", "steps 3", "training 3 steps",
        "step 1/3 (33%)  epoch 1  loss 0.1000  lr 1.00e-04  1.00 it/s  ETA 0:00:02",
        "step 2/3 (66%)  epoch 1  loss 0.2000  lr 1.00e-04  1.00 it/s  ETA 0:00:01",
        "step 3/3 (100%)  epoch 1  loss 0.3000  lr 1.00e-04  1.00 it/s  ETA 0:00:00",
        "step 3  val_loss 0.250000", "warning: something odd", "saved /r/lora.safetensors", "ended after 3 steps"]
    assert lines[0].startswith("2025-01-31T12:00:00.000Z  ") and lines[-1].startswith("2025-01-31T12:00:09.000Z  ")


def test_run_writes_run_log_and_time_column(tmp_path: Path, image_dir: Path) -> None:
    cfg = config(tmp_path, image_dir, "train.max_train_steps=3")
    result = api.train(cfg)
    train_dir = result.run_dir / "train"
    rows = list(csv.DictReader(open(train_dir / "log.csv", encoding="utf-8")))
    times = [datetime.fromisoformat(r["time"].replace("Z", "+00:00")) for r in rows]
    # UTC times that never go backwards (the exact format is tested with an injected clock above)
    assert len(rows) == 3 and all(t.tzinfo == timezone.utc for t in times) and times == sorted(times)
    log = [line.split("  ", 1)[1] for line in (train_dir / "run.log").read_text().splitlines()]
    assert log[-1] == "ended after 3 steps" and f"saved {result.lora_path}" in log
    assert "training 3 steps" in log and any(line.startswith("step 3/3 (100%)") for line in log)
    plan = render_plan(build_plan(cfg))  # the run's plan, with its warnings, comes before training starts
    start = log.index(plan[0])
    assert log[start:start + len(plan)] == plan and start + len(plan) <= log.index("training 3 steps")


def test_tensorboard_scalars_match_log_csv(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from conftest import write_images

    images = write_images(tmp_path / "images", count=6)
    result = api.train(config(tmp_path, images, "train.max_train_steps=4", "train.log_with='tensorboard'",
                              "data.validation_split=0.34", "train.validate_every_n_steps=2"))
    train_dir = result.run_dir / "train"
    acc = EventAccumulator(str(train_dir / "tensorboard"))
    acc.Reload()
    rows = list(csv.DictReader(open(train_dir / "log.csv", encoding="utf-8")))
    steps = [r for r in rows if r["loss"]]
    vals = [r for r in rows if r["val_loss"]]
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("loss")] == [
        (int(r["step"]), float(r["loss"])) for r in steps]
    assert [e.step for e in acc.Scalars("lr")] == [1, 2, 3, 4]
    assert [e.value for e in acc.Scalars("lr")] == pytest.approx([float(r["lr"]) for r in steps], rel=1e-5)
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val_loss")] == [
        (int(r["step"]), float(r["val_loss"])) for r in vals] and len(vals) == 2


def test_tensorboard_missing_is_a_config_error_before_anything_runs(tmp_path: Path, image_dir: Path,
                                                                     monkeypatch) -> None:
    cfg = config(tmp_path, image_dir, "train.log_with='tensorboard'")
    monkeypatch.setattr(validate, "package_installed", lambda name: name != "tensorboard")
    errors, _ = validate.check(cfg, paths=True)  # what `config validate` / `train` run on this machine
    assert [f.key for f in errors] == ["train.log_with"] and "pip install tensorboard" in errors[0].message
    with pytest.raises(ConfigError) as info:
        api.train(cfg)  # a config built before (or by other code): api.train checks too
    assert "train.log_with" in str(info.value) and "pip install tensorboard" in str(info.value)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
    assert validate.check_log_with(config(tmp_path, image_dir)) == []


# --- callbacks that fail -------------------------------------------------------------------------------------------


class Broken(Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_step(self, event: StepEvent) -> None:
        self.calls += 1
        raise RuntimeError("UI went away")


class Recorder(Callback):
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.steps: list[int] = []

    def on_warning(self, message: str) -> None:
        self.warnings.append(message)

    def on_step(self, event: StepEvent) -> None:
        self.steps.append(event.step)


def test_a_failing_callback_never_kills_the_run(tmp_path: Path, image_dir: Path) -> None:
    broken, recorder = Broken(), Recorder()
    result = api.train(config(tmp_path, image_dir, "train.max_train_steps=3"), [broken, recorder])
    assert result.lora_path.is_file() and result.steps == 3
    assert broken.calls == 3 and recorder.steps == [1, 2, 3]  # still called; reported once
    message = "Broken.on_step failed (RuntimeError: UI went away); training goes on"
    assert recorder.warnings == [message] and result.warnings == [message]
    log = (result.run_dir / "train" / "run.log").read_text()
    assert log.count("warning: " + message) == 1
    assert len(list(csv.DictReader(open(result.run_dir / "train" / "log.csv")))) == 3


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc to find the file")
def test_disk_full_in_the_csv_log_stops_the_run_clearly(tmp_path: Path, image_dir: Path, monkeypatch) -> None:
    from lorakit.engine import events

    real_write, calls = os.write, {"n": 0}

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("log.csv"):
            calls["n"] += 1
            if calls["n"] == 3:  # header, step 1, then the disk is full in the middle of step 2's row
                real_write(fd, bytes(data)[:5])
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(events.os, "write", write)
    with pytest.raises(DiskFullError) as info:
        api.train(config(tmp_path, image_dir, "train.max_train_steps=4"))
    (run,) = (tmp_path / "runs").iterdir()
    assert info.value.path == run / "train" / "log.csv" and "appending to" in str(info.value)
    text = (run / "train" / "log.csv").read_text()
    assert text.splitlines()[1].startswith("1,1,") and len(text.splitlines()) == 2 and text.endswith("\n")
    assert "error: out of disk space appending to" in (run / "train" / "run.log").read_text()


def test_save_file_is_real_safetensors_for_the_hint(tmp_path: Path) -> None:
    """The size hint of save_kohya is close to what safetensors writes."""
    from lorakit.networks.formats import _file_size

    sd = {"lora_unet_x.lora_down.weight": torch.zeros(4, 64, dtype=torch.float16), "lora_unet_x.alpha": torch.tensor(4.0)}
    meta = {"ss_network_dim": "4", "ss_tag_frequency": "{}"}
    save_file(sd, str(tmp_path / "a.safetensors"), metadata=meta)
    size = (tmp_path / "a.safetensors").stat().st_size
    assert size <= _file_size(sd, meta) <= size + 200


def test_config_validate_names_the_missing_tensorboard(tmp_path: Path, image_dir: Path, monkeypatch, capsys) -> None:
    from lorakit.cli.main import main

    toml = tmp_path / "my.toml"
    toml.write_text(f'[data]\ntrain_data_dir = "{image_dir}"\n[train]\nlog_with = "tensorboard"\n', encoding="utf-8")
    monkeypatch.setattr(validate, "package_installed", lambda name: name != "tensorboard")
    for command, code in ((["config", "validate", toml], 2), (["plan", "--config", toml], 0),
                          (["train", "--config", toml], 2)):
        monkeypatch.setattr(sys, "argv", ["lorakit", *map(str, command)])
        with pytest.raises(SystemExit) as exc:
            main()
        out = " ".join(capsys.readouterr().err.split())
        assert (exc.value.code or 0) == code, (command, out)
        assert "train.log_with" in out and "pip install tensorboard" in out, (command, out)
        assert ("warning:" in out) == (command[0] == "plan")  # plan: a warning about this machine


def test_temp_names_stay_short_for_long_targets(tmp_path: Path) -> None:
    """A target name near the file system's limit still gets a temporary name that fits (prepare, long names)."""
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("a" * (limit - 4) + ".png", "画" * ((limit - 4) // 3) + ".png"):
        target = tmp_path / name
        with atomic_path(target) as tmp:
            assert len(tmp.name.encode("utf-8")) <= 190
            tmp.write_bytes(b"ok")
        assert target.read_bytes() == b"ok"
