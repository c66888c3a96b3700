"""Which config changes `lorakit train --resume` accepts.

A resume continues a checkpoint's training exactly: the restored optimizer, scheduler, RNG states and data
position only mean something for the model, network, mode, data, seed, batch size, optimizer, learning rate and
schedule they were made with. So a change to any of those is *breaking*: the resume is refused, listing every one.

A *safe* change never alters the numbers of a step already planned. It changes only
- what is logged and how often (train.log_every_n_steps, validate_every_n_steps, log_with) or rendered (sample.*);
- what is saved, how and how often (output.save_every_n_steps, save_format, save_precision, checkpoint.*) and
  where (output.output_dir, output.run_id: ignored, the resumed run stays in its own folder);
- how far the run goes (train.max_train_epochs, max_train_steps: the schedule is rebuilt for the new total from the
  restored position);
- how a step is computed, not what it computes (train.gradient_checkpointing, sdpa), and what happens when a step
  fails (max_nonfinite_steps, oom_split_retry, faults.*);
- sections no training reads (bench.*, batch.*, storage.*) and the file format version (`version`).
Dataset content (images added, removed or changed) is compared separately, from the checkpoint's fingerprints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .schema import LorakitConfig

SAFE_KEYS = frozenset({
    "version",
    "train.max_train_epochs", "train.max_train_steps", "train.log_every_n_steps", "train.validate_every_n_steps",
    "train.log_with", "train.max_nonfinite_steps", "train.oom_split_retry", "train.gradient_checkpointing",
    "train.sdpa", "train.dataloader_workers",  # the same pixels either way (tests/engine/test_prefetch.py)
    "train.auto_memory",  # what it fitted (batch, checkpointing, fp8) is compared as those keys
    "output.save_every_n_steps", "output.save_every_n_epochs", "output.save_last_n_steps",
    "output.save_last_n_epochs", "output.save_format", "output.save_precision", "output.output_dir",
    "output.run_id",
    "mode.second_pass.max_train_steps",  # how far Difference's pass 2 goes (its own train.max_train_steps)
})
SAFE_SECTIONS = ("checkpoint", "sample", "faults", "bench", "batch", "storage")  # every key under them
_MISSING = object()  # a key one side has and the other has not


def is_safe(key: str) -> bool:
    """Whether changing dotted `key` keeps the checkpoint's training exact (see the module docstring)."""
    return key in SAFE_KEYS or any(key == s or key.startswith(s + ".") for s in SAFE_SECTIONS)


def _compact(value: Any, width: int = 60) -> str:
    """A value as a user wrote it in TOML, shortened: unset, true, 'text', [1, 2, 3, … +7]."""
    if value is None or value is _MISSING:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        shown = ", ".join(_compact(v, 24) for v in value[:3])
        return f"[{shown}{f', … +{len(value) - 3}' if len(value) > 3 else ''}]"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {_compact(v, 24)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Change:
    """One setting that differs between the checkpoint's config (`old`) and the given one (`new`)."""

    key: str
    old: Any
    new: Any
    safe: bool

    def describe(self) -> str:
        """'network.network_dim: 16 → 32'."""
        return f"{self.key}: {_compact(self.old)} → {_compact(self.new)}"


def _walk(old: Any, new: Any, key: str, out: list[Change]) -> None:
    """Append a Change for every leaf that differs; lists compare as whole values, tables key by key, and a
    [mode] of another type as a whole section (its keys mean different things)."""
    mode_swap = key == "mode" and isinstance(old, dict) and isinstance(new, dict) and old.get("type") != new.get("type")
    if isinstance(old, dict) and isinstance(new, dict) and not mode_swap:
        for name in list(old) + [n for n in new if n not in old]:
            _walk(old.get(name, _MISSING), new.get(name, _MISSING), f"{key}.{name}" if key else name, out)
    elif old != new:
        out.append(Change(key, None if old is _MISSING else old, None if new is _MISSING else new, is_safe(key)))


def config_changes(old: LorakitConfig, new: LorakitConfig) -> list[Change]:
    """Every setting that differs from the checkpoint's config `old` to `new`, in schema order, each marked
    safe or breaking."""
    out: list[Change] = []
    _walk(old.model_dump(mode="json"), new.model_dump(mode="json"), "", out)
    return out


def refuse_breaking(changes: list[Change], checkpoint: Path) -> None:
    """Raise ConfigError listing every breaking change (`key: old → new`); nothing when all are safe."""
    breaking = [c.describe() for c in changes if not c.safe]
    if breaking:
        raise ConfigError(
            breaking,
            f"cannot resume {checkpoint}: a resume continues the checkpoint's exact training, so these settings "
            "must match the run being resumed; to change them start a new run (optionally from its LoRA with "
            "network.network_weights)",
        )
