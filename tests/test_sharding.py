"""A Brax env batch split over several XLA devices (issue 21): the same trajectories as on one.

JAX fixes its device count when its backend starts, once per process, so the sharded checks run
in one child process that asks for two CPU devices through ``XLA_FLAGS`` (whatever the cores of
the machine running the tests), each check reporting its own result or traceback; the pure
planning and validation run here.
"""

from __future__ import annotations

import json
import os
import textwrap
import subprocess
import sys
from pathlib import Path

import pytest

from stridelab.config import ConfigError, build_config, validate
from stridelab.envs.brax import MIN_ENVS_PER_SHARD, plan_shards

ROOT = Path(__file__).resolve().parents[1]
N, T, LIMIT = 256, 16, 12  # episodes of 12 steps: every env ends, the spares run out and are redrawn
# The task is Brax's inverted pendulum: the sharding is the same for every task, the pendulum's
# programs compile in a third of hopper's time, and its poles fall, so episodes end both ways.


def test_auto_takes_every_device_while_each_shard_keeps_enough_envs():
    assert plan_shards("auto", 2048, 2) == (2, None)
    assert plan_shards("auto", 2048, 16) == (16, None)
    assert plan_shards("auto", 64, 2) == (1, None)  # too few envs to split: silently one
    assert plan_shards("auto", 2048, 1) == (1, None)
    shards, note = plan_shards("auto", 3 * MIN_ENVS_PER_SHARD, 4)  # 3 shards of the minimum, one device idle
    assert shards == 3 and "4 XLA devices" in note
    shards, note = plan_shards("auto", 1000, 16)  # at most 7 shards of 128, and 1000 = 5 x 200
    assert shards == 5 and "16 XLA devices" in note and "\n" not in note


def test_an_explicit_shard_count_must_fit_the_devices_and_the_batch():
    assert plan_shards(2, 256, 2) == (2, None)
    assert plan_shards("1", 256, 2) == (1, None)
    with pytest.raises(ValueError, match="--env-shards 4 needs"):
        plan_shards(4, 256, 2)
    with pytest.raises(ValueError, match="divisible"):
        plan_shards(2, 255, 2)


@pytest.mark.parametrize("value, message", [("two", "auto or a positive integer"), ("0", "auto or a positive"),
                                            ("3", "does not divide --num-envs 2048")])
def test_the_config_names_a_bad_shard_count_in_one_line(value, message):
    cfg = build_config({"env": "ant", "algo": "ppo", "env_shards": value})
    with pytest.raises(ConfigError, match=message) as e:
        validate(cfg)
    assert "\n" not in str(e.value)


def test_a_device_count_the_user_chose_is_left_alone(monkeypatch):
    import jax

    from stridelab.envs import brax

    asked: list = []
    monkeypatch.setattr(jax.config, "update", lambda *a: asked.append(a))
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=3")
    brax._split_cpu(8)
    monkeypatch.delenv("XLA_FLAGS")
    brax._split_cpu(1)
    assert asked == []
    brax._split_cpu(4)
    assert asked == [("jax_num_cpu_devices", 4)]


def _child(code: str, timeout: float = 300) -> dict:
    """Run ``code`` in a fresh process with two XLA CPU devices; returns the JSON it prints last."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROLLOUTS = f"""
import torch
from stridelab.config import build_config
from stridelab.envs import make_env
from stridelab.models import build_agent

runs, out = {{}}, {{}}
for shards in (1, 2):
    env = make_env("inverted_pendulum", {N}, episode_length={LIMIT}, shards=shards)
    torch.manual_seed(0)
    agent = build_agent(build_config({{"env": "inverted_pendulum", "algo": "ppo"}}), env.spec)
    first = env.reset(3)
    rollouts = [env.rollout(agent, {T}, seed=5 + i) for i in range(3)]
    steps = [env.step(torch.full((env.num_envs, env.spec.act_dim), 0.3)) for _ in range(2)]
    runs[shards] = (env.shards, first, rollouts, steps)
(s1, first1, r1, st1), (s2, first2, r2, st2) = runs[1], runs[2]
out["shards"] = [s1, s2]
out["first_equal"] = torch.equal(first1, first2)
out["fields"] = {{k: [list(v.shape), str(v.dtype)] for k, v in r2[0].items()}}
out["diff"] = {{k: max(float((a[k].double() - b[k].double()).abs().max()) for a, b in zip(r1, r2)) for k in r1[0]}}
out["exact"] = {{k: all(torch.equal(a[k], b[k]) for a, b in zip(r1, r2)) for k in r1[0]}}
out["steps_equal"] = all(torch.equal(x, y) for a, b in zip(st1, st2) for x, y in zip(a, b))
ends = [r["terminated"] | r["truncated"] for r in r2]
out["ended"] = [int(e.sum()) for e in ends]
out["lengths_at_truncation"] = sorted({{int(x) for r in r2 for x in r["episode_length"][r["truncated"]]}})
# after the time limit every env restarts from its own fresh state: all first observations differ
restart = r2[1]["obs"][{LIMIT} * 2 - {T}]
out["terminated"] = [int(r["terminated"].sum()) for r in r2]
out["distinct_restarts"] = int(torch.unique(restart, dim=0).shape[0])
"""

TRAINING = """
from stridelab.config import build_config
from stridelab.train import train
# Episodes of LIMIT steps: the evaluation at the end is one more program run, not the subject.
# The batch and rollout length of the rollouts above: their compiled programs serve the training.
cfg = build_config({{"env": "inverted_pendulum", "algo": "ppo", "num_envs": {n}, "num_steps": {t}, "total_steps": {n} * {t} * 2,
                    "env_shards": "2", "eval_episodes": 2, "eval_every": 0, "progress": False,
                    "episode_length": {limit}, "run_dir": {run_dir!r}}})
s = train(cfg)
out = {{"steps": s["global_step"], "fused": s["rollout/fused"], "eval": s["eval/episodic_return"],
       "shards": json.load(open({config!r}))["env_shards"]}}
"""


def _checks(**codes: str) -> str:
    """One child's program that runs each check in turn, each in a scope of its own, and prints
    ``{name: {"out": ...}}``, or ``{name: {"error": traceback}}`` for a check that raised, so one
    process (one JAX start, one torch import) serves every check and a failing one fails alone."""
    parts = ["import json, traceback", "results = {}"]
    for name, code in codes.items():
        parts += [f"def _{name}():", textwrap.indent(code.strip() + "\nreturn out", "    "),
                  "try:", f"    results[{name!r}] = {{'out': _{name}()}}",
                  "except Exception:", f"    results[{name!r}] = {{'error': traceback.format_exc()}}"]
    return "\n".join(parts + ["print(json.dumps(results))"])


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run_dir = tmp_path_factory.mktemp("two_shards")
    training = TRAINING.format(n=N, t=T, limit=LIMIT, run_dir=str(run_dir), config=str(run_dir / "config.json"))
    return _child(_checks(rollouts=ROLLOUTS, training=training))


def _result(children: dict, name: str) -> dict:
    assert "error" not in children[name], children[name].get("error")
    return children[name]["out"]


@pytest.fixture(scope="module")
def rollouts(children: dict) -> dict:
    return _result(children, "rollouts")


def test_two_shards_give_the_batch_of_one_in_the_same_shapes_and_order(rollouts):
    assert rollouts["shards"] == [1, 2]
    od, ad = 4, 1  # inverted pendulum
    assert rollouts["fields"] == {
        "obs": [[T, N, od], "torch.float32"], "u": [[T, N, ad], "torch.float32"], "reward": [[T, N], "torch.float32"],
        "terminated": [[T, N], "torch.bool"], "truncated": [[T, N], "torch.bool"],
        "final_obs": [[T, N, od], "torch.float32"], "episode_return": [[T, N], "torch.float32"],
        "episode_length": [[T, N], "torch.int32"], "next_obs": [[N, od], "torch.float32"]}
    # Resets and the step-by-step path are the same to the bit: each env's physics does not
    # depend on how many envs share its program.
    assert rollouts["first_equal"] and rollouts["steps_equal"]


def test_two_shards_follow_the_same_trajectories_within_float_rounding(rollouts):
    # The fused rollout's policy multiplies [N / shards, obs] matrices instead of [N, obs]; XLA
    # blocks a product by its shape, so on a larger task (hopper) the actions differ in the last
    # bit and the states drift by about 1e-5 over 48 steps (on the pendulum they come out equal).
    # The noise, the episode ends and the restarts are the same.
    diff, exact = rollouts["diff"], rollouts["exact"]
    assert diff["u"] < 1e-5
    assert diff["obs"] < 1e-3 and diff["final_obs"] < 1e-3 and diff["next_obs"] < 1e-3
    assert diff["reward"] < 1e-3 and diff["episode_return"] < 1e-2
    assert exact["terminated"] and exact["truncated"] and exact["episode_length"]


def test_episodes_end_and_restart_across_shards(rollouts):
    assert all(n >= N for n in rollouts["ended"][1:])  # every env reached the time limit (again)
    assert min(rollouts["terminated"]) > 0  # poles fell (the same ones: exact["terminated"] above)
    assert rollouts["lengths_at_truncation"] == [LIMIT]
    assert rollouts["distinct_restarts"] == N  # from fresh, distinct states, the spares redrawn


def test_training_with_two_shards(children):
    out = _result(children, "training")
    assert out["steps"] == N * T * 2 and out["fused"] == 1.0 and out["shards"] == "2"
    assert out["eval"] == out["eval"]  # a number, not NaN
