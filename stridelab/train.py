"""Set up a training run and hand it to the :class:`~stridelab.runner.Runner`.

:func:`train` builds what the loop needs from a :class:`~stridelab.config.TrainConfig`: the device
(and, for data-parallel processes, Lightning Fabric), the envs (:func:`stridelab.envs.make_env`), the
networks, the algorithm (by name, :mod:`stridelab.algos`) and the TensorBoard logger; resumes from
the run's last checkpoint when asked; then runs the loop and writes ``summary.json``.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack, closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stridelab.algos import make_algorithm
from stridelab.config import DEVICES, ConfigError, TrainConfig, unknown_choice, validate
from stridelab.distributed import Comm, started_as_first_process
from stridelab.envs import VecEnv, make_env
from stridelab.envs.registry import task_options
from stridelab.interrupt import StopRequested, raise_if_stopped, stop_on_signals
from stridelab.models import build_agent
from stridelab.rundir import choose_checkpoint, set_aside_later_checkpoints, writer
from stridelab.runner import NonFiniteError, Runner, TrainingInterrupted, seed_generators, write_summary
from stridelab.seeds import Streams
from stridelab.tblog import TensorBoardLog

__all__ = ["NonFiniteError", "StopRequested", "TrainingInterrupted", "resolve_device", "train"]

Resumed = tuple[Path, dict[str, Any]]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is usable, else ``cpu``."""
    if device not in DEVICES:
        raise unknown_choice("device", device, DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device auto or cpu")
    return device


def train(cfg: TrainConfig, resume: bool = False, env: VecEnv | None = None,
          eval_env: VecEnv | None = None, checkpoint: str | None = None) -> dict[str, float]:
    """Train per ``cfg``; returns the summary (final return, speed, wall-clock).

    ``resume`` continues from ``cfg.run_dir``'s newest intact checkpoint, or from ``checkpoint``
    (a path or a file name in its ``checkpoints/``). ``env`` and ``eval_env`` replace the envs
    ``cfg`` names for training (``cfg.num_envs`` copies) and evaluation (``cfg.eval_episodes``
    copies), for example wrapped ones; the caller then closes them. The first process holds the
    run directory's lock throughout (:mod:`stridelab.rundir`); SIGINT or SIGTERM before the first
    update raises :class:`StopRequested`, after it :class:`TrainingInterrupted`.
    """
    started = time.perf_counter()  # "time/first_update_s" counts set-up and compilation from here
    validate(cfg)
    first = started_as_first_process()
    with stop_on_signals(), (writer(Path(cfg.run_dir)) if first else nullcontext()):
        raise_if_stopped()
        resumed = _resume_from(cfg, checkpoint, first) if resume else None
        processes, logger = _launch(cfg, resolve_device(cfg.device),
                                 purge_step=None if resumed is None else int(resumed[1]["global_step"]) + 1)
        raise_if_stopped()
        return _build_and_run(cfg, processes, logger, resumed, env, eval_env, started)


def _resume_from(cfg: TrainConfig, checkpoint: str | None, first: bool) -> Resumed:
    """The checkpoint to continue from; later step files of another timeline are set aside."""
    path, state = choose_checkpoint(Path(cfg.run_dir), checkpoint, map_location="cpu",
                                    **({} if first else {"warn": lambda message: None}))
    if first:
        for moved in set_aside_later_checkpoints(Path(cfg.run_dir), int(state["global_step"])):
            print(f"stridelab: note: {moved.name} is later than the checkpoint resumed from; kept in "
                  f"{moved.parent}", file=sys.stderr)
    return path, state


def _build_and_run(cfg: TrainConfig, processes: Any, logger: Any, resumed: Resumed | None, env: VecEnv | None,
                   eval_env: VecEnv | None, started: float) -> dict[str, float]:
    comm, streams = Comm.from_fabric(processes), Streams(cfg.seed, processes.global_rank)
    seed_generators(streams.weights())  # the same initial weights in every process
    device = processes.device

    def build(num_envs: int, shards: int | str, **options: Any) -> VecEnv:
        return make_env(cfg.env, num_envs, device=device, backend=cfg.backend, episode_length=cfg.episode_length,
                        shards=shards, env_kwargs=cfg.env_kwargs, **options)

    with ExitStack() as owned:  # the envs built here are closed here
        if env is None:  # --randomize reaches the training envs; evaluation's are nominal
            env = owned.enter_context(closing(build(cfg.num_envs, _env_shards(cfg), **task_options(cfg))))
        raise_if_stopped()
        agent = build_agent(cfg, env.spec).to(device)
        algo = make_algorithm(agent, cfg, comm)
        if comm.active:  # ... but each process its own actions and envs
            seed_generators(streams.process())
        make_eval_env = (lambda: eval_env) if eval_env is not None else (
            lambda: owned.enter_context(closing(build(cfg.eval_episodes, 1))))
        runner = Runner(cfg, env, agent, algo, [logger], cfg.run_dir, make_eval_env, comm=comm, started=started)
        return _run(runner, cfg, processes, logger, resumed)


def _env_shards(cfg: TrainConfig) -> int | str:
    """``cfg.env_shards`` as the env takes it: one shard in a data-parallel process, which
    already owns its device (its GPU, or its share of the cores)."""
    if cfg.devices * cfg.num_nodes > 1:
        return 1
    return "auto" if cfg.env_shards == "auto" else int(cfg.env_shards)


def _run(runner: Runner, cfg: TrainConfig, processes: Any, logger: Any, resumed: Resumed | None) -> dict[str, float]:
    """Resume if asked, record the config, train, write the summary."""
    if resumed is not None:
        runner.state.load_state_dict(resumed[1], resumed[0])
    raise_if_stopped()
    if processes.is_global_zero:
        cfg.save(Path(cfg.run_dir) / "config.json")  # the config in effect (a resume may extend total_steps)
    if resumed is None:
        logger.log_hyperparams({k: (str(v) if v is None else v) for k, v in cfg.to_dict().items()})
    summary = runner.learn()
    logger.finalize("success")
    if processes.is_global_zero:
        write_summary(Path(cfg.run_dir), summary, device=str(processes.device), command_set=runner.command_set)
    return summary


@dataclass(frozen=True)
class OneProcess:
    """What the loop reads of Lightning Fabric, for a run in one process on one device: the
    common case, which then never imports Lightning (about 5 s of every start)."""

    device: torch.device
    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0


def _launch(cfg: TrainConfig, device: str, purge_step: int | None = None) -> tuple[Any, TensorBoardLog]:
    """The processes and the TensorBoard log (``purge_step``: see :class:`TensorBoardLog`). One
    process: :class:`OneProcess`. Several (``--devices``, ``--num-nodes``): Lightning Fabric
    starts the others (re-running the command with their rank set) and joins the process group;
    each process then trains its own share of envs, and only the first writes the log."""
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    world = cfg.devices * cfg.num_nodes
    if world == 1 and cfg.strategy == "auto":
        processes: Any = OneProcess(torch.device("cuda", 0) if device == "cuda" else torch.device(device))
    else:
        processes = _fabric(cfg, device, world)
    return processes, TensorBoardLog(cfg.run_dir, purge_step, enabled=processes.is_global_zero)


def _fabric(cfg: TrainConfig, device: str, world: int) -> Any:
    from lightning.fabric import Fabric

    strategy = "ddp" if world > 1 and cfg.strategy == "auto" else cfg.strategy
    fabric = Fabric(accelerator=device, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=strategy)
    if cfg.num_nodes > 1 and started_as_first_process():
        print(f"stridelab: note: --num-nodes {cfg.num_nodes}: waiting for the other machines to join (run the same "
              f"command on each with NODE_RANK=1..{cfg.num_nodes - 1} and this machine's MASTER_ADDR and "
              f"MASTER_PORT; docs/scaling.md)", file=sys.stderr, flush=True)
    if world > 1:
        fabric.launch()
        if device == "cpu":
            _pin_to_share_of_cores(fabric.local_rank, cfg.devices)
    return fabric


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
