"""The Runs tab: run folders (the queue's output folders and one the user types), newest first; for the chosen run
its config snapshot, loss / validation-loss and learning-rate plots from train/log.csv, the samples, the bench
page and the final LoRA to download. Reads files only: nothing here trains or changes a run."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import gradio as gr
import pandas as pd

from ..jobs.store import JobStore
from ..runs import final_lora
from . import run_files
from .i18n import t

DEFAULT_FOLDER = "runs"


def queue_output_dirs(home: Path) -> list[Path]:
    """The output folders of the queue's jobs (the parents of their run folders), in queue order, once each."""
    folders: dict[Path, None] = {}
    for job in JobStore(home).jobs():
        if job.run_dir:
            folders.setdefault(Path(job.run_dir).parent, None)
    return list(folders)


def run_folders(home: Path, typed: str) -> list[Path]:
    return [Path(typed.strip() or DEFAULT_FOLDER), *queue_output_dirs(home)]


def plot_frame(log: dict[str, list], names: tuple[str, ...]) -> pd.DataFrame:
    """Long-format rows (step, value, series) for a line plot with one line per column in `names`."""
    return pd.DataFrame(run_files.series(log, names), columns=["step", "value", "series"])


def file_url(path: Path) -> str:
    """Gradio's route for a file on disk (served when the app allows its folder)."""
    return f"/gradio_api/file={quote(str(path.resolve()))}"


def build_runs_tab(lang: str, home: Path) -> None:
    """The Runs tab's components and events, in the current gr.Blocks."""
    with gr.Tab(t("runs.tab", lang), id="runs"):
        with gr.Row():
            folder = gr.Textbox(DEFAULT_FOLDER, label=t("runs.folder", lang), info=t("runs.folder_info", lang),
                                scale=4, elem_id="runs-folder")
            refresh = gr.Button(t("runs.refresh", lang), scale=1, elem_id="runs-refresh")
        run = gr.Dropdown([], label=t("runs.run", lang), elem_id="runs-run")
        status = gr.Markdown(elem_id="runs-status")
        with gr.Row():
            loss_plot = gr.LinePlot(x="step", y="value", color="series",
                                    label=t("runs.loss_plot", lang), elem_id="runs-loss-plot")
            lr_plot = gr.LinePlot(x="step", y="value", color="series", label=t("runs.lr_plot", lang),
                                  elem_id="runs-lr-plot")
        with gr.Row():
            lora = gr.File(label=t("runs.lora", lang), interactive=False, elem_id="runs-lora")
            bench = gr.Markdown(elem_id="runs-bench")
        gallery = gr.Gallery(label=t("runs.samples", lang), columns=4, height="auto", elem_id="runs-samples")
        config = gr.Code(label=t("runs.config", lang), language=None, interactive=False, elem_id="runs-config")

        def list_choices(typed: str) -> tuple[dict, str]:
            folders = run_folders(home, typed)
            runs = run_files.list_runs(folders)
            choices = [(r.label, str(r.path)) for r in runs]
            message = (t("runs.count", lang, count=len(runs)) if runs else
                       t("runs.none", lang, folders=", ".join(str(f) for f in folders)))
            return gr.update(choices=choices, value=choices[0][1] if choices else None), message

        def show_run(chosen: str | None) -> tuple:
            if not chosen:
                return "", None, None, None, "", [], ""
            path = Path(chosen)
            log = run_files.read_log(path / "train" / "log.csv")
            losses = [v for v in log["loss"] if v is not None]
            summary = (t("runs.summary", lang, run=path.name, steps=len(losses), loss=f"{losses[-1]:.4f}")
                       if losses else t("runs.no_log", lang, run=path.name))
            final = final_lora(path)
            final = final if final is not None and final.is_file() else None  # a peft folder is no download
            page = run_files.bench_page(path)
            links = [t("runs.bench", lang, url=file_url(page))] if page else []
            if final is None:
                links.append(t("runs.no_lora", lang, run=path.name))
            return (summary, plot_frame(log, ("loss", "val_loss")), plot_frame(log, ("lr",)),
                    str(final) if final else None, "\n\n".join(links),
                    [str(p) for p in run_files.samples(path)], run_files.config_text(path))

        outputs = [status, loss_plot, lr_plot, lora, bench, gallery, config]
        listed = gr.on([refresh.click, folder.submit], list_choices, inputs=folder, outputs=[run, status])
        listed.then(show_run, inputs=run, outputs=outputs)
        run.input(show_run, inputs=run, outputs=outputs)
        root = gr.context.Context.root_block
        if root is not None:  # fill the list when the page opens
            root.load(list_choices, inputs=folder, outputs=[run, status]).then(
                show_run, inputs=run, outputs=outputs)
