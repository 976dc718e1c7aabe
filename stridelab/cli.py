"""The ``stridelab`` command: parse, call :mod:`stridelab.api`, print. Bad input is one line and
exit code 2; the machine refusing (a full disk, a permission, a busy run directory) one line and 3."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any

from stridelab.config import ConfigError, TrainConfig
from stridelab.errors import EXIT_ENVIRONMENT, EXIT_USAGE, EnvironmentFailure, describe_os_error, flag_name
from stridelab.cores import pin_from_env


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field; unset flags stay None so presets apply."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind in (int, float):
            parser.add_argument(flag_name(f.name), dest=f.name, type=_number(kind), default=None, metavar=kind.__name__.upper(), help=help_text)
        elif kind == float | None:
            parser.add_argument(flag_name(f.name), dest=f.name, type=_number(float), default=None, metavar="FLOAT", help=help_text)
        elif kind in (list[int], list[int] | None):
            parser.add_argument(flag_name(f.name), dest=f.name, type=_number(int), nargs="+", default=None, metavar="N",
                                help=help_text)
        elif f.name == "env_kwargs":
            parser.add_argument(flag_name(f.name), dest=f.name, type=_env_kwarg, nargs="+", action=_MergeKwargs,
                                default=None, metavar="KEY=VALUE", help=help_text)
        elif f.name == "network":
            from stridelab.config import network_descriptions

            named = "; ".join(f"{name}: {text}" for name, text in network_descriptions().items())
            parser.add_argument(flag_name(f.name), dest=f.name, type=str, default=None, help=f"{help_text} -- {named}")
        elif f.name == "algo":
            from stridelab.algos import algorithm_names

            parser.add_argument(flag_name(f.name), dest=f.name, type=str, default=None,
                                help=f"algorithm: {', '.join(algorithm_names())}")
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, type=str, default=None, help=help_text)


def _env_kwarg(text: str) -> tuple[str, Any]:
    """One ``KEY=VALUE`` of ``--env-kwargs`` (:mod:`stridelab.envs.arguments`)."""
    from stridelab.envs.arguments import parse_pair

    try:
        return parse_pair(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _MergeKwargs(argparse.Action):
    """``--env-kwargs a=1 b=2`` and ``--env-kwargs a=1 --env-kwargs b=2`` alike: one dict, a
    later value for the same key winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), **dict(values)})


class _Parser(argparse.ArgumentParser):
    """Bad usage is one line and exit code 2; flags are matched whole (argparse's abbreviations
    would turn ``compare --seed 3`` into ``--seeds 3``: six long runs nobody asked for)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_checkpoint_flag(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--checkpoint", metavar="PATH|NAME", default=None,
                        help=f"the checkpoint to {verb}: a path, or a file name in RUN_DIR/checkpoints (e.g. best.ckpt); "
                             "default: the newest intact one (last.ckpt, then step files newest first, then best.ckpt)")


def _add_export_and_video(sub: Any) -> None:
    p_export = sub.add_parser("export", help="export the policy as ONNX or torch.export (.pt2)",
                              description="Write the deterministic policy (normalizer and action range included) "
                                          "as one file: observations [B, obs_dim] in (float32, or float64 with "
                                          "--obs-dtype float64), actions float32 [B, act_dim] out. The format goes by "
                                          "--out's suffix: .onnx (ONNX Runtime), .pt2 (torch.export), .pt "
                                          "(TorchScript, kept for old users).")
    p_export.add_argument("run_dir", metavar="RUN_DIR")
    p_export.add_argument("--out", default=None,
                          help="policy.onnx, policy.pt2 or policy.pt (default RUN_DIR/policy.onnx)")
    # Checked by api.export_run, as --algo and --device are, so the CLI and the API say the same.
    p_export.add_argument("--obs-dtype", default="float32", metavar="{float32,float64}",
                          help="the observation dtype the .onnx or .pt2 file takes (default float32; "
                               "Gymnasium gives float64); .pt takes both")
    _add_checkpoint_flag(p_export, "export")

    p_video = sub.add_parser("video", help="render the policy walking (MP4, GIF or Brax HTML viewer)",
                             description="Record one episode of the deterministic policy and render it headless.")
    p_video.add_argument("run_dir", metavar="RUN_DIR")
    p_video.add_argument("--out", default=None, help="walk.mp4, walk.gif or walk.html (default RUN_DIR/walk.mp4)")
    p_video.add_argument("--steps", type=_number(int), default=None,
                         help="at most this many env steps (default 300; a native MuJoCo robot task: its whole "
                              "scripted command sequence)")
    p_video.add_argument("--width", type=_number(int), default=320)
    p_video.add_argument("--height", type=_number(int), default=240)
    p_video.add_argument("--seed", type=_number(int), default=0)
    _add_checkpoint_flag(p_video, "render")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stridelab", description="Train and compare TRPO and PPO on robot locomotion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_train = sub.add_parser("train", help="train a policy", description="Train a policy with PPO or TRPO.")
    _add_config_flags(p_train)
    p_train.add_argument("--resume", metavar="RUN_DIR", default=None,
                         help="continue the run in RUN_DIR from its newest intact checkpoint")
    p_train.add_argument("--overwrite", action="store_true",
                         help="start a new run in a --run-dir that holds one, removing the old run's files first")
    _add_checkpoint_flag(p_train, "resume from (with --resume)")

    p_eval = sub.add_parser("eval", help="evaluate a trained policy", description="Mean and std of undiscounted episode returns.")
    p_eval.add_argument("run_dir", metavar="RUN_DIR")
    p_eval.add_argument("--episodes", type=_number(int), default=10, help="episodes to average over (default 10)")
    p_eval.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mean")
    p_eval.add_argument("--seed", type=_number(int), default=None, help="seed of the evaluation envs")
    p_eval.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    p_eval.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p_eval.add_argument("--envs-per-command", type=_number(int), default=4,
                        help="velocity-command tasks (Go1): deterministic episodes per command of the command-set "
                             "table, nominal and randomized (default 4)")
    _add_checkpoint_flag(p_eval, "evaluate")

    _add_export_and_video(sub)

    p_cmp = sub.add_parser("compare", help="train every (algorithm, seed) on one task and write the report",
                           description="Train every (algorithm, seed) with the same budget, then write the report. "
                                       "Started again, it skips finished runs and resumes interrupted ones. Other "
                                       "training flags (e.g. --num-envs) are passed to every run.")
    p_cmp.add_argument("--env", default="ant", help="task (default ant)")
    p_cmp.add_argument("--algos", nargs="+", default=["trpo", "ppo"], help="algorithms and variants (default trpo ppo; `stridelab train --help` lists them)")
    p_cmp.add_argument("--seeds", type=_number(int), default=3, help="seeds per algorithm: 1..N (default 3)")
    p_cmp.add_argument("--total-steps", type=_number(int), default=1_500_000,
                       help="env steps per run, the same for every algorithm (default 1,500,000: "
                            "about 13 minutes for 2 x 3 runs on Ant on a 2-core CPU)")
    p_cmp.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p_cmp.add_argument("--jobs", type=_number(int), default=None,
                       help="runs at once (default: one per core on CPU, pinned; one with a CUDA GPU)")
    p_cmp.add_argument("--launcher", default="local", help="local (one run per core here) or ray (Ray tasks)")
    p_cmp.add_argument("--ray-address", default=None, help="Ray cluster to run on (default: start a local one)")
    p_cmp.add_argument("--ray-cpus-per-run", type=_number(float), default=1.0, help="cores each Ray task asks for")
    p_cmp.add_argument("--ray-gpus-per-run", type=_number(float), default=0.0, help="GPUs each Ray task asks for")
    p_cmp.add_argument("--video-steps", type=_number(int), default=None,
                       help="steps in each best-policy video (0: none; default: the task's scripted commands, "
                            "e.g. Go1's, or 300)")

    p_rep = sub.add_parser("report", help="write report.md and report.html for a compare directory",
                           description="Learning curves with 95% CIs, IQM, probability of improvement, speed, "
                                       "hyperparameters and videos.")
    p_rep.add_argument("out", metavar="DIR")

    sub.add_parser("envs", help="list the tasks", description="List every task with observation and action sizes.")
    return parser


def _given(ns: argparse.Namespace) -> dict[str, Any]:
    """The training settings given as flags (unset ones stay out, so presets apply)."""
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(TrainConfig) if getattr(ns, f.name) is not None}


def settings_from_flags(flags: list[str], prog: str = "stridelab train") -> dict[str, Any]:
    """The training settings that ``stridelab train`` flags give (unset ones left out)."""
    parser = _Parser(prog=prog, add_help=False)
    _add_config_flags(parser)
    return _given(parser.parse_args(flags))


def cmd_train(args: argparse.Namespace) -> int:
    from stridelab.api import training_run
    from stridelab.train import NonFiniteError, StopRequested, TrainingInterrupted, train

    with training_run(_given(args), args.resume, args.overwrite, args.checkpoint) as cfg:
        try:
            summary = train(cfg, resume=bool(args.resume), checkpoint=args.checkpoint)
        except NonFiniteError as e:
            print(f"stridelab train: error: {e}", file=sys.stderr)
            return 1
        except StopRequested as e:
            print(f"stridelab train: {e}; nothing to resume from this start", file=sys.stderr)
            return 128 + e.signum
        except TrainingInterrupted as e:
            print(f"stridelab train: {e}", file=sys.stderr)
            print(f"continue with: stridelab train --resume {cfg.run_dir}", file=sys.stderr)
            return 128 + e.signum
    print(f"run dir: {cfg.run_dir}")
    for key, value in summary.items():
        print(f"{key}: {value:.4g}")
    from stridelab.config import presets_used

    note = presets_used(cfg.env, cfg.algo).get("note")  # also in summary.json's "presets"
    if note:
        print(f"presets: {note}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from stridelab.api import evaluate_run

    result = evaluate_run(args.run_dir, args.episodes, args.stochastic, args.seed, args.device, args.checkpoint,
                          args.envs_per_command)
    simulator = result.pop("simulator")
    if args.json:
        print(json.dumps(result))
    else:
        cfg = TrainConfig(**result["config"])
        mode = "stochastic" if args.stochastic else "deterministic"
        where = f"{cfg.env}/{cfg.backend}" if simulator == "brax" else cfg.env  # the backend is Brax's
        print(f"run: {args.run_dir} ({cfg.algo}, {where}, {result['global_step']:,} steps)")
        print(_format_config(cfg))
        print(f"{args.episodes} episodes, {mode} actions: mean return {result['mean']:.2f} +- {result['std']:.2f}")
        if "command_set" in result:
            from stridelab.locomotion import format_table

            print(format_table(result["command_set"]))
    return 0


def _format_config(cfg: TrainConfig, width: int = 100) -> str:
    """The training config as wrapped ``key=value`` lines (what ``config.json`` holds)."""
    import textwrap

    pairs = " ".join(f"{k}={v}" for k, v in cfg.to_dict().items() if k not in ("progress",))
    return textwrap.fill(pairs, width=width, initial_indent="config: ", subsequent_indent="        ",
                         break_on_hyphens=False)


def cmd_export(args: argparse.Namespace) -> int:
    import warnings

    from stridelab.api import export_run

    with warnings.catch_warnings():  # the note below says it; torch's and our warning would repeat it
        warnings.simplefilter("ignore", DeprecationWarning)
        out, agent, cfg, state = export_run(args.run_dir, args.out, args.checkpoint, args.obs_dtype)
    if out.suffix == ".pt":  # after the checks: a refused command stays one line
        print("note: TorchScript (.pt) is deprecated by torch; .onnx and .pt2 are the supported formats",
              file=sys.stderr)
    print(f"exported {cfg.algo} policy for {cfg.env} ({state['global_step']:,} steps) to {out}")
    shape = f"obs [B, {agent.obs_dim}] -> action float32 [B, {agent.act_dim}]"
    np_cast, torch_cast = {"float32": ("np.float32", "float"), "float64": ("np.float64", "double")}[args.obs_dtype]
    usage = {".onnx": f"onnxruntime.InferenceSession({str(out)!r}).run(None, {{'obs': obs.astype({np_cast})}})[0]"
                      f"  # {args.obs_dtype} {shape}",
             ".pt2": f"torch.export.load({str(out)!r}).module()(obs.{torch_cast}())  # {args.obs_dtype} {shape}",
             ".pt": f"torch.jit.load({str(out)!r})(obs)  # float32 or float64 {shape}"}
    print(f"use: {usage[out.suffix]}")
    from stridelab.export import DEPLOY_KEY, deploy_file

    if deploy_file(out).is_file():  # written by this export (an older one is removed): the robot side's
        inside = f" and in its ONNX metadata ({DEPLOY_KEY!r})" if out.suffix == ".onnx" else ""
        print(f"deployment: {deploy_file(out)}{inside}: raw observations in (the normalizer is inside); "
              f"see docs/robots.md")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from stridelab.api import video_run

    path, traj, frames = video_run(args.run_dir, args.out, args.steps, args.width, args.height, args.seed,
                                   args.checkpoint)
    print(f"wrote {path}: {frames} frames at {1 / traj.dt:g} fps (real time), episode return {traj.episode_return:.1f}")
    return 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from stridelab.api import CompareJob, run_compare

    job = CompareJob(env=args.env, algos=args.algos, seeds=args.seeds, total_steps=args.total_steps, out=args.out,
                     jobs=args.jobs, launcher=args.launcher, ray_address=args.ray_address,
                     ray_cpus_per_run=args.ray_cpus_per_run, ray_gpus_per_run=args.ray_gpus_per_run,
                     video_steps=args.video_steps, settings=settings_from_flags(extra, "stridelab compare"))
    try:
        out = run_compare(job)
    except KeyboardInterrupt:
        print("[compare] interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return _write_report(out)


def _write_report(out: Path) -> int:
    from stridelab.report import build_report, pair_line

    result = build_report(out)
    for algo, s in result["algorithms"].items():
        print(f"{algo.upper():>5}: IQM {s['iqm']:.0f} [{s['iqm_ci'][0]:.0f}, {s['iqm_ci'][1]:.0f}], "
              f"mean {s['mean']:.0f} +- {s['std']:.0f}, worst seed {s['worst']:.0f} of {len(s['returns'])} runs "
              f"(spread {s['best'] - s['worst']:.0f})")
    for p in result["pairs"]:
        print(pair_line(p))
    print(f"report:      {out / 'report.html'} (self-contained) and {out / 'report.md'}")
    media = out / "media"
    if media.is_dir():
        print(f"videos:      {', '.join(str(p) for p in sorted(media.glob('*.mp4')))}")
    print(f"TensorBoard: tensorboard --logdir {out}   (then open http://localhost:6006)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.is_dir():
        raise ConfigError(f"directory {str(out)!r} does not exist")
    return _write_report(out)


def cmd_envs(args: argparse.Namespace) -> int:
    from stridelab.envs import env_names
    from stridelab.envs.model_warnings import mujoco_warnings

    print(f"{'env':<28}{'simulator':<12}{'obs':>6}{'act':>6}  {'time limit':<12}preset")
    with mujoco_warnings():  # MuJoCo's compiler warnings come after the table, once each, not inside it
        for name in env_names():
            print(_env_row(name), flush=True)
    print("\n--env also takes any registered Gymnasium id with continuous actions (LunarLanderContinuous-v3, "
          "or mypkg.envs:MyEnv-v0 to import mypkg.envs first), with --env-kwargs KEY=VALUE for its constructor, "
          "and any Brax env registered with brax.envs.register_environment; from Python, env= also takes a "
          "function returning a gymnasium.Env. A task without a preset of its own (preset: family) trains with "
          "its simulator's defaults.")
    return 0


def _env_row(name: str) -> str:
    """One task's row: simulator, sizes, time limit (with its presets) and whose presets it has."""
    from stridelab.config import preset_for, presets_used
    from stridelab.envs import make_env

    preset = preset_for(name, "ppo")  # e.g. Brax's swimmer needs the generalized backend
    env = make_env(name, 1, backend=preset.get("backend", "spring"), episode_length=preset.get("episode_length", 1000))
    spec = env.spec
    env.close()
    own = "own" if presets_used(name, "ppo")["own"] else "family"
    return f"{name:<28}{spec.simulator:<12}{spec.obs_dim:>6}{spec.act_dim:>6}  {spec.episode_length:<12}{own}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pin_from_env()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "compare":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "video": cmd_video,
                "report": cmd_report, "envs": cmd_envs}
    if args.command == "compare":
        return _one_line_errors(args.command, lambda: cmd_compare(args, extra))
    return _one_line_errors(args.command, lambda: handlers[args.command](args))


def _one_line_errors(command: str, run: typing.Callable[[], int]) -> int:
    """Run a command; its errors become one line and an exit code: 2 for bad input, 3 when the
    machine refused (full disk, permissions, a read-only filesystem, a busy run directory)."""
    import contextlib

    from stridelab.checkpoint import CheckpointError
    from stridelab.interrupt import stop_on_signals

    try:
        # train: SIGINT/SIGTERM only set a flag from the start, checked at safe points (stridelab.interrupt)
        with stop_on_signals() if command == "train" else contextlib.nullcontext():
            return run()
    except (ConfigError, CheckpointError, ValueError) as e:
        message, code = str(e), EXIT_USAGE
    except EnvironmentFailure as e:
        message, code = str(e), EXIT_ENVIRONMENT
    except OSError as e:
        message, code = describe_os_error(e)
    except KeyboardInterrupt:
        print("stridelab: interrupted", file=sys.stderr)
        return 130
    print(f"stridelab {command}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
