"""`lorakit batch`: claim → download → unzip → one child run per folder (retried on out-of-memory) → upload → clean up
→ summary. Nothing is deleted before what replaces it is verified: remote inputs after a verified download, local
inputs and outputs after a verified upload; a failed folder keeps everything. A quota or authentication error of the
remote stops the batch at once (retrying cannot help) with nothing deleted.

State survives a kill: each folder's progress is in `<working_dir>/.batch/<folder>/state.json`, so starting the
batch again trains only what was not trained and uploads only what was not uploaded (rclone skips identical files).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from ..config.loader import resolve_layers
from ..config.schema import LorakitConfig
from ..errors import ConfigError, LorakitError
from ..io import write_text_atomic

STATE_DIR = ".batch"  # in the working folder; a dot-name, so never a training folder


class Reporter(Protocol):
    def event(self, message: str) -> None: ...  # what the batch does
    def line(self, text: str) -> None: ...  # a line of a run's output, live


@dataclass
class FolderOutcome:
    name: str
    status: str  # done | failed | skipped
    reason: str = ""
    run_dir: str = ""
    attempts: list[str] = field(default_factory=list)  # "plain", then each OOM step's name
    uploaded: bool = False
    removed: bool = False


@dataclass
class BatchResult:
    folders: list[FolderOutcome]
    stopped: str = ""  # why the whole batch stopped early (quota, authentication), else ""
    summary_path: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.stopped and all(f.status == "done" for f in self.folders)


@dataclass
class BatchEnv:
    """The env file resolved over its base config and the --add layers (no per-folder values yet)."""

    path: Path
    base: str | None
    adds: list[str]
    config: LorakitConfig

    @property
    def working(self) -> Path:
        return Path(self.config.batch.working_dir)

    @property
    def runs(self) -> Path:
        return Path(self.config.output.output_dir)


def load_env(path: Path, adds: list[str] = ()) -> BatchEnv:
    """Read the env file: a config layer whose [batch] base_config is the layer below it. Missing files or
    folders are an immediate error naming them."""
    import tomllib

    if not path.is_file():
        raise ConfigError([f"--env {path}: no such file"], "write one as docs/batch.md shows")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    batch = raw.get("batch", {}) if isinstance(raw.get("batch"), dict) else {}
    base = batch.get("base_config")
    if base and (path.parent / base).is_file():
        base = str(path.parent / base)  # relative to the env file
    every_add = [*batch.get("add", []), *adds]
    config = resolve_layers(base, [path], every_add, False, []).config
    problems = []
    if not Path(config.batch.working_dir).is_dir():
        problems.append(f"batch.working_dir {config.batch.working_dir}: no such folder (create it, or fix the path)")
    if config.batch.stage_dir and not Path(config.batch.stage_dir).is_dir():
        problems.append(f"batch.stage_dir {config.batch.stage_dir}: no such folder")
    if config.batch.lora_install_dir and not Path(config.batch.lora_install_dir).is_dir():
        problems.append(f"batch.lora_install_dir {config.batch.lora_install_dir}: no such folder")
    if problems:
        raise ConfigError([f"{path}: {p}" for p in problems])
    return BatchEnv(path, base, every_add, config)


def run_name(env: BatchEnv, folder: str) -> str:
    """<folder>_<output_suffix>, then the stem of every --add layer (the spec's output_suffix rule)."""
    parts = [folder] + ([env.config.batch.output_suffix] if env.config.batch.output_suffix else [])
    parts += [Path(a.removeprefix("preset:")).stem for a in env.adds]
    return "_".join(parts)


# ---- per-folder state ----

def _state_path(env: BatchEnv, folder: str) -> Path:
    return env.working / STATE_DIR / folder / "state.json"


def read_state(env: BatchEnv, folder: str) -> dict:
    path = _state_path(env, folder)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def clear_state(env: BatchEnv, folder: str) -> None:
    """Archive a folder's state (.batch/<folder>/ → .batch/.history/<folder>-<time>/): a new folder of the same name
    starts fresh, and the old logs stay readable."""
    current = _state_path(env, folder).parent
    if current.is_dir():
        history = env.working / STATE_DIR / ".history"
        history.mkdir(parents=True, exist_ok=True)
        current.rename(history / f"{folder}-{datetime.now().strftime('%Y%m%d_%H%M%S_%f')}")


def write_state(env: BatchEnv, folder: str, **values: object) -> None:
    path = _state_path(env, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({**read_state(env, folder), **values}, indent=2))


# ---- the batch ----

def run_batch(env: BatchEnv, reporter: Reporter, reclaim: bool = False) -> BatchResult:
    """Train what the working folder holds (a folder left by an earlier, interrupted batch included), then, with a
    remote, claim one remote entry at a time, download it and train it, until none is left: several batches on
    several machines share the remote's work that way. One batch per working folder (a lock refuses a second)."""
    from ..io import folder_lock
    from .remote import RcloneError

    result = BatchResult([])
    (env.working / STATE_DIR).mkdir(exist_ok=True)
    with folder_lock(env.working / STATE_DIR):
        remote = _remote(env)
        staged: Path | None = None
        done: set[str] = set()
        try:
            _sweep_leftovers(env)
            if remote is not None:
                _start_remote(env, remote, reporter, reclaim)
            staged = _stage_model(env, reporter)
            while True:
                _unzip(env, reporter, result)
                for folder in [f for f in training_folders(env) if f not in done]:
                    done.add(folder)
                    result.folders.append(_one_folder(env, folder, remote, staged, reporter))
                if remote is None or not _claim_next(env, remote, reporter):
                    break
            if remote is not None and env.config.storage.empty_trash:
                _empty_trash(remote, reporter)
        except RcloneError as exc:  # a fatal one, or a remote that stopped answering between folders
            why = "retrying cannot help" if exc.fatal else "the remote stopped answering"
            result.stopped = f"{exc} ({exc.kind}: {why}; nothing local was deleted)"
            reporter.event(f"stopped: {result.stopped}")
            result.folders += [FolderOutcome(f, "skipped", "the batch stopped before it")
                               for f in training_folders(env) if f not in done]
        finally:
            if staged is not None:
                shutil.rmtree(staged.parent, ignore_errors=True)
            result.summary_path = _write_summary(env, result)
    return result


def _sweep_leftovers(env: BatchEnv) -> None:
    """What a killed batch left: staged model copies and partial downloads of processes that are gone."""
    from ..io import pid_alive

    stage = env.config.batch.stage_dir
    for folder in Path(stage).glob("lorakit-stage-*") if stage else []:
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    for partial in env.working.glob(".*.download"):
        shutil.rmtree(partial, ignore_errors=True)  # under the lock: no other batch is downloading here


def training_folders(env: BatchEnv) -> list[str]:
    """Sub-folders of the working folder, in name order; dot-names are skipped (the spec's rule), so is .batch."""
    return sorted(p.name for p in env.working.iterdir() if p.is_dir() and not p.name.startswith("."))


def _remote(env: BatchEnv):
    from .remote import Remote

    storage = env.config.storage
    if not storage.rclone_remote:
        return None
    root = storage.rclone_remote + storage.remote_path.strip("/")
    return Remote(root)


def worker_id(env: BatchEnv) -> str:
    """batch.worker_id, else the id this working folder got the first time (host name + a hash of the folder's
    path), kept in .batch/worker_id: a rented machine that comes back with another host name but the same
    persistent working folder continues its own claims, and two batches on one machine never share an id."""
    if env.config.batch.worker_id:
        return env.config.batch.worker_id
    saved = env.working / STATE_DIR / "worker_id"
    if saved.is_file():
        return saved.read_text(encoding="utf-8").strip()
    import hashlib

    digest = hashlib.sha256(str(env.working.resolve()).encode()).hexdigest()[:8]
    chosen = f"{socket.gethostname()}-{digest}"
    saved.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, chosen)
    return chosen


def entry_folder(name: str) -> str:
    """The training folder a remote entry becomes: `cat` for `cat/`, `cat.zip` and `Cat.ZIP` → `Cat`."""
    return name[:-4] if name.lower().endswith(".zip") else name


def _claims(env: BatchEnv) -> str:
    return f"{env.config.storage.training_subdir}/.claimed/{worker_id(env)}"


def _start_remote(env: BatchEnv, remote, reporter: Reporter, reclaim: bool) -> None:
    """Renew this worker's lease, return stale claims of vanished workers (--reclaim), and download this worker's
    own claims that an interrupted batch left undownloaded."""
    s = env.config.storage
    if reclaim:
        for name in _stale_claims(env, remote):
            reporter.event(f"reclaimed {name}")
    remote.write_text(f"{s.training_subdir}/.claimed/{worker_id(env)}.lease", _lease())
    if not remote.can_move_folders():
        reporter.event("warning: this remote cannot move folders server-side (an object store such as S3): two "
                       "batches sharing it could take the same folder; give each batch its own remote_path")
    for entry in remote.entries(_claims(env)):
        _download(env, remote, entry, reporter)


def _claim_next(env: BatchEnv, remote, reporter: Reporter) -> bool:
    """Claim one entry of training/ with a server-side move into training/.claimed/<worker>/ (a move that another
    batch made first fails, so no folder is trained twice) and download it; False when nothing is left."""
    s = env.config.storage
    for entry in remote.entries(s.training_subdir):
        if not (entry.is_dir or entry.name.lower().endswith(".zip")):
            continue  # a stray file (notes.txt) is not a training folder
        if remote.move(f"{s.training_subdir}/{entry.name}", f"{_claims(env)}/{entry.name}"):
            reporter.event(f"claimed {entry.name}")
            remote.write_text(f"{s.training_subdir}/.claimed/{worker_id(env)}.lease", _lease())
            _download(env, remote, entry, reporter)
            return True
    return False


def _download(env: BatchEnv, remote, entry, reporter: Reporter) -> None:
    """Copy a claimed entry into the working folder through a hidden folder, verified before it takes its name."""
    local, folder = env.working / entry.name, entry_folder(entry.name)
    if local.exists() or (env.working / folder).exists():  # here already (unzipped, or mid-run when killed)
        return
    reporter.event(f"downloading {entry.name}")
    target = env.working / f".{entry.name}.download"
    shutil.rmtree(target, ignore_errors=True)
    remote.download(f"{_claims(env)}/{entry.name}", target)
    clear_state(env, folder)  # a new input: whatever an earlier folder of this name did is history
    write_state(env, folder, source="remote", entry=entry.name)
    (target if entry.is_dir else target / entry.name).rename(local)
    shutil.rmtree(target, ignore_errors=True)


def _lease() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "renewed": datetime.now(timezone.utc).isoformat(timespec="seconds")})


def _stale_claims(env: BatchEnv, remote) -> list[str]:
    """Move the claims of workers whose lease is older than batch.lease_hours back into training/."""
    s = env.config.storage
    returned = []
    for entry in remote.entries(f"{s.training_subdir}/.claimed"):
        if not entry.is_dir or entry.name == worker_id(env):
            continue
        text = remote.read_text(f"{s.training_subdir}/.claimed/{entry.name}.lease")
        renewed = json.loads(text)["renewed"] if text else "1970-01-01T00:00:00+00:00"
        age_h = (datetime.now(timezone.utc) - datetime.fromisoformat(renewed)).total_seconds() / 3600
        if age_h < env.config.batch.lease_hours:
            continue
        for claim in remote.entries(f"{s.training_subdir}/.claimed/{entry.name}"):
            if remote.move(f"{s.training_subdir}/.claimed/{entry.name}/{claim.name}",
                           f"{s.training_subdir}/{claim.name}"):
                returned.append(claim.name)
    return returned


def _unzip(env: BatchEnv, reporter: Reporter, result: BatchResult) -> None:
    from .unzip import extract_zips

    reported = {f.name for f in result.folders}
    for outcome in extract_zips(env.working, env.config.batch.max_zip_bytes):
        if outcome.zip.name in reported:  # refused before in this batch: said once
            continue
        if outcome.ok:
            reporter.event(f"unzipped {outcome.zip.name} → {outcome.folder}")
        else:
            reporter.event(f"kept {outcome.zip.name}: {outcome.reason}")
            result.folders.append(FolderOutcome(outcome.zip.name, "failed", f"not extracted: {outcome.reason}"))


def _stage_model(env: BatchEnv, reporter: Reporter) -> Path | None:
    """Copy the base model to batch.stage_dir (a copy: the original never moves, so a crash loses nothing)."""
    stage, model = env.config.batch.stage_dir, Path(env.config.model.pretrained_model_name_or_path)
    if not stage or not model.exists():
        return None
    folder = Path(stage) / f"lorakit-stage-{os.getpid()}"
    folder.mkdir()
    target = folder / model.name
    reporter.event(f"staging {model} → {target}")
    (shutil.copytree if model.is_dir() else shutil.copy2)(model, target)
    return target


def _one_folder(env: BatchEnv, folder: str, remote, staged: Path | None, reporter: Reporter) -> FolderOutcome:
    from .remote import RcloneError

    outcome = FolderOutcome(folder, "failed")
    state = read_state(env, folder)
    if state.get("status") == "training" and _finished(Path(state["run_dir"])):  # killed right after it finished
        write_state(env, folder, status="trained")
        state = read_state(env, folder)
    try:
        if state.get("status") not in ("trained", "uploaded"):
            _train_folder(env, folder, staged, reporter, outcome, remote)
            if outcome.status == "failed":
                _finish_remote_claim(env, remote, folder, ok=False, reporter=reporter)
                return outcome
            state = read_state(env, folder)
        outcome.run_dir, outcome.attempts = state["run_dir"], state.get("attempts", outcome.attempts)
        _install_copy(env, Path(state["run_dir"]), reporter)
        if remote is not None and state.get("status") != "uploaded":
            _upload(env, remote, folder, Path(state["run_dir"]), reporter)
            outcome.uploaded = True
        elif remote is not None:
            outcome.uploaded = True
        if remote is not None:
            _finish_remote_claim(env, remote, folder, ok=True, reporter=reporter)
        outcome.removed = _clean_local(env, folder, Path(state["run_dir"]), remote is not None, reporter)
        outcome.status = "done"
    except RcloneError as exc:
        outcome.reason = str(exc)
        if exc.fatal:
            raise
    except LorakitError as exc:
        outcome.reason = str(exc)
    return outcome


def _finished(run_dir: Path) -> bool:
    """Whether a run left in state "training" (the batch was killed while its child ran) got to its final LoRA.
    Only for that state: a child that ended with an error was marked failed, since a stopped run writes its LoRA
    too. (A batch killed in the instant between such a child's exit and that mark is not told apart.)"""
    from ..runs import final_lora

    return final_lora(run_dir) is not None


def _train_folder(env: BatchEnv, folder: str, staged: Path | None, reporter: Reporter,
                  outcome: FolderOutcome, remote=None) -> None:
    """Train `folder` in a child process; after an out-of-memory, again with each rung of the ladder in turn."""
    from ..config.snapshot import config_toml
    from ..process import lorakit_command, run_child
    from .oom import attempt_sets, is_oom, ladder

    name = run_name(env, folder)
    steps = ladder(env.config, Path(env.config.batch.oom_file) if env.config.batch.oom_file else None,
                   _bnb_available())
    work = env.working / STATE_DIR / folder
    for attempt in range(env.config.batch.oom_retries + 1):
        label = "plain" if attempt == 0 else steps[attempt - 1].name
        layers, sets = attempt_sets(steps, attempt) if attempt else ([], [])
        run_dir = env.runs / free_run_id(env.runs, name if attempt == 0 else f"{name}-oom{attempt}",
                                         remote, env.config.storage.output_subdir)
        own = [f'data.train_data_dir="{(env.working / folder).resolve().as_posix()}"',
               f'output.output_dir="{env.runs.resolve().as_posix()}"', f'output.output_name="{name}"',
               f'output.run_id="{run_dir.name}"']
        if staged is not None:
            own.append(f'model.pretrained_model_name_or_path="{staged.as_posix()}"')
        try:
            resolved = resolve_layers(env.base, [env.path], [*env.adds, *[str(x) for x in layers]], False,
                                      [*own, *sets], check_paths=True)
        except ConfigError as exc:
            outcome.reason = f"config: {exc}"
            return
        config_file = work / f"attempt-{attempt}.toml"
        work.mkdir(parents=True, exist_ok=True)
        write_text_atomic(config_file, config_toml(resolved.config))
        outcome.attempts.append(label)
        write_state(env, folder, status="training", run_dir=str(run_dir), attempts=outcome.attempts)
        reporter.event(f"{folder}: training ({label}) → {run_dir}")
        child = run_child(lorakit_command("train", "--config", str(config_file)), work / f"attempt-{attempt}.log",
                          _renewing(env, remote, reporter.line))
        if run_dir.is_dir():  # the run's own copy of what it printed
            shutil.copy2(work / f"attempt-{attempt}.log", run_dir / "batch.log")
        if child.exit_code == 0:
            write_state(env, folder, status="trained", run_dir=str(run_dir), attempts=outcome.attempts)
            outcome.status, outcome.run_dir = "trained", str(run_dir)
            return
        # a stopped, out-of-memory or NaN-stopped run still writes its LoRA: the state, not the file, says it failed
        write_state(env, folder, status="failed", run_dir=str(run_dir), attempts=outcome.attempts,
                    exit_code=child.exit_code)
        if not is_oom(child.exit_code, child.tail):
            outcome.reason = f"training failed (exit {child.exit_code}): {_last_error(child.tail)}"
            return
        if attempt == env.config.batch.oom_retries or attempt >= len(steps):
            outcome.reason = f"out of GPU memory after {attempt + 1} attempts ({', '.join(outcome.attempts)})"
            return
        reporter.event(f"{folder}: out of GPU memory; retrying with {steps[attempt].name}: {steps[attempt].why}")


def free_run_id(runs: Path, base: str, remote=None, output_subdir: str = "output") -> str:
    """`base`, else `base-2`, `base-3`, …, free here and (with a remote) among the uploaded results: a run never
    overwrites an earlier one, on this disk or on the remote."""
    from ..runs import free_name

    return free_name(base, lambda name: (runs / name).exists()
                     or (remote is not None and remote.exists(f"{output_subdir}/{name}")))


def _renewing(env: BatchEnv, remote, on_line):
    """`on_line`, renewing this worker's lease every quarter of batch.lease_hours while a run prints: a long run
    never looks like a vanished worker to another batch's --reclaim."""
    if remote is None:
        return on_line
    every, last = env.config.batch.lease_hours * 3600 / 4, [time.monotonic()]

    def line(text: str) -> None:
        on_line(text)
        if time.monotonic() - last[0] > every:
            last[0] = time.monotonic()
            remote.write_text(f"{env.config.storage.training_subdir}/.claimed/{worker_id(env)}.lease", _lease())

    return line


def _last_error(tail: str) -> str:
    lines = [line for line in tail.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "traceback")) or "Error" in line]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def _bnb_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _install_copy(env: BatchEnv, run_dir: Path, reporter: Reporter) -> None:
    """Copy the run's LoRA into batch.lora_install_dir (a UI's LoRA folder), never over an existing file."""
    folder = env.config.batch.lora_install_dir
    if not folder:
        return
    from ..runs import final_lora

    lora = final_lora(run_dir)  # Difference's copy machine is saved beside the slider: only the slider goes
    target = Path(folder) / f"{run_dir.name}.safetensors"
    if lora is not None and lora.is_dir():
        reporter.event(f"not installed in {folder}: {run_dir.name} was saved only in the diffusers (peft) format; "
                       "UIs load the kohya .safetensors (output.save_format = \"kohya\" or \"both\")")
    elif lora is not None and not target.exists():
        shutil.copy2(lora, target)
        reporter.event(f"installed {target}")


def _upload(env: BatchEnv, remote, folder: str, run_dir: Path, reporter: Reporter) -> None:
    s = env.config.storage
    reporter.event(f"{folder}: uploading {run_dir} → {s.output_subdir}/{run_dir.name}")
    remote.upload(run_dir, f"{s.output_subdir}/{run_dir.name}")  # copies what is missing, then verifies
    _fault("after-upload")
    write_state(env, folder, status="uploaded")


def _finish_remote_claim(env: BatchEnv, remote, folder: str, ok: bool, reporter: Reporter) -> None:
    """A finished claim goes to training/.done/ (or its files are deleted when asked), a failed one to
    training/.failed/ with its folder kept, so neither is picked up again by accident."""
    if remote is None:
        return
    s = env.config.storage
    mine = _claims(env)
    for entry in remote.entries(mine):
        if entry_folder(entry.name) != folder:
            continue
        target = _free_remote(remote, f"{s.training_subdir}/{'.done' if ok else '.failed'}/{entry.name}")
        remote.move(f"{mine}/{entry.name}", target)
        if ok and s.delete_remote_inputs:
            remote.delete_files(target)
        reporter.event(f"remote {entry.name} → {target}" + (" (files deleted)" if ok and
                                                            s.delete_remote_inputs else ""))


def _free_remote(remote, path: str) -> str:
    """`path`, else `path-2`, …: a move never lands on (and merges into) something already there."""
    from ..runs import free_name

    return free_name(path, remote.exists)


def _clean_local(env: BatchEnv, folder: str, run_dir: Path, uploaded: bool, reporter: Reporter) -> bool:
    """After a verified upload: the run folder goes, and the training folder if it came from the remote (a folder
    you put in the working folder yourself may be the only copy: it stays). Without a remote nothing is deleted."""
    if not env.config.batch.cleanup_on_success or not uploaded:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)  # already gone when a killed batch removed it
    if read_state(env, folder).get("source") != "remote":
        write_state(env, folder, removed="run folder")
        reporter.event(f"{folder}: removed the uploaded run folder; kept the training folder (not from the remote)")
        return True
    shutil.rmtree(env.working / folder, ignore_errors=True)
    clear_state(env, folder)  # done: a new folder of this name later is a new job
    reporter.event(f"{folder}: removed the training folder and the run folder (both are on the remote)")
    return True


def _empty_trash(remote, reporter: Reporter) -> None:
    from .remote import RcloneError

    try:
        remote.cleanup()
        reporter.event("emptied the remote's trash")
    except RcloneError as exc:
        if exc.fatal:
            raise
        reporter.event(f"warning: could not empty the remote's trash: {exc}")


def _write_summary(env: BatchEnv, result: BatchResult) -> Path:
    """batch_summary.json in a new folder of its own under output_dir/batches/ (never overwritten)."""
    from ..runs import new_run_dir

    folder = new_run_dir(env.runs / "batches")
    path = folder / "batch_summary.json"
    write_text_atomic(path, json.dumps({
        "env": str(env.path), "worker": worker_id(env), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "ok": result.ok, "stopped": result.stopped, "folders": [asdict(f) for f in result.folders]},
        indent=2, ensure_ascii=False))
    return path


def _fault(point: str) -> None:
    """Testing aid: LORAKIT_BATCH_KILL_AT=<point> kills this process there (as a power cut would)."""
    if os.environ.get("LORAKIT_BATCH_KILL_AT") == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
