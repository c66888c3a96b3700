"""Ctrl+C and SIGTERM (`docker stop`, a preempted cloud machine, a queue's stop): the first asks the run to stop
after the current step, which then writes a checkpoint and the LoRA; the second quits at once. Every file is
written to a temporary name and renamed, so quitting at once corrupts nothing."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from .events import Commands

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
MESSAGE = ("\nstopping after this step: a checkpoint and the LoRA will be saved "
           "(press Ctrl+C again to quit at once)\n")


@contextmanager
def stop_on_signals(commands: Commands) -> Iterator[None]:
    """Within: the first SIGINT/SIGTERM sets `commands.stop`, a second raises KeyboardInterrupt. Only the main
    thread can install handlers; elsewhere (a notebook's worker thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if commands.stop:
            raise KeyboardInterrupt
        commands.stop = True
        try:
            os.write(2, MESSAGE.encode())  # a raw write: safe inside a signal handler, unlike the progress display
        except OSError:  # stderr gone (a `| tee` killed by the same Ctrl+C): the stop must still happen
            pass

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
