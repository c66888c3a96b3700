"""The plan before the run: images, repeats, steps, warm-up, text-encoder stop, saves, samples, output path.

`compute_steps` is the pure step math (kohya's rules); `build_plan` feeds it from the data side's scan;
`render_plan` turns a plan into lines for the console. The same plan is printed by `lorakit plan` and at the start
of every run.

Step rules (what sd-scripts' trainer actually runs, which is what lorakit's engine runs):
  samples/epoch  = Σ(images × repeats) × reg factor       (reg factor 2 with regularisation folders, else 1)
  batches/epoch  = ceil(samples / batch)                  (with buckets: Σ ceil(bucket samples / batch))
  steps/epoch    = ceil(batches / gradient accumulation)
  total          = max_train_steps, else steps/epoch × epochs
  warm-up        = lr_warmup_steps, or int(lr_warmup_ratio × total)
In the kohya layout (`data.layout = "kohya"`) the regularisation uses are those sd-scripts registers (whole images
with their repeats until the training count, so it can overshoot) instead of exactly the training count; training
and regularisation images share the buckets (sd-scripts' make_buckets), and the warm-up ratio is truncated as in
its get_scheduler_fix (int(lr_warmup_steps × max_train_steps) for a float below 1). With `data.subsets` (sd-scripts'
dataset TOML) the folders are the subsets, each listed as `data.subsets[i]` with its own repeats, and the same rules
apply.
The kohya_ss GUI's *estimate* ceil(Σ(images × repeats) ÷ batch ÷ accumulation × epochs × reg) ceils once over all
epochs instead of per epoch; `kohya_gui_estimate` gives it for comparison (it can be lower by up to epochs − 1).

Warnings (`Plan.warnings`, rendered as `warning:` lines, so the run's log shows them too) name what would make
the run differ from what the folder suggests: symlinks skipped, empty caption files, captions longer than the
text encoder reads (counted here with the model's own tokenizers; the data side only returns captions), images
that buckets crop heavily, images above Pillow's decompression-bomb limit, and adapted modules that a consumer
of the file (sd-scripts, A1111, ComfyUI, diffusers) would ignore.

The network table (`network_table`) lists the adapted modules per component and block with their rank/alpha, as
`networks.targets.select_targets` chooses them on a weightless skeleton of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ..errors import LorakitError, some_of
from .schema import LorakitConfig



@dataclass(frozen=True)
class StepPlan:
    """The step arithmetic of one run."""

    samples_per_epoch: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    text_encoder_stop: int | None
    save_steps: tuple[int, ...]
    sample_steps: tuple[int, ...]


def reg_factor(folders: list[tuple[int, int, bool]]) -> int:
    """2 when any folder holds regularisation images (each training image is paired with one), else 1."""
    return 2 if any(is_reg for _, _, is_reg in folders) else 1


def _every(n: int | None, total: int) -> tuple[int, ...]:
    """Steps n, 2n, … strictly before `total` (the final step is always saved separately)."""
    return tuple(range(n, total, n)) if n else ()


def compute_steps(
    folders: list[tuple[int, int, bool]],
    batch_size: int,
    accumulation: int = 1,
    epochs: int = 1,
    max_train_steps: int | None = None,
    *,
    batches_per_epoch: int | None = None,
    reg_samples: int | None = None,
    warmup_steps: int = 0,
    warmup_ratio: float | None = None,
    text_encoder_stop: int | None = None,
    save_every: int | None = None,
    save_every_epochs: int | None = None,
    sample_every: int | None = None,
) -> StepPlan:
    """Steps of a run from (images, repeats, is_reg) per folder and the batch settings.

    batches_per_epoch: the sampler's count when buckets split batches (overrides ceil(samples / batch)).
    Regularisation folders' own sizes do not count: they only double the samples (kohya's reg factor), unless
    `reg_samples` gives the regularisation uses per epoch (the kohya layout's balanced repeats).
    """
    train_samples = sum(images * repeats for images, repeats, is_reg in folders if not is_reg)
    samples = train_samples * reg_factor(folders) if reg_samples is None else train_samples + reg_samples
    batches = batches_per_epoch if batches_per_epoch is not None else math.ceil(samples / batch_size)
    per_epoch = math.ceil(batches / accumulation)
    if max_train_steps is not None:
        total = max_train_steps
        epochs = math.ceil(total / per_epoch) if per_epoch else 0
    else:
        total = per_epoch * epochs
    warmup = int(warmup_ratio * total) if warmup_ratio is not None else min(warmup_steps, total)
    te_stop = min(text_encoder_stop, total) if text_encoder_stop is not None else None
    return StepPlan(
        samples_per_epoch=samples,
        batches_per_epoch=batches,
        steps_per_epoch=per_epoch,
        epochs=epochs,
        total_steps=total,
        warmup_steps=warmup,
        text_encoder_stop=te_stop,
        save_steps=tuple(sorted(set(_every(save_every, total)) | set(
            e * per_epoch for e in _every(save_every_epochs, epochs) if e * per_epoch < total))),
        sample_steps=_every(sample_every, total),
    )


def kohya_gui_estimate(folders: list[tuple[int, int, bool]], batch: int, accumulation: int, epochs: int) -> int:
    """The kohya_ss GUI's max_train_steps: ceil(Σ images×repeats ÷ batch ÷ accumulation × epochs × reg factor)."""
    total = sum(images * repeats for images, repeats, is_reg in folders if not is_reg)
    return math.ceil(total / batch / accumulation * epochs * reg_factor(folders))


@dataclass
class Plan:
    """Everything `lorakit plan` shows."""

    folders: list[tuple[str, int, int, bool]]
    steps: StepPlan
    buckets: dict[str, int] = field(default_factory=dict)
    output_path: str = ""
    text_encoder: str = ""
    notes: list[str] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)  # training images per folder (sub-images, mirrors)
    warnings: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)  # the adapted modules per component and block
    sampling: bool = False  # sample prompts set: step 0 and the final step are rendered besides sample_steps
    checkpoints: str = ""  # the checkpoint_line
    layout: str = "lorakit"  # data.layout: how the folders were read
    subsets: bool = False  # kohya layout from data.subsets (sd-scripts' dataset TOML) instead of N_name folders
    uses: list[int] = field(default_factory=list)  # kohya layout: uses per folder per epoch (reg balanced)


LAYOUTS = {
    "lorakit": "lorakit (every image below the folder, recursively; folders without 'N_' repeat num_repeats times)",
    "kohya": "kohya (as sd-scripts: only 'N_name' sub-folders, not recursive, .png/.jpg/.jpeg/.webp/.bmp in lower or "
             "upper case; regularisation repeated whole up to the training count)",
    "kohya subsets": "kohya, dataset subsets (as sd-scripts' [[datasets.subsets]]: each image_dir one folder with "
                     "its own repeats, not recursive, .png/.jpg/.jpeg/.webp/.bmp in lower or upper case; "
                     "regularisation repeated whole up to the training count)",
}


def output_path(cfg: LorakitConfig) -> Path:
    """Where the final LoRA is written: <output_dir>/<run_id>/train/<output_name>.safetensors."""
    run_id = cfg.output.run_id or "<timestamp>"
    return Path(cfg.output.output_dir) / run_id / "train" / f"{cfg.output.output_name}.safetensors"


def _buckets(dataset: object) -> dict[str, int]:
    """Training examples per bucket size, read from the dataset's examples."""
    counts: dict[str, int] = {}
    for ex in getattr(dataset, "train", []):
        w, h = ex.size
        counts[f"{w}x{h}"] = counts.get(f"{w}x{h}", 0) + 1
    return dict(sorted(counts.items()))


def build_plan(cfg: LorakitConfig, dataset: object | None = None, model: object | None = None,
               processes: int = 1) -> Plan:
    """Plan the run; scans the data (no images decoded beyond what the data side does) unless `dataset` is given.

    The trainer passes the dataset it trains on, so the run executes exactly the numbers the plan shows, and the
    model it loaded (`ModelParts`), whose layers and tokenizers the plan then reads instead of building its own.
    `processes`: a run launched on several (engine/distributed.py) steps through global batches of
    train_batch_size × processes images.
    """
    from ..data.pipeline import build_dataset
    from ..engine.sample_prompts import sample_schedule  # torch-free

    t = cfg.train
    batch = t.train_batch_size * processes
    dataset = dataset or build_dataset(cfg.data, batch, t.seed, fingerprints=False)
    folders = [(str(f.path), f.images, f.repeats, f.is_reg) for f in dataset.folders]
    if cfg.data.subsets:
        folders = _subset_folders(cfg, folders)
    # sub-images and mirroring make several training examples of one image: count examples, not files
    examples = [sum(getattr(f, "buckets", {}).values()) or f.images for f in dataset.folders]
    counts = [(n, repeats, is_reg) for n, (_, _, repeats, is_reg) in zip(examples, folders)]
    layout = getattr(dataset, "layout", "lorakit")
    reg_samples = sum(ex.repeats for ex in getattr(dataset, "reg", [])) if layout == "kohya" else None
    steps = compute_steps(
        counts,
        batch,
        t.gradient_accumulation_steps,
        t.max_train_epochs,
        t.max_train_steps,
        batches_per_epoch=len(dataset.sampler),
        reg_samples=reg_samples,
        warmup_steps=t.lr_warmup_steps,
        warmup_ratio=t.lr_warmup_ratio,
        text_encoder_stop=t.stop_text_encoder_training if cfg.network.train_text_encoder else None,
        save_every=cfg.output.save_every_n_steps, save_every_epochs=cfg.output.save_every_n_epochs,
    )
    steps = replace(steps, sample_steps=sample_schedule(cfg, steps.total_steps, steps.steps_per_epoch))
    plan = Plan(folders, steps, _buckets(dataset), str(output_path(cfg)), examples=examples,
                sampling=bool(cfg.sample.prompts or cfg.sample.prompts_file),
                checkpoints=checkpoint_line(cfg, steps.total_steps), layout=layout, subsets=bool(cfg.data.subsets))
    if layout == "kohya":
        plan.uses = [f.uses for f in dataset.folders]
        plan.notes += list(getattr(dataset, "layout_notes", []))
        if cfg.data.enable_bucket and cfg.data.bucket_mode != "kohya":
            plan.notes.append("data.layout = 'kohya' with data.bucket_mode = 'traintrain': the buckets (and so the "
                              "batches per epoch) follow lorakit's rules, not sd-scripts'; set data.bucket_mode = "
                              "'kohya' for sd-scripts' buckets")
    plain = compute_steps(counts, batch, t.gradient_accumulation_steps, t.max_train_epochs, reg_samples=reg_samples)
    if plain.batches_per_epoch != steps.batches_per_epoch:
        plan.notes.append(f"buckets split the data into {steps.batches_per_epoch} batches per epoch "
                          f"({plain.batches_per_epoch} without buckets)")
    if processes > 1:
        plan.notes.append(f"{processes} processes: each step takes {batch} images ({t.train_batch_size} per process)")
    gui = kohya_gui_estimate(counts, t.train_batch_size, t.gradient_accumulation_steps, t.max_train_epochs)
    # the GUI skips its estimate when a dataset TOML (subsets) is used (kohya_gui/lora_gui.py train_model)
    if t.max_train_steps is None and gui != steps.total_steps and not cfg.data.subsets:
        plan.notes.append(f"the kohya_ss GUI would estimate {gui} steps (it rounds once over all epochs, "
                          "not per epoch)")
    if not cfg.network.train_text_encoder:
        plan.text_encoder = "frozen"
    elif steps.text_encoder_stop is None:
        plan.text_encoder = "trained to the end"
    else:
        plan.text_encoder = f"trained until step {steps.text_encoder_stop}"
    plan.warnings = data_warnings(dataset, cfg) + caption_warnings(dataset, cfg, getattr(model, "tokenizers", None))
    plan.network, problems, unread = network_table(cfg, model)
    plan.warnings += problems
    plan.notes += unread
    return plan


def _subset_folders(cfg: LorakitConfig, folders: list[tuple[str, int, int, bool]]
                    ) -> list[tuple[str, int, int, bool]]:
    """The scanned folders named by their `data.subsets[i]` key, with the subset's own num_repeats (a regularisation
    folder's records carry the balanced repeats; its uses after balancing are shown beside)."""
    index: dict[Path, int] = {}
    for i, subset in enumerate(cfg.data.subsets):
        index.setdefault(Path(subset.image_dir), i)  # a duplicated subset is skipped: the first one is scanned
    out = []
    for path, images, repeats, is_reg in folders:
        i = index.get(Path(path))
        if i is None:
            out.append((path, images, repeats, is_reg))
        else:
            out.append((f"data.subsets[{i}] {path}", images, cfg.data.subsets[i].num_repeats, is_reg))
    return out


def network_table(cfg: LorakitConfig, model: object | None = None) -> tuple[list[str], list[str], list[str]]:
    """(table lines, warnings, notes): which modules get which rank, from the model's architecture alone — a
    meta-device skeleton built from its configs, so no weights are read and the plan stays fast. A selection the
    model cannot satisfy is a warning; a model that cannot be read is only a note (its own checks report it).
    So is every module a consumer (sd-scripts, A1111, ComfyUI, diffusers) would ignore in the saved file
    (`networks.consumers`), before the user spends a run on it. A loaded `model` is read instead of a skeleton."""
    from ..errors import ConfigError

    try:
        from ..networks.consumers import consumer_warnings
        from ..networks.targets import model_skeleton, render_targets, select_targets

        plan = select_targets(model if model is not None else model_skeleton(cfg.model), cfg.network)
    except ConfigError as exc:
        return [], [f"network modules not listed: {str(exc).strip()}"], []
    except (LorakitError, OSError, ValueError, KeyError) as exc:
        return [], [], [f"network modules not listed: {str(exc).strip().splitlines()[0]}"]
    return render_targets(plan, cfg.network.network_module), consumer_warnings(plan), []


def data_warnings(dataset: object, cfg: LorakitConfig) -> list[str]:
    """What the data side found that the user should know before training (no model needed)."""
    out = list(getattr(dataset, "scan_notes", []))
    empty = [p for f in getattr(dataset, "folders", []) for p in getattr(f, "empty_captions", [])]
    if empty:
        out.append(f"{len(empty)} caption file(s) are empty (0 bytes or only spaces), so their images train with no "
                   f"caption text of their own: {some_of(empty)} — write the captions or delete the files")
    crops = getattr(dataset, "heavy_crops", [])
    if crops:
        d = cfg.data
        main = list(getattr(getattr(dataset, "buckets", None), "main", ()))
        if not d.enable_bucket:
            why = f"buckets are off (data.enable_bucket = false), so every image is cropped to " \
                  f"{d.max_size[0]}×{d.max_size[1]}"
        elif main:
            wide, tall = max(main, key=lambda b: b[0] / b[1]), min(main, key=lambda b: b[0] / b[1])
            why = f"their aspect ratio is far outside the buckets' range (widest {wide[0]}×{wide[1]}, tallest " \
                  f"{tall[0]}×{tall[1]})"
        elif d.bucket_mode == "kohya":
            why = f"bucket_no_upscale only crops them to multiples of data.bucket_reso_steps = {d.bucket_reso_steps}"
        else:
            why = f"their aspect ratio is far outside the buckets' range (long side at most " \
                  f"{d.max_aspect_ratio:g} × the short side)"
        shown = some_of(f"{c.path} ({c.size[0]}×{c.size[1]} → {c.bucket[0]}×{c.bucket[1]}, "
                       f"{round(100 * c.cropped)} % cut)" for c in crops)
        if not d.enable_bucket:
            fix = "set data.enable_bucket = true"
        elif d.bucket_mode == "kohya":
            fix = "resize them to multiples of the step yourself" if d.bucket_no_upscale else \
                "widen the bucket range (data.min_bucket_reso, data.max_bucket_reso)"
        else:
            fix = "widen the bucket range (data.max_aspect_ratio, data.min_bucket_reso)"
        out.append(f"{len(crops)} image(s) lose a fifth or more of their area to cropping: {why}: {shown} — crop "
                   f"them yourself to keep what matters, or {fix}")
    large = getattr(dataset, "large_images", [])
    if large:
        from ..data.scan import pixel_limit

        limit = pixel_limit() or 0
        shown = some_of(f"{p} ({w}×{h}, {w * h / 1e6:.0f} MP)" for p, (w, h) in large)
        out.append(f"{len(large)} image(s) are above Pillow's decompression-bomb limit ({limit / 1e6:.0f} MP) and "
                   f"are decoded at full size every time they are loaded: {shown} — shrink them, e.g. `lorakit "
                   f"prepare <folder> --out <new folder> --max-side 4096`")
    return out


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` as the text encoder sees them, start and end tokens included (never truncated)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: no "sequence too long" chatter from transformers
        return len(backend.encode(text).ids)
    return len(tokenizer.tokenize(text)) + tokenizer.num_special_tokens_to_add()


def overlong_captions(captions: dict[Path, str], tokenizers: Iterable[Any]) -> list[tuple[Path, int, int]]:
    """(image, tokens, context) of every caption longer than a tokenizer's context, most tokens cut first.

    A caption whose UTF-8 length fits the context cannot overflow (each token covers at least one byte), so it is
    not tokenized; the plan stays fast on large folders of short captions."""
    worst: dict[Path, tuple[int, int]] = {}
    for tok in tokenizers:
        limit = int(getattr(tok, "model_max_length", 0) or 0)
        if not 0 < limit < 1_000_000:  # no context length configured
            continue
        for image, text in captions.items():
            if len(text.encode("utf-8")) + 2 <= limit:
                continue
            n, before = count_tokens(tok, text), worst.get(image)
            if n > limit and (before is None or n - limit > before[0] - before[1]):
                worst[image] = (n, limit)
    return sorted(((p, n, lim) for p, (n, lim) in worst.items()), key=lambda x: (x[2] - x[1], str(x[0])))


def caption_warnings(dataset: object, cfg: LorakitConfig, tokenizers: Any = None) -> list[str]:
    """A warning when captions are longer than the text encoder's context (the rest is cut off in training);
    `tokenizers` are the loaded model's, else they are read from the model's files."""
    captions = {p: c for p, c in (dataset.captions() if hasattr(dataset, "captions") else {}).items() if c}
    if not captions:  # nothing to tokenize: the tokenizer (and the model family's libraries) is not even imported
        return []
    try:
        from ..families.tokenizers import model_tokenizers

        tokenizers = tokenizers or model_tokenizers(cfg.model)
    except (LorakitError, OSError, ValueError) as exc:
        return [f"caption lengths not checked: no tokenizer for {cfg.model.pretrained_model_name_or_path} "
                f"({str(exc).splitlines()[0]})"]
    long = overlong_captions(captions, tokenizers)
    if not long:
        return []
    image, n, limit = long[0]
    return [f"{len(long)} caption(s) are longer than the text encoder reads ({limit} tokens, start and end "
            f"included), so their ends are cut off in training; the longest, of {image}, has {n} tokens "
            f"({n - limit} cut) — shorten them, most important words first"]


def _schedule(steps: tuple[int, ...], total: int) -> str:
    """'100, 200, … (4) + final at 500'."""
    shown = ", ".join(map(str, steps[:5])) + (", …" if len(steps) > 5 else "")
    return f"{shown} ({len(steps)}) + final at {total}" if steps else f"final at {total}"


def render_plan(plan: Plan) -> list[str]:
    """The plan as console lines."""
    s = plan.steps
    layout = LAYOUTS["kohya subsets"] if plan.subsets else LAYOUTS.get(plan.layout, plan.layout)
    lines = [f"layout: {layout}", "images per subset:" if plan.subsets else "images per folder:"]
    for i, (path, images, repeats, is_reg) in enumerate(plan.folders):
        kind = "reg" if is_reg else "train"
        n = plan.examples[i] if i < len(plan.examples) else images
        shown = f"{images} images" + (f" → {n} training images (sub-images/mirroring)" if n != images else "")
        uses = plan.uses[i] if i < len(plan.uses) else n * repeats
        if uses != n * repeats:  # kohya's regularisation balance: whole repeats, then one more per image in turn
            lines.append(f"  {path}: {shown}, {uses} uses after balancing to the training count ({kind})")
        else:
            lines.append(f"  {path}: {shown} × {repeats} repeats = {uses} ({kind})")
    factor = reg_factor([(i, r, g) for _, i, r, g in plan.folders])
    lines += [
        "regularisation: as many uses as sd-scripts registers (see note)" if plan.layout == "kohya" and factor == 2
        else f"regularisation factor: {factor}",
        "buckets: " + (", ".join(f"{k} ({v})" for k, v in plan.buckets.items()) or "none"),
        f"samples per epoch: {s.samples_per_epoch}",
        f"batches per epoch: {s.batches_per_epoch}",
        f"steps per epoch: {s.steps_per_epoch}",
        f"epochs: {s.epochs}",
        f"total steps: {s.total_steps}",
        f"warm-up steps: {s.warmup_steps}",
        f"text encoder: {plan.text_encoder}",
        *plan.network,
        f"saves: {_schedule(s.save_steps, s.total_steps)}",
        samples_line(plan.sampling, s.sample_steps, s.total_steps),
        *([plan.checkpoints] if plan.checkpoints else []),
        f"output: {plan.output_path}",
    ]
    return lines + [f"note: {n}" for n in plan.notes] + [f"warning: {w}" for w in plan.warnings]


# -- modes that do not train on data.train_data_dir ------------------------------------------------------------------

DEFAULT_ITERATIONS = 500  # TrainTrain's README: iLECO and Difference converge in about 500 iterations


def stage_steps(cfg: LorakitConfig) -> list[tuple[str, int]]:
    """(stage label, steps) of an ileco or difference run, in order (torch-free: `lorakit plan` and the run share
    it). Their steps are train.max_train_steps (TrainTrain's train_iterations), 500 when unset."""
    steps = cfg.train.max_train_steps or DEFAULT_ITERATIONS
    m = cfg.mode
    if m.type == "ileco":
        return [("ileco", steps)]
    if m.type == "difference":
        stages = [] if m.first_pass_file else [("pass 1: copy machine", steps)]
        if not m.first_pass_only:
            stages.append(("pass 2: difference", m.second_pass.max_train_steps or steps))
        return stages
    raise ValueError(f"mode {m.type!r} plans from its dataset (build_plan)")


def plan_lines(cfg: LorakitConfig, processes: int = 1) -> list[str]:
    """What `lorakit plan` prints: the image plan of a run on images, or the stage lines of iLECO / Difference."""
    if cfg.mode.type in ("ileco", "difference"):
        return mode_plan_lines(cfg)
    return render_plan(build_plan(cfg, processes=processes))


def mode_plan_lines(cfg: LorakitConfig, output: Path | None = None,
                    images: dict[str, str] | None = None) -> list[str]:
    """The plan of an ileco or difference run as console lines: what it trains on, its stages, the output. The run
    passes what it knows besides: its output file, and Difference's images described (size, scaling)."""
    output = output or output_path(cfg)
    images = images or {}
    m, n, t = cfg.mode, cfg.network, cfg.train
    w, h = cfg.data.max_size
    lines = [f"mode: {m.type}"]
    if m.type == "ileco":
        lines.append(f"random latents of {w}x{h} pixels (data.resolution / data.image_size); no images")
        for pair in m.pairs():
            g = pair.guidance_scale if pair.guidance_scale is not None else m.guidance_scale
            target = repr(pair.target_prompt) if pair.target_prompt else "'' (erase)"
            lines.append(f"  edit: {pair.original_prompt!r} → {target}, guidance_scale {g:g}")
    else:
        lines += [f"{key} image: {images.get(key, path)}" for key, path in
                  (("original", m.original_image), ("target", m.target_image)) if path]
        lines.append(f"caption of both: {m.prompt!r}" if m.prompt else "caption of both: none (empty prompt)")
        if m.first_pass_file:
            lines.append(f"copy machine: loaded from {m.first_pass_file}")
    second = m.second_pass if m.type == "difference" else None
    for label, steps in stage_steps(cfg):
        is_second = second is not None and label.startswith("pass 2")
        dim = (second.network_dim if is_second and second.network_dim else n.network_dim)
        alpha = (second.network_alpha if is_second and second.network_alpha else n.network_alpha)
        lr = (second.learning_rate if is_second and second.learning_rate else t.learning_rate)
        batch = (second.train_batch_size if is_second and second.train_batch_size else t.train_batch_size)
        kind = n.network_module + (" + DoRA" if n.use_dora else "")
        lines.append(f"{label}: {steps} steps, batch {batch}, lr {lr:g}, {kind} rank {dim} alpha {alpha:g}")
    if m.type == "difference" and (m.save_first_pass or m.first_pass_only) and not m.first_pass_file:
        copy = output.with_name(f"{cfg.output.output_name}_copy.safetensors")
        lines.append(f"copy machine saved to: {copy}")
    if not (m.type == "difference" and m.first_pass_only):
        lines.append(f"output: {output}")
    from ..engine.sample_prompts import sample_schedule  # torch-free

    total = sum(steps for _, steps in stage_steps(cfg))
    lines.append(samples_line(bool(cfg.sample.prompts or cfg.sample.prompts_file), sample_schedule(cfg, total, 0),
                              total))
    lines.append(checkpoint_line(cfg, total))
    return lines


def checkpoint_line(cfg: LorakitConfig, total: int) -> str:
    """'checkpoints (for --resume): every 500 steps (3 here), at the end; the last 2 kept; also on a stop'."""
    ck = cfg.checkpoint
    when = [f"every {ck.every_n_steps} steps ({len(_every(ck.every_n_steps, total))} here)"] \
        if ck.every_n_steps else []
    when += [f"every {ck.every_n_epochs} epochs"] if ck.every_n_epochs else []
    when += ["at the end"] if ck.at_end else []
    return (f"checkpoints (for --resume): {', '.join(when) or 'only'}{'' if when else ' on a stop'}; the last "
            f"{ck.keep_last} kept{'; also on a stop' if when else ''}")


def samples_line(sampling: bool, between: tuple[int, ...], total: int) -> str:
    """'samples: at step 0, 100, 200 (2 between) + final at 300', or none."""
    if not sampling:
        return "samples: none during training"
    shown = ", ".join(map(str, between[:5])) + (", …" if len(between) > 5 else "")
    return "samples: at step 0, " + (f"{shown} ({len(between)} between), " if between else "") + \
        f"final at {total}"
