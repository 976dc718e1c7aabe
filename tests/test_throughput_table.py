"""benchmarks/throughput.py's reduction of repeated measurements to one table row."""

import argparse

import pytest
import torch

from benchmarks import throughput
from benchmarks.throughput import median_of


def test_median_of_repeats_keeps_every_run_and_the_range() -> None:
    runs = [{"sps": s, "x_simulator": x} for s, x in ((900.0, 0.9), (700.0, 0.7), (800.0, 0.8))]
    row = median_of(runs)
    assert (row["sps"], row["x_simulator"]) == (800.0, 0.8)
    assert row["x_simulator_range"] == [0.7, 0.9]
    assert row["repeats"] == runs


def test_median_of_an_even_count_takes_the_lower_middle_and_skips_failed_runs() -> None:
    runs = [{"x_simulator": 0.9}, {"error": "boom"}, {"x_simulator": 0.6}, {"x_simulator": 0.8},
            {"x_simulator": 0.7}]
    row = median_of(runs)
    assert row["x_simulator"] == 0.7
    assert row["x_simulator_range"] == [0.6, 0.9]
    assert len(row["repeats"]) == 5


def test_median_of_a_single_or_failed_measurement_is_that_measurement() -> None:
    assert median_of([{"x_simulator": 0.5}]) == {"x_simulator": 0.5}
    assert median_of([{"error": "a"}, {"error": "b"}]) == {"error": "a"}


@pytest.mark.parametrize("part,called", [
    ("stridelab-ppo-to-return", ("to_return", "ppo")), ("stridelab-trpo-to-return", ("to_return", "trpo")),
    ("stridelab-ppo", ("training", "ppo", "auto")), ("stridelab-trpo-1shard", ("training", "trpo", "1")),
])
def test_each_stridelab_part_runs_its_own_measurement(monkeypatch, part, called) -> None:
    """A race to a return is not a throughput measurement, though both names start alike."""
    monkeypatch.setattr(throughput, "stridelab_to_return", lambda algo, args: {"called": ("to_return", algo)})
    monkeypatch.setattr(throughput, "stridelab_training",
                        lambda algo, *a, shards, **k: {"called": ("training", algo, shards)})
    args = argparse.Namespace(part=part, num_envs=8, env="ant", backend="spring", iterations=1)
    assert throughput.run_part(args)["called"] == called


def _sim(loop: float, batch: float, env: float, busy: float = 0.0) -> dict:
    return {**{k: {"steps_per_s": v, "us_per_step": 1e6 / v} for k, v in (("loop", loop), ("batch", batch),
                                                                          ("env", env))},
            "others_busy": busy, "threads": 2, "mujoco": "4.0.0"}


def test_native_mujoco_ratios_are_to_the_simulator_runs_around_each_training_run() -> None:
    """Go1 (issue 30): batch / loop within each simulator run; training to the mean of the
    simulator runs just before and after it, so drift between rounds cancels."""
    runs = [("mujoco-simulator", _sim(100.0, 190.0, 150.0)),
            ("stridelab-ppo", {"sps": 120.0, "first_update_s": 5.0, "update_fraction": 0.3, "rollout_fraction": 0.6,
                               "x_replay": 0.7, "replay_identical": True}),
            ("mujoco-simulator", _sim(100.0, 210.0, 150.0, busy=0.5)),
            ("stridelab-trpo", {"sps": 100.0, "first_update_s": 5.0, "x_replay": 0.55, "replay_identical": True}),
            ("mujoco-simulator", _sim(50.0, 100.0, 75.0))]  # the machine slowed by half
    res = throughput.mujoco_results(runs)
    assert res["parts"]["batch"]["x_loop"] == pytest.approx(2.0)
    assert res["parts"]["batch"]["x_loop_range"] == pytest.approx([1.9, 2.1])
    assert res["parts"]["stridelab-ppo"]["x_simulator"] == pytest.approx(120.0 / 200.0)
    assert res["parts"]["stridelab-ppo"]["x_env"] == pytest.approx(120.0 / 150.0)
    assert res["parts"]["stridelab-trpo"]["x_simulator"] == pytest.approx(100.0 / 155.0)
    assert res["others_busy_range"] == [0.0, 0.5]
    assert res["acceptance"] == pytest.approx({"batch_x_loop": 2.0, "stridelab-ppo_x_simulator": 0.6,
                                               "stridelab-trpo_x_simulator": 100.0 / 155.0,
                                               "stridelab-ppo_x_replay": 0.7, "stridelab-trpo_x_replay": 0.55})
    report = throughput.mujoco_report({**res, "env": "Go1JoystickFlatTerrain", "num_envs": 256, "repeats": 1})
    # Training is judged against the simulator replaying its own steps (benchmarks/env_replay.py).
    assert "stridelab-ppo x replay 0.70 (>= 0.6: met)" in report
    assert "stridelab-trpo x replay 0.55 (>= 0.6: NOT met)" in report
    assert "busy machine" in report
    assert "stepped other states" not in report


def test_the_row_is_the_median_replay_round_and_a_replay_of_other_states_is_left_out() -> None:
    """The row shown is the round whose x replay is the median, and every ratio has its own median
    over the rounds; a replay whose rewards differed from its run's (other states) has no x replay."""
    sim = ("mujoco-simulator", _sim(100.0, 200.0, 150.0))
    runs = [sim]
    for sps, replay in ((120.0, 0.9), (100.0, 0.62), (140.0, 0.58), (130.0, None)):
        run = {"sps": sps, "first_update_s": 5.0, "replay_identical": replay is not None}
        runs += [("stridelab-trpo", run if replay is None else {**run, "x_replay": replay}), sim]
    res = throughput.mujoco_results(runs)
    row = res["parts"]["stridelab-trpo"]
    assert row["sps"] == 100.0 and row["x_replay"] == pytest.approx(0.62)  # the median of 0.58, 0.62, 0.9
    assert row["x_replay_range"] == pytest.approx([0.58, 0.9])
    assert row["x_simulator_median"] == pytest.approx(0.6) and row["x_simulator_range"] == pytest.approx([0.5, 0.7])
    assert res["acceptance"]["stridelab-trpo_x_replay"] == pytest.approx(0.62)
    report = throughput.mujoco_report({**res, "env": "Go1JoystickFlatTerrain", "repeats": 4})
    assert "stridelab-trpo x replay 0.62 (>= 0.6: met)" in report
    assert "0.60 (0.50-0.70)" in report  # x simulator's own median and range
    assert "stepped other states" in report


def test_the_native_mujoco_simulator_part_measures_the_asked_batch(monkeypatch) -> None:
    monkeypatch.setattr(throughput, "mujoco_simulator", lambda env, n, seconds: {"called": (env, n, seconds)})
    args = argparse.Namespace(part="mujoco-simulator", num_envs=256, env="Go1JoystickFlatTerrain", seconds=4.0)
    assert throughput.run_part(args)["called"] == ("Go1JoystickFlatTerrain", 256, 4.0)


def test_a_failed_native_mujoco_training_run_is_a_row_that_says_so() -> None:
    runs = [("mujoco-simulator", _sim(100.0, 190.0, 150.0)), ("stridelab-ppo", {"error": "boom"}),
            ("mujoco-simulator", _sim(100.0, 190.0, 150.0))]
    res = throughput.mujoco_results(runs)
    assert "sps" not in res["parts"]["stridelab-ppo"]
    assert "failed" in throughput.mujoco_report({**res, "env": "Go1JoystickFlatTerrain"})


def test_a_replay_of_recorded_env_calls_steps_the_same_states_and_notices_a_different_action() -> None:
    """benchmarks/env_replay.py: the simulator alone on a run's own steps (randomized Go1, with a
    reset, curriculum settings and every env restarting along the way)."""
    from benchmarks import env_replay
    from stridelab.envs import mujoco as mj

    g = torch.Generator().manual_seed(0)
    with env_replay.recording() as log:
        env = mj.make_vec_env("Go1JoystickFlatTerrain", 4, episode_length=5, shards=1, randomization="all")
        env.reset(3)
        for t in range(12):
            env.set_progress(t / 12)
            env.step(torch.rand(4, env.spec.act_dim, generator=g) * 2 - 1)
        env.close()
    out = env_replay.replay(log, skip_steps=2)
    assert out["identical"] and out["steps"] == 12 * 4 and out["physics_sps"] > 0
    assert out["contacts"] > 0 and out["solver_iterations"] >= 1
    alone = env_replay.replay_alone(log, skip_steps=2)  # in a process of its own: the same steps
    assert alone["identical"] and alone["steps"] == out["steps"] and alone["contacts"] == out["contacts"]
    calls = log.envs[0][2]
    i = [j for j, call in enumerate(calls) if call[0] == "step"][5]
    calls[i] = ("step", calls[i][1] * 0.0, calls[i][2])  # another action at step 5: other states from there
    assert not env_replay.replay(log, skip_steps=2)["identical"]


def test_a_training_run_with_the_critic_beside_its_rollouts_is_recorded_and_replayed_step_for_step(tmp_path) -> None:
    """The path the benchmark takes: ``train()`` builds its env through the registry while recording,
    the rollouts run on a thread of their own (the critic overlap), with curriculum settings and
    episodes ending along the way; the replay repeats every step's reward."""
    from benchmarks import env_replay
    from stridelab.config import build_config
    from stridelab.train import train

    cfg = build_config({"env": "Go1JoystickFlatTerrain", "algo": "trpo", "num_envs": 4, "num_steps": 8,
                        "total_steps": 4 * 8 * 3, "episode_length": 10, "eval_episodes": 0, "progress": False,
                        "env_shards": "1", "run_dir": str(tmp_path / "run")})
    assert cfg.overlap_critic and cfg.randomize == "all"
    with env_replay.recording() as log:
        train(cfg)
    calls = log.busiest()[2]
    assert [c[0] for c in calls].count("step") == 3 * 8 and [c[0] for c in calls].count("progress") == 3
    out = env_replay.replay(log, skip_steps=8)
    assert out["identical"] and out["steps"] == 3 * 8 * 4
    with pytest.raises(ValueError, match="no steps after the first 24"):
        env_replay.replay(log, skip_steps=24)
