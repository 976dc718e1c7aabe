"""Evaluation: average undiscounted episode returns of a policy, like the original test_agent."""

from __future__ import annotations

from pathlib import Path

import torch

from stridelab.checkpoint import CheckpointError, load_weights
from stridelab.config import TrainConfig, config_from_dict
from stridelab.envs import VecEnv, make_env
from stridelab.models import ActorCritic, build_agent
from stridelab.rundir import choose_checkpoint
from stridelab.seeds import Streams


@torch.no_grad()
def run_episodes(agent: ActorCritic, env: VecEnv, seed: int, deterministic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One episode in each of ``env``'s envs, all in parallel, from fresh states drawn with ``seed``.

    Returns ``(returns, lengths)``, each ``[num_envs]`` on CPU: undiscounted returns of each env's
    first episode, which ends by termination or the time limit.
    """
    n, device = env.num_envs, env.device
    obs = env.reset(seed)
    returns = torch.zeros(n, device=device)
    lengths = torch.zeros(n, dtype=torch.int32, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(env.spec.episode_length):
        action, _ = agent.act(obs, deterministic=deterministic)
        res = env.step(action)
        new = res.done & ~finished
        returns = torch.where(new, res.episode_return, returns)
        lengths = torch.where(new, res.episode_length, lengths)
        finished |= res.done
        obs = res.obs
        if bool(finished.all()):
            break
    return returns.cpu(), lengths.cpu()


def evaluate_agent(agent: ActorCritic, cfg: TrainConfig, episodes: int, deterministic: bool = True,
                   device: torch.device | str = "cpu", seed: int | None = None) -> torch.Tensor:
    """Undiscounted returns ``[episodes]`` of ``episodes`` fresh episodes of ``cfg``'s task."""
    env = make_env(cfg.env, episodes, device=device, backend=cfg.backend, episode_length=cfg.episode_length,
                   env_kwargs=cfg.env_kwargs)
    try:
        returns, _ = run_episodes(agent, env, Streams(cfg.seed).evaluation() if seed is None else seed, deterministic)
    finally:
        env.close()
    return returns


def evaluate_commands(agent: ActorCritic, cfg: TrainConfig, envs_per_command: int, device: torch.device | str = "cpu",
                      seed: int | None = None) -> dict | None:
    """A velocity-command task's tracking over the fixed command set, nominal and randomized
    (:func:`stridelab.locomotion.command_set`); ``None`` for other tasks."""
    import stridelab.locomotion as locomotion

    if not locomotion.supports(cfg.env):
        return None
    return locomotion.command_set(agent, cfg.env, cfg.episode_length, envs_per_command,
                                  Streams(cfg.seed).evaluation() if seed is None else seed, device,
                                  env_kwargs=cfg.env_kwargs)


def load_agent(run_dir: Path, device: str = "cpu", checkpoint: str | None = None) -> tuple[ActorCritic, TrainConfig, dict]:
    """The networks (normalizer included, built as the run's config describes them), the config
    and the raw checkpoint from a run directory: its newest intact checkpoint, or ``checkpoint``
    (a path, or a file name in its ``checkpoints/``)."""
    path, state = choose_checkpoint(Path(run_dir), checkpoint, map_location=device)
    source = f"checkpoint {str(path)!r}"
    cfg = config_from_dict(state["config"], f"{source}'s config")
    try:
        agent = build_agent(cfg, state["env_spec"])
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise CheckpointError(f"{source} has an unreadable config or task ({e})") from None
    load_weights(agent, state["agent"], path)
    return agent.to(device).eval(), cfg, state
