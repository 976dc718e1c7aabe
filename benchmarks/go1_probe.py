"""One Go1JoystickFlatTerrain training run with task changes the CLI does not take (reward
weights, command ranges, ...), recorded as a small JSON in benchmarks/results/go1/.

    python benchmarks/go1_probe.py --name ppo-ent --algo ppo --total-steps 8000000 \\
        --weights termination=-0.02 --task command_range=1.0,0.5,1.0 --set ent_coef=0.01

Used to choose the task's defaults and the [mujoco] presets (issue 30, docs/results.md "Go1");
once chosen they are the defaults, and `stridelab train --env Go1JoystickFlatTerrain` trains
them. ``--weights`` names reward terms (``stridelab.envs.go1.REWARD_WEIGHTS``), ``--task``
``Go1Config`` fields (tuples comma-separated): both become the run's ``--env-kwargs``, so
``stridelab train --env-kwargs ...`` trains the same; ``--set`` ``stridelab train`` config fields.
The training-time evaluations use the task's defaults (the command set's errors do not depend
on the reward).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

from stridelab.config import build_config, validate
from stridelab.envs.go1 import REWARD_WEIGHTS
from stridelab.provenance import provenance
from stridelab.report import read_scalars
from stridelab.train import train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "go1"


def _value(text: str):
    """``0.5`` -> 0.5, ``1,2`` -> (1, 2), ``true`` -> True, anything else the text itself."""
    if "," in text:
        return tuple(_value(part) for part in text.split(","))
    try:
        return ast.literal_eval({"true": "True", "false": "False"}.get(text, text))
    except (ValueError, SyntaxError):
        return text


def _pairs(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: write NAME=VALUE")
        out[key] = _value(text)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--algo", default="ppo")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-steps", type=int, default=8_000_000)
    p.add_argument("--weights", nargs="*", default=[], help="reward term=weight")
    p.add_argument("--task", nargs="*", default=[], help="Go1Config field=value")
    p.add_argument("--set", nargs="*", default=[], help="train config field=value")
    args = p.parse_args(argv)
    weights = _pairs(args.weights)
    task = {**_pairs(args.task), **({"reward_weights": weights} if weights else {})}
    run_dir = f"runs/go1-probes/{args.name}-s{args.seed}"
    cfg = build_config({"env": "Go1JoystickFlatTerrain", "algo": args.algo, "seed": args.seed, "env_kwargs": task,
                        "total_steps": args.total_steps, "run_dir": run_dir, "progress": False, **_pairs(args.set)})
    validate(cfg)
    start = time.time()
    train(cfg)
    summary = json.loads((Path(run_dir) / "summary.json").read_text())  # with the command set's table
    curves = {tag: [(int(step), round(float(v), 5)) for step, v in series]
              for tag, series in read_scalars(Path(run_dir)).items() if tag.startswith(("eval/", "reward/", "losses/entropy"))}
    record = {"what": f"Go1 probe {args.name}", "command": "python benchmarks/go1_probe.py " + " ".join(sys.argv[1:]),
              "task_changes": {k: v for k, v in task.items() if k != "reward_weights"},
              "reward_weight_changes": {k: v for k, v in weights.items() if REWARD_WEIGHTS[k] != v},
              "config": dataclasses.asdict(cfg), "summary": summary, "wall_s": round(time.time() - start, 1),
              "eval_curve": {k: v for k, v in curves.items() if k.startswith("eval/")},
              "entropy_curve": curves.get("losses/entropy", [])[:: max(1, len(curves.get("losses/entropy", [])) // 20)],
              "reward_terms_last_rollout": {k: v[-1][1] for k, v in curves.items() if k.startswith("reward/")},
              "provenance": provenance()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"probe-{args.name}-s{args.seed}.json"
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)}: lin_vel_error {summary.get('eval/lin_vel_error')}, "
          f"yaw_rate_error {summary.get('eval/yaw_rate_error')}, falls {summary.get('eval/falls_per_episode')}")


if __name__ == "__main__":
    main()
