"""The Train tab: a preset, the Simple form or the full config, validation with every error, the resolved config
and plan, Start / Stop / Add to queue, and live progress read from the running job's events.

The UI never trains in its own process: Start queues the job (lorakit.jobs) and makes sure a detached queue runner
(`lorakit queue run --watch`) is running, so closing the browser or the UI does not stop a run.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..config.loader import ResolvedConfig, build_layers, resolve, resolve_checked
from ..config.presets import list_presets, saved_presets, user_presets_dir
from ..config.snapshot import config_toml
from ..errors import ConfigError, LorakitError
from ..jobs import runner
from ..jobs.store import Job, JobStore
from .form import MODE_TYPE_KEY, FieldSpec, fields_of, form_layer, simple_layer, simple_specs, values_from_config
from .i18n import field_help, field_label, section_title, t

DEFAULT_PRESET = "sd15-character"
POLL_S = 1.0


# --- pure helpers (tested without a browser) ---------------------------------------------------------------------

def resolve_form(source: str, preset: str | None, specs: list[FieldSpec], values: dict[str, Any],
                 check_paths: bool = True) -> ResolvedConfig:
    """The run's config: the Simple tab laid over the preset, or the full form as it is."""
    if source == "simple":
        layers = build_layers(preset=preset or DEFAULT_PRESET) + [simple_layer(values)]  # a name or a saved file
    else:
        layers = [form_layer(specs, values)]
    return resolve_checked(layers, check_paths=check_paths)


def problems_markdown(exc: LorakitError, lang: str) -> str:
    problems = exc.problems if isinstance(exc, ConfigError) else [exc.message]
    lines = [f"**{t('train.errors', lang, count=len(problems))}**"] + [f"- `{p}`" for p in problems]
    hint = getattr(exc, "hint", None)
    return "\n".join(lines + ([f"\n{hint}"] if hint else []))


def plan_text(resolved: ResolvedConfig) -> str:
    """What `lorakit plan` prints for this config (the config/plan.py functions it calls)."""
    from ..config.plan import plan_lines

    try:
        lines = plan_lines(resolved.config)
    except (LorakitError, OSError, ValueError) as exc:
        lines = [f"(no plan: {exc})"]
    return "\n".join(lines + [f"warning: {w}" for w in resolved.warnings])


def queue_config(home: Path, resolved: ResolvedConfig) -> Job:
    """Add the resolved config to the queue (written to <home>/ui/<name>-<time>.toml, the job's source)."""
    folder = home / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    path = folder / f"{resolved.config.output.output_name}-{stamp}.toml"
    path.write_text(config_toml(resolved.config), encoding="utf-8")
    return runner.add_job(JobStore(home), files=[path])


def watched_job(store: JobStore, mine: int | None) -> Job | None:
    """The job to show: the running one, else the one this page started last."""
    running = store.jobs(("running",))
    if running:
        return running[0]
    if mine is not None:
        try:
            return store.get(mine)
        except LorakitError:
            return None
    return None


def progress(store: JobStore, job: Job | None, lang: str) -> tuple[str, pd.DataFrame]:
    """A progress line (step/total, loss, it/s, ETA) and the loss curve of a job's events."""
    frame = pd.DataFrame({"step": pd.Series(dtype=int), "loss": pd.Series(dtype=float)})
    if job is None:
        return t("train.no_job", lang), frame
    steps = [e for e in runner.events(store, job) if e.get("event") == "step"]
    head = t("train.job_state", lang, id=job.id, name=job.name, state=t(f"queue.state.{job.state}", lang))
    if job.message:
        head += f" — {job.message}"
    if not steps:
        return head, frame
    last = steps[-1]
    losses = [(e["step"], e["loss"]) for e in steps if e.get("loss") is not None]
    if losses:
        frame = pd.DataFrame(losses, columns=["step", "loss"])
    rate = float(last.get("it_per_s") or 0)
    eta = (last["total"] - last["step"]) / rate if rate > 0 else None
    eta_text = "-" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
    loss = f"{losses[-1][1]:.4f}" if losses else "-"
    line = t("train.progress", lang, step=last["step"], total=last["total"], loss=loss, rate=f"{rate:.2f}",
             eta=eta_text)
    return f"{head}\n\n{line}", frame


def save_preset(home: Path, name_text: str, resolved: ResolvedConfig) -> Path:
    """Write the config as <home>/presets/<name>.toml (listed in the preset menu from then on); a plain name only,
    and never over an existing file."""
    name = name_text.strip().removesuffix(".toml")
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise LorakitError(f"preset name {name_text!r}: a plain name (no folders)", "e.g. mychar-v2")
    path = user_presets_dir(home) / f"{name}.toml"
    if path.exists():
        raise LorakitError(f"{path} already exists; it is not overwritten", "choose another name")
    with open(path, "x", encoding="utf-8") as f:
        f.write(config_toml(resolved.config))
    return path


def preset_choices(home: Path) -> list[tuple[str, str]]:
    """The shipped presets, then the ones saved from the UI (by their file, which the loader reads as a layer)."""
    return [(name, name) for name in list_presets()] + [(f"{p.stem} (saved)", str(p)) for p in saved_presets(home)]


# --- the tab -----------------------------------------------------------------------------------------------------

def _widget(spec: FieldSpec, lang: str, value: Any, elem_id: str) -> gr.components.Component:
    section, name = ".".join(spec.path[:-1]), spec.path[-1]
    common = dict(label=field_label(section, name, lang), info=field_help(section, name, lang) or None,
                  elem_id=elem_id)
    if spec.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if spec.kind == "choice":
        return gr.Dropdown(spec.choice_labels, value=value, **common)
    if spec.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if spec.kind == "int" else None, **common)
    if spec.kind in ("list", "tables"):
        return gr.Textbox(value=value, lines=2, **common)
    return gr.Textbox(value=value, **common)


def _elem_id(prefix: str, key: str) -> str:
    return prefix + key.replace(".", "-").replace("(", "-").replace(")", "")


def build_train_tab(lang: str, home: Path) -> None:
    """The Train tab's components and events, in the current gr.Blocks."""
    specs = fields_of()
    simple = simple_specs(specs)
    store = JobStore(home)
    presets = preset_choices(home)
    start_values = values_from_config(specs, resolve(build_layers(preset=DEFAULT_PRESET)))
    with gr.Tab(t("train.tab", lang), id="train"):
        with gr.Row():
            preset = gr.Dropdown(presets, value=DEFAULT_PRESET, label=t("train.preset", lang),
                                 info=t("train.preset_info", lang), elem_id="train-preset", scale=3)
            load = gr.Button(t("train.load_preset", lang), elem_id="train-load", scale=1)
        source = gr.State("simple")
        with gr.Tabs():
            with gr.Tab(t("train.simple", lang), id="train-simple") as simple_tab:
                gr.Markdown(t("train.simple_info", lang))
                simple_boxes = [_widget(s, lang, start_values[s.key], _elem_id("simple-", s.key)) for s in simple]
            with gr.Tab(t("train.full", lang), id="train-full") as full_tab:
                boxes: dict[str, gr.components.Component] = {}
                mode_groups: dict[str, gr.Group] = {}
                for section in dict.fromkeys(s.section for s in specs):
                    title = section_title(section if section != "version" else "", lang)
                    with gr.Accordion(title, open=section in ("model", "network", "data", "train")):
                        for spec in (s for s in specs if s.section == section and s.mode is None):
                            boxes[spec.key] = _widget(spec, lang, start_values[spec.key], _elem_id("field-", spec.key))
                        for mode_type in dict.fromkeys(s.mode for s in specs if s.section == section and s.mode):
                            with gr.Group(visible=mode_type == start_values[MODE_TYPE_KEY]) as group:
                                for spec in (s for s in specs if s.mode == mode_type):
                                    boxes[spec.key] = _widget(spec, lang, start_values[spec.key],
                                                              _elem_id("field-", spec.key))
                            mode_groups[mode_type] = group
        with gr.Row():
            validate = gr.Button(t("train.validate", lang), elem_id="train-validate")
            start = gr.Button(t("train.start", lang), variant="primary", elem_id="train-start")
            stop = gr.Button(t("train.stop", lang), variant="stop", visible=False, elem_id="train-stop")
            enqueue = gr.Button(t("train.add_to_queue", lang), elem_id="train-enqueue")
        status = gr.Markdown(elem_id="train-status")
        with gr.Row():
            save_path = gr.Textbox(label=t("train.save_path", lang), info=t("train.save_path_info", lang),
                                   elem_id="train-save-path", scale=3)
            save = gr.Button(t("train.save_preset", lang), elem_id="train-save", scale=1)
        with gr.Accordion(t("train.resolved", lang), open=False):
            resolved_toml = gr.Code(language=None, label=t("train.resolved_toml", lang), elem_id="train-toml")
            plan = gr.Textbox(label=t("train.plan", lang), lines=8, elem_id="train-plan")
        progress_text = gr.Markdown(t("train.no_job", lang), elem_id="train-progress")
        loss_plot = gr.LinePlot(x="step", y="loss", label=t("train.loss_plot", lang), elem_id="train-loss")
        mine = gr.State(None)
        timer = gr.Timer(POLL_S)

    full_inputs = list(boxes.values())
    keys = list(boxes)

    def gather(src: str, preset_name: str, *values: Any) -> ResolvedConfig:
        simple_values = dict(zip([s.key for s in simple], values[:len(simple)]))
        full_values = dict(zip(keys, values[len(simple):]))
        return resolve_form(src, preset_name, specs, simple_values if src == "simple" else full_values)

    def on_load(preset_name: str):
        config = resolve(build_layers(preset=preset_name))
        values = values_from_config(specs, config)
        shown = [gr.update(visible=m == config.mode.type) for m in mode_groups]
        return ([values[s.key] for s in simple] + [values[k] for k in keys] + shown
                + [t("train.loaded", lang, preset=preset_name)])

    def on_validate(*args: Any):
        try:
            resolved = gather(*args)
        except LorakitError as exc:
            return problems_markdown(exc, lang), "", ""
        return t("train.valid", lang), config_toml(resolved.config), plan_text(resolved)

    def on_queue(start_now: bool, *args: Any):
        try:
            resolved = gather(*args)
            job = queue_config(home, resolved)
            started = runner.ensure_runner(home)  # queued jobs never wait for a runner nobody starts
        except LorakitError as exc:
            return problems_markdown(exc, lang), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        note = t("train.queued", lang, id=job.id, name=job.name) + (
            " " + t("train.runner_started", lang) if started else "")
        if not start_now:
            return note, config_toml(resolved.config), plan_text(resolved), gr.update(), gr.update(), gr.update()
        return (note, config_toml(resolved.config), plan_text(resolved), job.id, gr.update(visible=False),
                gr.update(visible=True))

    def on_stop(mine_id: int | None):
        runner.sweep_orphans(store)
        job = watched_job(store, mine_id)
        try:
            if job is not None and job.state == "running":
                runner.stop_running(store, job.id)
                return t("train.stopping", lang, id=job.id)
            if job is not None and job.state == "queued":
                store.cancel(job.id)
                return t("train.cancelled", lang, id=job.id)
        except LorakitError as exc:
            return problems_markdown(exc, lang)
        return t("train.no_job", lang)

    def on_tick(mine_id: int | None):
        runner.sweep_orphans(store)
        job = watched_job(store, mine_id)
        text, frame = progress(store, job, lang)
        active = job is not None and job.state in ("queued", "running")
        return text, frame, gr.update(visible=not active), gr.update(visible=active)

    def on_save(name_text: str, *args: Any):
        try:
            path = save_preset(home, name_text, gather(*args))
        except LorakitError as exc:
            return problems_markdown(exc, lang), gr.update()
        return t("train.saved", lang, path=str(path)), gr.update(choices=preset_choices(home))

    def on_mode(mode_type: str):
        return [gr.update(visible=m == mode_type) for m in mode_groups]

    form_inputs = [source, preset] + simple_boxes + full_inputs
    simple_tab.select(lambda: "simple", None, source)
    full_tab.select(lambda: "full", None, source)
    load.click(on_load, preset, simple_boxes + full_inputs + list(mode_groups.values()) + [status])
    # choosing a preset loads it at once: the Simple boxes never carry another preset's values into a run
    preset.change(on_load, preset, simple_boxes + full_inputs + list(mode_groups.values()) + [status])
    boxes[MODE_TYPE_KEY].change(on_mode, boxes[MODE_TYPE_KEY], list(mode_groups.values()))
    validate.click(on_validate, form_inputs, [status, resolved_toml, plan])
    start.click(lambda *a: on_queue(True, *a), form_inputs, [status, resolved_toml, plan, mine, start, stop])
    enqueue.click(lambda *a: on_queue(False, *a), form_inputs, [status, resolved_toml, plan, mine, start, stop])
    stop.click(on_stop, mine, status)
    save.click(on_save, [save_path] + form_inputs, [status, preset])
    timer.tick(on_tick, mine, [progress_text, loss_plot, start, stop])
