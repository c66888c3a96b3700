"""The Plot tab (TrainTrain's Plot panel): a CSV training log by path, or with no path the newest run's
train/log.csv (a running job's first), as a loss / validation-loss plot and a learning-rate plot."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..jobs.store import JobStore
from . import run_files
from .i18n import t
from .runs_tab import DEFAULT_FOLDER, plot_frame, queue_output_dirs

LOSS_SERIES = ("loss", "val_loss")


def current_log(home: Path) -> Path | None:
    """The running job's log, else the newest run's log in the queue's output folders and runs/."""
    for job in JobStore(home).jobs(("running",)):
        log = Path(job.run_dir or "") / "train" / "log.csv"
        if job.run_dir and log.is_file():
            return log
    return run_files.latest_log([Path(DEFAULT_FOLDER), *queue_output_dirs(home)])


def build_plot_tab(lang: str, home: Path) -> None:
    """The Plot tab's components and events, in the current gr.Blocks."""
    with gr.Tab(t("plot.tab", lang), id="plot"):
        with gr.Row():
            path = gr.Textbox(label=t("plot.path", lang), info=t("plot.path_info", lang), scale=4,
                              elem_id="plot-path")
            show = gr.Button(t("plot.show", lang), variant="primary", scale=1, elem_id="plot-show")
        lines = gr.CheckboxGroup(list(LOSS_SERIES), value=list(LOSS_SERIES), label=t("plot.series", lang),
                                 elem_id="plot-series")
        status = gr.Markdown(elem_id="plot-status")
        loss_plot = gr.LinePlot(x="step", y="value", color="series",
                                label=t("plot.loss_plot", lang),
                                elem_id="plot-loss")
        lr_plot = gr.LinePlot(x="step", y="value", color="series", label=t("plot.lr_plot", lang), elem_id="plot-lr")

        def draw(typed: str, chosen: list[str]) -> tuple:
            log_path = Path(typed.strip()).expanduser() if typed.strip() else current_log(home)
            if log_path is None:
                return t("plot.no_runs", lang), None, None
            if not log_path.is_file():
                return t("plot.missing", lang, path=log_path), None, None
            log = run_files.read_log(log_path)
            names = tuple(n for n in LOSS_SERIES if n in chosen)
            return (t("plot.status", lang, path=log_path, rows=len(log["step"])), plot_frame(log, names),
                    plot_frame(log, ("lr",)))

        gr.on([show.click, path.submit, lines.input], draw, inputs=[path, lines], outputs=[status, loss_plot, lr_plot])
