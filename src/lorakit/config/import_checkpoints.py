"""kohya's training-state settings (save_state, its schedules and kept counts) → lorakit's [checkpoint].

A checkpoint never changes what is trained, so what cannot be carried over is listed with a reason, never refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .import_result import cast, number as _number
from .schema import CheckpointSection

if TYPE_CHECKING:
    from .import_result import ImportResult

# sd-scripts' training-state keys (train_network.py; library/train_util.py: save_and_remove_state_stepwise,
# save_and_remove_state_on_epoch_end, save_state_on_train_end), as of kohya-ss/sd-scripts 48d368f (2026-02):
# - save_state: with every LoRA file saved by save_every_n_steps / save_every_n_epochs (not after the last epoch)
#   also an accelerate state folder, and a last state at the end (`if save_state or save_state_on_train_end`).
# - save_state_on_train_end: only that last state.
# - save_last_n_steps_state N (else save_last_n_steps, the LoRA files' setting): at step s the state of step
#   s - N - 1, rounded down to a multiple of save_every_n_steps, is deleted: the newest state and those at most N
#   steps older stay, N // save_every_n_steps + 1 of them.
# - save_last_n_epochs_state N (else save_last_n_epochs): the state save_every_n_epochs × N epochs back is
#   deleted: N epoch states stay.
# - resume: accelerate.load_state of such a folder.
# lorakit's checkpoints (one kept count for both schedules) never change what is trained, so without save_state
# the checkpoint defaults stay.
STATE_KEYS = ("save_state", "save_state_on_train_end", "save_every_n_epochs", "save_last_n_steps_state",
              "save_last_n_epochs_state", "save_last_n_steps", "save_last_n_epochs")


def count(r: ImportResult, src: dict[str, Any], key: str, report: bool = True) -> int | None:
    """A positive whole number of `key` (0 / empty = unset → None); an unreadable one is listed as unmapped."""
    value = src.get(key)
    n = _number(value)
    if value in ("", None) or n == 0:
        return None
    if n is None or isinstance(value, bool) or n < 0 or not n.is_integer():
        if report:
            r.bad(key, value, "takes a whole number of at least 1")
        return None
    return int(n)


def import_state_saving(r: ImportResult, src: dict[str, Any]) -> None:
    """kohya's training-state saving → [checkpoint] (see STATE_KEYS' comment for sd-scripts' rules)."""
    flags: dict[str, bool] = {}
    for key in ("save_state", "save_state_on_train_end"):
        try:
            flags[key] = cast(src.get(key) or False, bool)
        except ValueError:
            r.bad(key, src[key], "takes true or false")
            flags[key] = False
    save_state = flags["save_state"]
    counts = {k: count(r, src, k) for k in STATE_KEYS[2:] if k in src}
    every = {"steps": count(r, src, "save_every_n_steps", report=False),  # its LoRA files: the conversions table
             "epochs": counts.get("save_every_n_epochs")}
    checkpoint = r.values.setdefault("checkpoint", {})
    if save_state or flags["save_state_on_train_end"]:
        checkpoint["at_end"] = True
    if save_state:
        r.mapped["save_state"] = "checkpoint (lorakit writes resumable checkpoints)"
        if flags["save_state_on_train_end"]:
            r.mapped["save_state_on_train_end"] = "checkpoint.at_end"
        elif "save_state_on_train_end" in src:
            r.mapped["save_state_on_train_end"] = "checkpoint.at_end (save_state writes the last state anyway)"
    elif flags["save_state_on_train_end"]:
        r.mapped["save_state_on_train_end"] = "checkpoint.at_end"
    if save_state and every["steps"]:
        checkpoint["every_n_steps"] = every["steps"]
        r.mapped["save_every_n_steps"] = "output.save_every_n_steps and checkpoint.every_n_steps"
    elif save_state:
        r.notes.append("kohya saves no state by steps without save_every_n_steps; lorakit still writes a checkpoint "
                       f"every {CheckpointSection.model_fields['every_n_steps'].default} steps "
                       "(checkpoint.every_n_steps)")
    if every["epochs"]:
        r.put("save_every_n_epochs", "output.save_every_n_epochs", every["epochs"])
    if save_state and every["epochs"]:
        checkpoint["every_n_epochs"] = every["epochs"]
        r.mapped["save_every_n_epochs"] = "output.save_every_n_epochs and checkpoint.every_n_epochs"
    for key in ("save_last_n_steps", "save_last_n_epochs"):  # the LoRA files' own kept counts
        if counts.get(key):
            r.put(key, f"output.{key}", counts[key])
    reasons: dict[str, str] = {}
    keep = 0
    for kind in ("steps", "epochs"):
        state_key, files_key = f"save_last_n_{kind}_state", f"save_last_n_{kind}"
        source = state_key if counts.get(state_key) else files_key  # sd-scripts falls back to the files' count
        n = counts.get(source)
        if n and save_state and every[kind]:
            keep += n // every[kind] + 1 if kind == "steps" else n
            r.mapped[source] = "checkpoint.keep_last" + ("" if source == state_key else
                                                         f" and output.{files_key} (kohya prunes the states by it too)")
        reasons[state_key] = f"kohya keeps {kind[:-1]} states only with save_state and save_every_n_{kind}"
    if keep:
        checkpoint["keep_last"] = keep
    if not checkpoint:
        del r.values["checkpoint"]
    unmapped = {k for k, _, _ in r.unmapped}
    for key in STATE_KEYS:  # whatever is left: off, or without effect in kohya / no lorakit equivalent
        if key in src and key not in r.mapped and key not in unmapped:
            if counts.get(key) and key in reasons:
                r.inert(key, src[key], reasons[key])  # training states only: nothing kohya trains changes
            else:
                r.skip(key, src[key] if counts.get(key) else None, reasons.get(key, ""))
