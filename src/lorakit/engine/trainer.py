"""A run: set up once (data, model, encoder), then the mode's stages through the one loop, then finish."""

from __future__ import annotations

import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config.schema import FaultsSection, LorakitConfig, NetworkSection, TrainSection
from ..config.validate import weights_file
from ..data.pipeline import DatasetPlan, build_dataset
from ..data.transforms import augment_from
from ..errors import ConfigError, LorakitError, NonFiniteStop, OutOfMemoryStop
from ..io import check_free_space
from ..networks import formats
from ..runs import STEP_SAVE
from ..networks.attach import adapter_tensors, adapter_weights, attach_network, components, freeze_adapter
from ..networks.registry import ADAPTER
from . import device, distributed
from .checkpoint import run_metadata, save_lora, save_size_estimate, with_dropout_args
from .encode import BatchEncoder
from .events import Callback, CallbackList, Commands
from .faults import FaultInjector
from .loop import DONE, NONFINITE, OUT_OF_MEMORY, LoopSettings, LoopState, Position, is_out_of_memory, train_loop
from .mode import Mode, Stage
from .optim import build_optimizer
from .resume import ResumePoint
from .state import size_estimate as checkpoint_size
from .schedule import scheduler_for
from .setup import all_latents_cached, make_accelerator, model_dtype, param_groups, preflight, prepare_model, \
    seed_everything


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    lora_path: Path
    steps: int
    stopped: bool
    checkpoints: list[Path] = field(default_factory=list)
    stage_files: list[Path] = field(default_factory=list)  # other stages' final files (Difference's copy machine)
    peft_dir: Path | None = None
    validation_losses: list[tuple[int, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a callback that failed (the run went on)
    checkpoint: Path | None = None  # the last checkpoint written (for --resume)


class Run:
    """One training run. Set up once (model, encoder, and the dataset when the mode trains on one); the mode then
    attaches networks (`attach`), switches them (`adapters`, `freeze`) and yields its stages, which `execute`
    trains through the one loop."""

    def __init__(self, cfg: LorakitConfig, run_dir: Path, callbacks: list[Callback] | None = None,
                 commands: Commands | None = None, dataset: DatasetPlan | None = None,
                 resume: ResumePoint | None = None) -> None:
        from ..modes import MODES  # the registry: the engine names no concrete mode
        from .samples import SampleRenderer, sampling_enabled

        cfg = device.resolve_auto(cfg)  # api.train did already; a run built directly (tests, tools) too
        t = cfg.train
        self.cfg, self.run_dir, self.train_dir = cfg, run_dir, run_dir / "train"
        self.events = CallbackList(list(callbacks or []))
        self.commands = commands or Commands()
        self.disk = preflight(cfg, self.events)
        seed_everything(t.seed)
        self.mode_class: type[Mode] = MODES[cfg.mode.type]
        self.accelerator = make_accelerator(cfg)
        world = self.accelerator.num_processes
        self.main = self.accelerator.is_main_process  # the one process that writes (saves, checkpoints, samples)
        self.shard = distributed.Shard(self.accelerator.process_index, world)
        if world > 1 and not self.mode_class.data_parallel:
            raise ConfigError([f"mode.type = '{cfg.mode.type}': training on {world} processes is not implemented "
                               "yet for this mode"], "run it as one process (without `accelerate launch "
                               "--num_processes` / torchrun), or queue one run per GPU")
        # several processes walk global batches of train_batch_size × processes images, each computing its share
        self.dataset = (dataset or build_dataset(cfg.data, t.train_batch_size * world, t.seed)) \
            if self.mode_class.uses_dataset else None
        sampling = sampling_enabled(cfg) and self.main
        skip_vae = not sampling and (not self.mode_class.uses_images or (
            self.dataset is not None and all_latents_cached(cfg, self.dataset, self.disk)))
        self.parts, notices = prepare_model(cfg, self.accelerator, skip_vae=skip_vae)
        for notice in notices:
            self.events.on_notice(notice)
        self.dtype = model_dtype(t)
        captions_vary = self.dataset is not None and self.dataset.captions_vary
        cache_text = t.cache_text_encoder_outputs and not cfg.network.train_text_encoder and not captions_vary
        self.encoder = BatchEncoder(self.parts, self.device, self.dtype, t.cache_latents, cache_text, t.seed,
                                    self.disk, augment=augment_from(cfg.data), offload=True,
                                    on_notice=self.events.on_notice)  # encoders leave the GPU once all is cached
        self.gen = torch.Generator(device=self.device).manual_seed(t.seed)  # every random draw of the loss
        self.samples = SampleRenderer(cfg, self.parts, run_dir / "samples", self.accelerator.autocast,
                                      self.events) if sampling else None
        self.result = TrainResult(run_dir, self.train_dir / f"{cfg.output.output_name}.safetensors", 0, False)
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.step = 0  # optimizer steps so far, over all stages
        self.stage: Stage | None = None  # the stage training (or trained last)
        self.stage_index = 0
        self.total = 0
        self.resume = resume  # the checkpoint to continue from, until its stage restores it
        self.faults = FaultInjector(cfg.faults, cfg.train.train_batch_size)
        self.fingerprints: dict[str, str] | None = None
        self.written: list[Path] = []  # LoRA files saved so far (a checkpoint lists them: a resume keeps them)
        self.max_norm_scaled = 0  # train.scale_weight_norms: module updates scaled so far this epoch

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def attach(self, network: NetworkSection, adapter: str = ADAPTER, weights: str | None = None) -> None:
        """Attach `network` as `adapter` (initial weights from the run's seed), check before training that every
        adapted module has a file name and the save format fits, and load `weights` (a LoRA file) into it."""
        torch.manual_seed(self.cfg.train.seed)
        attach_network(self.parts, network, adapter=adapter)
        formats.to_kohya(self.parts, adapter=adapter)  # raises if a module has no kohya name
        if self.cfg.output.save_format != "kohya":
            formats.check_peft_format(self.parts, adapter)
        if weights:
            path = weights_file(Path(weights))
            if path is None:
                raise LorakitError(f"network.network_weights: no kohya .safetensors LoRA in {weights}",
                                   "point it at a LoRA .safetensors file, or at a run saved with output.save_format "
                                   "= 'kohya' or 'both' (a diffusers folder alone cannot be resumed)")
            formats.load_kohya_weights(self.parts, path, adapter)

    def param_groups(self, train: TrainSection, network: NetworkSection, adapter: str = ADAPTER) -> list[dict]:
        return param_groups(self.parts, train, network, adapter)

    def adapters(self, weights: dict[str, float]) -> AbstractContextManager[None]:
        """Within: the named adapters at these weights (0 = off, the base model)."""
        return adapter_weights(self.parts, weights)

    def freeze(self, adapter: str) -> None:
        """Keep `adapter` applied, no longer trained."""
        freeze_adapter(self.parts, adapter)

    def execute(self) -> TrainResult:
        """Run the mode's stages; a stop request ends the run after saving the stage it interrupted (a checkpoint
        and the LoRA); running out of memory or NaN steps end it the same way, then raise."""
        mode = self.mode_class(self)
        out = self.cfg.output  # before anything is written: room for at least one save of what was attached
        trainable = [p for _, m in components(self.parts) for p in m.parameters() if p.requires_grad]
        # a stop writes both: the LoRA and a checkpoint
        needed = save_size_estimate([{"params": trainable}], out.save_precision, out.save_format)
        check_free_space(self.run_dir, needed + checkpoint_size(trainable), "output folder")
        self.total = mode.total_steps()
        if self.resume and self._nothing_left():
            return self.result
        self.events.on_plan(mode.plan_lines())
        info: dict[str, object] = {"run_dir": str(self.run_dir), "mode": self.cfg.mode.type}
        if self.dataset is not None:
            info["images"] = len(self.dataset.train)
        if self.resume:
            info["resumed_from"] = self.resume.step
            self._prepare_resume()
        self.events.on_start(self.total, info)
        failed: BaseException | None = None
        try:
            for index, stage in enumerate(mode.stages()):
                self.stage_index = index
                if self.train_stage(stage):
                    self.result.stopped = True
                    break
            if self.samples and self.samples.last_step != self.step:
                self._sample(None)
        except BaseException as exc:
            failed = exc
            self.events.on_error(str(exc) if isinstance(exc, LorakitError) else "interrupted (a second Ctrl+C)"
                                 if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self.result.steps = self.step
            self.events.on_end(self.step, self.result.stopped)
            self.result.warnings = list(self.events.failures)
            # several processes: the others wait while the main process writes (the end, a stop, a NaN stop: all
            # decided together); after a failure of one process alone, a barrier would never be met
            if self.shard.world > 1 and (failed is None or isinstance(failed, NonFiniteStop)):
                self.accelerator.wait_for_everyone()
        return self.result

    def train_stage(self, stage: Stage) -> bool:
        """Train one stage, saving as its config says; returns True when the run was asked to stop."""
        t, out, ck = stage.cfg.train, stage.cfg.output, self.cfg.checkpoint
        self.stage = stage
        resume = self.resume
        if resume and self.stage_index < resume.data.state["stage"]:  # trained before the checkpoint
            self.step += stage.steps
            return False
        if stage.label:
            self.events.on_notice(f"{stage.label}: {stage.steps} steps")
        if stage.save:  # this stage's network (a later stage's, or one after a loaded first pass): room for it
            check_free_space(self.run_dir, save_size_estimate(stage.groups, out.save_precision, out.save_format),
                             "output folder")
        self.parts.unet.to(self.device)  # after the mode's prefill (the VAE and text encoders have left); in place:
        self._network_precision(t.lora_precision, stage.groups)  # the groups' parameters stay the same objects
        optimizer = build_optimizer(t.optimizer_type, stage.groups, t.learning_rate, t.optimizer_args)
        scheduler = scheduler_for(t, optimizer, stage.warmup_steps, stage.steps)
        optimizer, scheduler = self.accelerator.prepare(optimizer, scheduler)
        meta = run_metadata(stage.cfg, optimizer, _epoch(stage, stage.steps))
        offset = self.step
        state = LoopState()
        if resume:
            state = self._restore(resume, optimizer, scheduler)
            self.resume = None
        elif self.samples and offset == 0:
            self._sample(stage)  # step 0: the model before training

        def after_step(step: int, epoch: int, epoch_done: bool) -> None:
            self.step = offset + step
            if t.scale_weight_norms:  # before samples and saves, as sd-scripts' loop
                self._max_norm(stage, t.scale_weight_norms, epoch if epoch_done or step == stage.steps else None)
            validate = stage.validate is not None and step % t.validate_every_n_steps == 0 and self.main
            sample = self.samples is not None and self.samples.due(self.step, epoch if epoch_done else None)
            if validate:
                stage.task.train(False)
                with self.accelerator.autocast():
                    loss = stage.validate()  # type: ignore[misc]
                self.result.validation_losses.append((self.step, loss))
                self.events.on_validation(self.step, loss)
                stage.task.train(True)
            every, requested, keep_steps = out.save_every_n_steps, self.commands.save, out.save_last_n_steps
            if requested or (every and step % every == 0 and step < stage.steps):
                self.commands.save = False
                if stage.save or requested:  # asked for: saved even in a stage that is not (the copy machine)
                    self._save(stage, step, meta)
                    if every and keep_steps:  # sd-scripts' get_remove_step_no
                        old = self.step - keep_steps - 1
                        if old - old % every > 0:
                            self._remove_save(f"{stage.output_name}-step{old - old % every:08d}")
            by_epoch, keep_epochs = out.save_every_n_epochs, out.save_last_n_epochs
            if by_epoch and epoch_done and epoch % by_epoch == 0 and step < stage.steps and stage.save:
                self._save(stage, step, meta, epoch=epoch)
                if keep_epochs and epoch - by_epoch * keep_epochs > 0:  # sd-scripts' get_remove_epoch_no
                    self._remove_save(f"{stage.output_name}-{epoch - by_epoch * keep_epochs:06d}")

            if sample:
                self._sample(stage)
            due = (ck.every_n_steps and self.step % ck.every_n_steps == 0) or (
                ck.every_n_epochs and epoch_done and epoch % ck.every_n_epochs == 0)
            if due and step < stage.steps and not self.commands.stop:  # a stop writes its own, after the step
                self._checkpoint(state, optimizer, scheduler)

        settings = LoopSettings(
            total_steps=stage.steps, accumulation=t.gradient_accumulation_steps, max_grad_norm=t.max_grad_norm,
            log_every=t.log_every_n_steps, text_encoder_stop=stage.text_encoder_stop, step_offset=offset,
            run_total=self.total, max_nonfinite=t.max_nonfinite_steps, shard=self.shard,
            oom_split_retry=t.oom_split_retry and self.shard.world == 1,  # a retry in one process only would hang
        )
        # images decoded ahead in worker processes when they are read each step (one process: several walk
        # global batches of which each reads only its rows)
        workers = t.dataloader_workers if self.shard.world == 1 else 0
        try:
            with self.encoder.prefetching(stage.task.sampler, state.position, workers, masks=t.masked_loss,
                                          on_summary=self.events.on_notice):
                state, ended = train_loop(stage.task, optimizer, scheduler, self.accelerator, settings, self.gen,
                                          self.events, self.commands, after_step, state, self.faults,
                                          (self.encoder.gen,))
        except RuntimeError as exc:  # out of memory outside forward/backward: the weights may be half-updated
            if not is_out_of_memory(exc):
                raise
            last = self.result.checkpoint or "none yet"
            raise OutOfMemoryStop(f"out of GPU memory after step {self.step} outside the forward pass (optimizer "
                                  f"step, validation or a save): {str(exc).splitlines()[0][:300]}; no checkpoint "
                                  f"of this state (it may be half-updated); the last one is {last}",
                                  "free GPU memory or set train.gradient_checkpointing = true, and continue "
                                  f"with `lorakit train --resume {self.run_dir}`") from None
        self.step = offset + state.step
        if ended == DONE:
            if stage.final and ck.at_end:  # before the final file, which a continuation writes again
                self._checkpoint(state, optimizer, scheduler)
            if stage.save:
                self._save(stage, state.step, meta, final=True)
            return False
        if self.step > 0:  # something was trained: keep it as a checkpoint, and as the LoRA if this stage trained
            self.result.checkpoint = self._checkpoint(state, optimizer, scheduler) or self.result.checkpoint
            if state.step > 0:
                self._save(stage, state.step, meta, final=True)
            elif self.result.stage_files:  # stopped between stages: the last stage's file is the result
                self.result.lora_path = self.result.stage_files[-1]
        resume_hint = f"continue with `lorakit train --resume {self.run_dir}`"
        if ended == OUT_OF_MEMORY:
            if self.step == 0:
                raise OutOfMemoryStop(f"{state.problem}; nothing was trained yet", "use less GPU memory "
                                      "(train.gradient_checkpointing = true, a lower data.resolution or "
                                      "train_batch_size) and run again")
            raise OutOfMemoryStop(f"{state.problem}; the run saved a checkpoint and the LoRA at step {self.step}",
                                  "free GPU memory or set train.gradient_checkpointing = true, and "
                                  f"{resume_hint} (a lower resolution or batch size needs a new run)")
        if ended == NONFINITE:
            raise NonFiniteStop(
                f"{state.problem}; the weights were never updated with them, and the run saved a checkpoint and "
                f"the LoRA at step {self.step}",
                "likely causes: an fp16 VAE that overflows (use a fixed fp16 VAE or mixed_precision = 'bf16'), too "
                "high a learning rate, or a broken image in the batch named; fix it and " + resume_hint)
        self.events.on_notice(f"stopped at step {self.step}: {resume_hint}" if self.step else
                              "stopped before the first step: nothing was trained or saved")
        return True

    def _checkpoint(self, state: LoopState, optimizer, scheduler) -> Path | None:
        """Write a checkpoint of the run as it is after `state.step` steps of the current stage, then delete
        checkpoints beyond checkpoint.keep_last. One per step: a stop right after a periodic one adds none."""
        from ..config.snapshot import absolute_paths, config_toml
        from .state import CheckpointData, checkpoint_dir, is_complete, prune, rng_state, write_checkpoint

        if not self.main or is_complete(checkpoint_dir(self.run_dir, self.step)):
            return None  # the other processes hold the same state
        scaler = self.accelerator.scaler
        written = [str(p.relative_to(self.run_dir)) for p in self.written]
        bookkeeping = {
            "stage": self.stage_index, "stage_step": state.step, "epoch": state.position.epoch,
            "batch": state.position.batch, "nonfinite_in_row": state.nonfinite_in_row,
            "nonfinite_total": state.nonfinite_total, "started": self.started, "written": written,
            "samples_last_step": self.samples.last_step if self.samples else None,
            "validation_losses": self.result.validation_losses, "lorakit_version": _version(),
            "processes": self.shard.world,  # the batches (global) depend on it: a resume needs the same count
        }
        data = CheckpointData(
            tensors=adapter_tensors(self.parts), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if scaler is not None else None,
            rng=rng_state({"loss": self.gen, "latents": self.encoder.gen}), state=bookkeeping,
            config_toml=config_toml(absolute_paths(self.cfg).model_copy(update={"faults": FaultsSection()})),
            inputs=self._inputs())  # without [faults]: a resume never repeats a test's fault
        path = write_checkpoint(self.run_dir, self.step, data, lambda: self.faults.checkpoint_file(self.step))
        self.result.checkpoint = path
        self.events.on_notice(f"checkpoint {path}")
        for old in prune(self.run_dir, self.cfg.checkpoint.keep_last):
            self.events.on_notice(f"removed checkpoint {old} (checkpoint.keep_last = {self.cfg.checkpoint.keep_last})")
        return path

    def _inputs(self) -> dict[str, str]:
        """Fingerprints of what the run trains on (computed once)."""
        from .resume import input_fingerprints

        if self.fingerprints is None:
            examples = self.dataset.examples if self.dataset is not None else []
            self.fingerprints = input_fingerprints(examples, _input_files(self.cfg))
        return self.fingerprints

    def _nothing_left(self) -> bool:
        """A resume of a run that already trained every step it now has: say so, change nothing."""
        assert self.resume is not None
        if self.resume.step < self.total:
            return False
        self.result.steps, self.step = self.resume.step, self.resume.step
        self.events.on_start(self.total, {"run_dir": str(self.run_dir), "resumed_from": None})  # log kept whole
        self.events.on_notice(f"{self.resume.path}: the run already trained {self.resume.step} of its "
                              f"{self.total} steps; nothing left to do (raise train.max_train_epochs or "
                              "max_train_steps to continue it)")
        self.events.on_end(self.step, False)
        return True

    def _prepare_resume(self) -> None:
        """Before training resumes: the inputs checked, the config changes logged, and what the interrupted
        continuation wrote after the checkpoint set aside."""
        from .resume import check_inputs, supersede

        point = self.resume
        assert point is not None
        check_inputs(point.data.inputs, self._inputs(), point.path)
        saved_world = point.data.state.get("processes", 1)
        if saved_world != self.shard.world:
            raise LorakitError(f"{point.path}: the run trained on {saved_world} process(es), this one has "
                               f"{self.shard.world}: its batches (train_batch_size × processes) would differ",
                               f"resume it on {saved_world} process(es)")
        offset = point.step - point.data.state["stage_step"]  # the steps of the stages before the checkpoint's
        if offset != _stage_offset(self.cfg, point.data.state["stage"]):
            raise LorakitError(f"{point.path}: its pass {point.data.state['stage'] + 1} starts at step {offset + 1}, "
                               f"this config's at step {_stage_offset(self.cfg, point.data.state['stage']) + 1}: the "
                               "steps of an earlier pass changed", "resume with the earlier pass's step settings as "
                               "they were (mode.second_pass.max_train_steps sets pass 2's own)")
        self.events.on_notice(f"resuming from {point.path} (step {point.step} of {self.total})")
        for change in point.changes:
            self.events.on_notice(f"changed since the checkpoint: {change}")
        moved = supersede(self.run_dir, point.step, point.data.state["written"]) if self.main else None
        self.accelerator.wait_for_everyone()  # several processes: the files are set aside before any trains
        if moved:
            self.events.on_notice(f"files written after step {point.step} moved to {moved}")
        self.started = point.data.state["started"]
        self.result.validation_losses = [tuple(v) for v in point.data.state["validation_losses"]]
        self.written = [self.run_dir / rel for rel in point.data.state["written"]]
        for path in self.written:  # the results' lists name the main file of each save (kohya, else peft)
            if path.suffix == ".safetensors" or not path.with_name(path.name[:-5] + ".safetensors").exists():
                (self.result.checkpoints if STEP_SAVE.search(path.stem) else self.result.stage_files).append(path)
        if self.samples:
            self.samples.last_step = point.data.state["samples_last_step"]

    def _restore(self, point: ResumePoint, optimizer, scheduler) -> LoopState:
        """The current stage's networks, optimizer, scheduler, random generators and data position as the
        checkpoint has them."""
        from .state import restore_rng

        data, state = point.data, point.data.state
        tensors = adapter_tensors(self.parts)
        if set(tensors) != set(data.tensors):
            diff = sorted(set(tensors) ^ set(data.tensors))
            raise LorakitError(f"{point.path}: the checkpoint's networks do not match this run's "
                               f"({len(diff)} tensors differ, e.g. {diff[0]})",
                               "resume with the network settings the run was started with")
        with torch.no_grad():
            for name, p in tensors.items():
                p.copy_(data.tensors[name])
        optimizer.load_state_dict(data.optimizer)
        scheduler.load_state_dict(data.scheduler)
        if data.scaler is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(data.scaler)
        restore_rng(data.rng, {"loss": self.gen, "latents": self.encoder.gen})
        self.step += state["stage_step"]
        assert self.step == point.step, "_prepare_resume checked the stage offsets"
        return LoopState(step=state["stage_step"], position=Position(state["epoch"], state["batch"]),
                         nonfinite_in_row=state["nonfinite_in_row"], nonfinite_total=state["nonfinite_total"])

    def _save(self, stage: Stage, step: int, run_meta: dict[str, str], final: bool = False,
              epoch: int | None = None) -> Path:
        """Save the stage's network after its `step`-th step: `<output_name>` at its end, `<output_name>-step<N>`
        before (N: the run's step), `<output_name>-<epoch, 6 digits>` at an epoch's end (sd-scripts' names)."""
        c = stage.cfg
        # file names and events count the run's steps (as log.csv and the samples do); the metadata the network's
        name = stage.output_name if final else f"{stage.output_name}-{epoch:06d}" if epoch else \
            f"{stage.output_name}-step{self.step:08d}"
        meta = formats.kohya_metadata(
            self.parts, name=name, resolution=stage.resolution, steps=step, epochs=_epoch(stage, step),
            learning_rate=c.train.learning_rate, te_trained=c.network.train_text_encoder, seed=c.train.seed,
            tag_frequency=stage.tag_frequency, num_images=stage.num_images, created=self.started,
            adapter=stage.adapter,
        ) | run_meta
        meta = with_dropout_args(meta, c.network)
        if not self.main:  # the other processes hold the same network: nothing to write
            return self.train_dir / f"{name}.safetensors"
        saved = save_lora(self.parts, c, self.train_dir, name, meta, stage.adapter)
        self.written += [p for p in (saved.kohya, saved.peft) if p is not None]
        if final and (stage.final or self.commands.stop):  # a run stopped early: its last network is the result
            self.result.lora_path, self.result.peft_dir = saved.main, saved.peft
        elif final:
            self.result.stage_files.append(saved.main)
        else:
            self.result.checkpoints.append(saved.main)
        self.events.on_save(self.step, saved.main)
        return saved.main

    def _network_precision(self, precision: str, groups: list[dict]) -> None:
        """train.lora_precision fp16/bf16 (sd-scripts' full_fp16 / full_bf16): the trained network itself (weights,
        gradients, optimizer state) in half precision. fp16 gradients then reach the gradient scaler, which torch
        refuses to unscale unless told (sd-scripts' patch_accelerator_for_fp16_training does the same)."""
        if precision == "fp32":
            return
        half = torch.float16 if precision == "fp16" else torch.bfloat16
        for group in groups:
            for param in group["params"]:
                param.data = param.data.to(half)
        scaler = self.accelerator.scaler
        if half == torch.float16 and scaler is not None and not getattr(scaler, "lorakit_fp16_grads", False):
            unscale = scaler._unscale_grads_
            scaler._unscale_grads_ = lambda opt, inv, found, allow_fp16: unscale(opt, inv, found, True)
            scaler.lorakit_fp16_grads = True

    def _max_norm(self, stage: Stage, max_norm: float, report_epoch: int | None) -> None:
        """train.scale_weight_norms after a step (sd-scripts' apply_max_norm_regularization on the network this
        stage trains); the modules scaled are counted and reported at each epoch's end in the run log."""
        from ..networks.max_norm import apply_max_norm

        result = apply_max_norm(self.parts, max_norm, stage.adapter)
        self.max_norm_scaled += result.keys_scaled
        if report_epoch is not None:
            self.events.on_notice(f"max-norm {max_norm}: {self.max_norm_scaled} module updates scaled down in "
                                  f"epoch {report_epoch} (after the last step: mean norm {result.mean_norm:.4g}, "
                                  f"largest {result.max_norm:.4g})")
            self.max_norm_scaled = 0

    def _remove_save(self, name: str) -> None:
        """Delete an earlier save `name` (kohya file and PEFT folder) that save_last_n_* no longer keeps."""
        if not self.main:
            return
        for path in (self.train_dir / f"{name}.safetensors", self.train_dir / f"{name}_peft"):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            else:
                continue
            self.written = [p for p in self.written if p != path]
            self.result.checkpoints = [p for p in self.result.checkpoints if p != path]
            self.events.on_notice(f"removed {path.name} (output.save_last_n_*)")

    def _sample(self, stage: Stage | None) -> None:
        """Render the sample prompts with the networks as they are now, at the stage's sample weights (Difference:
        the slider without its copy machine, as the file will be used); eval mode, training RNG untouched."""
        assert self.samples is not None
        if stage is not None:
            stage.task.train(False)
        current = stage or self.stage
        weights = current.sample_weights if current else {}
        try:
            with self.adapters(weights), self.encoder.encoders_on_device():
                self.samples.render(self.step)
        except LorakitError:
            raise  # e.g. the disk is full: the saves would fail too
        except Exception as exc:  # e.g. out of GPU memory while rendering: training goes on without this render
            self.events.on_warning(f"samples at step {self.step} failed ({type(exc).__name__}: {exc}); "
                                   "training goes on")
        finally:
            if stage is not None:
                stage.task.train(True)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lorakit")
    except PackageNotFoundError:
        return "unknown"


def _input_files(cfg: LorakitConfig) -> dict[str, Path]:
    """The single files a run trains from, by config key: a mode's images, a starting LoRA."""
    files = {f"mode.{k}": Path(v) for k, v in cfg.mode.model_dump().items()
             if k.endswith(("_image", "_file")) and isinstance(v, str) and v}
    if cfg.network.network_weights:
        found = weights_file(Path(cfg.network.network_weights))
        if found is not None:
            files["network.network_weights"] = found
    return files


def _stage_offset(cfg: LorakitConfig, stage: int) -> int:
    """Steps of the stages before `stage`: 0 for one-stage modes, else from the stage plan (Difference)."""
    if stage == 0:
        return 0
    from ..config.plan import stage_steps

    return sum(steps for _, steps in stage_steps(cfg)[:stage])


def _epoch(stage: Stage, step: int) -> int:
    """The epoch `step` falls in (at least 1)."""
    return max(1, -(-step // max(1, stage.steps_per_epoch)))


def train(
    cfg: LorakitConfig,
    run_dir: Path,
    callbacks: list[Callback] | None = None,
    commands: Commands | None = None,
    dataset: DatasetPlan | None = None,
    resume: ResumePoint | None = None,
) -> TrainResult:
    """Train as configured (the mode from `mode.type`), writing results into `run_dir/train/`; `resume`: continue
    from that checkpoint (of this run folder)."""
    return Run(cfg, run_dir, callbacks, commands, dataset, resume).execute()
