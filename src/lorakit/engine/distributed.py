"""Training on several processes (`accelerate launch --num_processes N` or `torchrun --nproc_per_node N`).

Data parallelism without a DDP wrapper: every process holds the same model and network and walks the same global
batches (train_batch_size × processes images), each computing the loss of its own contiguous rows. After the
backward passes, one all-reduce sums the network's gradients, the loss and the stop flag; every process then takes
the same optimizer step, so the networks stay identical without broadcasting weights. Only the main process
writes: the run folder, logs, samples, saves and checkpoints.

Why not `DistributedDataParallel`: the trained weights are a LoRA (megabytes), so one flat all-reduce per step costs
little, and the engine calls the UNet directly in many places (modes, samples, validation) that a wrapper would
have to see. Each process draws the random numbers of the whole global batch and keeps its rows, so a run on N
processes trains the same network as one process with N times the batch (up to the order of the gradient sum).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `lorakit plan` reads launched_world without it
    import torch


def launched_world() -> int:
    """The number of processes this one was launched among (1 without a launcher); read from the environment
    torchrun and accelerate set, before anything is initialised."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def init_processes() -> Any:
    """Join the launcher's process group (accelerate's PartialState: NCCL on GPUs, gloo on the CPU); None when
    there is one process."""
    if launched_world() <= 1:
        return None
    from accelerate import PartialState

    from .device import training_device

    return PartialState(cpu=training_device().type == "cpu")


def is_main_process() -> bool:
    """True in the process that writes (the only one without a launcher)."""
    state = init_processes()
    return state is None or state.is_main_process


def from_main(value: Any) -> Any:
    """`value` as the main process has it (e.g. the run folder it created), in every process."""
    if launched_world() <= 1:
        return value
    from accelerate.utils import broadcast_object_list

    init_processes()
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` processes."""

    rank: int = 0
    world: int = 1

    def rows(self, n: int) -> slice:
        """The contiguous rows of a global batch of `n` that this process computes (the first n % world
        processes get one more; a process may get none when n < world)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (1 if self.rank < extra else 0))


def reduce_step(params: list[torch.nn.Parameter], loss: torch.Tensor, stop: bool) -> tuple[torch.Tensor, bool]:
    """Sum the gradients, the loss and the stop requests over the processes, in one all-reduce; afterwards every
    process has the global batch's gradients (each process weighted its rows' loss by their share of the batch)
    and the same decision to stop. A parameter that got a gradient in no process keeps none (the optimizer skips
    it, as in one process: a frozen text encoder, a module dropped by module dropout); one that got a gradient in
    some process only (a process without rows) sums zeros for the others."""
    import torch

    device = loss.device
    had = [p.grad is not None for p in params]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flags = torch.tensor([*map(float, had), 1.0 if stop else 0.0]).to(device, non_blocking=True)
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float(), flags])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
        offset += n
    reduced_loss, counts = flat[offset], flat[offset + 1 :].tolist()  # one host sync per step (the stop decision)
    for p, count in zip(params, counts):
        if count == 0:
            p.grad = None
    return reduced_loss.to(loss.dtype), counts[-1] > 0
