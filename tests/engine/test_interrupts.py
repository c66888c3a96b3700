"""Real signals to a real `lorakit train` process: the first Ctrl+C (or SIGTERM) stops after the step with a
checkpoint and the LoRA saved (exit 4) and the run resumes from it; a second Ctrl+C quits at once (exit 130) and
leaves nothing corrupted."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import write_images
from lorakit import api
from lorakit.engine.state import CHECKPOINTS, NAME, checkpoints_of, is_complete, step_of
from lorakit.io import TEMP_PATTERN

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

DEADLINE_S = 180  # generous: a loaded CI machine; a healthy run needs a fraction of it
STOPPING = "stopping after this step"


@dataclass
class Training:
    """A `lorakit train` subprocess and the files it writes."""

    proc: subprocess.Popen
    run_dir: Path
    stdout: Path
    stderr: Path

    def out(self) -> str:
        return self.stdout.read_text(encoding="utf-8", errors="replace")

    def err(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def wait_until(self, ready, what: str, poll_s: float = 0.05) -> None:
        """Poll `ready()` until it holds; fail (naming `what` and the process's output) at the deadline or when
        the process ends first."""
        deadline = time.monotonic() + DEADLINE_S
        while not ready():
            try:
                code = self.proc.wait(timeout=poll_s)  # the pause between polls; returns at once if it ended
            except subprocess.TimeoutExpired:
                code = None
            if code is not None and not ready():
                pytest.fail(f"lorakit train exited ({code}) before {what}:\n{self.out()[-3000:]}\n{self.err()[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {what} within {DEADLINE_S} s:\n{self.out()[-3000:]}\n{self.err()[-3000:]}")

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"lorakit train did not end within {DEADLINE_S} s:\n{self.err()[-3000:]}")


def lorakit(tmp_path: Path, name: str, *args: object) -> subprocess.Popen:
    """`lorakit ARGS` started in `tmp_path`, its output in `<name>.out` and `<name>.err` there."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / f"{name}.out", "w") as out, open(tmp_path / f"{name}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "lorakit.cli", *map(str, args)], env=env, cwd=tmp_path,
                                stdout=out, stderr=err)


def start(folder: Path) -> Training:
    """A run far too long to end by itself (100000 steps), started in `folder`."""
    image_dir = write_images(folder / "images")
    config = folder / "long.toml"
    config.write_text(f"""
[data]
train_data_dir = "{image_dir}"
resolution = 64
[train]
max_train_steps = 100000
learning_rate = 2e-3
[network]
network_dim = 4
[output]
output_dir = "{folder / 'runs'}"
run_id = "long"
""", encoding="utf-8")
    return Training(lorakit(folder, "train", "train", "--config", config), folder / "runs" / "long",
                    folder / "train.out", folder / "train.err")


# The training processes start together when the module's first test does (only those of the selected tests):
# their start-ups (seconds of imports and model loading each) overlap. The resume, a process of its own, runs last,
# once no training process is left to compete with it.
PROCESSES = {
    "test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_the_lora": "sigint",
    "test_sigterm_stops_the_same_way": "sigterm",
    "test_a_second_ctrl_c_quits_at_once_and_corrupts_nothing": "twice",
    "test_the_stopped_run_resumes_from_its_checkpoint": "sigint",
}


@pytest.fixture(scope="module")
def trainings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    selected = {PROCESSES[i.name] for i in request.session.items
                if i.module is request.module and i.name in PROCESSES}
    started = {name: start(tmp_path_factory.mktemp(name)) for name in sorted(selected)}
    yield started
    for t in started.values():  # a test that failed early leaves its process running
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.wait()


def training(trainings: dict[str, Training], name: str) -> Training:
    """The test's process, once log.csv has two steps."""
    t = trainings[name]
    t.wait_until(lambda: len(logged_steps(t.run_dir)) >= 2, "two steps in log.csv")
    return t


def stopped(trainings: dict[str, Training], name: str, sig: int) -> tuple[Training, int]:
    """The process sent `sig` (unless it has ended already) and its exit status."""
    t = training(trainings, name)
    if t.proc.poll() is None:
        t.proc.send_signal(sig)
    return t, t.finish()


def logged_steps(run_dir: Path) -> list[int]:
    """The steps of log.csv's complete lines (a line being written is not counted)."""
    try:
        text = (run_dir / "train" / "log.csv").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [int(row[0]) for row in list(csv.reader(io.StringIO(complete)))[1:] if row]


def lora_steps(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["ss_steps"])


def assert_stopped_and_saved(t: Training, code: int) -> int:
    """Exit 4, and everything a stop promises, at the step of log.csv's last row; returns that step."""
    assert code == 4, t.out()[-3000:] + t.err()[-3000:]
    steps = logged_steps(t.run_dir)
    n = steps[-1]
    assert n >= 2 and steps == list(range(1, n + 1))  # every step logged once, none after the stop
    checkpoints = checkpoints_of(t.run_dir)
    assert checkpoints and step_of(checkpoints[-1]) == n and is_complete(checkpoints[-1])
    lora = t.run_dir / "train" / "lora.safetensors"
    assert load_file(lora) and lora_steps(lora) == n  # the LoRA as of the stop
    run_log = (t.run_dir / "train" / "run.log").read_text(encoding="utf-8")
    assert f"stopped at step {n}: continue with `lorakit train --resume {t.run_dir}`" in run_log
    assert run_log.rstrip().endswith(f"stopped after {n} steps")
    assert STOPPING in t.err()
    assert f"stopped {n} steps" in " ".join(t.out().split())
    return n


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_and_the_lora(trainings) -> None:
    assert_stopped_and_saved(*stopped(trainings, "sigint", signal.SIGINT))


def test_sigterm_stops_the_same_way(trainings) -> None:
    assert_stopped_and_saved(*stopped(trainings, "sigterm", signal.SIGTERM))


def test_a_second_ctrl_c_quits_at_once_and_corrupts_nothing(trainings) -> None:
    t = training(trainings, "twice")
    t.proc.send_signal(signal.SIGINT)
    # The second once the first was handled (two signals sent at once may arrive as one), aimed at the worst
    # moment: while the stop's checkpoint is being written (its temp folder is there). Whenever it lands, the
    # checks below hold.
    folder = t.run_dir / CHECKPOINTS
    t.wait_until(lambda: STOPPING in t.err() and folder.is_dir() and any(folder.iterdir()),
                 "the stop's checkpoint being written", poll_s=0.002)
    t.proc.send_signal(signal.SIGINT)
    code = t.finish()
    assert code == 130, t.out()[-3000:] + t.err()[-3000:]

    # whatever the second Ctrl+C cut short: every file under its final name is whole, the rest are temp names
    temps = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if TEMP_PATTERN.match(p.name):
            temps.append(p)
        else:
            assert NAME.match(p.name) and is_complete(p), p
    for p in sorted((t.run_dir / "train").iterdir()):
        if TEMP_PATTERN.match(p.name):
            temps.append(p)
        elif p.suffix == ".safetensors":
            assert load_file(p), p
        else:
            assert p.name in ("log.csv", "run.log"), p
    for p in temps:  # `.<name>.<host>_<pid>.<hex>.tmp`, of this process: the next start removes it
        assert int(TEMP_PATTERN.match(p.name)["pid"]) == t.proc.pid, p
    text = (t.run_dir / "train" / "log.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert text.endswith("\n") and all(len(r) == 6 for r in rows)  # whole lines only
    steps = logged_steps(t.run_dir)
    assert steps == list(range(1, steps[-1] + 1))


def test_the_stopped_run_resumes_from_its_checkpoint(trainings) -> None:
    t, code = stopped(trainings, "sigint", signal.SIGINT)
    n = assert_stopped_and_saved(t, code)
    # without --config the checkpoint's own config is used; max_train_steps is a safe change
    folder = t.run_dir.parent.parent
    resume = lorakit(folder, "resume", "train", "--resume", t.run_dir, "--set", f"train.max_train_steps={n + 2}")
    r = Training(resume, t.run_dir, folder / "resume.out", folder / "resume.err")
    assert r.finish() == 0, r.out()[-3000:] + r.err()[-3000:]
    assert logged_steps(t.run_dir) == list(range(1, n + 3))  # exactly two more steps
    lora = t.run_dir / "train" / "lora.safetensors"
    assert lora_steps(lora) == n + 2
    assert step_of(checkpoints_of(t.run_dir)[-1]) == n + 2  # checkpoint.at_end
    run_log = (t.run_dir / "train" / "run.log").read_text(encoding="utf-8")
    assert f"resuming from {t.run_dir / CHECKPOINTS / f'step-{n:08d}'} (step {n} of {n + 2})" in run_log
    assert f"changed since the checkpoint: train.max_train_steps: 100000 → {n + 2}" in run_log
    assert run_log.rstrip().endswith(f"ended after {n + 2} steps")
    # the stop's LoRA was set aside, not overwritten
    (old,) = (t.run_dir / "superseded").glob("*/train/lora.safetensors")
    assert lora_steps(old) == n


def test_a_second_ctrl_c_says_what_happened(cli, monkeypatch: pytest.MonkeyPatch, image_dir: Path,
                                            tmp_path: Path) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # what the second Ctrl+C raises, wherever the run is

    monkeypatch.setattr(api, "train", interrupted)
    code, out = cli("train", "--set", f"data.train_data_dir='{image_dir}'",
                    "--set", f"output.output_dir='{tmp_path / 'runs'}'")
    assert code == 130
    assert "interrupted: quit at once; the last complete checkpoint is kept" in " ".join(out.split())
