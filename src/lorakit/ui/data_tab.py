"""The Dataset tab: prepare a raw image folder (api.prepare: kept and rejected counts, rejected files with their
reasons) and inspect a dataset folder as training would scan it (api.inspect_dataset: folders with repeats and
captions, buckets, caption samples), as `lorakit prepare` and `lorakit dataset inspect` print them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import api
from ..data.preprocess import PrepareOptions
from ..data.settings import DataSection
from ..errors import LorakitError
from .i18n import t

CAPTION_SAMPLES = 8  # caption examples shown per inspection


def _error(lang: str, exc: Exception) -> str:
    hint = getattr(exc, "hint", "")
    return t("data.error", lang, message=f"{exc}" + (f" ({hint})" if hint else ""))


def prepare_folder(lang: str, raw: str, out: str, max_side: float, min_side: float, dedupe: bool) -> tuple:
    """Run api.prepare; (summary markdown, rejected rows)."""
    empty = pd.DataFrame(columns=[t("data.file", lang), t("data.reason", lang)])
    if not raw.strip() or not out.strip():
        return t("data.need_folder", lang), empty
    options = PrepareOptions(max_side=int(max_side) or None, min_side=int(min_side), dedupe=dedupe)
    try:
        report = api.prepare(Path(raw.strip()), Path(out.strip()), options)
    except (LorakitError, OSError, ValueError) as exc:
        return _error(lang, exc), empty
    text = t("data.prepared", lang, kept=report.ok, rejected=len(report.rejected), written=report.written,
             unchanged=report.unchanged, log=report.log_path)
    if report.warnings:
        text += f"\n\n**{t('data.warnings', lang)}**\n\n" + "\n".join(f"- {w}" for w in report.warnings)
    rows = [[r.source, r.reason] for r in report.rejected]
    return text, pd.DataFrame(rows, columns=list(empty.columns))


def inspect_folder(lang: str, folder: str) -> tuple:
    """Run api.inspect_dataset at batch size 1; (summary, folders table, buckets table, caption samples)."""
    if not folder.strip():
        return t("data.need_folder", lang), None, None, ""
    try:
        plan = api.inspect_dataset(DataSection(train_data_dir=folder.strip()))
    except (LorakitError, OSError, ValueError) as exc:
        return _error(lang, exc), None, None, ""
    folders = pd.DataFrame(
        [[str(f.path), f.images, f.repeats, "reg" if f.is_reg else "train", f.captions_found, f.captions_missing]
         for f in plan.folders],
        columns=[t(f"data.{k}", lang) for k in ("folder", "images", "repeats", "kind", "captions", "missing")])
    uses = plan.sampler.bucket_counts() if hasattr(plan.sampler, "bucket_counts") else Counter()
    distinct = Counter(ex.size for ex in plan.train + plan.reg)
    buckets = pd.DataFrame(
        [[f"{b[0]}×{b[1]}", distinct[b], uses.get(b, 0)] for b in sorted(distinct, key=lambda s: (s[0] / s[1], s))],
        columns=[t(f"data.{k}", lang) for k in ("bucket", "examples", "per_epoch")])
    captions = "\n".join(f"- `{ex.image.name}`: {ex.caption}" for ex in plan.train[:CAPTION_SAMPLES])
    summary = t("data.summary", lang, images=sum(f.images for f in plan.folders), folders=len(plan.folders),
                steps=len(plan.sampler))
    return summary, folders, buckets, captions


def build_data_tab(lang: str) -> None:
    """The Dataset tab's components and events, in the current gr.Blocks."""
    with gr.Tab(t("data.tab", lang), id="data"):
        gr.Markdown(f"### {t('data.prepare_title', lang)}")
        with gr.Row():
            raw = gr.Textbox(label=t("data.raw_dir", lang), elem_id="data-raw")
            out = gr.Textbox(label=t("data.out_dir", lang), elem_id="data-out")
        with gr.Row():
            max_side = gr.Number(0, label=t("data.max_side", lang), precision=0, minimum=0)
            min_side = gr.Number(256, label=t("data.min_side", lang), precision=0, minimum=1)
            dedupe = gr.Checkbox(True, label=t("data.dedupe", lang))
        prepare = gr.Button(t("data.prepare", lang), variant="primary", elem_id="data-prepare")
        prepared = gr.Markdown(elem_id="data-prepared")
        rejected = gr.Dataframe(interactive=False, elem_id="data-rejected")

        gr.Markdown(f"### {t('data.inspect_title', lang)}")
        with gr.Row():
            folder = gr.Textbox(label=t("data.data_dir", lang), scale=4, elem_id="data-folder")
            inspect = gr.Button(t("data.inspect", lang), variant="primary", scale=1, elem_id="data-inspect")
        summary = gr.Markdown(elem_id="data-summary")
        folders = gr.Dataframe(interactive=False, elem_id="data-folders")
        buckets = gr.Dataframe(interactive=False, elem_id="data-buckets")
        gr.Markdown(f"#### {t('data.caption_samples', lang)}")
        captions = gr.Markdown(elem_id="data-captions")

        prepare.click(lambda *a: prepare_folder(lang, *a), inputs=[raw, out, max_side, min_side, dedupe],
                      outputs=[prepared, rejected])
        gr.on([inspect.click, folder.submit], lambda f: inspect_folder(lang, f), inputs=folder,
              outputs=[summary, folders, buckets, captions])
