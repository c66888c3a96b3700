"""The Queue tab: the jobs table, and moving, cancelling and stopping jobs (thin over lorakit.jobs)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import LorakitError
from ..jobs import runner
from ..jobs.store import ACTIVE, STATES, JobStore
from .i18n import t

COLUMNS = ("id", "name", "state", "run_folder", "note")
POLL_S = 2.0


def jobs_frame(store: JobStore, lang: str, everything: bool = False) -> pd.DataFrame:
    """Running and queued jobs in the order they run (with `everything`: finished ones too)."""
    rows = [(j.id, j.name, t(f"queue.state.{j.state}", lang), j.run_dir or "", j.message or "")
            for j in store.jobs(STATES if everything else ACTIVE)]
    return pd.DataFrame(rows, columns=[t(f"queue.column.{c}", lang) for c in COLUMNS])


def queued_place(store: JobStore, job_id: int) -> int:
    """A queued job's place (1 = next); LorakitError when it is not queued."""
    order = [j.id for j in store.jobs(("queued",))]
    if job_id not in order:
        raise LorakitError(f"job {job_id} is not queued", "pick a job id from the table")
    return order.index(job_id) + 1


def act(store: JobStore, action: str, job_id: int, place: int | None = None) -> None:
    """One queue action on a job: up, down, move (to `place`), cancel or stop."""
    if action == "up":
        store.move(job_id, max(1, queued_place(store, job_id) - 1))
    elif action == "down":
        store.move(job_id, queued_place(store, job_id) + 1)
    elif action == "move":
        store.move(job_id, int(place or 1))
    elif action == "cancel":
        store.cancel(job_id)
    elif action == "stop":
        runner.stop_running(store, job_id)


def build_queue_tab(lang: str, home: Path) -> None:
    """The Queue tab's components and events, in the current gr.Blocks."""
    store = JobStore(home)
    with gr.Tab(t("queue.tab", lang), id="queue"):
        with gr.Row():
            everything = gr.Checkbox(False, label=t("queue.show_all", lang), elem_id="queue-all")
            refresh = gr.Button(t("queue.refresh", lang), elem_id="queue-refresh")
        table = gr.Dataframe(jobs_frame(store, lang), interactive=False, elem_id="queue-table")
        with gr.Row():
            job_id = gr.Number(label=t("queue.job_id", lang), precision=0, elem_id="queue-job")
            place = gr.Number(1, label=t("queue.place", lang), precision=0, minimum=1, elem_id="queue-place")
        with gr.Row():
            buttons = {action: gr.Button(t(f"queue.{action}", lang), elem_id=f"queue-{action}",
                                         variant="stop" if action in ("cancel", "stop") else "secondary")
                       for action in ("up", "down", "move", "cancel", "stop")}
        status = gr.Markdown(elem_id="queue-status")
        timer = gr.Timer(POLL_S)

    def on_action(action: str, job: float | None, to: float | None, show_all: bool):
        if job is None:
            return t("queue.pick_job", lang), jobs_frame(store, lang, show_all)
        try:
            act(store, action, int(job), int(to) if to else None)
        except LorakitError as exc:
            return f"**{exc.message}**" + (f" — {exc.hint}" if getattr(exc, "hint", None) else ""), \
                jobs_frame(store, lang, show_all)
        return t(f"queue.done.{action}", lang, id=int(job)), jobs_frame(store, lang, show_all)

    for action, button in buttons.items():
        button.click(lambda j, p, a, _action=action: on_action(_action, j, p, a), [job_id, place, everything],
                     [status, table])
    refresh.click(lambda a: jobs_frame(store, lang, a), everything, table)
    everything.change(lambda a: jobs_frame(store, lang, a), everything, table)
    timer.tick(lambda a: jobs_frame(store, lang, a), everything, table)
