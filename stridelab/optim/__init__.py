"""Optimizers usable in any PyTorch code."""

from stridelab.optim.trpo import TRPO

__all__ = ["TRPO"]
