"""The ``stridelab`` command: parse, validate, call. Bad input is one line and exit code 2."""

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

EXIT_USAGE = 2


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
            parser.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind in (int, float):
            parser.add_argument(_flag(f.name), dest=f.name, type=_number(kind), default=None, metavar=kind.__name__.upper(), help=help_text)
        elif kind == float | None:
            parser.add_argument(_flag(f.name), dest=f.name, type=_number(float), default=None, metavar="FLOAT", help=help_text)
        else:
            parser.add_argument(_flag(f.name), dest=f.name, type=str, default=None, help=help_text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stridelab", description="Train and compare TRPO and PPO on robot locomotion.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_train = sub.add_parser("train", help="train a policy", description="Train a policy with PPO or TRPO.")
    _add_config_flags(p_train)
    p_train.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR from its last checkpoint")

    p_eval = sub.add_parser("eval", help="evaluate a trained policy", description="Mean and std of undiscounted episode returns.")
    p_eval.add_argument("run_dir", metavar="RUN_DIR")
    p_eval.add_argument("--episodes", type=_number(int), default=10, help="episodes to average over (default 10)")
    p_eval.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mean")
    p_eval.add_argument("--seed", type=_number(int), default=None, help="seed of the evaluation envs")
    p_eval.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    p_eval.add_argument("--json", action="store_true", help="print a JSON object instead of text")

    p_export = sub.add_parser("export", help="export the policy as TorchScript",
                              description="Write the deterministic policy (normalizer included) as a TorchScript "
                                          "program: float32 observations [B, obs_dim] in, actions [B, act_dim] out.")
    p_export.add_argument("run_dir", metavar="RUN_DIR")
    p_export.add_argument("--out", default=None, help="output file (default RUN_DIR/policy.pt)")

    sub.add_parser("envs", help="list the tasks", description="List every task with observation and action sizes.")
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from stridelab.config import build_config, validate
    from stridelab.envs import check_env_name
    from stridelab.train import resolve_device, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        from stridelab.checkpoint import find_checkpoint

        run_dir = Path(args.resume)
        find_checkpoint(run_dir)
        cfg = TrainConfig.load(run_dir / "config.json")
        for key, value in given.items():  # e.g. a larger --total-steps to train on
            setattr(cfg, key, value)
        cfg.run_dir = str(run_dir)
    else:
        cfg = build_config(given)
    validate(cfg)
    check_env_name(cfg.env)
    resolve_device(cfg.device)
    from stridelab.train import TrainingInterrupted

    try:
        summary = train(cfg, resume=bool(args.resume))
    except TrainingInterrupted as e:
        print(f"stridelab train: {e}", file=sys.stderr)
        print(f"continue with: stridelab train --resume {cfg.run_dir}", file=sys.stderr)
        return 128 + e.signum
    print(f"run dir: {cfg.run_dir}")
    for key, value in summary.items():
        print(f"{key}: {value:.4g}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from stridelab.evaluate import evaluate_agent, load_agent
    from stridelab.train import resolve_device

    if args.episodes <= 0:
        raise ConfigError(f"--episodes must be a positive integer, got {args.episodes}")
    device = resolve_device(args.device)
    agent, cfg, state = load_agent(Path(args.run_dir), device=device)
    returns = evaluate_agent(agent, cfg, args.episodes, deterministic=not args.stochastic, device=device, seed=args.seed)
    mean, std = float(returns.mean()), float(returns.std(unbiased=False))
    if args.json:
        print(json.dumps({"mean": mean, "std": std, "episodes": args.episodes, "returns": returns.tolist(),
                          "global_step": state["global_step"], "config": cfg.to_dict()}))
    else:
        mode = "stochastic" if args.stochastic else "deterministic"
        print(f"run: {args.run_dir} ({cfg.algo}, {cfg.env}/{cfg.backend}, {state['global_step']:,} steps)")
        print(f"{args.episodes} episodes, {mode} actions: mean return {mean:.2f} +- {std:.2f}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from stridelab.evaluate import load_agent
    from stridelab.export import export_policy

    agent, cfg, state = load_agent(Path(args.run_dir))
    out = export_policy(agent, Path(args.out) if args.out else Path(args.run_dir) / "policy.pt")
    print(f"exported {cfg.algo} policy for {cfg.env} ({state['global_step']:,} steps) to {out}")
    print(f"use: torch.jit.load({str(out)!r})(obs)  # obs float32 [B, {agent.obs_dim}] -> actions [B, {agent.act_dim}]")
    return 0


def cmd_envs(args: argparse.Namespace) -> int:
    from stridelab.envs import env_names, make_env

    print(f"{'env':<28}{'simulator':<12}{'obs':>6}{'act':>6}")
    for name in env_names():
        spec = make_env(name, 1).spec
        print(f"{name:<28}{spec.simulator:<12}{spec.obs_dim:>6}{spec.act_dim:>6}")
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    from stridelab.checkpoint import CheckpointError

    handlers = {"train": cmd_train, "eval": cmd_eval, "export": cmd_export, "envs": cmd_envs}
    try:
        return handlers[args.command](args)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"stridelab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("stridelab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
