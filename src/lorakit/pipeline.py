"""`lorakit pipeline`: a raw image set to a benched LoRA in one command (the spec's pipeline_run.py).

Stages, each writing into `runs/<run_id>/`: prepare (`datasets/raw/<kind>/<set>` → `datasets/normalized/<kind>/<set>`,
with the preparation log and the rejected images copied into the run), train (`train/`), bench (`bench/`). Before
any of them the pipeline checks what would make a later stage fail (the config, the bench settings, a ComfyUI that
answers), so an hour of training never ends in a bench that cannot start. A failing stage stops the pipeline with
its reason; what earlier stages made stays, and `pipeline.json` records every stage.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Protocol

from .errors import ConfigError, LorakitError
from .io import write_text_atomic

PROFILES = {"style": ("style", "sd15-style"), "char": ("characters", "sd15-character")}  # → (raw folder, preset)


@dataclass
class PipelineRequest:
    """What `lorakit pipeline` was asked to do; paths are relative to `root` unless absolute."""

    raw_set: str
    profile: str = "style"
    run_id: str | None = None  # None: a timestamp YYYYMMDD_HHMMSS
    root: Path = Path(".")
    resize: bool = False
    yes: bool = False
    max_side: int | None = 1024
    min_side: int = 256
    preset: str | None = None  # None: the profile's preset
    configs: list[Path] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    bench: dict = field(default_factory=dict)  # [bench] overrides from the command line (None values ignored)
    skip_train: bool = False
    skip_bench: bool = False
    fix_owner: bool = False

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError([f"--profile {self.profile!r}: use one of {', '.join(PROFILES)}"])
        if not self.raw_set or Path(self.raw_set).name != self.raw_set:
            raise ConfigError([f"--raw-set {self.raw_set!r}: a folder name under datasets/raw/"
                               f"{PROFILES[self.profile][0]}/, not a path"])
        if self.skip_train and not self.run_id:
            raise ConfigError(["--skip-train benches an earlier run: give its --run-id"])
        if self.run_id is not None and (self.run_id in ("", ".", "..") or any(c in self.run_id for c in "/\\\0")):
            raise ConfigError([f"--run-id {self.run_id!r}: a plain folder name under runs/ (no '/', '\\' or '..')"])

    @property
    def raw_dir(self) -> Path:
        return self.root / "datasets" / "raw" / PROFILES[self.profile][0] / self.raw_set

    @property
    def normalized_dir(self) -> Path:
        return self.root / "datasets" / "normalized" / PROFILES[self.profile][0] / self.raw_set

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"


class Reporter(Protocol):
    """What a front-end shows: stage headers, notes, the progress of preparation and training."""

    def stage(self, name: str, detail: str) -> None: ...
    def note(self, message: str) -> None: ...
    def confirm(self, question: str) -> bool: ...


@dataclass
class StageRecord:
    name: str
    status: str  # done | skipped | failed
    seconds: float = 0.0
    detail: str = ""


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageRecord]
    lora: Path | None = None
    bench_index: Path | None = None


PrepareHook = Callable[[PipelineRequest], object]  # → PrepareReport
TrainHook = Callable[[object, Path], object]  # (ResolvedConfig, run folder) → TrainResult
BenchHook = Callable[..., object]  # (BenchSection, lora, model, config, train_dir, out) → BenchResult


def training_config(req: PipelineRequest, check_paths: bool):
    """The run's config: the profile's preset (or --preset), --config files, the pipeline's own values (the
    normalized set, runs/, the run id, `<profile>_<set>` as the name), then --set (last wins)."""
    from .config.loader import resolve_layers

    own = [f'data.train_data_dir="{req.normalized_dir.resolve().as_posix()}"',
           f'output.output_dir="{req.runs_dir.resolve().as_posix()}"', f'output.run_id="{req.run_id}"',
           f'output.output_name="{req.profile}_{req.raw_set}"']
    return resolve_layers(req.preset or PROFILES[req.profile][1], [str(p) for p in req.configs], [], False,
                          own + list(req.sets), check_paths=check_paths)


def bench_section(req: PipelineRequest, config):
    from .bench.configure import with_overrides

    return with_overrides(config.bench, **req.bench)


def preflight(req: PipelineRequest) -> None:
    """Everything a later stage needs that can be checked now: raise before anything is written."""
    from .config.bench_rules import check_bench

    if not req.skip_train:
        if req.resize and not req.raw_dir.is_dir():
            raise LorakitError(f"no raw set at {req.raw_dir}", f"put the images in {req.raw_dir}, or check "
                               f"--raw-set and --profile")
        if not req.resize and not _has_images(req.normalized_dir):
            raise LorakitError(f"no normalized set at {req.normalized_dir}", "run with --resize to prepare "
                               f"{req.raw_dir} into it first")
        if (req.runs_dir / req.run_id).exists():
            raise LorakitError(f"run folder {req.runs_dir / req.run_id} already exists", "choose another --run-id")
    elif not (req.runs_dir / req.run_id / "train").is_dir():
        raise LorakitError(f"--skip-train: no trained run at {req.runs_dir / req.run_id}", "check --run-id")
    if req.skip_bench:
        return
    config = training_config(req, check_paths=False).config if not req.skip_train else _run_config(req)
    section = bench_section(req, config)
    errors = [f for f in check_bench(config.model_copy(update={"bench": section}), paths=True, benching=True)
              if f.error]
    if errors:
        raise ConfigError([f"{f.key}: {f.message}" for f in errors])
    if section.backend == "comfyui":
        from .bench import comfyui

        if not req.skip_train and not section.lora_install_dir:  # every run of a set has the same file name
            raise ConfigError(["bench.lora_install_dir: the pipeline copies each new LoRA into ComfyUI's "
                               "models/loras folder; give it (--lora-install-dir)"])
        comfyui.system_stats(section.comfy_url)  # answers, or a clear "not reachable" before any training
    if section.embedding_model and not section.compare_training_images:
        raise ConfigError(["bench.embedding_model: embedding similarity compares with the training images, and "
                           "bench.compare_training_images is false"])
    _bench_prompts(req, section, config)


def _bench_prompts(req: PipelineRequest, section, config) -> list[str]:
    """The bench's prompts as the bench stage will find them, with the captions of the raw set standing in for
    the normalized set's (prepare copies them) when it is not made yet; ConfigError when there are none."""
    from .bench.configure import plan_from_section, run_prompts

    fallback = run_prompts(config)
    if not fallback and req.resize:
        fallback = run_prompts(config.model_copy(update={"data": config.data.model_copy(
            update={"train_data_dir": str(req.raw_dir)})}))
    return plan_from_section(section, Path("preflight.safetensors"), "", fallback).prompts


def run_pipeline(req: PipelineRequest, reporter: Reporter, prepare: PrepareHook, train: TrainHook,
                 bench: BenchHook) -> PipelineResult:
    """Run the stages in order; the hooks do the work (the CLI passes its progress displays)."""
    req.run_id = req.run_id or datetime.now().strftime("%Y%m%d_%H%M%S")
    preflight(req)
    if req.resize and not req.skip_train and _has_images(req.normalized_dir) and not req.yes and \
            not reporter.confirm(f"{req.normalized_dir} holds a prepared set; update it from {req.raw_dir}?"):
        raise LorakitError(f"{req.normalized_dir} exists and the update was not confirmed", "pass --yes")
    from .runs import new_run_dir

    run_dir = req.runs_dir / req.run_id if req.skip_train else new_run_dir(req.runs_dir, req.run_id)
    result = PipelineResult(run_dir, [])
    try:
        _stage(result, "prepare", reporter, lambda: _prepare(req, run_dir, reporter, prepare),
               skip="--skip-train" if req.skip_train else "" if req.resize else "no --resize: using "
               f"{req.normalized_dir}")
        _stage(result, "train", reporter, lambda: _train(req, run_dir, train, result),
               skip="--skip-train" if req.skip_train else "")
        if req.skip_train:
            result.lora = final_lora(run_dir)
        _stage(result, "bench", reporter, lambda: _bench(req, run_dir, bench, result),
               skip="--skip-bench" if req.skip_bench else "")
    finally:
        if req.fix_owner:  # runs/ itself too (a first run under sudo made it), not the other runs in it
            reporter.note(fix_owner([req.root / "datasets", run_dir], [req.runs_dir]))
    return result


def _stage(result: PipelineResult, name: str, reporter: Reporter, work: Callable[[], str], skip: str = "") -> None:
    if skip:
        result.stages.append(StageRecord(name, "skipped", detail=skip))
        reporter.stage(name, f"skipped ({skip})")
        _write_log(result)
        return
    reporter.stage(name, "")
    start = time.monotonic()
    try:
        detail = work()
    except BaseException as exc:
        result.stages.append(StageRecord(name, "failed", time.monotonic() - start, f"{type(exc).__name__}: {exc}"))
        _write_log(result)
        raise
    result.stages.append(StageRecord(name, "done", time.monotonic() - start, detail))
    _write_log(result)


def _write_log(result: PipelineResult) -> None:
    write_text_atomic(result.run_dir / "pipeline.json",
                      json.dumps({"stages": [asdict(s) for s in result.stages]}, indent=2, ensure_ascii=False))


def _prepare(req: PipelineRequest, run_dir: Path, reporter: Reporter, prepare: PrepareHook) -> str:
    report = prepare(req)
    shutil.copy2(report.log_path, run_dir / "preprocess_log.csv")  # the log as this run saw it
    rejected = req.normalized_dir / "rejected"
    if rejected.is_dir():
        shutil.copytree(rejected, run_dir / "rejected")
    if report.ok == 0:
        raise LorakitError(f"prepare kept no image of {req.raw_dir} ({len(report.rejected)} rejected)",
                           f"see {run_dir / 'preprocess_log.csv'} for the reasons")
    return f"{report.ok} images kept, {len(report.rejected)} rejected"


def _train(req: PipelineRequest, run_dir: Path, train: TrainHook, result: PipelineResult) -> str:
    resolved = training_config(req, check_paths=True)
    outcome = train(resolved, run_dir)
    if outcome.stopped:
        raise LorakitError(f"training stopped after {outcome.steps} steps", "continue it with `lorakit train "
                           f"--resume {run_dir}`, then `lorakit pipeline --skip-train --run-id {req.run_id}`")
    result.lora = Path(outcome.lora_path)
    return f"{outcome.steps} steps → {outcome.lora_path}"


def _bench(req: PipelineRequest, run_dir: Path, bench: BenchHook, result: PipelineResult) -> str:
    config = _run_config(req)
    section = bench_section(req, config)
    train_dir = Path(config.data.train_data_dir) if section.compare_training_images else None
    outcome = bench(section, result.lora, config.model.pretrained_model_name_or_path, config, train_dir,
                    None)
    result.bench_index = outcome.index
    return f"{outcome.index}"


def _run_config(req: PipelineRequest):
    from .config.loader import load_config

    snapshot = req.runs_dir / req.run_id / "config.toml"
    if not snapshot.is_file():
        raise LorakitError(f"{snapshot} is missing: the run has no config snapshot to bench with")
    return load_config([snapshot])


def final_lora(run_dir: Path) -> Path:
    """The run's final LoRA (runs.final_lora); an error when it has none."""
    from .runs import final_lora as final

    lora = final(run_dir)
    if lora is None:
        raise LorakitError(f"no final LoRA in {run_dir / 'train'}", "train it first (without --skip-train)")
    return lora


def fix_owner(folders: list[Path], alone: list[Path] = ()) -> str:
    """Give `folders` (with everything in them) and the folders `alone` (without their contents) back to the user
    who ran `sudo lorakit pipeline` (SUDO_UID/SUDO_GID), as the spec's fix_datasets_owner does for datasets/ and
    output/; links are never followed, nothing else is touched."""
    if os.geteuid() != 0:
        return "--fix-owner: not running as root, the files are already yours"
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if not uid or not gid:
        return "--fix-owner: running as root without sudo (no SUDO_UID): left as root's"
    changed = 0
    paths = [p for folder in folders if folder.is_dir() and not folder.is_symlink()
             for p in [folder, *folder.rglob("*")]]
    for path in paths + [p for p in alone if p.is_dir() and not p.is_symlink()]:
        if not path.is_symlink():
            os.chown(path, int(uid), int(gid))
            changed += 1
    return f"--fix-owner: {changed} files and folders given to uid {uid}, gid {gid}"


def _has_images(folder: Path) -> bool:
    from .bench.sweep import IMAGE_SUFFIXES

    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
