"""Training configuration: one dataclass, defaults from the presets, validation up front."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stridelab.errors import ConfigError, flag_name, unknown_choice  # noqa: F401  (ConfigError: also imported from here)
from stridelab.presets import load_presets


DEVICES = ("auto", "cpu", "cuda")
STRATEGIES = ("auto", "ddp")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Field docs become ``--help`` text."""

    algo: str = field(default="ppo", metadata={"help": "algorithm (see `stridelab train --help` for the registered ones)"})
    env: str = field(default="ant", metadata={"help": "task: a name `stridelab envs` lists, any registered Gymnasium id with continuous actions (module:EnvId imports the module that registers it first), or a Brax env's name"})
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "the env's constructor arguments, KEY=VALUE each (values as Python literals, a comma list as a tuple, else text): gymnasium.make's, e.g. xml_file=scene.xml frame_skip=25 healthy_z_range=0.195,0.75, Brax's get_environment's, or a native MuJoCo task's settings (Go1: command_range=1.5,0.8,1.2 penalty_curriculum=0.3,0.5 reward_weights={'pose':0}); saved in config.json"})
    backend: str = field(default="spring", metadata={"help": "Brax physics backend: spring, positional, generalized, mjx"})
    total_steps: int = field(default=5_000_000, metadata={"help": "env steps to train for (all envs together)"})
    num_envs: int = field(default=2048, metadata={"help": "envs stepped in parallel"})
    num_steps: int = field(default=16, metadata={"help": "steps per env per iteration"})
    fused_rollout: bool = field(default=True, metadata={"help": "Brax: run each rollout as one compiled program with the policy inside (--no-fused-rollout steps from Python)"})
    env_shards: str = field(default="auto", metadata={"help": "Brax: split the env batch into this many shards, each stepped on its own XLA device (a CPU core, or a GPU) inside this one process; auto: one per core or GPU, at least 128 envs each, num_envs divisible; 1: one device, as before. Native MuJoCo: the threads stepping the batch (auto: every core)"})
    torch_threads: str = field(default="auto", metadata={"help": "torch's CPU threads for the update: auto: each iteration, the cores other programs left idle during the last one (at most torch's own count); N: always N"})
    overlap_critic: bool = field(default=True, metadata={"help": "fit the value net while the next rollout runs (fused rollouts, on half the CPU threads; native MuJoCo, the rollout on a thread of its own); --no-overlap-critic: one after the other, the same numbers"})
    episode_length: int = field(default=1000, metadata={"help": "time limit in steps (a truncation)"})
    randomize: str = field(default="none", metadata={"help": "domain randomization of the training envs (native MuJoCo's Go1JoystickFlatTerrain): none, all, or a comma list of foot_friction, payload, com_shift, motor_strength, pushes, action_latency; evaluation reports nominal and randomized apart"})
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
    # Code-level optimizations (Engstrom et al. 2020, "Implementation Matters in Deep Policy
    # Gradients"), each a switch for every algorithm it applies to; docs/design.md has each one's source.
    norm_adv: bool = field(default=True, metadata={"help": "normalize advantages per (mini)batch"})
    normalize_obs: bool = field(default=True, metadata={"help": "normalize observations by a running mean and std (Baselines' VecNormalize)"})
    obs_clip: float = field(default=10.0, metadata={"help": "clip normalized observations to [-c, c] (0: no clip)"})
    reward_clip: float = field(default=0.0, metadata={"help": "clip the learning rewards (after --normalize-reward) to [-c, c] (0: no clip)"})
    clip_vloss: bool = field(default=False, metadata={"help": "clip the value loss around the old values by --clip-coef (PPO2's value clipping)"})
    ortho_init: bool = field(default=False, metadata={"help": "orthogonal initialization with layer scaling: hidden layers gain sqrt(2), value output 1"})
    clip_grad: bool = field(default=True, metadata={"help": "clip each network's gradient norm to --max-grad-norm"})
    state_dependent_std: bool = field(default=True, metadata={"help": "the policy's std from a softplus head on the trunk (the original design); --no-state-dependent-std: one learned log-std per action dimension (SB3, CleanRL, rsl_rl)"})
    symmetric: bool = field(default=False, metadata={"help": "a left-right symmetric policy and value net, built on the task's reflection (Go1JoystickFlatTerrain): a gait learned turning one way is the gait turning the other"})
    network: str = field(default="", metadata={"help": "a named policy and value network (the presets' [networks.NAME] tables); its fields win over the presets, a variant's switches and flags over it (empty: the presets' own)"})
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128], metadata={"help": "hidden layer sizes of the policy and (unless --value-hidden-sizes) the value net"})
    value_hidden_sizes: list[int] | None = field(default=None, metadata={"help": "hidden layer sizes of the value net (default: --hidden-sizes)"})
    activation: str = field(default="relu", metadata={"help": "hidden layers' activation: relu, tanh, elu, silu"})

    # PPO
    learning_rate: float = field(default=3e-4, metadata={"help": "PPO: Adam learning rate"})
    anneal_lr: bool = field(default=False, metadata={"help": "anneal the learning rates (PPO's, TRPO's critic's) linearly to 0"})
    update_epochs: int = field(default=4, metadata={"help": "PPO: epochs over each batch"})
    num_minibatches: int = field(default=16, metadata={"help": "PPO: minibatches per epoch"})
    clip_coef: float = field(default=0.2, metadata={"help": "PPO: surrogate clip epsilon (also the value clip with --clip-vloss)"})
    ent_coef: float = field(default=0.0, metadata={"help": "PPO and TRPO: entropy bonus coefficient"})
    vf_coef: float = field(default=0.5, metadata={"help": "PPO: value loss coefficient"})
    max_grad_norm: float = field(default=0.5, metadata={"help": "gradient-norm clip, per network (with --clip-grad)"})
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
        """Write ``config.json`` whole or not at all (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read ``config.json``; a field of the wrong type is one line naming the file and field."""
        try:
            data = json.loads(Path(path).read_text())
        except ValueError as e:
            raise ConfigError(f"{str(path)!r} is not valid JSON ({e})") from None
        return config_from_dict(data, repr(str(path)))


def config_from_dict(data: Any, source: str) -> TrainConfig:
    """A :class:`TrainConfig` from saved settings (``config.json`` or a checkpoint's ``config``),
    each field's type checked; ``source`` names where they come from in the error. Unknown keys
    (from other versions) are ignored."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected an object of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    values = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in data:
            value = data[f.name]
            if not has_type(value, hints[f.name]):
                raise ConfigError(f"{source}: field {f.name!r} must be {_type_name(hints[f.name])}, got {value!r}")
            values[f.name] = value
    return TrainConfig(**values)


def has_type(value: Any, kind: Any, sequences: tuple[type, ...] = (list,)) -> bool:
    """Whether ``value`` is of the field type ``kind`` (a bool is no number; a list field takes
    any of ``sequences``: JSON gives lists, Python callers may pass tuples)."""
    if isinstance(kind, types.UnionType):
        return any(has_type(value, k, sequences) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is list:
        return isinstance(value, sequences) and all(has_type(v, typing.get_args(kind)[0]) for v in value)
    if typing.get_origin(kind) is dict:  # env_kwargs: names to values (what values JSON holds: envs.arguments)
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return isinstance(value, kind)


def _type_name(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
    if typing.get_origin(kind) is dict:
        return "an object of argument names to values"
    return names.get(kind, "a list of integers" if typing.get_origin(kind) is list else str(kind))


def preset_for(env: str, algo: str, network: str | None = None) -> dict[str, Any]:
    """Preset values, later tables winning: ``[common]``, the algorithm's (the preset section its
    registry entry names, then its own name's), the simulator's table (``[brax]``,
    ``[gymnasium]``) and its per-algorithm tables, what the task's registration gives (a
    Gymnasium id's time limit), the task's ``[env]`` and per-algorithm tables, then the named
    network's fields (``network``, else the one the tables name), and last a variant's switches
    (``[variants.<name>]``)."""
    from stridelab.algos import get
    from stridelab.envs.registry import preset_table, task_defaults

    entry = get(algo)
    sections = list(dict.fromkeys([entry.preset, algo]))
    presets = load_presets()
    merged: dict[str, Any] = dict(presets.get("common", {}))
    for section in sections:
        merged.update(presets.get(section, {}))
    _merge_table(merged, presets.get(preset_table(env), {}), sections)
    merged.update(task_defaults(env))
    _merge_table(merged, presets.get(env, {}), sections)
    merged.update(_network_fields(presets, merged.get("network", "") if network is None else network))
    merged.update(entry.switches)  # a variant's switches are what makes it that variant
    return merged


def _merge_table(merged: dict[str, Any], table: dict[str, Any], sections: list[str]) -> None:
    """A simulator's or task's table into ``merged``: its own values, then its per-algorithm ones."""
    merged.update({k: v for k, v in table.items() if not isinstance(v, dict)})
    for section in sections:
        merged.update(table.get(section, {}))


def _tables_of(presets: dict[str, Any], name: str, sections: list[str]) -> list[str]:
    """``[name]`` and its per-algorithm tables (``[name.ppo]``) that the presets hold."""
    table = presets.get(name)
    if not isinstance(table, dict):
        return []
    return [name, *(f"{name}.{s}" for s in sections if isinstance(table.get(s), dict))]


def presets_used(env: str, algo: str) -> dict[str, Any]:
    """Which presets a run of ``algo`` on ``env`` took: the tables of ``presets/defaults.toml``
    that apply (``tables``), whether the task has its own (``own``), what its registration gave
    (``registered``), and, for a task without its own, a ``note`` saying it trains with its
    simulator family's defaults (printed when training starts and saved in ``summary.json``)."""
    from stridelab.algos import get
    from stridelab.envs.registry import preset_table, task_defaults

    presets = load_presets()
    sections = list(dict.fromkeys([get(algo).preset, algo]))
    family = preset_table(env)
    tables = {name: _tables_of(presets, name, sections) for name in (family, env)}
    registered = task_defaults(env)
    out = {"family": family, "own": env in presets, "tables": [t for t in ["common", *sections] if t in presets]
           + tables[family] + tables[env], "registered": registered}
    if not out["own"]:
        limit = registered.get("episode_length")
        given = f" and its registered time limit ({limit:,} steps)" if limit else ""
        out["note"] = (f"{env} has no preset of its own: it trains with the {family} family's defaults "
                       f"({', '.join(f'[{t}]' for t in tables[family])} in stridelab/presets/defaults.toml){given}")
    return out


# What the weights' shapes, meaning and initialization depend on: fixed for the life of a run.
ARCHITECTURE = ("network", "hidden_sizes", "value_hidden_sizes", "activation", "state_dependent_std",
                "ortho_init", "init_std", "symmetric")


def network_descriptions() -> dict[str, str]:
    """Each named network's one-line description (``--help``)."""
    return {name: table.get("description", "") for name, table in load_presets().get("networks", {}).items()}


def _network_fields(presets: dict[str, Any], name: str) -> dict[str, Any]:
    """The fields a named network (``[networks.<name>]`` in the presets) sets; none for ``""``."""
    networks = presets.get("networks", {})
    if name and name not in networks:
        raise unknown_choice("network", name, tuple(networks))
    return {k: v for k, v in networks.get(name, {}).items() if k != "description"}


def build_config(overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < presets for (env, algo) < explicit ``overrides`` (flags given by the user)."""
    base = TrainConfig()
    algo = overrides.get("algo", base.algo)
    env = overrides.get("env", base.env)
    overrides = _time_limit_from_env_kwargs(overrides)
    cfg = TrainConfig(**{**preset_for(env, algo, overrides.get("network")), **overrides})
    if not cfg.run_dir:
        cfg.run_dir = str(Path("runs") / f"{run_name(cfg.env)}_{cfg.algo}_s{cfg.seed}")
    return cfg


def _time_limit_from_env_kwargs(overrides: dict[str, Any]) -> dict[str, Any]:
    """``max_episode_steps`` among the env arguments (as Gymnasium's tutorials pass it to
    ``gymnasium.make``) is the run's time limit, ``episode_length``: stridelab sets the limit
    itself, so the one number is kept once, where eval and video read it."""
    kwargs = overrides.get("env_kwargs")
    if not isinstance(kwargs, dict) or "max_episode_steps" not in kwargs:
        return overrides
    limit = kwargs["max_episode_steps"]
    if overrides.get("episode_length", limit) != limit:
        raise ConfigError(f"--env-kwargs max_episode_steps={limit!r} and --episode-length "
                          f"{overrides['episode_length']!r} disagree; give the time limit once")
    rest = {k: v for k, v in kwargs.items() if k != "max_episode_steps"}
    return {**overrides, "env_kwargs": rest, "episode_length": limit}


def run_name(env: str) -> str:
    """``env`` as a directory name: a factory's function name, a ``module:EnvId``'s ``EnvId``,
    any character a path or a shell would trip on (``/`` of a namespace, ``<lambda>``) as ``_``."""
    from stridelab.envs.factories import short_name

    return "".join(c if c.isalnum() or c in "-_." else "_" for c in short_name(env).rpartition(":")[2])


def validate(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` with one line naming the bad value and what is allowed."""
    from stridelab.algos import algorithm_names
    from stridelab.envs.registry import validate_settings

    if cfg.algo not in algorithm_names():
        raise unknown_choice("algo", cfg.algo, algorithm_names())
    if cfg.device not in DEVICES:
        raise unknown_choice("device", cfg.device, DEVICES)
    try:
        validate_settings(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.strategy not in STRATEGIES:
        raise unknown_choice("strategy", cfg.strategy, STRATEGIES)
    _validate_network(cfg)
    _validate_numbers(cfg)
    _validate_parallelism(cfg)
    _validate_batch(cfg)


def _validate_numbers(cfg: TrainConfig) -> None:
    positive_ints = ["total_steps", "num_envs", "num_steps", "episode_length", "update_epochs",
                     "num_minibatches", "cg_iters", "max_backtracks", "vf_epochs", "vf_minibatches",
                     "checkpoint_every", "keep_checkpoints", "max_nonfinite", "devices", "num_nodes"]
    for name in positive_ints:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{flag_name(name)} must be a positive integer, got {value!r}")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**31:
        raise ConfigError(f"--seed must be an integer in [0, 2**31), got {cfg.seed!r}")
    for name in ["eval_episodes", "eval_every", "obs_clip", "reward_clip"]:
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{flag_name(name)} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(cfg.init_std) and cfg.init_std > 0.001):
        raise ConfigError(f"--init-std must be a finite number > 0.001 (the std floor), got {cfg.init_std!r}")
    ranges = {  # name: (lowest, highest, whether the lowest itself is allowed)
        **dict.fromkeys(["learning_rate", "clip_coef", "max_grad_norm", "max_kl", "vf_learning_rate", "reward_scale"],
                        (0.0, math.inf, False)),
        **dict.fromkeys(["ent_coef", "vf_coef", "damping"], (0.0, math.inf, True)),
        **dict.fromkeys(["gamma", "gae_lambda"], (0.0, 1.0, True)),
    }
    for name, (low, high, low_ok) in ranges.items():
        value = getattr(cfg, name)
        if not (math.isfinite(value) and (value >= low if low_ok else value > low) and value <= high):
            allowed = f"in [{low:g}, {high:g}]" if high < math.inf else f"a finite number {'>=' if low_ok else '>'} 0"
            raise ConfigError(f"{flag_name(name)} must be {allowed}, got {value!r}")
    if not (math.isfinite(cfg.fisher_fraction) and 0.0 < cfg.fisher_fraction <= 1.0):
        raise ConfigError(f"--fisher-fraction must be in (0, 1], got {cfg.fisher_fraction!r}")
    if not (math.isfinite(cfg.backtrack_ratio) and 0.0 < cfg.backtrack_ratio < 1.0):
        raise ConfigError(f"--backtrack-ratio must be in (0, 1), got {cfg.backtrack_ratio!r}")
    if cfg.target_kl is not None and not (math.isfinite(cfg.target_kl) and cfg.target_kl > 0):
        raise ConfigError(f"--target-kl must be a finite number > 0, got {cfg.target_kl!r}")


def _validate_parallelism(cfg: TrainConfig) -> None:
    """``env_shards`` and ``torch_threads``: ``auto`` or a positive count, the shards dividing
    ``num_envs`` (whether there are that many devices is known once JAX starts: the env checks)."""
    for name in ("env_shards", "torch_threads"):
        value = str(getattr(cfg, name))
        if value != "auto" and (not value.isdigit() or int(value) < 1):
            raise ConfigError(f"{flag_name(name)} must be auto or a positive integer, got {getattr(cfg, name)!r}")
    value = str(cfg.env_shards)
    if value != "auto" and cfg.num_envs % int(value):
        raise ConfigError(f"--env-shards {value} does not divide --num-envs {cfg.num_envs} into equal shards")


def _validate_batch(cfg: TrainConfig) -> None:
    for mb_name in ["num_minibatches", "vf_minibatches"]:
        mb = getattr(cfg, mb_name)
        if cfg.batch_size < 2 * mb:
            raise ConfigError(
                f"{flag_name(mb_name)} {mb} leaves fewer than 2 samples per minibatch of the batch of "
                f"{cfg.batch_size}; use at most {cfg.batch_size // 2}"
            )
        if cfg.batch_size % mb != 0:
            raise ConfigError(
                f"batch of {cfg.batch_size} (num_envs {cfg.num_envs} x num_steps {cfg.num_steps}) "
                f"does not divide into {flag_name(mb_name)} {mb}; choose a divisor"
            )
    if cfg.total_steps < cfg.batch_size:
        raise ConfigError(
            f"--total-steps {cfg.total_steps} is less than one batch ({cfg.batch_size} = "
            f"num_envs {cfg.num_envs} x num_steps {cfg.num_steps})"
        )


def _validate_network(cfg: TrainConfig) -> None:
    from stridelab.models import ACTIVATIONS

    if cfg.activation not in ACTIVATIONS:
        raise unknown_choice("activation", cfg.activation, tuple(ACTIVATIONS))
    for name in ("hidden_sizes", "value_hidden_sizes"):
        sizes = getattr(cfg, name)
        if sizes is None and name == "value_hidden_sizes":
            continue
        if not isinstance(sizes, (list, tuple)) or not sizes or not all(
                isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise ConfigError(f"{flag_name(name)} must be one or more positive integers, got {sizes!r}")
