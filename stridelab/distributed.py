"""Data-parallel training: what every process must agree on, through one small interface.

Lightning Fabric starts the processes and the process group (``--devices N --strategy ddp``,
``--num-nodes M``); :class:`Comm` is the thin layer the learners call to average numbers over
them. With one process every call is the identity, so single-process code pays nothing.

What gets averaged (each process holds an equal share of the batch, so the mean over processes
of per-process means is the mean over the union):

* PPO and the TRPO critic: gradients, after ``backward`` and before clipping;
* TRPO's policy: the gradient, every Fisher-vector product, and the line search's loss and KL,
  so every process takes the same step;
* advantage normalization: the batch mean and std over all processes;
* observation and reward normalizers: counts, sums and sums of squares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from stridelab.ops import sums

AllReduce = Callable[[torch.Tensor], torch.Tensor]


class Comm:
    """Sums (and so averages) tensors over ``world_size`` data-parallel processes.

    Args:
        all_reduce_sum: returns the elementwise sum of a tensor over all processes (a new tensor
            or the input, summed in place). ``None`` for a single process.
        world_size: number of processes.
        rank: this process's rank.
    """

    def __init__(self, all_reduce_sum: AllReduce | None = None, world_size: int = 1, rank: int = 0) -> None:
        self._sum = all_reduce_sum
        self.world_size, self.rank = int(world_size), int(rank)

    @property
    def active(self) -> bool:
        return self.world_size > 1 and self._sum is not None

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        return self._sum(t.clone()) if self.active else t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        return self.sum(t) / self.world_size if self.active else t

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every process."""
        if not self.active:
            return flag
        return bool(self.sum(torch.tensor([0.0 if flag else 1.0], dtype=torch.float64)).item() == 0.0)

    def any_true(self, flag: bool) -> bool:
        return not self.all_true(not flag)

    def average_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's ``.grad`` by its mean over processes (one flat all-reduce)."""
        if not self.active:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = self.mean(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    @classmethod
    def from_fabric(cls, fabric) -> Comm:  # noqa: ANN001
        if fabric.world_size <= 1:
            return cls()
        return cls(lambda t: fabric.all_reduce(t, reduce_op="sum"), fabric.world_size, fabric.global_rank)

    @classmethod
    def from_torch_distributed(cls) -> Comm:
        """From an initialized ``torch.distributed`` process group (e.g. gloo in a test)."""
        import torch.distributed as dist

        def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            return t

        return cls(all_reduce_sum, dist.get_world_size(), dist.get_rank())


SINGLE = Comm()


def normalize_advantages(adv: torch.Tensor, comm: Comm = SINGLE) -> torch.Tensor:
    """``(adv - mean) / (std + 1e-8)`` with the mean and (unbiased) std over all processes."""
    if not comm.active:  # fixed-order sums (ops.sums): the same on any thread count
        centred = adv - sums.mean(adv)
        return centred / (torch.sqrt(sums.total(centred.square()) / max(adv.numel() - 1, 1)) + 1e-8)
    a = adv.double()
    stats = comm.sum(torch.stack([a.new_tensor(float(a.numel())), sums.total(a), sums.total(a.square())]))
    n, s, ss = stats[0], stats[1], stats[2]
    mean = s / n
    var = (ss - n * mean * mean) / (n - 1)
    return ((adv - mean.to(adv.dtype)) / (var.clamp_min(0).sqrt().to(adv.dtype) + 1e-8))


def started_as_first_process() -> bool:
    """Whether this process is (or will be) rank 0 of its run, read from the variables the
    launchers set before it starts (Fabric's spawned processes, torchrun, SLURM): the one that
    locks and writes the run directory."""
    import os

    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))

