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
