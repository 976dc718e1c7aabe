"""Training configuration: one dataclass, defaults from the presets, validation up front."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

ALGOS = ("ppo", "trpo")
BACKENDS = ("spring", "positional", "generalized", "mjx")  # Brax physics pipelines
DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp")


class ConfigError(ValueError):
    """A bad setting: the message names the value and what is allowed."""


def unknown_choice(what: str, value: str, choices: tuple[str, ...] | list[str]) -> ConfigError:
    """``unknown algo 'ppp' (did you mean 'ppo'?); choose one of ppo, trpo``."""
    import difflib

    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(choices)}")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field docs become ``--help`` text."""

    algo: str = field(default="ppo", metadata={"help": f"algorithm: {', '.join(ALGOS)}"})
    env: str = field(default="ant", metadata={"help": "task name (see `stridelab envs`)"})
    backend: str = field(default="spring", metadata={"help": "Brax physics backend: spring, positional, generalized, mjx"})
    total_steps: int = field(default=5_000_000, metadata={"help": "env steps to train for (all envs together)"})
    num_envs: int = field(default=2048, metadata={"help": "envs stepped in parallel"})
    num_steps: int = field(default=16, metadata={"help": "steps per env per iteration"})
    fused_rollout: bool = field(default=True, metadata={"help": "Brax: run each rollout as one compiled program with the policy inside (--no-fused-rollout steps from Python)"})
    overlap_critic: bool = field(default=True, metadata={"help": "fused rollouts: fit the value net on half the CPU threads while the next rollout runs (--no-overlap-critic: one after the other)"})
    episode_length: int = field(default=1000, metadata={"help": "time limit in steps (a truncation)"})
    seed: int = field(default=1, metadata={"help": "random seed"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when present, else CPU), cpu or cuda"})
    devices: int = field(default=1, metadata={"help": "data-parallel processes on this machine (GPUs, or CPU processes)"})
    strategy: str = field(default="auto", metadata={"help": "Lightning strategy for --devices > 1: auto (= ddp) or ddp"})
    num_nodes: int = field(default=1, metadata={"help": "machines taking part in data-parallel training"})
    run_dir: str = field(default="", metadata={"help": "where logs and checkpoints go (default runs/<env>_<algo>_s<seed>)"})

    gamma: float = field(default=0.97, metadata={"help": "discount"})
    gae_lambda: float = field(default=0.95, metadata={"help": "GAE lambda"})
    reward_scale: float = field(default=1.0, metadata={"help": "rewards are multiplied by this for learning (not for logged returns)"})
    normalize_reward: bool = field(default=False, metadata={"help": "divide rewards by a running std of the discounted return (Gymnasium's NormalizeReward) for learning"})
    init_std: float = field(default=0.69, metadata={"help": "initial policy std (softplus(0) + 0.001 = 0.69 is the original design's)"})
    norm_adv: bool = field(default=True, metadata={"help": "normalize advantages per batch"})

    # PPO
    learning_rate: float = field(default=3e-4, metadata={"help": "PPO: Adam learning rate"})
    anneal_lr: bool = field(default=False, metadata={"help": "PPO: anneal the learning rate linearly to 0"})
    update_epochs: int = field(default=4, metadata={"help": "PPO: epochs over each batch"})
    num_minibatches: int = field(default=16, metadata={"help": "PPO: minibatches per epoch"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO: surrogate clip epsilon"})
    ent_coef: float = field(default=0.0, metadata={"help": "PPO: entropy bonus coefficient"})
    vf_coef: float = field(default=0.5, metadata={"help": "PPO: value loss coefficient"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "PPO: gradient-norm clip, per network"})
    target_kl: float | None = field(default=None, metadata={"help": "PPO: stop the epochs when approx KL exceeds this"})

    # TRPO
    max_kl: float = field(default=0.01, metadata={"help": "TRPO: trust region, mean KL(old || new)"})
    damping: float = field(default=0.1, metadata={"help": "TRPO: Fisher damping"})
    cg_iters: int = field(default=10, metadata={"help": "TRPO: conjugate gradient iterations"})
    backtrack_ratio: float = field(default=0.8, metadata={"help": "TRPO: line search shrink factor"})
    max_backtracks: int = field(default=10, metadata={"help": "TRPO: line search steps"})
    fisher_fraction: float = field(default=0.1, metadata={"help": "TRPO: fraction of the batch used for Fisher-vector products"})
    vf_learning_rate: float = field(default=1e-3, metadata={"help": "TRPO: critic Adam learning rate"})
    vf_epochs: int = field(default=2, metadata={"help": "TRPO: critic epochs per batch"})
    vf_minibatches: int = field(default=16, metadata={"help": "TRPO: critic minibatches per epoch"})

    checkpoint_every: int = field(default=10, metadata={"help": "iterations between checkpoints"})
    keep_checkpoints: int = field(default=3, metadata={"help": "how many recent checkpoints to keep"})
    eval_every: int = field(default=1_000_000, metadata={"help": "env steps between deterministic evaluations (0: only at the end)"})
    eval_episodes: int = field(default=16, metadata={"help": "episodes per deterministic evaluation (0: no evaluation)"})
    max_nonfinite: int = field(default=5, metadata={"help": "consecutive updates skipped for NaN/inf before training stops"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_steps // self.batch_size)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        data = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def load_presets() -> dict[str, Any]:
    text = resources.files("stridelab.presets").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def preset_for(env: str, algo: str) -> dict[str, Any]:
    """Preset values, later tables winning: ``[common]``, ``[algo]``, the simulator's table
    (``[brax]`` or ``[gymnasium]``) and its ``[sim.algo]``, then the task's ``[env]`` and
    ``[env.algo]``."""
    from stridelab.envs.registry import simulator_of

    presets = load_presets()
    merged: dict[str, Any] = dict(presets.get("common", {}))
    merged.update(presets.get(algo, {}))
    for table in (simulator_of(env), env):
        section = presets.get(table, {})
        merged.update({k: v for k, v in section.items() if not isinstance(v, dict)})
        merged.update(section.get(algo, {}))
    return merged


def build_config(overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < presets for (env, algo) < explicit ``overrides`` (flags given by the user)."""
    base = TrainConfig()
    algo = overrides.get("algo", base.algo)
    env = overrides.get("env", base.env)
    values = {**preset_for(env, algo), **overrides}
    cfg = TrainConfig(**values)
    if not cfg.run_dir:
        cfg.run_dir = str(Path("runs") / f"{cfg.env}_{cfg.algo}_s{cfg.seed}")
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` with one line naming the bad value and what is allowed."""
    if cfg.algo not in ALGOS:
        raise unknown_choice("algo", cfg.algo, ALGOS)
    if cfg.device not in DEVICES:
        raise unknown_choice("device", cfg.device, DEVICES)
    if cfg.backend not in BACKENDS:
        raise unknown_choice("backend", cfg.backend, BACKENDS)
    if cfg.strategy not in STRATEGIES:
        raise unknown_choice("strategy", cfg.strategy, STRATEGIES)
    positive_ints = ["total_steps", "num_envs", "num_steps", "episode_length", "update_epochs",
                     "num_minibatches", "cg_iters", "max_backtracks", "vf_epochs", "vf_minibatches",
                     "checkpoint_every", "keep_checkpoints", "max_nonfinite", "devices", "num_nodes"]
    for name in positive_ints:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    for name in ["eval_episodes", "eval_every"]:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if not (math.isfinite(cfg.init_std) and cfg.init_std > 0.001):
        raise ConfigError(f"--init-std must be a finite number > 0.001 (the std floor), got {cfg.init_std!r}")
    positive_floats = ["learning_rate", "clip_coef", "max_grad_norm", "max_kl", "backtrack_ratio",
                       "vf_learning_rate", "reward_scale"]
    for name in positive_floats:
        value = getattr(cfg, name)
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number > 0, got {value!r}")
    for name in ["ent_coef", "vf_coef", "damping"]:
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
    for name in ["gamma", "gae_lambda"]:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value!r}")
    if not (math.isfinite(cfg.fisher_fraction) and 0.0 < cfg.fisher_fraction <= 1.0):
        raise ConfigError(f"--fisher-fraction must be in (0, 1], got {cfg.fisher_fraction!r}")
    if not cfg.backtrack_ratio < 1.0:
        raise ConfigError(f"--backtrack-ratio must be in (0, 1), got {cfg.backtrack_ratio!r}")
    if cfg.target_kl is not None and not (math.isfinite(cfg.target_kl) and cfg.target_kl > 0):
        raise ConfigError(f"--target-kl must be a finite number > 0, got {cfg.target_kl!r}")
    for mb_name in ["num_minibatches", "vf_minibatches"]:
        mb = getattr(cfg, mb_name)
        if cfg.batch_size < 2 * mb:
            raise ConfigError(
                f"--{mb_name.replace('_', '-')} {mb} leaves fewer than 2 samples per minibatch of the batch of "
                f"{cfg.batch_size}; use at most {cfg.batch_size // 2}"
            )
        if cfg.batch_size % mb != 0:
            raise ConfigError(
                f"batch of {cfg.batch_size} (num_envs {cfg.num_envs} x num_steps {cfg.num_steps}) "
                f"does not divide into --{mb_name.replace('_', '-')} {mb}; choose a divisor"
            )
    if cfg.total_steps < cfg.batch_size:
        raise ConfigError(
            f"--total-steps {cfg.total_steps} is less than one batch ({cfg.batch_size} = "
            f"num_envs {cfg.num_envs} x num_steps {cfg.num_steps})"
        )
