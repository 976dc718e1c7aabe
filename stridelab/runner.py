"""The training loop: collect -> batch -> update -> guard -> log -> evaluate -> checkpoint.

The :class:`Runner` takes the pieces it drives (env, networks, algorithm, loggers) as arguments
and owns the schedule: when the next rollout starts (beside the critic's fit, see
:meth:`Runner.update`), when to evaluate, when to checkpoint. The algorithm only does the math
(:mod:`stridelab.algos.base`). Everything a checkpoint holds is one :class:`RunState`.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stridelab.algos import REQUIRED_METRICS, Algorithm
from stridelab.checkpoint import (
    CKPT_DIR,
    CheckpointError,
    all_finite,
    atomic_torch_save,
    check_matches,
    load_weights,
    save_checkpoint,
)
from stridelab.cores import CoreMeter
from stridelab.distributed import SINGLE, Comm
from stridelab.envs import VecEnv
from stridelab.interrupt import stop_on_signals
from stridelab.models import ActorCritic
from stridelab.ops import policy_change
from stridelab.rollout import (
    Batch,
    ReturnNormalizer,
    RolloutStorage,
    can_fuse,
    fewer_threads,
    learning_rewards,
    make_batch,
    start_collect,
    steps_in_background,
)
from stridelab.seeds import Streams

# Envs per command of a training-time command-set evaluation (velocity-command tasks): few, as
# each runs a whole episode step by step from Python (14 envs x 1000 steps: about 5 s here).
COMMAND_EVAL_ENVS = 2


class NonFiniteError(RuntimeError):
    """Updates kept producing NaN or infinite numbers; training stopped (no checkpoint was
    written with them)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint written to {checkpoint}")


# --------------------------------------------------------------------------------------------
# the state a checkpoint holds


@dataclass
class Progress:
    """How far training has come, and the statistics that outlive a process."""

    global_step: int = 0
    iteration: int = 0
    wall_clock: float = 0.0  # seconds trained by earlier processes of this run
    recent_returns: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    recent_lengths: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    best_eval: float = float("-inf")
    last_sps: float = 0.0

    def stats(self) -> dict[str, Any]:
        return {"recent_returns": list(self.recent_returns), "recent_lengths": list(self.recent_lengths),
                "best_eval": self.best_eval, "last_sps": self.last_sps}

    def load_stats(self, stats: dict[str, Any]) -> None:
        self.recent_returns.extend(stats.get("recent_returns", []))
        self.recent_lengths.extend(stats.get("recent_lengths", []))
        self.best_eval = float(stats.get("best_eval", float("-inf")))
        self.last_sps = float(stats.get("last_sps", 0.0))


class RunState:
    """Everything a run's checkpoint holds: the learned state (networks with the observation
    normalizer, the algorithm's optimizers, the reward normalizer), the progress, and the
    random generators. It saves and loads itself (:meth:`state_dict`, :meth:`load_state_dict`)."""

    def __init__(self, cfg: Any, spec: Any, agent: ActorCritic, algo: Algorithm,
                 reward_norm: ReturnNormalizer | None, comm: Comm = SINGLE) -> None:
        self.cfg, self.spec, self.agent, self.algo, self.reward_norm, self.comm = cfg, spec, agent, algo, reward_norm, comm
        self.progress = Progress()

    def learned(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict(), "algo": self.algo.state_dict(),
                "reward_normalizer": None if self.reward_norm is None else self.reward_norm.state_dict()}

    def state_dict(self, wall_clock: float) -> dict[str, Any]:
        p = self.progress
        return {**self.learned(), "config": self.cfg.to_dict(), "env_spec": self.spec.__dict__,
                "global_step": p.global_step, "iteration": p.iteration, "wall_clock": wall_clock,
                "rng": rng_state(), "stats": p.stats()}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        """Resume from a checkpoint read from ``path`` (named in errors)."""
        check_matches(state, path, self.spec.name, self.spec.obs_dim, self.spec.act_dim)
        load_weights(self.agent, state["agent"], path)
        try:
            self.algo.load_state_dict(state["algo"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r} holds another algorithm's state ({e})") from None
        if self.reward_norm is not None and state.get("reward_normalizer") is not None:
            self.reward_norm.load_statistics(state["reward_normalizer"], path)
        p = self.progress
        p.global_step, p.iteration = int(state["global_step"]), int(state["iteration"])
        p.wall_clock = float(state.get("wall_clock", 0.0))
        p.load_stats(state.get("stats", {}))
        restore_rng_state(state["rng"], self.comm)

    def snapshot(self) -> dict[str, Any]:
        """A copy of the learned state, to roll an update back to."""
        import copy

        return copy.deepcopy(self.learned())

    def restore(self, saved: dict[str, Any]) -> None:
        self.agent.load_state_dict(saved["agent"])
        self.algo.load_state_dict(saved["algo"])
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(saved["reward_normalizer"])


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng_state(state: dict[str, Any], comm: Comm = SINGLE) -> None:
    """Put the checkpoint's generators back. The checkpoint holds rank 0's; data-parallel
    processes each draw their own actions, so there each one is reseeded from one common draw
    of the restored stream and its rank (deterministic, and different in every process)."""
    set_rng_state(state)
    if comm.active:
        base = int(torch.randint(2**31 - 1, ()).item())  # the same draw in every process
        seed_generators(Streams(base, comm.rank).process())


def seed_generators(seed: int) -> None:
    """torch's (CPU and every GPU), NumPy's global and Python's generators, as Lightning's
    ``seed_everything`` seeds them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# the NaN guard


class NonFiniteGuard:
    """Rolls an update back when it leaves NaN or infinity in the weights or in the losses the
    algorithm reports (:data:`~stridelab.algos.REQUIRED_METRICS`), and gives up after
    ``limit`` failures in a row."""

    def __init__(self, limit: int, comm: Comm = SINGLE) -> None:
        self.limit, self.comm = limit, comm
        self.in_a_row = 0

    def update_ok(self, metrics: dict[str, float], agent: ActorCritic) -> bool:
        missing = [k for k in REQUIRED_METRICS if k not in metrics]
        if missing:
            raise RuntimeError(f"the algorithm's update reported no {', '.join(missing)}; every algorithm "
                               f"must report {', '.join(REQUIRED_METRICS)} (stridelab.algos.base)")
        ok = all_finite([float(metrics[k]) for k in REQUIRED_METRICS]) and all_finite(agent.state_dict())
        return self.comm.all_true(ok)  # every process rolls back together

    def succeeded(self) -> None:
        self.in_a_row = 0

    def failed(self, iteration: int, what: str) -> None:
        self.in_a_row += 1
        warnings.warn(f"iteration {iteration}: NaN or infinity in {what}; update skipped and weights kept "
                      f"({self.in_a_row} in a row, stopping at {self.limit})", RuntimeWarning, stacklevel=3)
        if self.in_a_row >= self.limit:
            raise NonFiniteError(
                f"{self.limit} updates in a row hit NaN or infinity (last in {what}) at iteration {iteration}; "
                f"the last checkpoint holds finite weights: try a smaller --learning-rate or --max-kl, "
                f"or --reward-scale")


# --------------------------------------------------------------------------------------------
# clocks


class Clock:
    """Wall-clock accounting: evaluation time is kept out of steps per second, and the first
    iteration (which compiles) out of the steady rate and the phase totals."""

    def __init__(self, started: float) -> None:
        self.started = started  # when train() was called: "first update" counts set-up too
        self.start = time.perf_counter()
        self.first_update_s: float | None = None
        self.steady_start, self.steady_eval0 = self.start, 0.0
        self.eval_s = 0.0
        # CPU seconds of every thread (torch's and XLA's), for the cost of an env step on a
        # machine whose cores are all busy, where wall-clock time hides what the update costs.
        self.steady_cpu0, self.steady_eval_cpu0, self.eval_cpu_s = time.process_time(), 0.0, 0.0
        self.phases = {"rollout": 0.0, "batch": 0.0, "update": 0.0}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def iteration_done(self, phases: dict[str, float]) -> None:
        if self.first_update_s is None:
            self.first_update_s = time.perf_counter() - self.started
            self.steady_start, self.steady_eval0 = time.perf_counter(), self.eval_s
            self.steady_cpu0, self.steady_eval_cpu0 = time.process_time(), self.eval_cpu_s
            return
        for key, value in phases.items():
            self.phases[key] += value

    def sps(self, steps: int) -> float:
        return steps / max(self.elapsed() - self.eval_s, 1e-9)

    def steady_sps(self, steps: int) -> float:
        return steps / max(time.perf_counter() - self.steady_start - (self.eval_s - self.steady_eval0), 1e-9)

    def steady_cpu_us_per_step(self, steps: int) -> float:
        cpu = time.process_time() - self.steady_cpu0 - (self.eval_cpu_s - self.steady_eval_cpu0)
        return 1e6 * cpu / max(steps, 1)


# --------------------------------------------------------------------------------------------
# the runner


class Runner:
    """Trains ``algo`` on ``env`` for ``cfg.total_steps`` env steps (of every process together).

    Args:
        cfg: the run's :class:`~stridelab.config.TrainConfig`.
        env: the training envs (``cfg.num_envs`` of them).
        agent: the networks, on the envs' device.
        algo: the algorithm updating them.
        loggers: Lightning loggers (``log_metrics(metrics, step)``; TensorBoard's by default).
        run_dir: where checkpoints go.
        make_eval_env: builds the evaluation envs when first needed (None: no evaluation).
        comm: the data-parallel processes (one by default).
        started: ``time.perf_counter()`` when set-up began, for ``time/first_update_s``.
    """

    def __init__(self, cfg: Any, env: VecEnv, agent: ActorCritic, algo: Algorithm, loggers: list[Any],
                 run_dir: Path, make_eval_env: Callable[[], VecEnv] | None = None, comm: Comm = SINGLE,
                 started: float | None = None) -> None:
        self.cfg, self.env, self.agent, self.algo, self.loggers = cfg, env, agent, algo, loggers
        self.run_dir, self.make_eval_env, self.comm = Path(run_dir), make_eval_env, comm
        self.streams = Streams(cfg.seed, comm.rank)
        # The clip is --reward-clip's, applied in make_batch whether the rewards are normalized or not.
        reward_norm = ReturnNormalizer(cfg.num_envs, cfg.gamma, clip=math.inf, comm=comm).to(env.device) \
            if cfg.normalize_reward else None
        self.state = RunState(cfg, env.spec, agent, algo, reward_norm, comm)
        self.storage = RolloutStorage(cfg.num_steps, cfg.num_envs, env.spec.obs_dim, env.spec.act_dim, env.device)
        self.guard = NonFiniteGuard(cfg.max_nonfinite, comm)
        self.fused = cfg.fused_rollout and can_fuse(env, agent)
        # The next rollout runs beside the critic's fit: in the simulator's runtime (fused), or
        # step by step on a thread of its own where the physics leaves the GIL (native MuJoCo).
        self.overlap = cfg.overlap_critic and (self.fused or steps_in_background(env))
        self.steps_per_iter = cfg.batch_size * comm.world_size
        self.eval_env: VecEnv | None = None
        self.last_eval: dict[str, float] = {}
        self.command_set: dict[str, Any] | None = None  # the last evaluation's, velocity-command tasks
        self.clock = Clock(time.perf_counter() if started is None else started)
        self._pending: Callable[[], torch.Tensor] | None = None  # a rollout started during the last update
        # A step-by-step rollout beside the update fills a second storage: the batch the critic
        # fits on is made of views of the first.
        self._spare = None if self.fused or not self.overlap else \
            RolloutStorage(cfg.num_steps, cfg.num_envs, env.spec.obs_dim, env.spec.act_dim, env.device)
        self._obs: torch.Tensor | None = None
        self._start_step = 0  # global_step when this process began training
        self._max_threads = torch.get_num_threads()
        self._meter = CoreMeter() if cfg.torch_threads == "auto" else None
        if self._meter is None:
            torch.set_num_threads(int(cfg.torch_threads))

    @property
    def progress(self) -> Progress:
        return self.state.progress

    @property
    def num_iterations(self) -> int:
        """The last iteration: the run ends at ``total_steps`` whatever batch earlier
        processes of it trained with (a resume may change ``num_envs`` or ``num_steps``)."""
        p = self.progress
        remaining = max(0, self.cfg.total_steps - p.global_step) // self.steps_per_iter
        return p.iteration + (max(1, remaining) if p.global_step == 0 else remaining)

    def learn(self) -> dict[str, float]:
        """Train to the end; returns the summary (also written to ``summary.json`` by rank 0)."""
        last = self.num_iterations
        self._obs = self.env.reset(self.streams.env_reset(self.progress.iteration))
        self.clock.start = self.clock.steady_start = time.perf_counter()
        self._start_step = self.progress.global_step
        try:
            if self.progress.global_step == 0:  # a resumed run has its step-0 point already
                self.evaluate_untrained()
            with stop_on_signals() as stop, self._progress_bar() as bar:
                if self.comm.any_true(stop["signum"] is not None):  # asked for during set-up (a compile, say):
                    self._checkpoint_if_due(last, True, stop["signum"])  # a checkpoint to resume, then stop
                while self.progress.iteration < last:
                    self.log(self.train_one_iteration(last))
                    bar.update(self.steps_per_iter)
                    if self._eval_due() and self.progress.iteration < last:  # the final one follows the loop
                        self.evaluate()
                    self._show(bar)
                    self._checkpoint_if_due(last, self.comm.any_true(stop["signum"] is not None), stop["signum"])
            if self.cfg.eval_episodes > 0:
                self.evaluate(final=True)
        finally:
            self.finish_rollout()
        return self.summary()

    def finish_rollout(self) -> None:
        """Let a rollout in flight finish (before an evaluation, so its clock does not count it,
        and before the envs are handed back)."""
        if self._pending is not None:
            self._pending()

    # --- one iteration -------------------------------------------------------------------

    def train_one_iteration(self, last: int) -> dict[str, float]:
        """Collect a rollout, make the batch, update; returns the update's metrics with the
        phases' seconds (``charts/*_seconds``)."""
        self.algo.set_progress(self.progress.iteration / last)
        t0 = time.perf_counter()
        self.collect()
        t1 = time.perf_counter()  # with a rollout started during the last update: the wait for it
        self._place_threads()
        metrics, t2 = self.batch_and_update(overlap=self.overlap and self.progress.iteration + 1 < last)
        phases = {"rollout": t1 - t0, "batch": t2 - t1, "update": time.perf_counter() - t2}
        self.clock.iteration_done(phases)
        self.progress.iteration += 1
        self.progress.global_step += self.steps_per_iter
        metrics.update({f"charts/{k}_seconds": v for k, v in phases.items()})
        metrics["charts/update_fraction"] = phases["update"] / sum(phases.values())
        return metrics

    def _place_threads(self) -> None:
        """torch's threads for this update (``torch_threads`` auto): the cores other programs
        left idle during the last iteration, at most as many as torch started with. Where one
        keeps a core busy, a thread on it would stall every parallel kernel (:mod:`stridelab.cores`)."""
        if self._meter is None:
            return
        n = min(self._max_threads, self._meter.idle_cores())
        if n != torch.get_num_threads():
            torch.set_num_threads(n)

    def collect(self) -> None:
        """The rollout into ``self.storage``: the one started during the last update, or a new one."""
        if self._pending is None:
            self._pending = self._start_rollout(self.progress.iteration)
        self._obs, self._pending = self._pending(), None

    def _start_rollout(self, iteration: int, background: bool = False) -> Callable[[], torch.Tensor]:
        """Start iteration ``iteration``'s rollout (:func:`start_collect`), the env told first
        where training stands (an env's curriculum: Go1's cost curriculum)."""
        if hasattr(self.env, "set_progress"):
            self.env.set_progress(iteration / self.num_iterations)
        # The fused rollout's noise seed comes from torch's generator: runs stay reproducible
        # and a resume (which restores that generator) continues the same stream.
        fused_seed = int(torch.randint(2**31 - 1, ()).item()) if self.fused else None
        spare = self._spare if background else None  # None when fused: its storage fills at finish()
        storage = self.storage if spare is None else spare
        finish = start_collect(self.env, self.agent, self._obs, storage, fused_seed, background)
        if spare is None:
            return finish

        def finish_and_swap() -> torch.Tensor:
            next_obs = finish()
            if self._spare is spare:  # the first call: the filled storage becomes the current one
                self.storage, self._spare = spare, self.storage
            return next_obs

        return finish_and_swap

    def batch_and_update(self, overlap: bool) -> tuple[dict[str, float], float]:
        """The batch (normalizers, GAE) and the guarded update; returns the metrics and the
        time the batch was ready. A rollout with NaN or infinity is dropped before it reaches
        the normalizers, and an update that leaves any is rolled back."""
        if not self.comm.all_true(self.storage.all_finite()):
            self._drop_rollout("an observation or reward of the rollout")
            return {}, time.perf_counter()
        saved = self.state.snapshot()
        batch = self.make_batch()
        batch_ready = time.perf_counter()
        metrics = self.update(batch, overlap)
        if self.guard.update_ok(metrics, self.agent):
            self.guard.succeeded()
            return metrics, batch_ready
        if self._pending is not None:  # collected by the policy about to be undone: drop it
            self._pending()
            self._pending = None
        self.state.restore(saved)
        self._drop_rollout("the update (loss, gradient or weights)")
        return {}, batch_ready

    def _drop_rollout(self, what: str) -> None:
        """Start every env afresh (the numbers went bad), and count a failure."""
        self._obs = self.env.reset(self.streams.env_restart(self.progress.iteration))
        self.guard.failed(self.progress.iteration, what)

    def make_batch(self) -> Batch:
        """The learning rewards (normalized with ``normalize_reward``, then clipped with
        ``reward_clip``), the observation normalizer's update (``normalize_obs``), GAE."""
        cfg = self.cfg
        rewards = learning_rewards(self.storage, self.state.reward_norm, cfg.reward_clip)
        return make_batch(self.agent, self.storage, cfg.gamma, cfg.gae_lambda, cfg.reward_scale, rewards=rewards,
                          update_normalizer=cfg.normalize_obs, comm=self.comm)

    def update(self, batch: Batch, overlap: bool) -> dict[str, float]:
        """The policy's update, then the value net's. With ``overlap`` the next rollout starts
        in between: it needs only the policy, so it runs in the simulator's runtime while the
        critic learns on half of torch's CPU threads."""
        metrics = self.algo.update_policy(batch)
        if overlap:
            self._pending = self._start_rollout(self.progress.iteration + 1, background=True)
        with fewer_threads(overlap and batch.obs.device.type == "cpu"):
            metrics.update(self.algo.update_value(batch))
            metrics.update(self.diagnostics(batch))
        return metrics

    @torch.no_grad()
    def diagnostics(self, batch: Batch) -> dict[str, float]:
        """How far this update moved the policy on the batch (``diagnostics/*``), the same
        measure for every algorithm (:func:`stridelab.ops.policy_change`); the ratios are
        counted outside PPO's ``[1 - clip_coef, 1 + clip_coef]`` whatever the algorithm."""
        mean, std = self.agent.dist_params(batch.obs)
        change = policy_change(batch.mean_old, batch.std_old, batch.logp_old, mean, std, batch.actions,
                               self.cfg.clip_coef)
        return {f"diagnostics/{k}": v for k, v in change.items()}

    # --- logging, evaluation, checkpoints -------------------------------------------------

    def log(self, metrics: dict[str, float]) -> None:
        """Episode statistics and speed next to the update's metrics, against env steps."""
        p = self.progress
        ep_ret, ep_len = self.storage.finished_episodes()
        keep = torch.isfinite(ep_ret)  # a blown-up simulator's episodes are not returns
        ep_ret, ep_len = ep_ret[keep], ep_len[keep]
        p.recent_returns.extend(ep_ret.tolist())
        p.recent_lengths.extend(ep_len.float().tolist())
        p.last_sps = self.clock.sps(p.global_step - self._start_step)
        metrics.update({"charts/SPS": p.last_sps, "charts/learning_rate": self.algo.learning_rate,
                        "charts/wall_clock": p.wall_clock + self.clock.elapsed()})
        if len(ep_ret):
            metrics["charts/episodic_return"] = float(ep_ret.mean())
            metrics["charts/episodic_length"] = float(ep_len.float().mean())
        metrics.update(self.storage.env_info)  # the env's own parts (reward/<term>), over the rollout
        self._log_metrics(metrics)

    def _log_metrics(self, metrics: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.progress.global_step)

    def _eval_due(self) -> bool:
        """Whether this iteration's steps crossed a multiple of ``eval_every``."""
        every, step = self.cfg.eval_every, self.progress.global_step
        return bool(self.cfg.eval_episodes and every) and step // every > (step - self.steps_per_iter) // every

    def evaluate(self, final: bool = False) -> None:
        """Deterministic episodes on separate envs (first process only); the best policy so far
        is kept as ``best.ckpt``. Their time is kept out of steps per second. Velocity-command
        tasks add the command set's tracking (:meth:`evaluate_commands`)."""
        if not self.comm.rank == 0 or self.make_eval_env is None:
            return
        self.finish_rollout()
        from stridelab.evaluate import run_episodes

        t, cpu = time.perf_counter(), time.process_time()
        if self.eval_env is None:
            self.eval_env = self.make_eval_env()
        returns, lengths = run_episodes(self.agent, self.eval_env, seed=self.streams.evaluation(self.progress.iteration))
        self.last_eval = {"eval/episodic_return": float(returns.mean()),
                          "eval/episodic_return_std": float(returns.std(unbiased=False)),
                          "eval/episodic_length": float(lengths.float().mean()),
                          **self.evaluate_commands(final)}
        self._log_metrics(self.last_eval)
        if self.last_eval["eval/episodic_return"] > self.progress.best_eval:
            self.progress.best_eval = self.last_eval["eval/episodic_return"]
            state = self.state.state_dict(self._wall_clock())
            atomic_torch_save(state, self.run_dir / CKPT_DIR / "best.ckpt", check_finite=[state["agent"], state["algo"]])
        self.clock.eval_s += time.perf_counter() - t
        self.clock.eval_cpu_s += time.process_time() - cpu

    def evaluate_commands(self, final: bool) -> dict[str, float]:
        """A velocity-command task's tracking over :mod:`stridelab.locomotion`'s command set,
        nominal, :data:`COMMAND_EVAL_ENVS` envs per command (``eval/lin_vel_error``,
        ``eval/yaw_rate_error``, ``eval/falls_per_episode``); the final evaluation also
        randomized, kept for ``summary.json``. ``{}`` for other tasks."""
        import stridelab.locomotion as locomotion

        if not locomotion.supports(self.cfg.env):
            return {}
        conditions = tuple(locomotion.CONDITIONS) if final else ("nominal",)
        table = locomotion.command_set(self.agent, self.cfg.env, self.cfg.episode_length, COMMAND_EVAL_ENVS,
                                       self.streams.evaluation(self.progress.iteration), self.env.device, conditions,
                                       env_kwargs=self.cfg.env_kwargs)
        self.command_set = table
        return locomotion.scalars(table["nominal"])

    def evaluate_untrained(self) -> None:
        """The policy before any update, so every evaluation curve starts at step 0 (with the
        wall clock there, for curves against time)."""
        if self.cfg.eval_episodes > 0:
            if self.comm.rank == 0:
                self._log_metrics({"charts/wall_clock": self._wall_clock()})  # the policy as it was at the start
            self.evaluate()

    def _wall_clock(self) -> float:
        return self.progress.wall_clock + self.clock.elapsed()

    def _checkpoint_if_due(self, last: int, stopping: bool, signum: int | None) -> None:
        """Every ``checkpoint_every`` iterations, at the end, and when a signal asks to stop
        (then :class:`TrainingInterrupted` is raised after writing)."""
        it = self.progress.iteration
        if not (it % self.cfg.checkpoint_every == 0 or it == last or stopping):
            return
        path = self.run_dir / CKPT_DIR / "last.ckpt"
        if self.comm.rank == 0:
            path = save_checkpoint(self.run_dir, self.state.state_dict(self._wall_clock()), self.progress.global_step,
                                   self.cfg.keep_checkpoints)
        if stopping:
            for logger in self.loggers:
                logger.finalize("interrupted")
            raise TrainingInterrupted(signum or signal.SIGTERM, path)

    def _progress_bar(self) -> Any:
        from tqdm.auto import tqdm

        cfg = self.cfg
        return tqdm(total=cfg.total_steps, initial=self.progress.global_step, unit="step", unit_scale=True,
                    dynamic_ncols=True, disable=not (cfg.progress and self.comm.rank == 0),
                    desc=f"{cfg.algo} {cfg.env} s{cfg.seed}")

    def _show(self, bar: Any) -> None:
        p = self.progress
        bar.set_postfix(SPS=f"{p.last_sps:,.0f}", ret=f"{np.mean(p.recent_returns):.0f}" if p.recent_returns else "-",
                        eval=f"{self.last_eval['eval/episodic_return']:.0f}" if self.last_eval else "-")

    def summary(self) -> dict[str, float]:
        """Final numbers: return, speed (steady and overall), phase times, evaluation."""
        p, clock = self.progress, self.clock
        trained = p.global_step - self._start_step
        out = {
            "global_step": float(p.global_step),
            "train/final_return": float(np.mean(p.recent_returns)) if p.recent_returns else math.nan,
            "train/final_length": float(np.mean(p.recent_lengths)) if p.recent_lengths else math.nan,
            # A resume that had nothing left to train reports the speed saved with the run.
            "charts/SPS": p.last_sps if trained == 0 else clock.sps(trained),
            "time/first_update_s": float(clock.first_update_s or 0.0),
            "time/steady_sps": p.last_sps if trained <= self.steps_per_iter
            else clock.steady_sps(trained - self.steps_per_iter),
            "time/steady_cpu_us_per_step": math.nan if trained <= self.steps_per_iter
            else clock.steady_cpu_us_per_step(trained - self.steps_per_iter),
            **{f"time/{k}_s": v for k, v in clock.phases.items()},
            "time/wall_clock_s": self._wall_clock(),
            **self.last_eval,
            "time/eval_s": clock.eval_s,
            "rollout/fused": float(self.fused),  # 1: the policy ran inside the simulator's compiled loop
        }
        if self.comm.active:
            out["ddp/world_size"] = float(self.comm.world_size)
            out["ddp/max_param_difference"] = _max_param_difference(self.agent, self.comm)
        return out


def write_summary(run_dir: Path, summary: dict[str, float], device: str | None = None,
                  command_set: dict[str, Any] | None = None) -> None:
    """``summary.json``: the final numbers, a velocity-command task's ``command_set`` table
    (:mod:`stridelab.locomotion`), the ``presets`` the run took (its task's own, or its simulator
    family's defaults: :func:`~stridelab.config.presets_used`) and, under ``provenance``, where
    they came from (versions, commit, ``device`` and machine, command line, date)."""
    from stridelab.provenance import provenance

    record = {**summary, **({"command_set": command_set} if command_set else {}), **_presets(Path(run_dir)),
              "provenance": provenance(device)}
    (Path(run_dir) / "summary.json").write_text(json.dumps(record, indent=2) + "\n")


def _presets(run_dir: Path) -> dict[str, Any]:
    """``{"presets": ...}`` for the run's task and algorithm (read from its ``config.json``)."""
    from stridelab.config import TrainConfig, presets_used

    if not (run_dir / "config.json").is_file():
        return {}
    cfg = TrainConfig.load(run_dir / "config.json")
    return {"presets": presets_used(cfg.env, cfg.algo)}


def _max_param_difference(agent: ActorCritic, comm: Comm) -> float:
    """Largest difference between this process's weights and their mean over processes: 0
    when data-parallel training kept every copy the same, as it must."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in agent.parameters()])
    return float((comm.mean(flat) - flat).abs().max())
