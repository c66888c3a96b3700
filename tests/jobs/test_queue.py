"""The job queue with real `lorakit train` child processes on the tiny model: order, a job added while one runs,
same-name refusal, cancel, stop (the stopped run keeps its LoRA and log), a failing job that does not stop the
queue, a killed runner's orphan, and the per-GPU lock across processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli, write_images
from lorakit.errors import ConfigError, LorakitError
from lorakit.jobs.runner import GpuLock, add_job, events, run_queue, stop_running
from lorakit.jobs.store import JobStore


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def event(self, message: str) -> None:
        self.messages.append(message)

    def line(self, job, text: str) -> None:
        pass


def job_config(tmp_path: Path, name: str, steps: int = 2, extra: str = "") -> Path:
    images = tmp_path / "img"
    if not images.is_dir():
        write_images(images, count=2)
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""version = 3
[model]
pretrained_model_name_or_path = "tiny-sd1"
[data]
train_data_dir = "{images.as_posix()}"
resolution = 64
[network]
network_dim = 4
[train]
max_train_steps = {steps}
mixed_precision = "no"
[checkpoint]
every_n_steps = 0
at_end = false
[output]
output_dir = "{(tmp_path / 'runs').as_posix()}"
output_name = "{name}"
{extra}
""", encoding="utf-8")
    return path


def wait_for(condition, what: str, limit_s: float = 120) -> None:
    """Poll until `condition()` holds (a bounded wait on another process, not a timing assertion)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_jobs_run_in_order_and_a_job_added_meanwhile_runs_after(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "home")
    first = add_job(store, [job_config(tmp_path, "first")])
    second = add_job(store, [job_config(tmp_path, "second")])
    runner = threading.Thread(target=run_queue, args=(store, Recorder()), kwargs={"gpus": [""]})
    runner.start()
    wait_for(lambda: store.get(first.id).state == "running", "the first job to start")
    third = add_job(store, [job_config(tmp_path, "third")])
    runner.join()
    jobs = [store.get(j.id) for j in (first, second, third)]
    assert [j.state for j in jobs] == ["done", "done", "done"]
    assert jobs[0].finished <= jobs[1].started and jobs[1].finished <= jobs[2].started  # one after another
    for job in jobs:
        run = Path(job.run_dir)
        assert (run / "train" / f"{job.name}.safetensors").is_file() and (run / "queue.log").is_file()
        kinds = [e["event"] for e in events(store, job)]
        assert kinds[0] == "start" and kinds.count("step") == 2 and kinds[-1] == "end"
        assert json.loads((store.home / job.folder / "events.jsonl").read_text().splitlines()[-1]) == {
            "event": "end", "time": events(store, job)[-1]["time"], "steps": 2, "stopped": False}


def test_same_name_cancel_and_move(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "home")
    a = add_job(store, [job_config(tmp_path, "a")])
    with pytest.raises(ConfigError, match=f"output name 'a' is already used by job {a.id} \\(queued\\)"):
        add_job(store, [job_config(tmp_path, "a")])
    b = add_job(store, [job_config(tmp_path, "b")])
    c = add_job(store, [job_config(tmp_path, "c")])
    assert [j.id for j in store.move(c.id, 1)] == [c.id, a.id, b.id]
    assert [j.id for j in store.move(a.id, 99)] == [c.id, b.id, a.id]
    assert store.cancel(b.id).state == "cancelled"
    assert [j.id for j in store.jobs(("queued",))] == [c.id, a.id]
    with pytest.raises(LorakitError, match="is cancelled, not queued"):
        store.cancel(b.id)
    assert add_job(store, [job_config(tmp_path, "b")]).state == "queued"  # the name is free again
    job = store.get(a.id)
    assert job.source["files"] == [str((tmp_path / "a.toml").resolve())] and 'output_name = "a"' in job.config


@pytest.mark.slow
def test_stop_saves_the_run_and_a_failure_does_not_stop_the_queue(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "home")
    long = add_job(store, [job_config(tmp_path, "long", steps=400)])
    bad = add_job(store, [job_config(tmp_path, "bad")], sets=["faults.nan_at_step=1", "faults.nan_steps=5",
                                                             "train.max_nonfinite_steps=1"])
    after = add_job(store, [job_config(tmp_path, "after")])
    runner = threading.Thread(target=run_queue, args=(store, Recorder()), kwargs={"gpus": [""]})
    runner.start()
    wait_for(lambda: any(e["event"] == "step" for e in events(store, store.get(long.id))), "the long job's first step")
    assert [j.id for j in stop_running(store)] == [long.id]
    runner.join()
    stopped, failed, done = (store.get(j.id) for j in (long, bad, after))
    assert (stopped.state, stopped.exit_code) == ("stopped", 4)
    assert (Path(stopped.run_dir) / "train" / "long.safetensors").is_file()
    assert (Path(stopped.run_dir) / "queue.log").is_file()
    assert failed.state == "failed" and failed.exit_code == 6 and failed.message
    assert done.state == "done"


@pytest.mark.slow
def test_a_killed_runner_leaves_an_orphan_that_the_next_runner_marks_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = JobStore(home)
    victim = add_job(store, [job_config(tmp_path, "victim", steps=400)])
    later = add_job(store, [job_config(tmp_path, "later")])
    command = [sys.executable, "-m", "lorakit.cli", "queue", "--home", str(home), "run"]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: any(e["event"] == "step" for e in events(store, store.get(victim.id))), "the victim's step")
    child = store.get(victim.id).child_pid
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists() or
             Path(f"/proc/{child}/stat").read_text().split()[2] == "Z", "the orphaned child to die")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    orphan = store.get(victim.id)
    assert orphan.state == "failed" and f"its runner (pid {runner.pid}) was killed" in orphan.message
    assert store.get(later.id).state == "done"


def test_one_run_per_gpu_across_processes(tmp_path: Path, monkeypatch, capsys) -> None:
    home = tmp_path / "home"
    add_job(JobStore(home), [job_config(tmp_path, "waiting")])
    with GpuLock(home, ""):  # this process trains on the CPU now
        done = subprocess.run([sys.executable, "-m", "lorakit.cli", "queue", "--home", str(home), "run"],
                              capture_output=True, text=True)
    assert done.returncode != 0
    said = " ".join((done.stdout + done.stderr).split())
    assert "a training run is already running on this machine's CPU" in said and f"pid {os.getpid()}" in said
    code, out = run_cli(monkeypatch, capsys, "queue", "--home", home, "list")
    assert code == 0 and "waiting" in out and "queued" in out


@pytest.mark.slow
def test_a_killed_runners_job_with_a_checkpoint_continues_from_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = JobStore(home)
    job = add_job(store, [job_config(tmp_path, "resumed", steps=40)], sets=["checkpoint.every_n_steps=2"])
    command = [sys.executable, "-m", "lorakit.cli", "queue", "--home", str(home), "run"]
    runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: store.get(job.id).run_dir and
             any((Path(store.get(job.id).run_dir) / "checkpoints").glob("step-*")) and
             any(e["event"] == "step" and e["step"] >= 3 for e in events(store, store.get(job.id))),
             "a checkpoint and a later step")
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    finished = store.get(job.id)
    assert finished.state == "done" and "continued from its last checkpoint" in finished.message
    assert "resumed" in done.stdout
    run = Path(finished.run_dir)
    assert (run / "train" / "resumed.safetensors").is_file()
    steps = [int(r.split(",")[0]) for r in (run / "train" / "log.csv").read_text().splitlines()[1:] if r]
    assert steps[-1] == 40  # trained to the end, in the same run folder


@pytest.mark.slow
def test_sigterm_to_the_runner_stops_the_job_with_its_work_saved(tmp_path: Path) -> None:
    """A runner ended by SIGTERM (or Ctrl+C) asks its running job to stop: it saves and is recorded stopped, never
    killed mid-save or left 'running'."""
    home = tmp_path / "home"
    store = JobStore(home)
    job = add_job(store, [job_config(tmp_path, "long", steps=400)])
    runner = subprocess.Popen([sys.executable, "-m", "lorakit.cli", "queue", "--home", str(home), "run"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: any(e["event"] == "step" for e in events(store, store.get(job.id))), "the job's first step")
    runner.send_signal(signal.SIGTERM)
    out = runner.communicate()[0]
    assert runner.returncode == 0, out
    stopped = store.get(job.id)
    assert (stopped.state, stopped.exit_code) == ("stopped", 4), out
    assert (Path(stopped.run_dir) / "train" / "long.safetensors").is_file()
