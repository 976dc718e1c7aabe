"""The Python API: the command line's verbs for scripts and notebooks, on the same code paths.

::

    import stridelab

    run = stridelab.train(env="ant", algo="ppo", total_steps=1_000_000, seed=1, num_envs=1024)
    run.evaluate(episodes=16)          # {'mean': ..., 'std': ..., 'returns': [...], ...}
    run.video()                        # inline in Jupyter, else the MP4's path
    run.export("policy.onnx")          # also .pt2
    report = stridelab.compare(env="ant", algos=["trpo", "ppo"], seeds=3, total_steps=1_500_000)

``stridelab train/eval/export/video/compare`` (:mod:`stridelab.cli`) parse their flags and call
the functions below; bad arguments raise :class:`~stridelab.errors.ConfigError` here with the
message the command line prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stridelab.errors import ConfigError, flag_name, unknown_choice

if typing.TYPE_CHECKING:
    import numpy as np

    from stridelab.config import TrainConfig

__all__ = ["CompareJob", "ConfigError", "Report", "Run", "compare", "load", "report", "train"]


@contextlib.contextmanager
def config_errors() -> Iterator[None]:
    """Bad input found by lower layers (an unknown env, a missing run directory) as one
    exception type, :class:`ConfigError`, with the same message."""
    from stridelab.checkpoint import CheckpointError

    try:
        yield
    except ConfigError:
        raise
    except (CheckpointError, ValueError) as e:
        raise ConfigError(str(e)) from None


# --------------------------------------------------------------------------------------------
# settings given as Python values (the CLI's parser checks the same for flags)


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Each name a :class:`TrainConfig` field and each value of its type, else :class:`ConfigError`."""
    from stridelab.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for name, value in settings.items():
        if name not in hints:
            close = difflib.get_close_matches(name, list(hints), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {name!r}{hint}; the settings are `stridelab train --help`'s "
                              f"flags with _ for -")
        if not _has_type(value, hints[name]):
            raise ConfigError(f"argument {flag_name(name)}: expected {_type_words(hints[name])}, got {value!r}")
    return dict(settings)


def _has_type(value: Any, kind: Any) -> bool:
    from stridelab.config import has_type

    return has_type(value, kind, sequences=(list, tuple))


def _without_none(kind: Any) -> Any:
    """``X | None`` -> ``X``; any other type as it is."""
    if isinstance(kind, types.UnionType):
        return next(k for k in typing.get_args(kind) if k is not type(None))
    return kind


def _type_words(kind: Any) -> str:
    kind = _without_none(kind)
    words = {bool: "True or False", int: "an integer", float: "a number", str: "a string"}
    if typing.get_origin(kind) is dict:
        return "a dict of argument names to values"
    return words.get(kind, "a list of integers")


def to_flags(settings: dict[str, Any]) -> list[str]:
    """Settings as ``stridelab train`` flags (``{"num_envs": 32, "clip_vloss": False}`` ->
    ``["--num-envs", "32", "--no-clip-vloss"]``, ``{"env_kwargs": {"frame_skip": 25}}`` ->
    ``["--env-kwargs", "frame_skip=25"]``), for the runs ``compare`` starts."""
    from stridelab.envs.arguments import format_pair

    flags: list[str] = []
    for name, value in settings.items():
        if isinstance(value, bool):
            flags.append(flag_name(name) if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, dict):  # env_kwargs: {"frame_skip": 25} -> --env-kwargs frame_skip=25
            flags += [flag_name(name), *(format_pair(k, v) for k, v in value.items())] if value else []
        elif isinstance(value, (list, tuple)):
            flags += [flag_name(name), *map(str, value)]
        elif value is not None:
            flags += [flag_name(name), str(value)]
    return flags


# --------------------------------------------------------------------------------------------
# the verbs, shared with cli.py


MAX_FRAME_SIZE = 4096  # pixels a side: MuJoCo's offscreen buffer (and memory) beyond that fails


def check_seed(seed: Any) -> None:
    """A seed the simulators take (Gymnasium refuses negative ones, numpy those of 2**32 and up)."""
    if seed is not None and (not _has_type(seed, int) or not 0 <= seed < 2**31):
        raise ConfigError(f"--seed must be an integer in [0, 2**31), got {seed}")


def check_positive_int(flag: str, value: Any) -> None:
    """An integer > 0 (not a bool, float or string), else :class:`ConfigError` naming ``flag``."""
    if not _has_type(value, int) or value <= 0:
        raise ConfigError(f"{flag} must be a positive integer, got {value}")


def check_output_file(flag: str, out: Path) -> None:
    """An output path that cannot be a file: one line before any work is done."""
    if out.is_dir():
        raise ConfigError(f"{flag} {str(out)!r} is a directory; give a file name")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {str(out)!r}: {str(parent)!r} is a file, not a directory")


def train_config(given: dict[str, Any], resume: str | Path | None = None, overwrite: bool = False,
                 checkpoint: str | None = None) -> TrainConfig:
    """The config a training run uses: presets < ``given`` settings, or, with ``resume``, the
    run's saved config < ``given`` (e.g. a larger ``total_steps``); validated for this machine.
    Checks only: it takes no lock and changes nothing (:func:`training_run` does)."""
    from stridelab.config import build_config, validate
    from stridelab.envs import check_env_name
    from stridelab.rundir import check_is_directory
    from stridelab.train import resolve_device

    with config_errors():
        if resume:
            cfg = _resumed_config(resume, dict(given), overwrite, checkpoint)
        else:
            if checkpoint is not None:
                raise ConfigError("--checkpoint picks the checkpoint to resume from; use it with --resume RUN_DIR")
            cfg = build_config(given)
            validate(cfg)
            check_is_directory(Path(cfg.run_dir))
        check_env_name(cfg.env)
        resolve_device(cfg.device)
    return cfg


def _check_resume_target(resume: str | Path, given: dict[str, Any], overwrite: bool) -> None:
    """What can be said of ``resume`` before its lock is taken (``given`` loses its ``run_dir``)."""
    from stridelab.checkpoint import CheckpointError
    from stridelab.rundir import check_is_directory, check_resume_target

    check_resume_target(str(resume), given.pop("run_dir", None))
    if overwrite:
        raise ConfigError("--overwrite starts a new run; it cannot go with --resume")
    check_is_directory(Path(resume), "--resume")
    if not Path(resume).is_dir():
        raise CheckpointError(f"run directory {str(resume)!r} does not exist")


def _resumed_config(resume: str | Path, given: dict[str, Any], overwrite: bool,
                    checkpoint: str | None) -> TrainConfig:
    """The saved config of the run to resume with ``given`` on top, and a checkpoint to resume
    from (found, not loaded: training loads it, falling back past damaged ones)."""
    from stridelab.checkpoint import CheckpointError
    from stridelab.config import ARCHITECTURE, TrainConfig, validate
    from stridelab.rundir import check_has_checkpoint

    _check_resume_target(resume, given, overwrite)
    run_dir = Path(resume)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"cannot resume {str(run_dir)!r}: it has no config.json (not a stridelab run?)")
    cfg = TrainConfig.load(run_dir / "config.json")  # a wrong type: one line naming the file and field
    for key, value in given.items():
        if key in ARCHITECTURE and value != getattr(cfg, key):
            raise ConfigError(f"{flag_name(key)} {value!r}: a resumed run keeps the network its weights were "
                              f"trained with ({getattr(cfg, key)!r} in its config.json); start a new run to change it")
        if key == "env_kwargs" and value != cfg.env_kwargs:  # (another --env: the checkpoint refuses it, naming both)
            raise ConfigError(f"--env-kwargs {value!r}: a resumed run keeps the env it was trained on "
                              f"({cfg.env_kwargs!r} in its config.json); start a new run to change it")
        setattr(cfg, key, value)
    cfg.run_dir = str(run_dir)
    try:
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{str(run_dir / 'config.json')!r} with the flags given: {e}") from None
    check_has_checkpoint(run_dir, checkpoint)
    return cfg


@contextlib.contextmanager
def training_run(given: dict[str, Any], resume: str | Path | None = None, overwrite: bool = False,
                 checkpoint: str | None = None) -> Iterator[TrainConfig]:
    """:func:`train_config`'s config, this process being the run directory's one writer inside
    the block (:mod:`stridelab.rundir`). A resumed run is locked before its ``config.json`` is
    read, so no other writer changes it meanwhile; a fresh run refuses a directory that holds an
    old one unless ``overwrite``, which removes the old run's files under the lock. Data-parallel
    processes other than the first leave the lock and the old files to the first."""
    from stridelab.distributed import started_as_first_process
    from stridelab.rundir import start_fresh, writer

    first = started_as_first_process()
    if resume:
        with config_errors():
            _check_resume_target(resume, dict(given), overwrite)
        with writer(Path(resume)) if first else contextlib.nullcontext():
            yield train_config(given, resume, overwrite, checkpoint)
        return
    cfg = train_config(given, None, overwrite, checkpoint)
    with writer(Path(cfg.run_dir)) if first else contextlib.nullcontext():
        if first:
            with config_errors():
                start_fresh(Path(cfg.run_dir), overwrite)
            _say_presets(cfg)
        yield cfg


def _say_presets(cfg: TrainConfig) -> None:
    """One line in the run's log when its task has no preset of its own: the simulator family's
    defaults it trains with (``summary.json`` records the same, :func:`stridelab.config.presets_used`)."""
    from stridelab.config import presets_used

    note = presets_used(cfg.env, cfg.algo).get("note")
    if note:
        print(f"stridelab: note: {note}", file=sys.stderr, flush=True)


def evaluate_run(run_dir: str | Path, episodes: int = 10, stochastic: bool = False, seed: int | None = None,
                 device: str = "cpu", checkpoint: str | None = None, envs_per_command: int = 4) -> dict[str, Any]:
    """``stridelab eval``: mean and std of ``episodes`` fresh episodes' undiscounted returns,
    with each return, the run's step count, config and simulator. ``checkpoint`` (a path, or a
    file name in ``RUN/checkpoints``) picks one; by default the newest intact one. A
    velocity-command task adds ``command_set``: tracking over the fixed command set, nominal
    and randomized, ``envs_per_command`` deterministic episodes each (:mod:`stridelab.locomotion`)."""
    from stridelab.envs import check_env_name
    from stridelab.evaluate import evaluate_agent, evaluate_commands, load_agent
    from stridelab.train import resolve_device

    check_positive_int("--episodes", episodes)
    check_positive_int("--envs-per-command", envs_per_command)
    check_seed(seed)
    with config_errors():
        device = resolve_device(device)
        agent, cfg, state = load_agent(Path(run_dir), device=device, checkpoint=checkpoint)
        check_env_name(cfg.env)  # a factory's run evaluated without its function: say how to give it
    returns = evaluate_agent(agent, cfg, episodes, deterministic=not stochastic, device=device, seed=seed)
    result = {"mean": float(returns.mean()), "std": float(returns.std(unbiased=False)), "episodes": episodes,
              "returns": returns.tolist(), "global_step": state["global_step"], "config": cfg.to_dict(),
              "simulator": state["env_spec"].get("simulator", "brax")}
    command_set = evaluate_commands(agent, cfg, envs_per_command, device=device, seed=seed)
    return result if command_set is None else {**result, "command_set": command_set}


def export_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: str | None = None,
               obs_dtype: str = "float32") -> tuple[Path, Any, TrainConfig, dict]:
    """``stridelab export``: the deterministic policy as one file, its format by ``out``'s
    suffix (default ``RUN_DIR/policy.onnx``), a graph format's input of dtype ``obs_dtype``
    ("float32" or "float64"); returns the path, the agent, config and checkpoint. A task with a
    deployment description (Go1's) also gets it beside the file and in the ONNX metadata."""
    from stridelab.evaluate import load_agent
    from stridelab.export import FORMATS, check_obs_dtype, export_policy

    out = Path(out) if out else Path(run_dir) / "policy.onnx"
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {str(out)!r}: unknown export format; use a name ending in {', '.join(FORMATS)}")
    check_obs_dtype(out.suffix, obs_dtype)
    check_output_file("--out", out)
    with config_errors():
        agent, cfg, state = load_agent(Path(run_dir), checkpoint=checkpoint)
        deploy = _deployment(cfg, state)
    return export_policy(agent, out, obs_dtype, deploy), agent, cfg, state


def _deployment(cfg: TrainConfig, state: dict) -> dict[str, Any] | None:
    """The run's task's deployment description with the run it describes; ``None`` for a task
    without one (see :func:`stridelab.envs.registry.deploy_spec`)."""
    from stridelab.envs.registry import deploy_spec, task_options

    options = {**task_options(cfg), **({"env_kwargs": cfg.env_kwargs} if cfg.env_kwargs else {})}
    spec = deploy_spec(cfg.env, **options)
    if spec is None:
        return None
    return {**spec, "trained": {"algo": cfg.algo, "env_steps": int(state["global_step"]), "task_options": options}}


def video_run(run_dir: str | Path, out: str | Path | None = None, steps: int | None = None, width: int = 320,
              height: int = 240, seed: int = 0, checkpoint: str | None = None) -> tuple[Path, Any, int]:
    """``stridelab video``: one episode of the deterministic policy (a native MuJoCo task: its
    scripted commands, captioned) as MP4, GIF or Brax's HTML viewer (default ``RUN_DIR/walk.mp4``),
    at most ``steps`` env steps (default: the whole script, else 300); returns the path, the
    trajectory and the frame count."""
    from stridelab.evaluate import load_agent
    from stridelab.render import FORMATS, make_video

    out = Path(out) if out else Path(run_dir) / "walk.mp4"
    if out.suffix not in FORMATS:
        raise ConfigError(f"--out {str(out)!r}: unknown video format; use a name ending in {', '.join(FORMATS)}")
    if steps is not None:
        check_positive_int("--steps", steps)
    for name, value in (("width", width), ("height", height)):
        if not _has_type(value, int) or not 16 <= value <= MAX_FRAME_SIZE:
            raise ConfigError(f"--{name} must be between 16 and {MAX_FRAME_SIZE} pixels, got {value}")
    check_seed(seed)
    check_output_file("--out", out)
    with config_errors():
        agent, cfg, _ = load_agent(Path(run_dir), checkpoint=checkpoint)
        return make_video(agent, cfg, out, max_steps=steps, seed=seed, width=width, height=height)


@dataclasses.dataclass
class CompareJob:
    """``stridelab compare``'s arguments; ``settings`` go to every run (``num_envs=1024``)."""

    env: str = "ant"
    algos: list[str] = dataclasses.field(default_factory=lambda: ["trpo", "ppo"])
    seeds: int = 3
    total_steps: int = 1_500_000
    out: str | Path = "runs/compare"
    jobs: int | None = None
    launcher: str = "local"
    ray_address: str | None = None
    ray_cpus_per_run: float = 1.0
    ray_gpus_per_run: float = 0.0
    video_steps: int | None = None  # None: the task's scripted commands, or stridelab video's default length
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def check(self) -> None:
        """Every argument and the settings for every algorithm, before any run starts."""
        from stridelab.algos import algorithm_names

        if not isinstance(self.env, str):
            raise ConfigError("compare trains each run in a process of its own, which a Python function cannot "
                              "reach: register the env (gymnasium.register) in a module and give its id as "
                              "'module:EnvId', which imports that module first")
        for algo in self.algos:
            if algo not in algorithm_names():
                raise unknown_choice("algo", algo, algorithm_names())
        if len(set(self.algos)) != len(self.algos):
            raise ConfigError(f"--algos lists an algorithm twice: {' '.join(self.algos)}")
        for name in ("seeds", "total_steps"):
            check_positive_int(flag_name(name), getattr(self, name))
        if self.jobs is not None:
            check_positive_int("--jobs", self.jobs)
        if self.video_steps is not None and (not _has_type(self.video_steps, int) or self.video_steps < 0):
            raise ConfigError(f"--video-steps must be >= 0, got {self.video_steps}")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {str(self.out)!r} is a file, not a directory")
        with config_errors():
            from stridelab.envs import check_env_name

            check_env_name(self.env)
        self._check_launcher()
        self._check_settings()

    def _check_launcher(self) -> None:
        from stridelab.compare import check_launcher

        check_launcher(self.launcher, self.ray_address, self.ray_cpus_per_run, self.ray_gpus_per_run)

    def _check_settings(self) -> None:
        from stridelab.config import build_config, validate

        check_settings(self.settings)
        for forbidden in ("algo", "env", "seed", "run_dir", "total_steps"):
            if forbidden in self.settings:
                raise ConfigError(f"{flag_name(forbidden)} is set by compare itself; remove it from the "
                                  f"extra flags")
        for algo in self.algos:
            validate(build_config({**self.settings, "algo": algo, "env": self.env, "total_steps": self.total_steps}))


def run_compare(job: CompareJob) -> Path:
    """Check ``job``, train its unfinished runs, render the best policies; returns the output
    directory (the report is :func:`stridelab.report.build_report`'s next)."""
    from stridelab.compare import check_budgets, default_jobs, plan_runs, render_best, run_grid

    job.check()
    out = Path(job.out).resolve()  # absolute: Ray's workers may start elsewhere
    out.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(out, job.algos, job.seeds)
    with config_errors():
        check_budgets(specs, job.total_steps)
    extra = to_flags(job.settings)
    (out / "compare.json").write_text(json.dumps({"env": job.env, "algos": job.algos, "seeds": job.seeds,
                                                  "total_steps": job.total_steps, "extra": extra}, indent=2) + "\n")
    jobs = job.jobs or default_jobs()
    print(f"[compare] {len(specs)} runs ({', '.join(job.algos)} x {job.seeds} seeds) of {job.total_steps:,} steps "
          f"on {job.env}, {'as Ray tasks' if job.launcher == 'ray' else f'{jobs} at a time'}, into {out}", flush=True)
    if job.launcher == "ray":
        from stridelab.compare import run_grid_ray

        failed = run_grid_ray(specs, job.env, job.total_steps, extra, job.ray_address, job.ray_cpus_per_run,
                              job.ray_gpus_per_run)
    else:
        failed = run_grid(specs, job.env, job.total_steps, extra, jobs)
    if failed:
        raise ConfigError(f"{len(failed)} run(s) failed: {', '.join(s.name for s in failed)}; see their logs in {out}")
    if job.video_steps != 0:
        try:
            render_best(out, specs, steps=job.video_steps)
        except Exception as e:  # noqa: BLE001 - the report matters more than its animations
            print(f"[compare] videos skipped ({type(e).__name__}: {e}); the report follows without them",
                  file=sys.stderr, flush=True)
    return out


# --------------------------------------------------------------------------------------------
# what the API returns


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython already loaded: never imported here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _show_media(path: Path, width: int | None = None) -> Any:
    """In a notebook, a display object showing ``path`` inline; elsewhere ``path`` itself."""
    if not _in_notebook():
        return path
    from IPython.display import Image, Video

    if path.suffix == ".html":
        from stridelab.render import show_html

        return show_html(path)
    if path.suffix == ".gif":
        return Image(filename=str(path), width=width)
    return Video(str(path), embed=True, width=width, html_attributes="controls loop autoplay muted")


class Run:
    """A run directory and the verbs on its policy (:func:`train` and :func:`load` return one).

    Attributes:
        path: the run directory.
        checkpoint: the checkpoint its verbs use (a path, or a file name in ``RUN/checkpoints``
            such as ``"best.ckpt"``); ``None``: the newest intact one. A verb's own
            ``checkpoint=`` overrides it.
    """

    def __init__(self, path: str | Path, checkpoint: str | None = None) -> None:
        self.path = Path(path)
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        cfg, summary = self.config, self.summary
        result = summary.get("eval/episodic_return", summary.get("train/final_return"))
        tail = f", return {result:.1f}" if isinstance(result, float) else ", unfinished" if not summary else ""
        return f"Run({str(self.path)!r}: {cfg.algo} on {cfg.env}, {cfg.total_steps:,} steps{tail})"

    @property
    def config(self) -> TrainConfig:
        """The config in effect (``config.json``)."""
        from stridelab.config import TrainConfig

        return TrainConfig.load(self.path / "config.json")

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json``: final return, speed, times, and ``provenance``; ``{}`` while unfinished."""
        path = self.path / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def metrics(self) -> list[dict[str, float]]:
        """Every logged scalar as a table: one row per env step, ``{"step": ..., tag: value, ...}``
        (``pandas.DataFrame(run.metrics)`` turns it into a data frame)."""
        from stridelab.report import read_scalars

        rows: dict[int, dict[str, float]] = {}
        for tag, points in read_scalars(self.path).items():
            for step, value in points:
                rows.setdefault(step, {"step": step})[tag] = value
        return [rows[s] for s in sorted(rows)]

    def curve(self, tag: str = "eval/episodic_return") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one logged scalar (``charts/episodic_return``, ``losses/...``)."""
        from stridelab.report import read_scalars

        import numpy as np

        points = read_scalars(self.path).get(tag, [])
        return np.array([p[0] for p in points], dtype=np.int64), np.array([p[1] for p in points])

    def evaluate(self, episodes: int = 10, stochastic: bool = False, seed: int | None = None,
                 device: str = "cpu", checkpoint: str | None = None, envs_per_command: int = 4) -> dict[str, Any]:
        """``stridelab eval RUN --json``: ``{"mean", "std", "episodes", "returns", "global_step", ...}``,
        and for a velocity-command task (Go1) ``"command_set"``: ``{"nominal": {command: {"lin_vel_error",
        "yaw_rate_error", "falls_per_episode", "return", ...}, ..., "overall": ...}, "randomized": ...}``."""
        return evaluate_run(self.path, episodes, stochastic, seed, device, checkpoint or self.checkpoint,
                            envs_per_command)

    def video(self, out: str | Path | None = None, steps: int | None = None, width: int = 320, height: int = 240,
              seed: int = 0, checkpoint: str | None = None) -> Any:
        """``stridelab video RUN``: writes ``out`` (default ``RUN/walk.mp4``; .gif, or .html for
        Brax's viewer) and shows it inline in a notebook; elsewhere returns its path."""
        path, _, _ = video_run(self.path, out, steps, width, height, seed, checkpoint or self.checkpoint)
        return _show_media(path)

    def policy(self, device: str = "cpu", checkpoint: str | None = None) -> Any:
        """The trained networks (:class:`~stridelab.models.ActorCritic`, normalizer included, in
        eval mode): ``policy(obs)`` is the deterministic action an export computes."""
        from stridelab.evaluate import load_agent

        with config_errors():
            return load_agent(self.path, device=device, checkpoint=checkpoint or self.checkpoint)[0]

    def export(self, path: str | Path | None = None, checkpoint: str | None = None,
               obs_dtype: str = "float32") -> Path:
        """``stridelab export RUN --out path --obs-dtype obs_dtype``: ``.onnx`` (default
        ``RUN/policy.onnx``) or ``.pt2``, taking float32 or, with ``obs_dtype="float64"``, float64."""
        return export_run(self.path, path, checkpoint or self.checkpoint, obs_dtype)[0]


def load(run_dir: str | Path, checkpoint: str | None = None, env: Callable[..., Any] | None = None) -> Run:
    """The run in ``run_dir`` (trained by :func:`train`, ``stridelab train`` or ``compare``);
    its verbs use ``checkpoint`` (``"best.ckpt"``, ``"step_000001000000.ckpt"`` or a path), by
    default the newest intact checkpoint (``last.ckpt``, falling back past damaged ones). A run
    trained on a Python factory (``train(env=make_env)``) evaluates and renders only when given
    that function again: ``env=make_env``."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory {str(path)!r} is a file, not a directory")
    if not path.is_dir():
        raise ConfigError(f"run directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{str(path)!r} is not a run directory (no config.json)")
    if checkpoint is not None:
        from stridelab.rundir import check_has_checkpoint

        with config_errors():
            check_has_checkpoint(path, checkpoint)
    if env is not None:
        _adopt_factory(path, env)
    return Run(path, checkpoint)


def _adopt_factory(run_dir: Path, factory: Any) -> None:
    """Keep ``factory`` for this process under the name the run in ``run_dir`` recorded, so its
    env can be built again (:mod:`stridelab.envs.factories`)."""
    from stridelab.config import TrainConfig
    from stridelab.envs.factories import is_factory_name, register

    if not callable(factory):
        raise ConfigError(f"env= takes the Python function a run was trained with, got {factory!r}")
    saved = TrainConfig.load(run_dir / "config.json").env
    if not is_factory_name(saved):
        raise ConfigError(f"{str(run_dir)!r} was trained on env {saved!r}, not on a Python function; drop env=")
    register(factory, saved)


def _env_name(env: Any, settings: dict[str, Any]) -> str:
    """``train``'s ``env`` as a config holds it: a task's name, or a factory kept for this
    process under its ``factory:module.qualname`` name."""
    from stridelab.envs.factories import register

    if isinstance(env, str):
        return env
    if not callable(env):
        raise ConfigError(f"env must be a task name or a function returning a gymnasium.Env, got {env!r}")
    if settings.get("devices", 1) * settings.get("num_nodes", 1) > 1:
        raise ConfigError("a Python env factory trains in one process: data-parallel processes (devices > 1) "
                          "cannot reach it; register the env with gymnasium.register and give its id")
    return register(env)


class _Source(str):
    """Text a recorded call shows as it is (a function's name, not its repr with an address)."""

    def __repr__(self) -> str:
        return str(self)


def _call_text(name: str, kwargs: dict[str, Any]) -> str:
    return f"stridelab.{name}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def train(env: str | Callable[..., Any] = "ant", algo: str = "ppo", total_steps: int | None = None,
          seed: int | None = None, run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          checkpoint: str | None = None, **settings: Any) -> Run:
    """Train a policy, as ``stridelab train`` does; returns the :class:`Run`.

    Args:
        env: task name (``stridelab envs`` lists them): ``ant``, ``Hopper-v5``, any registered
            Gymnasium id with continuous actions (``"mypkg.envs:MyEnv-v0"`` imports ``mypkg.envs``
            first) or Brax env name, with ``env_kwargs={...}`` for its constructor; or a function
            returning a ``gymnasium.Env`` (a factory, :mod:`stridelab.envs.factories`), whose run
            later evaluates, renders and resumes only when given it again (:func:`load`'s ``env=``;
            with ``resume``, this ``env``).
        algo: ``ppo``, ``trpo`` or another registered algorithm.
        total_steps: env steps to train for (default: the presets').
        seed: random seed (default 1).
        run_dir: where logs and checkpoints go (default ``runs/<env>_<algo>_s<seed>``).
        resume: continue the run in ``run_dir`` from its newest intact checkpoint (``settings``
            and ``total_steps`` override its saved config; ``env`` and ``algo`` are its own).
        overwrite: start a new run in a ``run_dir`` that already holds one, removing the old
            run's files first; without it (and without ``resume``) such a ``run_dir`` is refused.
        checkpoint: with ``resume``, the checkpoint to continue from (``"best.ckpt"``, a step
            file's name or a path).
        **settings: any other :class:`~stridelab.config.TrainConfig` field (``num_envs=1024``,
            ``learning_rate=1e-4``, ``progress=False``).

    Raises:
        ConfigError: a bad argument (the message ``stridelab train`` prints), or ``run_dir``
            already holds a run and neither ``resume`` nor ``overwrite`` was given.
        ~stridelab.errors.RunDirBusy: another live process is writing ``run_dir``.
        ~stridelab.interrupt.StopRequested: the kernel was interrupted before the first update (nothing to resume).
        TrainingInterrupted: the kernel was interrupted; a checkpoint was written and
            ``resume=True`` continues.
    """
    from stridelab.envs.factories import is_factory_name, needs_factory, short_name
    from stridelab.provenance import recording_command
    from stridelab.train import train as train_cfg

    named = {"total_steps": total_steps, "seed": seed, "run_dir": None if run_dir is None else str(run_dir)}
    given = {k: v for k, v in named.items() if v is not None} | settings
    if resume and run_dir is None:
        raise ConfigError("resume=True needs run_dir: the run to continue")
    if resume and callable(env) and (Path(run_dir) / "config.json").is_file():
        _adopt_factory(Path(run_dir), env)
    shown = env if isinstance(env, str) else _Source(getattr(env, "__name__", repr(env)))
    if not resume:
        given = {"env": _env_name(env, given), "algo": algo} | given
    call = {**given, "env": shown} if not resume else {"run_dir": str(run_dir), "resume": True, **given}
    call |= {k: v for k, v in (("overwrite", overwrite), ("checkpoint", checkpoint)) if v}
    with training_run(check_settings(given), run_dir if resume else None, overwrite, checkpoint) as cfg, \
            recording_command(_call_text("train", call)):
        train_cfg(cfg, resume=resume, checkpoint=checkpoint)
    if is_factory_name(cfg.env):
        print(f"stridelab: note: {cfg.run_dir} was trained on the Python function {short_name(cfg.env)}; "
              f"{needs_factory(cfg.env, repr(cfg.run_dir))}", file=sys.stderr, flush=True)
    return Run(cfg.run_dir)


class Report:
    """A comparison's report: ``report.md``, ``report.html``, the figures and the videos of a
    ``compare`` directory. Shown inline in a notebook (figures and the side-by-side video)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.result: dict[str, Any] = json.loads((self.out / "report.json").read_text())

    def __repr__(self) -> str:
        iqms = ", ".join(f"{a.upper()} IQM {s['iqm']:.0f}, worst seed {min(s['returns']):.0f}, "
                         f"spread {max(s['returns']) - min(s['returns']):.0f}" for a, s in self.result["algorithms"].items())
        return f"Report({str(self.out)!r}: {iqms})"

    @property
    def html_path(self) -> Path:
        return self.out / "report.html"

    @property
    def markdown(self) -> str:
        return (self.out / "report.md").read_text()

    @property
    def figures(self) -> dict[str, Path]:
        """The report's figures by name (``eval_return``, ``train_return``, ``final_return``, ...)."""
        return {p.stem: p for p in sorted((self.out / "figures").glob("*.png"))}

    @property
    def videos(self) -> dict[str, Path]:
        """The MP4s in ``media/`` by name: one per algorithm and ``side_by_side``."""
        return {p.stem: p for p in sorted((self.out / "media").glob("*.mp4"))}

    def runs(self) -> dict[str, Run]:
        """Every run of the comparison by name (``ppo_s1``, ...)."""
        return {p.name: Run(p) for p in sorted(self.out.iterdir()) if (p / "config.json").is_file()}

    def image(self, name: str = "eval_return") -> Any:
        """One figure, as ``IPython.display.Image`` in a notebook (else its path)."""
        return _show_media(self.figures[name])

    def _repr_html_(self) -> str:
        from stridelab.report import inline_summary

        return inline_summary(self.out, self.result)


def report(out: str | Path) -> Report:
    """``stridelab report DIR``: (re)write the report of a compare directory; returns it."""
    from stridelab.report import build_report

    out = Path(out)
    if not out.is_dir():
        raise ConfigError(f"directory {str(out)!r} does not exist")
    with config_errors():
        build_report(out)
    return Report(out)


def compare(env: str = "ant", algos: list[str] | tuple[str, ...] = ("trpo", "ppo"), seeds: int = 3,
            total_steps: int = 1_500_000, out: str | Path = "runs/compare", jobs: int | None = None,
            video_steps: int | None = None, launcher: str = "local", **settings: Any) -> Report:
    """Train every (algorithm, seed) with the same budget and write the report, as
    ``stridelab compare`` does (started again, it skips finished runs and resumes the rest).

    ``settings`` go to every run (``num_envs=1024``); ``ray_address``, ``ray_cpus_per_run`` and
    ``ray_gpus_per_run`` are taken as the command's flags. Returns the :class:`Report`.
    """
    ray = {k: settings.pop(k) for k in ("ray_address", "ray_cpus_per_run", "ray_gpus_per_run") if k in settings}
    job = CompareJob(env=env, algos=list(algos), seeds=seeds, total_steps=total_steps, out=out, jobs=jobs,
                     launcher=launcher, video_steps=video_steps, settings=settings, **ray)
    from stridelab.provenance import recording_command

    call = {"env": env, "algos": list(algos), "seeds": seeds, "total_steps": total_steps, "out": str(out), **settings}
    with recording_command(_call_text("compare", call)):
        return report(run_compare(job))
