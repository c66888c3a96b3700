"""Size and write/read time of a resume checkpoint (checkpoints/step-<N>/), against the LoRA file of the same run.

A real run trains a few AdamW steps (so the optimizer holds its moments) and ends with its at-end checkpoint; that
call of the engine's own `Run._checkpoint` (gather the state, `write_checkpoint` with fsync, prune) is repeated
`--repeats` times, the folder removed between writes, and `read_checkpoint` is timed on the one kept. Prints each
file's size, the total, the ratio to the LoRA (output.save_precision fp16), median times and the peak extra
resident memory of a write (Linux: VmHWM reset through /proc/self/clear_refs; elsewhere n/a). Reads find the files
in the page cache (the write just put them there): a cold read from disk is slower.

Run: `python benchmarks/checkpoint.py` (tiny-sd1, rank 4); real architectures with random weights:
`--model random-sd15 --rank 16`, `--model random-sd15 --rank 32`, `--model random-sdxl --rank 16`. The resolution
only sets the training steps' cost, not the checkpoint: 64 px keeps them cheap on a CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, resolve  # noqa: E402
from lorakit.demo import write_sample_images  # noqa: E402
from lorakit.engine import state as ckstate  # noqa: E402
from lorakit.engine.trainer import Run  # noqa: E402


def _status(key: str) -> int | None:
    """A /proc/self/status value in bytes (VmRSS, VmHWM); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Set the peak resident size (VmHWM) back to the current one (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Probe:
    """Wraps the engine's checkpoint path: times each stage of it and repeats the whole call."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.total: list[float] = []  # Run._checkpoint: gather + write + prune
        self.write: list[float] = []  # write_checkpoint alone
        self.fsync: list[float] = []  # of which fsync of the files
        self.extra_rss: list[int] = []
        self.files: dict[str, list[tuple[float, float]]] = {}  # file → (write, fsync) seconds of each write
        self.path: Path | None = None
        self._mark = 0.0
        self._fsync_now = 0.0

    def install(self) -> None:
        real_checkpoint, real_write, real_fsync = Run._checkpoint, ckstate.write_checkpoint, ckstate._fsync
        probe = self

        def fsync(path: Path) -> None:  # called after each file is written: the time since the last is its write
            t = time.perf_counter()
            real_fsync(path)
            done = time.perf_counter()
            probe.files.setdefault(path.name, []).append((t - probe._mark, done - t))
            probe._fsync_now += done - t
            probe._mark = done

        def write(*args, **kwargs):
            probe._fsync_now = 0.0
            t = probe._mark = time.perf_counter()
            path = real_write(*args, **kwargs)
            probe.write.append(time.perf_counter() - t)
            probe.fsync.append(probe._fsync_now)
            return path

        def checkpoint(run, state, optimizer, scheduler):
            path = None
            for i in range(probe.repeats):
                before, peaks = _status("VmRSS"), _reset_peak()
                t = time.perf_counter()
                path = real_checkpoint(run, state, optimizer, scheduler)
                probe.total.append(time.perf_counter() - t)
                peak = _status("VmHWM")
                if peaks and before is not None and peak is not None:
                    probe.extra_rss.append(peak - before)
                if i < probe.repeats - 1:  # the same step again: the engine writes a step only once
                    shutil.rmtree(path)
            probe.path = path
            return path

        # _checkpoint imports write_checkpoint from the module at each call, and write_checkpoint calls _fsync by
        # its module name: patching the module is enough
        Run._checkpoint, ckstate.write_checkpoint, ckstate._fsync = checkpoint, write, fsync


def load_time(path: Path, repeats: int) -> float:
    """Median seconds to load one file as read_checkpoint does."""
    from safetensors.torch import load_file

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        if path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".safetensors":
            load_file(str(path))
        else:
            path.read_text(encoding="utf-8")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"


def size(n: int) -> str:
    return f"{n / 2**20:9.3f} MiB" if n >= 2**16 else f"{n / 2**10:9.2f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-sd1")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--module", default="lora", choices=["lora", "locon", "loha", "lokr"])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="AdamW steps before the checkpoint.")
    ap.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"], help="fp16 adds scaler.pt.")
    ap.add_argument("--repeats", type=int, default=7, help="Checkpoint writes; medians are reported.")
    ap.add_argument("--dir", type=Path, default=None, help="Where the run is written (default: a temp folder; "
                    "put it on the disk you train on: fsync time depends on it).")
    args = ap.parse_args()
    probe = Probe(args.repeats)
    probe.install()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data = write_sample_images(Path(tmp) / "images", count=4, size=args.resolution * 3 // 2)
        cfg = resolve([Layer("bench", {
            "model": {"pretrained_model_name_or_path": args.model},
            "network": {"network_module": args.module, "network_dim": args.rank, "network_alpha": args.rank},
            "data": {"train_data_dir": str(data), "resolution": args.resolution},
            "train": {"max_train_steps": args.steps, "train_batch_size": 1, "learning_rate": 1e-4,
                      "optimizer_type": "AdamW", "mixed_precision": args.precision, "log_every_n_steps": 10_000},
            "checkpoint": {"every_n_steps": None, "at_end": True, "keep_last": 2},
            "output": {"output_dir": str(Path(tmp) / "runs"), "save_precision": "fp16", "save_format": "kohya"},
        })])
        t = time.perf_counter()
        result = api.train(cfg)
        run_s = time.perf_counter() - t
        assert probe.path is not None and result.lora_path is not None, "the run wrote no checkpoint"
        reads = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            loaded = ckstate.read_checkpoint(probe.path)
            reads.append(time.perf_counter() - t)
        params = sum(v.numel() for v in loaded.tensors.values())
        files = {p.name: p.stat().st_size for p in sorted(probe.path.iterdir())}
        loads = {name: load_time(probe.path / name, args.repeats) for name in files}
        lora = result.lora_path.stat().st_size

    total = sum(files.values())
    print(f"model {args.model}  network {args.module} rank {args.rank}  precision {args.precision}  "
          f"{len(loaded.tensors)} adapter tensors, {params:,} parameters  torch threads "
          f"{torch.get_num_threads()}  run {run_s:.1f} s")
    print(f"  {'file':20s} {'size':>13s} {'write ms':>9s} {'fsync ms':>9s} {'load ms':>8s}   (medians)")
    for name, n in sorted(files.items(), key=lambda kv: -kv[1]):
        w = probe.files.get(name, [(float("nan"), float("nan"))])
        print(f"  {name:20s} {size(n)} {statistics.median(x for x, _ in w) * 1000:9.1f} "
              f"{statistics.median(y for _, y in w) * 1000:9.1f} {loads[name] * 1000:8.1f}")
    print(f"  {'checkpoint total':20s} {size(total)}")
    print(f"  {'LoRA (fp16)':20s} {size(lora)}   checkpoint / LoRA = {total / lora:.2f}")
    print(f"write  (Run._checkpoint, {args.repeats}×) {ms(probe.total)}")
    print(f"  write_checkpoint          {ms(probe.write)}")
    print(f"  of which fsync            {ms(probe.fsync)}")
    print(f"read   (read_checkpoint, warm cache) {ms(reads)}")
    if probe.extra_rss:
        print(f"peak extra resident memory of a write: {size(max(probe.extra_rss))} (max of {len(probe.extra_rss)})")
    else:
        print("peak extra resident memory: n/a (needs Linux /proc/self/clear_refs)")


if __name__ == "__main__":
    main()
