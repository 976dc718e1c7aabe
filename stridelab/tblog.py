"""A run's TensorBoard events (``RUN/tb``), written by torch's own ``SummaryWriter``.

The runner calls :meth:`log_metrics` (CleanRL's tag names: ``charts/...``, ``losses/...``,
``eval/...``) and :meth:`finalize`; :func:`~stridelab.train.train` records the config once
through :meth:`log_hyperparams`, shown in TensorBoard's HPARAMS tab against the evaluation return.
Only the first process of a data-parallel run writes; the others hold a :class:`TensorBoardLog`
with ``enabled=False``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

HPARAM_METRIC = "eval/episodic_return"  # what the HPARAMS tab compares runs by
_HPARAM_TYPES = (bool, int, float, str)


class TensorBoardLog:
    """``run_dir/tb``'s events. ``purge_step``: a resume's first new step; events an earlier
    process logged from there on (after its last checkpoint) are hidden, so the curve has no
    step twice. The event file is opened at the first record (as Lightning's logger did): a
    run stopped during start-up leaves none."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None, enabled: bool = True) -> None:
        self.log_dir, self.purge_step, self.enabled = Path(run_dir) / "tb", purge_step, enabled
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        """torch's ``SummaryWriter``, opened on first use; ``None`` where this process does not write."""
        if self._writer is None and self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.purge_step)
        return self._writer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, float(value), step)

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """The config as TensorBoard hparams: numbers, strings and booleans as they are,
        anything else (lists, ``None``) as its text."""
        if self.writer is None:
            return
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, _HPARAM_TYPES) else str(v) for k, v in params.items()}
        for summary in hparams(values, {HPARAM_METRIC: float("nan")}):
            self.writer.file_writer.add_summary(summary)

    def finalize(self, status: str) -> None:
        """Flush and close (``status``: ``success`` or ``interrupted``, for the log's readers)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        self.enabled, self._writer = False, None
