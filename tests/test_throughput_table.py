"""benchmarks/throughput.py's reduction of repeated measurements to one table row."""

import argparse

import pytest

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
            ("stridelab-ppo", {"sps": 120.0, "first_update_s": 5.0, "update_fraction": 0.3, "rollout_fraction": 0.6}),
            ("mujoco-simulator", _sim(100.0, 210.0, 150.0, busy=0.5)),
            ("stridelab-trpo", {"sps": 100.0, "first_update_s": 5.0}),
            ("mujoco-simulator", _sim(50.0, 100.0, 75.0))]  # the machine slowed by half
    res = throughput.mujoco_results(runs)
    assert res["parts"]["batch"]["x_loop"] == pytest.approx(2.0)
    assert res["parts"]["batch"]["x_loop_range"] == pytest.approx([1.9, 2.1])
    assert res["parts"]["stridelab-ppo"]["x_simulator"] == pytest.approx(120.0 / 200.0)
    assert res["parts"]["stridelab-ppo"]["x_env"] == pytest.approx(120.0 / 150.0)
    assert res["parts"]["stridelab-trpo"]["x_simulator"] == pytest.approx(100.0 / 155.0)
    assert res["others_busy_range"] == [0.0, 0.5]
    assert res["acceptance"] == pytest.approx({"batch_x_loop": 2.0, "stridelab-ppo_x_simulator": 0.6,
                                               "stridelab-trpo_x_simulator": 100.0 / 155.0})
    report = throughput.mujoco_report({**res, "env": "Go1JoystickFlatTerrain", "num_envs": 256, "repeats": 1})
    assert "stridelab-ppo x simulator 0.60 (>= 0.6: met)" in report
    assert "busy machine" in report


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
