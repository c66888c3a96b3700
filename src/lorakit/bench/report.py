"""What a bench writes besides its images: metrics.csv, one grid per prompt and per seed (weights across), and
index.html, the page a user opens first (grids, the summary, the metrics table, the training loss curve)."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..io import write_text_atomic
from . import metrics
from .grid import grid, save_png
from .plan import BenchPlan
from .render import Rendered, open_image

if TYPE_CHECKING:
    from .embeddings import Embedder

COLUMNS = ["prompt", "seed", "weight", "batch", "file", "mean_abs_diff", "ssim", "sharpness", "colourfulness",
           "hist_distance"]


def measure(rendered: Sequence[Rendered], training_images: Sequence[Path] = (),
            embedder: "Embedder | None" = None) -> list[dict]:
    """One row per image: its effect against the weight-0 image of the same prompt, seed and batch index, its
    sharpness and colourfulness, and (with training images) its colour-histogram distance to them and, with an
    `embedder`, its mean and best embedding similarity to them."""
    images = {(r.prompt, r.seed, r.weight, r.batch): open_image(r.path) for r in rendered}
    train = [open_image(p) for p in training_images]
    rows = []
    for r in rendered:
        image, base = images[(r.prompt, r.seed, r.weight, r.batch)], images.get((r.prompt, r.seed, 0.0, r.batch))
        rows.append({
            "prompt": r.prompt, "seed": r.seed, "weight": r.weight, "batch": r.batch, "file": f"images/{r.path.name}",
            "mean_abs_diff": metrics.mean_abs_diff(image, base) if base is not None else None,
            "ssim": metrics.ssim(image, base) if base is not None else None,
            "sharpness": metrics.sharpness(image), "colourfulness": metrics.colourfulness(image),
            "hist_distance": metrics.histogram_distance(image, train) if train else None,
        })
    if embedder is not None and train and rows:
        from .embeddings import similarity

        shown = [images[(r.prompt, r.seed, r.weight, r.batch)] for r in rendered]  # the rows' order
        best = similarity(embedder.embed(shown), embedder.embed(train))
        for row, mean, top in zip(rows, best.mean, best.max):
            row[embedder.column], row[f"{embedder.name}_max_similarity"] = mean, top
    return rows


def columns(rows: list[dict]) -> list[str]:
    """COLUMNS, then the embedding-similarity columns when the rows have them."""
    return COLUMNS + [k for k in (rows[0] if rows else {}) if k not in COLUMNS]


def write_csv(rows: list[dict], path: Path) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
                         for k in columns(rows)})
    write_text_atomic(path, out.getvalue())


def write_grids(plan: BenchPlan, rendered: Sequence[Rendered], folder: Path) -> list[Path]:
    """grid_prompt<NN>.png (rows: seeds) and grid_seed<S>.png (rows: prompts); weights across in both. With a batch
    size above 1 the grids show each batch's first image; metrics.csv has them all."""
    by_key = {(r.prompt, r.seed, r.weight): r.path for r in rendered if r.batch == 0}
    cols = [f"w={w:g}" for w in plan.weights]
    written = []
    for p, prompt in enumerate(plan.prompts):
        cells = [[open_image(by_key[(p, s, w)]) for w in plan.weights] for s in plan.seeds]
        img = grid(cells, cols, [f"seed {s}" for s in plan.seeds], _short(prompt))
        written.append(save_png(img, folder / f"grid_prompt{p:02d}.png"))
    for s in plan.seeds:
        cells = [[open_image(by_key[(p, s, w)]) for w in plan.weights] for p in range(len(plan.prompts))]
        img = grid(cells, cols, [f"prompt {p}" for p in range(len(plan.prompts))], f"seed {s}")
        written.append(save_png(img, folder / f"grid_seed{s}.png"))
    return written


def weight_summary(rows: list[dict]) -> list[str]:
    """metrics.summary over the mean of each weight's rows."""
    weights = sorted({r["weight"] for r in rows})
    means = []
    for w in weights:
        mine = [r for r in rows if r["weight"] == w]
        means.append({"weight": w, **{k: sum(r[k] for r in mine) / len(mine)
                                      for k in ("mean_abs_diff", "ssim", "sharpness", "colourfulness")}})
    return metrics.summary(means)


def loss_curve_svg(log_csv: Path, width: int = 640, height: int = 200) -> str:
    """The training loss from a run's log.csv as an inline SVG polyline ("" when there is no log)."""
    if not log_csv.is_file():
        return ""
    with open(log_csv, newline="", encoding="utf-8") as f:
        points = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f) if r.get("loss")]
    if len(points) < 2:
        return ""
    (s0, s1), (lo, hi) = (points[0][0], points[-1][0]), (min(p[1] for p in points), max(p[1] for p in points))
    span, rise = max(s1 - s0, 1), max(hi - lo, 1e-12)
    xy = " ".join(f"{(s - s0) / span * width:.1f},{height - (v - lo) / rise * height:.1f}" for s, v in points)
    return (f'<svg class="loss" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<polyline fill="none" stroke="#c33" stroke-width="1.5" points="{xy}"/></svg>'
            f"<p>training loss, steps {s0}–{s1}: {points[0][1]:.4g} → {points[-1][1]:.4g} (min {lo:.4g})</p>")


def write_index(plan: BenchPlan, grids: list[Path], rows: list[dict], summary: list[str], loss_svg: str,
                path: Path) -> None:
    e = html.escape
    table = "".join("<tr>" + "".join(f"<td>{e(_cell(r[k]))}</td>" for k in columns(rows)) + "</tr>" for r in rows)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lorakit bench: {e(Path(plan.lora).name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} img{{max-width:100%}} td,th{{padding:2px 8px;text-align:right}}</style>
</head><body>
<h1>{e(Path(plan.lora).name)}</h1>
<p>model {e(plan.model)} · {e(plan.sampler)} ({e(plan.schedule)}) · {plan.steps} steps · cfg {plan.cfg:g} ·
{plan.width or "model"}×{plan.height or "model"} px · weights {e(", ".join(f"{w:g}" for w in plan.weights))}</p>
<h2>Summary</h2><ul>{"".join(f"<li>{e(s)}</li>" for s in summary)}</ul>
<h2>Grids</h2>{"".join(f'<figure><img src="{e(g.name)}" alt="{e(g.stem)}"><figcaption>{e(g.stem)}</figcaption></figure>' for g in grids)}
<h2>Training loss</h2>{loss_svg or "<p>no training log next to this LoRA</p>"}
<h2>Metrics</h2><table><tr>{"".join(f"<th>{c}</th>" for c in columns(rows))}</tr>{table}</table>
</body></html>
"""
    write_text_atomic(path, page)


def _cell(value: object) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."  # PIL's default font has no "…"
