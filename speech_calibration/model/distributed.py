"""Scale-out over the processes of one host through ``torch.distributed``, as ``torchrun`` launches them.

    torchrun --nproc_per_node 4 -m stages.predict --seed 42     # one process per GPU
    torchrun --nproc_per_node 4 -m stages.train --seed 42

:func:`setup` reads the variables torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and joins the process group: NCCL when the model runs on a GPU, gloo on the CPU. Each
rank runs on GPU ``LOCAL_RANK``. Without torchrun (``WORLD_SIZE`` unset or 1) it returns :data:`SINGLE`,
whose methods do nothing, so one process runs exactly the code it ran before.

- scoring gives each rank whole batches of the length-sorted clips (round-robin, see
  :meth:`Context.shard`), so every batch is the one a single process scores, and
  :meth:`Context.gather_rows` hands every rank all the rows;
- training gives each rank its share of every global batch and sums the gradients over ranks before
  each optimizer step (:meth:`Context.all_reduce_gradients`), which is what DDP does, without its wrapper.

Rank 0 alone writes files and logs at INFO; the other ranks log warnings and errors only.
"""
from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """This process's place among the ranks of one launch; the default is a single process."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes files and logs."""
        return self.rank == 0

    def shard(self, items: Sequence) -> Sequence:
        """This rank's items: every ``world_size``-th, starting at its rank (all of them in one process)."""
        return items[self.rank::self.world_size] if self.enabled else items

    def gather_rows(self, out: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``out`` with every rank's rows filled in, on every rank; ``rows``: the rows this rank filled."""
        if not self.enabled:
            return out
        import torch.distributed as dist

        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, (rows, out[rows]))
        for their_rows, values in parts:
            out[their_rows] = values
        return out

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each of ``values`` summed over the ranks (float64), on every rank."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        total = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(total)
        return total.tolist()

    def all_reduce_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the ranks, in place, in one flat all-reduce.

        A rank whose share of a batch was empty has no gradient: it takes part with zeros.
        """
        if not self.enabled:
            return
        import torch.distributed as dist

        for q in params:
            if q.grad is None:
                q.grad = torch.zeros_like(q)
        flat = torch.cat([q.grad.reshape(-1) for q in params])
        dist.all_reduce(flat)
        for q, summed in zip(params, flat.split([q.numel() for q in params])):
            q.grad.copy_(summed.view_as(q.grad))

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Copy rank 0's values of ``params`` to every rank (the same start everywhere, as DDP does)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for q in params:
                dist.broadcast(q.data, src=0)


SINGLE = Context()


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(configured: torch.device) -> tuple[Context, torch.device]:
    """This process's :class:`Context` and the device it runs on.

    Under torchrun with several processes: joins the process group (once per process) with NCCL for a
    CUDA ``configured`` device, gloo otherwise, and puts each rank on GPU ``LOCAL_RANK``. Otherwise
    :data:`SINGLE` and ``configured`` unchanged.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE, configured
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = configured
    if configured.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
        atexit.register(dist.destroy_process_group)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("%d processes (%s), this one rank %d on %s", world_size, dist.get_backend(), rank, device)
    return Context(rank, world_size), device
