"""The one surface the CLI, the UI and the job runner call."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .config.loader import ResolvedConfig
from .config.schema import LorakitConfig
from .config.snapshot import write_snapshot
from .errors import LorakitError
from .io import folder_lock
from .runs import new_run_dir

if TYPE_CHECKING:
    from .bench.plan import BenchPlan
    from .bench.sweep import BenchResult, ComfyTarget
    from .engine.events import Callback, Commands
    from .engine.resume import ResumePoint
    from .engine.trainer import TrainResult
    from .data.pipeline import DatasetPlan
    from .data.preprocess import PrepareOptions, PrepareReport
    from .data.settings import DataSection
    from .doctor import Check


def train(
    config: LorakitConfig | ResolvedConfig,
    callbacks: list[Callback] | None = None,
    commands: Commands | None = None,
    strict: bool = False,
    resume: Path | None = None,
    run_dir: Path | None = None,
) -> "TrainResult":
    """Train a LoRA: claim a run folder, snapshot the config (with provenance and environment), train, save.

    Besides the LoRA, `train/` gets `log.csv` (step, epoch, loss, lr, val_loss, UTC time), `run.log` (plan,
    progress, saves, warnings, the end) and, with `train.log_with = "tensorboard"`, `tensorboard/`.
    `strict`: refuse (ConfigError, before any run folder exists) a network that a consumer of the file —
    sd-scripts, A1111, ComfyUI, diffusers — would partly ignore; without it the plan only warns.
    `resume`: a checkpoint folder (see `find_checkpoint`); the run continues in its run folder, exactly, after
    the config's changes are checked (a breaking one raises ConfigError).
    `run_dir`: a run folder the caller claimed with `runs.new_run_dir` and owns (`lorakit pipeline` puts its
    preparation log there first); it is kept when the run fails.
    """
    from .engine import trainer
    from .engine.events import CsvLog, OnStart, RunLog
    from .engine.tblog import TENSORBOARD_DIR, TensorBoardLog

    from .engine.distributed import from_main, is_main_process

    config, notes = for_this_machine(config)
    cfg = config.config
    if strict:
        refuse_ignored_modules(cfg)
    point = resume_point(resume, cfg) if resume is not None else None
    main = is_main_process()  # under a launcher (several processes) only the main one writes
    if not main:  # it trains its share into the main process's run folder, writing nothing itself
        run_dir = from_main(None)
        return trainer.train(cfg, run_dir, [], commands, resume=point)
    owned = run_dir is not None
    if point is not None:
        run_dir = point.run_dir
    elif run_dir is None:
        run_dir = new_run_dir(Path(cfg.output.output_dir), cfg.output.run_id)
    from_main(run_dir)
    train_dir = run_dir / "train"
    logs: list[Callback] = [CsvLog(train_dir / "log.csv"), RunLog(train_dir / "run.log")]
    if cfg.train.log_with == "tensorboard":
        logs.append(TensorBoardLog(train_dir / TENSORBOARD_DIR))
    if point is not None:  # the config this part of the run uses, beside the first: once the resume is accepted
        logs.insert(0, OnStart(lambda: write_snapshot(new_run_dir(run_dir / "resumed"), config)))
    every = [*(callbacks or []), *logs]
    if notes:  # what for_this_machine changed, once every callback has started
        every.append(OnStart(lambda: [cb.on_notice(n) for n in notes for cb in every[:-1]]))
    try:
        with folder_lock(run_dir):  # one process per run folder (a second --resume of a running run is refused)
            if point is None:
                write_snapshot(run_dir, config)
            return trainer.train(cfg, run_dir, every, commands, resume=point)
    except BaseException:
        if point is None and not owned and not (run_dir / "train").exists():  # failed first: leave no empty run
            shutil.rmtree(run_dir, ignore_errors=True)
        raise  # once training began, everything stays for debugging


def for_this_machine(config: LorakitConfig | ResolvedConfig) -> tuple[ResolvedConfig, list[str]]:
    """The config as this machine will run it: mixed_precision 'auto' resolved for its device, and with
    train.auto_memory the memory settings fitted to its GPU; the lines say what changed (for the run log)."""
    from dataclasses import replace

    from .engine.device import resolve_auto

    resolved = config if isinstance(config, ResolvedConfig) else ResolvedConfig(config, {}, [])
    fit = resolved.config.train.auto_memory
    cfg, notes = resolve_auto(resolved.config), []
    if cfg.train.mixed_precision != resolved.config.train.mixed_precision:
        notes.append(f"train.mixed_precision 'auto' → '{cfg.train.mixed_precision}' on this machine")
    if fit:
        from .engine.estimate import detected_gpu, detected_vram, fit_to_memory

        vram = detected_vram()
        if vram is None:
            notes.append("train.auto_memory: no GPU memory to fit on this machine; settings unchanged")
        else:
            cfg, changes = fit_to_memory(cfg, vram, detected_gpu())
            notes += [f"train.auto_memory: {line}" for line in changes] or \
                [f"train.auto_memory: the estimate fits in {vram / 2**30:.1f} GiB; settings unchanged"]
    return replace(resolved, config=cfg), notes


def find_checkpoint(spec: str | Path, config: LorakitConfig | None = None,
                    warn: Callable[[str], None] = lambda m: None) -> Path:
    """The checkpoint `lorakit train --resume` means: a run folder (its newest complete checkpoint), a
    checkpoint folder, or "auto": the newest complete checkpoint in output.output_dir (of `config`, else
    `runs`) that `config` can continue without a breaking change. Incomplete checkpoints are named to `warn`."""
    from .engine.resume import find_checkpoint as find

    def fits(path: Path) -> bool:
        try:
            checkpoint_changes(path, config)  # type: ignore[arg-type]
            return True
        except LorakitError:
            return False

    output_dir = Path(config.output.output_dir) if config is not None else Path("runs")
    return find(spec, output_dir, warn, fits if config is not None else lambda p: True)


def resume_point(path: Path, config: LorakitConfig) -> "ResumePoint":
    """The checkpoint loaded, with `config`'s changes against the checkpoint's config checked: safe ones are
    listed on it, a breaking one raises ConfigError listing every breaking change."""
    from .engine.resume import load_point

    changes = checkpoint_changes(Path(path), config)
    point = load_point(Path(path))
    point.changes = [c.describe() for c in changes]
    return point


def checkpoint_changes(path: Path, config: LorakitConfig) -> list:
    """`config`'s changes against the checkpoint's config (read alone); a breaking one raises ConfigError."""
    import tomllib

    from .config.resume_rules import config_changes, refuse_breaking
    from .config.snapshot import absolute_paths

    try:
        saved = LorakitConfig.model_validate(tomllib.loads((path / "config.toml").read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise LorakitError(f"{path / 'config.toml'}: cannot read the checkpoint's config ({exc})") from exc
    mine = for_this_machine(config)[0].config  # as the checkpoint's was: 'auto' resolved, auto_memory fitted
    changes = config_changes(saved, absolute_paths(mine))
    refuse_breaking(changes, path)
    return changes


def refuse_ignored_modules(cfg: LorakitConfig) -> None:
    """Raise ConfigError (exit 2) naming every consumer that would ignore some adapted module (`--strict`)."""
    from .errors import ConfigError
    from .networks.consumers import consumer_problems

    problems = consumer_problems(cfg)
    if problems:
        raise ConfigError(problems, "--strict refuses a LoRA that a consumer would partly ignore: change the "
                                    "network selection as each line says, or run without --strict")


@dataclass
class GenerateRequest:
    """One `generate` call: base model, optional LoRA and weight, prompt and sampling settings."""

    model: str
    prompt: str
    out_dir: Path
    lora: Path | None = None
    weight: float = 1.0
    seeds: tuple[int, ...] = (1,)
    negative_prompt: str = ""
    steps: int = 20
    guidance_scale: float = 7.0
    width: int | None = None
    height: int | None = None
    family: str = "auto"
    name: str = "image"


def generate(req: GenerateRequest) -> list[Path]:
    """Render one image per seed, with or without a LoRA; files are written atomically, never overwritten."""
    from .generate import render

    return render(req)


def prepare(raw_dir: Path, out_dir: Path, options: "PrepareOptions | None" = None,
            on_progress: "Callable[[int, int, str], None] | None" = None) -> "PrepareReport":
    """Normalize a raw image folder into `out_dir` (upright RGB PNGs + captions, rejected files set aside, a log)."""
    from .data.preprocess import prepare as run_prepare

    return run_prepare(Path(raw_dir), Path(out_dir), options, on_progress)


def doctor(output_dir: Path = Path("runs")) -> "list[Check]":
    """Is this machine ready to train: package versions, GPU, optional tools, output folder, free disk."""
    from .doctor import run_checks

    return run_checks(Path(output_dir))


def dataset_warnings(plan: "DatasetPlan", config: LorakitConfig) -> list[str]:
    """What `lorakit plan` warns about a scanned dataset (empty or long captions, heavy crops, huge images)."""
    from .config.plan import data_warnings

    return data_warnings(plan, config)


def inspect_dataset(data: "DataSection", batch_size: int = 1, seed: int = 0) -> "DatasetPlan":
    """Scan a dataset as training would (buckets, repeats, captions) without hashing file contents."""
    from .data.pipeline import build_dataset

    return build_dataset(data, batch_size, seed, fingerprints=False)


def bench(plan: "BenchPlan", out: Path | None = None, train_dir: Path | None = None,
          progress: Callable[[int, int], None] | None = None, comfy: "ComfyTarget | None" = None,
          embedding_model: Path | None = None) -> "BenchResult":
    """Render the plan's prompts × seeds × weights (built-in renderer: the model loaded once, the LoRA's weight
    changed between images; comfyui: the plan's workflow patched per image on the ComfyUI at `comfy.url`) into a new
    bench folder (`out`, else runs/<run_id>/bench/ for a LoRA in a run folder, else bench/ beside it), then write
    metrics.csv, the grids and index.html (with `train_dir`, similarity to the training images: colour histograms,
    and image embeddings from the local CLIP/DINOv2 `embedding_model`)."""
    from .bench.sweep import bench_folder, run_bench

    return run_bench(plan, bench_folder(Path(plan.lora), out), train_dir, progress, comfy, embedding_model)
