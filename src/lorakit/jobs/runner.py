"""Adding jobs and running the queue: each job a `lorakit train` child process, one at a time per GPU.

A runner holds a lock per GPU (`<home>/locks/gpu-<n>.lock`, an OS file lock: it is released when the process dies,
however it dies), so a second runner, a second UI or a second terminal cannot start a run on a GPU that is
training. Progress comes back as JSON lines the child writes (`lorakit train --events`), not by reading its text.
"""

from __future__ import annotations

import os
import signal
import shutil
import subprocess
import threading
import time
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Protocol, Sequence

from ..config.loader import resolve_layers
from ..config.snapshot import config_toml
from ..errors import EXIT_STOPPED, LorakitError
from ..io import pid_alive, write_text_atomic
from ..process import child_environment, lorakit_command, run_child
from .store import Job, JobStore


class Reporter(Protocol):
    def event(self, message: str) -> None: ...
    def line(self, job: Job, text: str) -> None: ...


def add_job(store: JobStore, files: Sequence[str | Path] = (), preset: str | None = None, adds: Sequence[str] = (),
            sets: Sequence[str] = ()) -> Job:
    """Resolve and check the config now (a job that cannot start is refused at once, naming the problem), then
    queue it with its source and the resolved config."""
    resolved = resolve_layers(preset, list(files), list(adds), False, list(sets), check_paths=True)
    source = {"preset": preset, "files": [str(Path(f).resolve()) for f in files], "adds": list(adds),
              "sets": list(sets)}
    return store.add(resolved.config.output.output_name, source, config_toml(resolved.config))


class GpuLock:
    """An exclusive lock on one GPU for this process (fcntl.flock: the OS drops it when the process ends)."""

    def __init__(self, home: Path, gpu: str, probe: bool = False) -> None:
        (home / "locks").mkdir(exist_ok=True)
        self.gpu, self.path, self.probe = gpu, home / "locks" / f"gpu-{gpu or 'cpu'}.lock", probe

    def __enter__(self) -> "GpuLock":
        import fcntl

        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            where = f"GPU {self.gpu}" if self.gpu else "this machine's CPU"
            raise LorakitError(f"a training run is already running on {where} ({holder})",
                               "wait for it to finish, or stop it with `lorakit queue stop`") from None
        if not self.probe:  # a probe only looks: the holder's name stays for the next message
            self.file.truncate(0)
            self.file.write(f"lorakit queue runner pid {os.getpid()}")
            self.file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        import fcntl

        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


def runner_running(home: Path) -> bool:
    """Whether a queue runner holds this machine's (first) GPU lock."""
    return _lock_held(home, visible_gpus()[0])


def ensure_runner(home: Path) -> bool:
    """Start a detached `lorakit queue run --watch`; True when none was running. Its own session
    (start_new_session), so it outlives the UI; its output goes to <home>/runner.log. It is started even when a
    runner seems up: a second one is refused at the GPU lock and exits, while probing the lock here could make a
    runner starting at that moment give up."""
    was_running = runner_running(home)
    log = open(home / "runner.log", "ab")
    subprocess.Popen(lorakit_command("queue", "--home", str(home), "run", "--watch"), stdout=log,
                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                     env=child_environment())
    log.close()
    return not was_running


def visible_gpus() -> list[str]:
    """CUDA device indices this machine has ("" alone: the CPU, or one Apple GPU)."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        count = 0
    return [str(i) for i in range(count)] or [""]


def run_queue(store: JobStore, reporter: Reporter, workers: int = 1, watch: bool = False,
              gpus: Sequence[str] | None = None, poll_s: float = 2.0) -> None:
    """Run queued jobs in order until none is left (with `watch`: wait for more, until interrupted). `workers`
    GPUs each run one job at a time (CUDA_VISIBLE_DEVICES), never two on one."""
    gpus = list(gpus) if gpus is not None else visible_gpus()
    if workers > len(gpus):
        raise LorakitError(f"--workers {workers}: this machine has {len([g for g in gpus if g]) or 'no'} GPU(s); "
                           "one job runs per GPU", f"use --workers {len(gpus)}")
    for job in sweep_orphans(store):
        reporter.event(f"job {job.id} ({job.name}): {job.message}" + ("" if job.resume else "; marked failed"))
    locks = [GpuLock(store.home, gpu) for gpu in gpus[:workers]]
    for lock in locks:
        lock.__enter__()  # all taken before any job starts: a busy GPU refuses the runner at once
    stopping = threading.Event()
    main = threading.current_thread() is threading.main_thread()  # signal handlers belong to the main thread
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        finished = [threading.Event() for _ in locks]
        threads = [threading.Thread(target=_work, args=(store, reporter, lock.gpu, watch, poll_s, stopping, done),
                                    daemon=True) for lock, done in zip(locks, finished)]
        for thread in threads:
            thread.start()
        try:
            _join(finished)
        except KeyboardInterrupt:  # Ctrl+C or SIGTERM: the running jobs save and stop, then the runner ends
            stopping.set()
            reporter.event("stopping: the running jobs save a checkpoint and their LoRA, then the runner ends "
                           "(Ctrl+C again quits at once)")
            for job in store.jobs(("running",)):
                if job.runner_pid == os.getpid():
                    stop_running(store, job.id)
            _join(finished)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        for lock in locks:
            lock.__exit__()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (a UI or a service manager ending the runner) stops like Ctrl+C


def _join(finished: list[threading.Event]) -> None:
    """Wait for the workers. Not Thread.join: a KeyboardInterrupt that interrupts join() left CPython 3.11's thread
    reporting is_alive() == False while it still ran (seen here), and the runner ended mid-save."""
    while not all(done.is_set() for done in finished):
        time.sleep(0.2)


def _work(store: JobStore, reporter: Reporter, gpu: str, watch: bool, poll_s: float,
          stopping: threading.Event | None = None, done: threading.Event | None = None) -> None:
    try:
        while not (stopping and stopping.is_set()):
            job = store.claim_next(os.getpid(), gpu)
            if job is None:
                if not watch:
                    return
                time.sleep(poll_s)
                continue
            run_job(store, job, gpu, reporter)
    finally:
        if done is not None:
            done.set()


def run_job(store: JobStore, job: Job, gpu: str, reporter: Reporter) -> None:
    """Run one claimed job to its end and record how it ended: done (exit 0), stopped (exit 4: saved on request)
    or failed (anything else, with its last error line)."""
    folder = store.home / job.folder
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "config.toml"
    write_text_atomic(config_file, job.config)
    output = tomllib.loads(job.config).get("output", {})
    if job.resume and job.run_dir:  # its runner was killed: continue the run from its last checkpoint
        run_dir = Path(job.run_dir)
        command = lorakit_command("train", "--resume", str(run_dir), "--events", str(folder / "events.jsonl"))
    else:
        run_id = output.get("run_id") or f"{datetime.now().strftime('%Y%m%d_%H%M%S')}_job{job.id}"
        run_dir = Path(output.get("output_dir", "runs")) / run_id
        command = lorakit_command("train", "--config", str(config_file), "--events", str(folder / "events.jsonl"))
        if not output.get("run_id"):
            command += ["--set", f'output.run_id="{run_id}"']
    store.update(job.id, run_dir=str(run_dir))
    reporter.event(f"job {job.id} ({job.name}) {'resumed' if job.resume else 'started'} on "
                   f"{'GPU ' + gpu if gpu else 'the CPU'} → {run_dir}")
    env = child_environment({"CUDA_VISIBLE_DEVICES": gpu} if gpu else None)
    child = run_child(command, folder / "output.log", lambda text: reporter.line(job, text), env,
                      on_start=lambda pid: store.update(job.id, child_pid=pid))
    if run_dir.is_dir():  # the run folder keeps what the run printed
        shutil.copy2(folder / "output.log", run_dir / "queue.log")
    if child.exit_code == 0:
        store.finish(job.id, "done", 0, "continued from its last checkpoint after its runner was killed"
                     if job.resume else "")
    elif child.exit_code == EXIT_STOPPED:
        store.finish(job.id, "stopped", child.exit_code, "stopped on request; the checkpoint and LoRA are saved")
    else:
        lines = [line for line in child.tail.splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if line.lower().startswith("error")), lines[-1] if lines else "")
        store.finish(job.id, "failed", child.exit_code, last.strip()[:300])
    reporter.event(f"job {job.id} ({job.name}): {store.get(job.id).state} (exit {child.exit_code})")


def sweep_orphans(store: JobStore) -> list[Job]:
    """Running jobs whose runner is gone: its process has ended, or nothing holds its GPU's lock any more (the
    lock dies with its process, so a reused pid after a reboot cannot fake a live runner). Each continues from its
    last checkpoint when it has one, else it is marked failed."""
    def alive(job_runner: int) -> bool:
        jobs = [j for j in store.jobs(("running",)) if j.runner_pid == job_runner]
        return pid_alive(job_runner) and all(_lock_held(store.home, j.gpu or "") for j in jobs)

    return store.orphans(alive, _resumable)


def _lock_held(home: Path, gpu: str) -> bool:
    try:
        with GpuLock(home, gpu, probe=True):
            return False
    except LorakitError:
        return True


def _resumable(job: Job) -> bool:
    """Whether the job's run folder has a complete checkpoint `lorakit train --resume` can continue from."""
    from ..api import find_checkpoint

    if not job.run_dir or not Path(job.run_dir).is_dir():
        return False
    try:
        find_checkpoint(job.run_dir)
        return True
    except LorakitError:
        return False


def stop_running(store: JobStore, job_id: int | None = None) -> list[Job]:
    """Ask running jobs (all, or `job_id`) to stop: SIGINT, which makes `lorakit train` save a checkpoint and the
    LoRA after its current step and exit 4."""
    running = [j for j in store.jobs(("running",)) if job_id is None or j.id == job_id]
    if job_id is not None and not running:
        raise LorakitError(f"job {job_id} is not running", "`lorakit queue list` shows the running job")
    for job in running:
        parent = _parent_of(job.child_pid) if job.child_pid else None
        if job.child_pid and pid_alive(job.child_pid) and parent in (job.runner_pid, -1):
            os.kill(job.child_pid, signal.SIGINT)  # never a process that merely reused a dead child's pid
    return running


def _parent_of(pid: int) -> int | None:
    """The parent pid of `pid` (None: gone; -1: this system has no /proc to tell)."""
    if not Path("/proc").is_dir():
        return -1
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def events(store: JobStore, job: Job) -> list[dict]:
    """The job's progress events so far (JSON lines). Only what the child appended since the last call is read (the
    web UI asks every second, and a long run's file grows to megabytes); a line still being written waits."""
    import json

    path = store.home / job.folder / "events.jsonl"
    try:
        stat = path.stat()
    except OSError:
        return []
    with _TAILS_LOCK:
        inode, read, seen = _TAILS.get(path, (stat.st_ino, 0, []))
        if inode != stat.st_ino or stat.st_size < read:  # another file under that name: start again
            inode, read, seen = stat.st_ino, 0, []
        with open(path, "rb") as f:
            f.seek(read)
            chunk = f.read(stat.st_size - read)
        complete = chunk.rfind(b"\n") + 1
        for line in chunk[:complete].splitlines():
            try:
                seen.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        if job.state in ("queued", "running"):
            _TAILS[path] = (inode, read + complete, seen)
        else:  # the job has ended: nothing more comes, and the UI keeps no run's events forever
            _TAILS.pop(path, None)
        return list(seen)


_TAILS: dict[Path, tuple[int, int, list[dict]]] = {}  # events.jsonl → (inode, bytes read, events read)
_TAILS_LOCK = threading.Lock()