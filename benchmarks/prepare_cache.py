"""Throughput of `prepare` and of the latent disk cache on a generated folder. Prints numbers; asserts nothing.

    .venv/bin/python benchmarks/prepare_cache.py [--images 500] [--resolution 256] [--device cpu|cuda]

Steps timed: (1) prepare a fresh raw folder, (2) prepare again (incremental: everything unchanged), (3) plan the
dataset and fill the latent cache with a tiny VAE, (4) the same fill again (a full hit: the VAE is never loaded).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from lorakit.data.cache import TensorCache, fill_latents
from lorakit.data.pipeline import build_dataset
from lorakit.data.preprocess import PrepareOptions, prepare
from lorakit.data.settings import DataSection

SIZES = [(768, 512), (512, 768), (640, 640), (1024, 768), (600, 900), (800, 450)]


def _picture(i: int) -> Image.Image:
    """A photo-like picture: smooth gradients, a few blocks, a little grain."""
    rng = np.random.default_rng(i)
    w, h = SIZES[i % len(SIZES)]
    xs = 60 * np.sin(np.arange(w, dtype=np.float32)[:, None] / rng.uniform(20, 90) + rng.uniform(0, 6, 3))
    ys = 40 * np.cos(np.arange(h, dtype=np.float32)[:, None, None] / rng.uniform(20, 90))
    base = rng.uniform(40, 200, 3).astype(np.float32) + xs[None] + ys
    cells = rng.integers(0, 2, (6, 6, 1)) * rng.uniform(-50, 50)
    base += np.kron(cells, np.ones((h // 6 + 1, w // 6 + 1, 1)))[:h, :w].astype(np.float32)
    base += rng.integers(-6, 7, (h, w, 1)).astype(np.float32)
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def generate(raw: Path, count: int, workers: int) -> None:
    """`count` pictures in three repeat folders and three formats, each with a caption."""
    def write(i: int) -> None:
        folder = raw / ("10_char" if i % 3 == 0 else "2_style" if i % 3 == 1 else "misc")
        folder.mkdir(parents=True, exist_ok=True)
        _picture(i).save(folder / f"img{i:05d}.{('jpg', 'png', 'webp')[i % 3]}", quality=90)
        (folder / f"img{i:05d}.txt").write_text(f"tag{i % 7}, tag{i % 11}, scene", encoding="utf-8")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(write, range(count)))


def tiny_vae(device: str) -> torch.nn.Module:
    """The tiny AutoencoderKL from lorakit.families.tiny if present, else a small config of our own."""
    from diffusers import AutoencoderKL

    try:
        from lorakit.families.tiny import tiny_vae_config

        config = tiny_vae_config()
    except ImportError:
        config = dict(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                      sample_size=64, layers_per_block=1)
    torch.manual_seed(0)
    return AutoencoderKL(**config).to(device).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--resolution", type=int, default=256, help="training resolution for the latent pass")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    console = Console()
    work = args.dir or Path(tempfile.mkdtemp(prefix="lorakit-bench-"))
    raw, out, cache_dir = work / "raw", work / "normalized", work / "cache"

    t0 = time.perf_counter()
    generate(raw, args.images, args.workers)
    console.print(f"generated {args.images} images in {time.perf_counter() - t0:.1f} s under {work}")

    rows: list[tuple[str, float, int]] = []
    opts = PrepareOptions(workers=args.workers)
    t0 = time.perf_counter()
    report = prepare(raw, out, opts)
    rows.append(("prepare (fresh)", time.perf_counter() - t0, report.written))
    t0 = time.perf_counter()
    again = prepare(raw, out, opts)
    rows.append(("prepare (re-run, unchanged)", time.perf_counter() - t0, again.unchanged))

    data = DataSection(train_data_dir=str(out), resolution=args.resolution, min_bucket_reso=args.resolution // 2)
    t0 = time.perf_counter()
    plan = build_dataset(data, args.batch_size, 0)
    rows.append(("scan + buckets + hashes", time.perf_counter() - t0, len(plan.train)))

    cache = TensorCache(cache_dir, "latents")
    loads = {"n": 0}

    def load_encoder():
        loads["n"] += 1
        vae = tiny_vae(args.device)

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            return vae.encode(pixels.to(args.device)).latent_dist.mean * 0.18215

        return encode

    model_id = f"bench-tiny-vae:{args.device}"
    t0 = time.perf_counter()
    encoded = fill_latents(cache, plan.train, model_id, load_encoder, batch_size=args.batch_size,
                           workers=args.workers)
    rows.append(("latent cache (cold)", time.perf_counter() - t0, encoded))
    t0 = time.perf_counter()
    encoded = fill_latents(cache, plan.train, model_id, load_encoder, batch_size=args.batch_size)
    rows.append((f"latent cache (warm, VAE loads: {loads['n'] - 1})", time.perf_counter() - t0, len(plan.train)))

    table = Table(title=f"prepare + cache, {args.images} images, device {args.device}, {args.workers} workers")
    for col in ("step", "seconds", "items", "items/s"):
        table.add_column(col, justify="right" if col != "step" else "left")
    for name, seconds, items in rows:
        table.add_row(name, f"{seconds:.2f}", str(items), f"{items / seconds:.1f}" if seconds else "-")
    console.print(table)
    console.print(f"rejected {len(report.rejected)}, warnings {len(report.warnings)}; buckets "
                  f"{sorted({ex.size for ex in plan.train})}")


if __name__ == "__main__":
    main()
