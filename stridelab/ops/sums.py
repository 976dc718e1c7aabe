"""Sums whose last bits do not depend on torch's CPU thread count.

``torch.dot`` (BLAS) and a full ``sum()``/``mean()`` of a long tensor split the sum among threads,
so their last bits change with the count, and a run whose update threads follow the machine's
load (``--torch-threads auto``) would not repeat from its seed: TRPO's conjugate gradient and line
search amplify the difference. Here each of ``BLOCK`` partial sums is one thread's (a reduction
over the first dimension is split by output, not along the sum), then the partials are summed
alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK = 1024


def total(x: torch.Tensor) -> torch.Tensor:
    """The sum of every element of ``x``, in a fixed order."""
    flat = x.reshape(-1)
    return F.pad(flat, (0, -flat.numel() % BLOCK)).view(-1, BLOCK).sum(0).sum()


def mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of every element of ``x``, in a fixed order."""
    return total(x) / x.numel()


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a . b``, in a fixed order."""
    return total(a * b)
