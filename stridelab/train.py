"""The training loop: Lightning Fabric for devices, seeding and logging; rollout -> update -> logs.

One iteration: collect ``num_steps`` steps from every env (:mod:`stridelab.rollout`), build the
batch (normalizer, GAE), update (:mod:`stridelab.algos`), log to TensorBoard against env steps,
and checkpoint every ``checkpoint_every`` iterations.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stridelab.checkpoint import (
    CKPT_DIR,
    CheckpointError,
    all_finite,
    atomic_torch_save,
    check_matches,
    find_checkpoint,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from stridelab.config import ConfigError, TrainConfig, validate
from stridelab.distributed import SINGLE, Comm
from stridelab.envs import make_env
from stridelab.models import Agent
from stridelab.rollout import ReturnNormalizer, RolloutStorage, can_fuse, make_batch, start_collect


class NonFiniteError(RuntimeError):
    """Updates kept producing NaN or infinite numbers; training stopped (no checkpoint was
    written with them)."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written before stopping."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint written to {checkpoint}")


@contextmanager
def _stop_on_signals() -> Iterator[dict[str, int | None]]:
    """SIGINT/SIGTERM set a flag the loop checks after each iteration; a second one aborts."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["signum"] is not None:
            raise KeyboardInterrupt
        flag["signum"] = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is usable, else ``cpu``."""
    from stridelab.config import DEVICES, unknown_choice

    if device not in DEVICES:
        raise unknown_choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return device


def _pin_to_share_of_cores(local_rank: int, processes: int) -> None:
    """Data-parallel CPU processes on one machine: each keeps to its own share of the cores.

    Unpinned, every process's JAX and torch thread pools spread over all cores and spin against
    each other (two runs on two cores fell to a fifth of one run's speed, docs/benchmarks.md).
    Called before JAX starts its CPU backend, whose thread pool then sizes itself to the share.
    """
    if not hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(1)
        return
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[local_rank::processes] if len(cores) >= processes else cores
    os.sched_setaffinity(0, set(mine))
    torch.set_num_threads(len(mine))


def make_algo(agent: Agent, cfg: TrainConfig, comm: Comm = SINGLE) -> Any:
    if cfg.algo == "ppo":
        from stridelab.algos.ppo import PPO

        return PPO(agent, cfg, comm)
    from stridelab.algos.trpo import TRPOAgent

    return TRPOAgent(agent, cfg, comm)


def make_agent(cfg: TrainConfig, spec: Any) -> Agent:
    return Agent(spec.obs_dim, spec.act_dim, spec.action_low, spec.action_high, init_std=cfg.init_std)


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _restore_rng_state(state: dict[str, Any], comm: Comm = SINGLE) -> None:
    """Put the checkpoint's generators back. The checkpoint holds rank 0's; data-parallel
    processes each draw their own actions, so there each one is reseeded from one common draw
    of the restored stream plus its rank (deterministic, and different in every process)."""
    _set_rng_state(state)
    if comm.active:
        base = int(torch.randint(2**31 - 1, ()).item())  # the same draw in every process
        from lightning.fabric.utilities.seed import seed_everything

        seed_everything(base + 1_009 * comm.rank, verbose=False)


class _NonFiniteGuard:
    """Detects NaN/inf in rollouts and updates, rolls the learner back, and gives up after
    ``limit`` failures in a row.

    Before each update it copies the learned state (weights, observation and reward
    normalizers, optimizer moments); after the update the weights and losses must be finite,
    else that copy is put back and the batch is dropped.
    """

    def __init__(self, limit: int, agent: Agent, algo: Any, reward_norm: Any, comm: Comm = SINGLE) -> None:
        self.limit, self.agent, self.algo, self.reward_norm, self.comm = limit, agent, algo, reward_norm, comm
        self.in_a_row = 0
        self.total = 0

    def snapshot(self) -> dict[str, Any]:
        import copy

        return {
            "agent": {k: v.detach().clone() for k, v in self.agent.state_dict().items()},
            "algo": copy.deepcopy(self.algo.state_dict()),
            "reward_norm": None if self.reward_norm is None else copy.deepcopy(self.reward_norm.state_dict()),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.agent.load_state_dict(saved["agent"])
        self.algo.load_state_dict(saved["algo"])
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(saved["reward_norm"])

    def check(self, metrics: dict[str, float]) -> bool:
        losses = [v for k, v in metrics.items() if k in ("losses/policy_loss", "losses/value_loss")]
        ok = all_finite([float(v) for v in losses]) and all_finite(self.agent.state_dict())
        return self.comm.all_true(ok)  # every process rolls back together

    def succeeded(self) -> None:
        self.in_a_row = 0

    def failed(self, iteration: int, what: str) -> None:
        import warnings

        self.in_a_row += 1
        self.total += 1
        warnings.warn(f"iteration {iteration}: NaN or infinity in {what}; update skipped and weights kept "
                      f"({self.in_a_row} in a row, stopping at {self.limit})", RuntimeWarning, stacklevel=2)
        if self.in_a_row >= self.limit:
            raise NonFiniteError(
                f"{self.limit} updates in a row hit NaN or infinity (last in {what}) at iteration {iteration}; "
                f"the last checkpoint holds finite weights: try a smaller --learning-rate or --max-kl, "
                f"or --reward-scale"
            )


def _progress_bar(cfg: TrainConfig, initial: int, enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=cfg.total_steps, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                disable=not (cfg.progress and enabled), desc=f"{cfg.algo} {cfg.env} s{cfg.seed}")


def train(cfg: TrainConfig, resume: bool = False) -> dict[str, float]:
    """Train per ``cfg``; returns summary numbers (final return, SPS, wall-clock)."""
    entered = time.perf_counter()  # "time/first_update_s" counts set-up and compilation from here
    validate(cfg)
    device = resolve_device(cfg.device)
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import TensorBoardLogger

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = TensorBoardLogger(root_dir=str(run_dir), name="tb", version="")
    world = cfg.devices * cfg.num_nodes
    strategy = "ddp" if world > 1 and cfg.strategy == "auto" else cfg.strategy
    fabric = Fabric(accelerator=device, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=strategy,
                    loggers=[logger])
    if world > 1:
        # Starts the other processes (re-running this command with their rank set) and joins
        # the process group; each process then runs this function with its own share of envs.
        fabric.launch()
        if device == "cpu":
            _pin_to_share_of_cores(fabric.local_rank, cfg.devices)
    comm = Comm.from_fabric(fabric)
    rank0 = fabric.is_global_zero
    fabric.seed_everything(cfg.seed, verbose=False)  # the same initial weights in every process

    env = make_env(cfg.env, cfg.num_envs, device=fabric.device, backend=cfg.backend, episode_length=cfg.episode_length)
    agent = make_agent(cfg, env.spec).to(fabric.device)
    algo = make_algo(agent, cfg, comm)
    reward_norm = (ReturnNormalizer(cfg.num_envs, cfg.gamma, comm=comm).to(fabric.device)
                   if cfg.normalize_reward else None)
    if comm.active:  # ... but each process its own actions and envs
        fabric.seed_everything(cfg.seed + 1_009 * comm.rank, verbose=False)
    env_seed = cfg.seed + 7_777_777 * comm.rank
    steps_per_iter = cfg.batch_size * comm.world_size  # env steps of all processes together
    num_iterations = max(1, cfg.total_steps // steps_per_iter)

    global_step, iteration, wall_before = 0, 0, 0.0
    resumed: dict[str, Any] = {}
    if resume:
        path = find_checkpoint(run_dir)
        state = load_checkpoint(path, map_location="cpu")
        check_matches(state, path, env.spec.name, env.spec.obs_dim, env.spec.act_dim)
        load_weights(agent, state["agent"], path)
        try:
            algo.load_state_dict(state["algo"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r} holds another algorithm's state ({e})") from None
        if reward_norm is not None and state.get("reward_normalizer") is not None:
            # The statistics carry over; the per-env running returns restart with the envs.
            load_weights(reward_norm.rms, {k[4:]: v for k, v in state["reward_normalizer"].items()
                                           if k.startswith("rms.")}, path)
        global_step, iteration = int(state["global_step"]), int(state["iteration"])
        wall_before = float(state.get("wall_clock", 0.0))
        _restore_rng_state(state["rng"], comm)
        resumed = state.get("stats", {})
        # The steps still to train, in iterations of the batch in effect now (a resume may change
        # --num-envs or --num-steps): the run ends at --total-steps whatever it was trained with.
        num_iterations = iteration + max(0, cfg.total_steps - global_step) // steps_per_iter
    if rank0:
        cfg.save(run_dir / "config.json")  # the config in effect (a resume may extend total_steps)
    if not resume:
        logger.log_hyperparams({k: (str(v) if v is None else v) for k, v in cfg.to_dict().items()})

    # After a resume the envs restart from fresh states drawn from a seed tied to the iteration.
    obs = env.reset(env_seed + 1_000_003 * iteration)
    storage = RolloutStorage(cfg.num_steps, cfg.num_envs, env.spec.obs_dim, env.spec.act_dim, fabric.device)
    recent_returns: deque[float] = deque(resumed.get("recent_returns", []), maxlen=100)
    recent_lengths: deque[float] = deque(resumed.get("recent_lengths", []), maxlen=100)
    last_sps = float(resumed.get("last_sps", 0.0))
    start, start_step = time.perf_counter(), global_step
    first_update_s: float | None = None
    steady_start, steady_eval0 = start, 0.0
    phase_seconds = {"rollout": 0.0, "batch": 0.0, "update": 0.0}
    bar = _progress_bar(cfg, global_step, enabled=rank0)
    eval_env = None
    eval_seconds = 0.0
    best_eval = {"return": float(resumed.get("best_eval", float("-inf")))}
    last_eval: dict[str, float] = {}

    def run_eval() -> None:
        """Deterministic episodes on a separate env; its time is kept out of SPS."""
        nonlocal eval_env, eval_seconds
        from stridelab.evaluate import run_episodes

        t = time.perf_counter()
        if eval_env is None:
            eval_env = make_env(cfg.env, cfg.eval_episodes, device=fabric.device, backend=cfg.backend,
                                episode_length=cfg.episode_length)
        returns, lengths = run_episodes(agent, eval_env, seed=cfg.seed + 10_007 + iteration)
        last_eval.update({"eval/episodic_return": float(returns.mean()),
                          "eval/episodic_return_std": float(returns.std(unbiased=False)),
                          "eval/episodic_length": float(lengths.float().mean())})
        fabric.log_dict(last_eval, step=global_step)
        if last_eval["eval/episodic_return"] > best_eval["return"]:  # keep the best policy seen
            best_eval["return"] = last_eval["eval/episodic_return"]
            state = checkpoint_state()
            atomic_torch_save(state, run_dir / CKPT_DIR / "best.ckpt", check_finite=[state["agent"], state["algo"]])
        eval_seconds += time.perf_counter() - t

    def checkpoint_state() -> dict[str, Any]:
        return {
            "agent": agent.state_dict(),
            "algo": algo.state_dict(),
            "reward_normalizer": None if reward_norm is None else reward_norm.state_dict(),
            "config": cfg.to_dict(),
            "env_spec": env.spec.__dict__,
            "global_step": global_step,
            "iteration": iteration,
            "wall_clock": wall_before + time.perf_counter() - start,
            "rng": _rng_state(),
            "stats": {"recent_returns": list(recent_returns), "recent_lengths": list(recent_lengths),
                      "best_eval": best_eval["return"], "last_sps": last_sps},
        }

    fused = cfg.fused_rollout and can_fuse(env, agent)
    # A rollout started during the last update, while the critic learned (fused rollouts only).
    pending: Callable[[], torch.Tensor] | None = None

    def start_rollout() -> Callable[[], torch.Tensor]:
        # The fused rollout's noise seed comes from torch's generator: runs stay reproducible
        # and a resume (which restores that generator) continues the same stream.
        fused_seed = int(torch.randint(2**31 - 1, ()).item()) if fused else None
        return start_collect(env, agent, obs, storage, fused_seed)

    def start_next_rollout() -> None:
        """Called by the update between the policy's steps and the critic's: the next rollout
        needs only the policy, so it runs in JAX while torch fits the critic."""
        nonlocal pending
        pending = start_rollout()

    def finish_pending() -> None:
        """Let the rollout in flight finish now, so an evaluation's clock does not count it
        (the loop's own call of ``pending`` then returns at once)."""
        if pending is not None:
            pending()

    nonfinite = _NonFiniteGuard(cfg.max_nonfinite, agent, algo, reward_norm, comm)
    signals = ExitStack()
    stop = signals.enter_context(_stop_on_signals())
    try:
        while iteration < num_iterations:
            algo.set_progress(iteration / num_iterations)
            t0 = time.perf_counter()
            if pending is None:
                pending = start_rollout()
            obs, pending = pending(), None
            t_rollout = time.perf_counter() - t0  # with a rollout started during the update: the wait
            t1 = time.perf_counter()
            if not comm.all_true(storage.all_finite()):
                # A simulator that blew up: keep these numbers out of the normalizers and the
                # update, and start every env afresh.
                nonfinite.failed(iteration, "an observation or reward of the rollout")
                obs = env.reset(env_seed + 7_919 * (iteration + 1))
                metrics, t2 = {}, time.perf_counter()
            else:
                saved = nonfinite.snapshot()
                rewards = None if reward_norm is None else reward_norm(storage.rewards, storage.dones)
                batch = make_batch(agent, storage, cfg.gamma, cfg.gae_lambda, cfg.reward_scale, rewards=rewards,
                                   comm=comm)
                t2 = time.perf_counter()
                overlap = fused and cfg.overlap_critic and iteration + 1 < num_iterations
                metrics = algo.update(batch, between=start_next_rollout if overlap else None)
                if nonfinite.check(metrics):
                    nonfinite.succeeded()
                else:
                    nonfinite.restore(saved)
                    if pending is not None:  # collected by the policy just undone: drop it
                        pending()
                        pending = None
                        obs = env.reset(env_seed + 7_919 * (iteration + 1))
                    nonfinite.failed(iteration, "the update (loss, gradient or weights)")
                    metrics = {}
            t_batch, t_update = t2 - t1, time.perf_counter() - t2
            if first_update_s is not None:  # steady state: the first iteration compiles
                for key, value in (("rollout", t_rollout), ("batch", t_batch), ("update", t_update)):
                    phase_seconds[key] += value
            if first_update_s is None:
                first_update_s = time.perf_counter() - entered
                steady_start, steady_eval0 = time.perf_counter(), eval_seconds
            iteration += 1
            global_step += steps_per_iter

            ep_ret, ep_len = storage.finished_episodes()
            keep = torch.isfinite(ep_ret)  # a blown-up simulator's episodes are not returns
            ep_ret, ep_len = ep_ret[keep], ep_len[keep]
            recent_returns.extend(ep_ret.tolist())
            recent_lengths.extend(ep_len.float().tolist())
            elapsed = time.perf_counter() - start
            sps = (global_step - start_step) / (elapsed - eval_seconds)
            last_sps = sps
            metrics.update({
                "charts/SPS": sps,
                "charts/learning_rate": algo.learning_rate,
                "charts/rollout_seconds": t_rollout,
                "charts/batch_seconds": t_batch,
                "charts/update_seconds": t_update,
                "charts/update_fraction": t_update / (t_rollout + t_batch + t_update),
                "charts/wall_clock": wall_before + elapsed,
            })
            if len(ep_ret):
                metrics["charts/episodic_return"] = float(ep_ret.mean())
                metrics["charts/episodic_length"] = float(ep_len.float().mean())
            fabric.log_dict(metrics, step=global_step)

            bar.update(steps_per_iter)
            if cfg.eval_episodes and cfg.eval_every and (global_step // cfg.eval_every) > ((global_step - steps_per_iter) // cfg.eval_every):
                if iteration < num_iterations and rank0:  # the final evaluation follows the loop
                    finish_pending()
                    run_eval()
            bar.set_postfix(SPS=f"{sps:,.0f}", ret=f"{np.mean(recent_returns):.0f}" if recent_returns else "-",
                            eval=f"{last_eval['eval/episodic_return']:.0f}" if last_eval else "-")
            stopping = comm.any_true(stop["signum"] is not None)  # every process stops together
            if iteration % cfg.checkpoint_every == 0 or iteration == num_iterations or stopping:
                path = run_dir / CKPT_DIR / "last.ckpt"
                if rank0:
                    path = save_checkpoint(run_dir, checkpoint_state(), global_step, cfg.keep_checkpoints)
                if stopping:
                    logger.finalize("interrupted")
                    raise TrainingInterrupted(stop["signum"] or signal.SIGTERM, path)
        if cfg.eval_episodes > 0 and rank0:
            run_eval()
        param_diff = _max_param_difference(agent, comm)
    finally:
        signals.close()
        bar.close()
        env.close()
        if eval_env is not None:
            eval_env.close()

    summary: dict[str, float] = {
        "global_step": float(global_step),
        "train/final_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
        "train/final_length": float(np.mean(recent_lengths)) if recent_lengths else float("nan"),
        # A resume that had nothing left to train reports the speed saved with the run.
        "charts/SPS": last_sps if global_step == start_step
        else (global_step - start_step) / max(time.perf_counter() - start - eval_seconds, 1e-9),
        "time/first_update_s": float(first_update_s or 0.0),
        "time/steady_sps": last_sps if global_step - start_step <= steps_per_iter
        else (global_step - start_step - steps_per_iter)
        / max(time.perf_counter() - steady_start - (eval_seconds - steady_eval0), 1e-9),
        **{f"time/{k}_s": v for k, v in phase_seconds.items()},
        "time/wall_clock_s": wall_before + time.perf_counter() - start,
    }
    summary.update(last_eval)
    summary["time/eval_s"] = eval_seconds
    if comm.active:
        summary["ddp/world_size"] = float(comm.world_size)
        summary["ddp/max_param_difference"] = param_diff
    logger.finalize("success")
    if rank0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _max_param_difference(agent: Agent, comm: Comm) -> float:
    """Largest difference between this process's weights and their mean over processes: 0
    when data-parallel training kept every copy the same, as it must."""
    if not comm.active:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).double() for p in agent.parameters()])
    return float((comm.mean(flat) - flat).abs().max())
