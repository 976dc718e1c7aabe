"""Every random stream of a run, named, and derived from the run's seed.

One place for the numbers a run seeds its generators with, so two streams never meet by accident
and a reader finds where each comes from. A data-parallel process (``rank``) gets streams of its
own; the first process's are the run's.
"""

from __future__ import annotations

from dataclasses import dataclass

# Offsets between streams: primes, large enough that runs with nearby seeds do not share a stream
# within any practical number of iterations or processes.
_PROCESS = 1_009
_ENV_RANK = 7_777_777
_ENV_ITERATION = 1_000_003
_ENV_RESTART = 7_919
_EVALUATION = 10_007


@dataclass(frozen=True)
class Streams:
    """The seeds of one process of a run.

    Args:
        seed: the run's ``--seed``.
        rank: the data-parallel process (0 when there is one).
    """

    seed: int
    rank: int = 0

    def weights(self) -> int:
        """Initial weights: the same in every process, so data-parallel copies start alike."""
        return self.seed

    def process(self) -> int:
        """This process's torch, NumPy and Python generators after the weights are made:
        actions, minibatches, the fused rollout's noise. The run's seed in the first process."""
        return self.seed + _PROCESS * self.rank

    def env_reset(self, iteration: int) -> int:
        """The envs' first states when training starts at ``iteration`` (0, or a resume's)."""
        return self.seed + _ENV_RANK * self.rank + _ENV_ITERATION * iteration

    def env_restart(self, iteration: int) -> int:
        """Fresh states after ``iteration`` dropped a rollout (a blown-up simulator, a rolled-back update)."""
        return self.seed + _ENV_RANK * self.rank + _ENV_RESTART * (iteration + 1)

    def evaluation(self, iteration: int = 0) -> int:
        """The deterministic evaluation's episodes after ``iteration`` (``stridelab eval``: 0)."""
        return self.seed + _EVALUATION + iteration
