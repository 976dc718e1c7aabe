"""Presets are data: simulator and task tables layer in order, flags win."""

import pytest

from stridelab.config import ConfigError, build_config, preset_for


def test_gymnasium_tasks_take_the_gymnasium_tables():
    ppo = build_config({"env": "Walker2d-v5", "algo": "ppo"})
    assert (ppo.num_envs, ppo.num_steps, ppo.gamma, ppo.total_steps) == (8, 256, 0.99, 1_000_000)
    assert ppo.normalize_reward and ppo.anneal_lr and ppo.update_epochs == 10 and ppo.num_minibatches == 32
    trpo = build_config({"env": "Hopper-v5", "algo": "trpo"})
    assert (trpo.cg_iters, trpo.fisher_fraction, trpo.vf_epochs, trpo.max_kl) == (25, 1.0, 20, 0.01)


def test_the_gymnasium_policy_has_one_learned_log_std_and_ant_v5_its_own_exploration():
    for algo in ("ppo", "trpo"):
        assert not build_config({"env": "Hopper-v5", "algo": algo}).state_dependent_std
        assert build_config({"env": "ant", "algo": algo}).state_dependent_std  # Brax keeps the original head
    ppo, trpo = (build_config({"env": "Ant-v5", "algo": a}) for a in ("ppo", "trpo"))
    assert (ppo.init_std, ppo.target_kl, trpo.init_std, trpo.max_kl) == (0.3, 0.04, 0.3, 0.04)
    assert build_config({"env": "HalfCheetah-v5", "algo": "ppo"}).target_kl is None
    assert build_config({"env": "Hopper-v5", "algo": "ppo"}).target_kl == 0.04
    assert [build_config({"env": e, "algo": "trpo"}).gamma for e in ("Hopper-v5", "Walker2d-v5")] == [0.995, 0.99]


def test_task_tables_override_simulator_tables():
    assert build_config({"env": "HalfCheetah-v5", "algo": "trpo"}).max_kl == 0.08
    assert build_config({"env": "HalfCheetah-v5", "algo": "ppo"}).max_kl == 0.01
    assert build_config({"env": "Reacher-v5", "algo": "ppo"}).episode_length == 50
    hopper = build_config({"env": "Hopper-v5", "algo": "trpo"})
    assert (hopper.num_envs, hopper.num_steps, hopper.batch_size) == (2, 1024, 2048)
    walker = build_config({"env": "Walker2d-v5", "algo": "trpo"})
    assert (walker.num_envs, walker.num_steps) == (8, 256)


def test_brax_tasks_keep_the_brax_tables():
    ant = build_config({"env": "ant", "algo": "ppo"})
    assert (ant.num_envs, ant.num_steps, ant.gamma, ant.init_std, ant.total_steps) == (2048, 16, 0.97, 0.3, 3_500_000)
    assert not ant.normalize_reward
    assert preset_for("swimmer", "trpo")["backend"] == "generalized"


def test_flags_win_over_presets():
    cfg = build_config({"env": "Hopper-v5", "algo": "ppo", "num_envs": 4, "normalize_reward": False})
    assert cfg.num_envs == 4 and not cfg.normalize_reward and cfg.num_steps == 256


def test_a_named_network_sets_its_fields_over_the_presets_and_flags_win_over_it():
    original = build_config({"env": "Hopper-v5", "algo": "ppo", "network": "original"})
    assert (original.hidden_sizes, original.value_hidden_sizes, original.activation) == ([128, 128], None, "relu")
    assert original.state_dependent_std and not original.ortho_init
    baselines = build_config({"env": "ant", "algo": "trpo", "network": "baselines"})
    assert (baselines.hidden_sizes, baselines.activation, baselines.state_dependent_std, baselines.ortho_init) == (
        [64, 64], "tanh", False, True)
    assert baselines.num_envs == 1024 and baselines.network == "baselines"  # the rest of the presets stay
    wider = build_config({"env": "Hopper-v5", "algo": "ppo", "network": "baselines", "hidden_sizes": [256, 256]})
    assert wider.hidden_sizes == [256, 256] and wider.value_hidden_sizes is None and wider.activation == "tanh"


def test_a_variant_stays_that_variant_under_a_named_network():
    ppo_m = build_config({"env": "Hopper-v5", "algo": "ppo-m", "network": "baselines"})
    assert (ppo_m.activation, ppo_m.ortho_init, ppo_m.hidden_sizes) == ("relu", False, [64, 64])
    trpo_plus = build_config({"env": "Hopper-v5", "algo": "trpo+", "network": "original"})
    assert (trpo_plus.activation, trpo_plus.ortho_init, trpo_plus.hidden_sizes) == ("tanh", True, [128, 128])


def test_an_unknown_network_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match=r"unknown network 'orignal' \(did you mean 'original'\?\); choose one of original, baselines"):
        build_config({"env": "Hopper-v5", "algo": "ppo", "network": "orignal"})


@pytest.mark.parametrize("algo,grid", [("trpo", "go1-mirror"), ("ppo", "go1-preset-s20")])
def test_go1s_presets_are_the_configs_its_evidence_trained_with(algo, grid):
    """docs/results.md's Go1 runs (every seed meets every bound) trained with the presets as they
    are: a preset changed without new runs fails here."""
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "grids" / grid
                           / f"Go1JoystickFlatTerrain_{algo}_s1.json").read_text())["config"]
    preset = vars(build_config({"env": "Go1JoystickFlatTerrain", "algo": algo}))
    per_run = {"run_dir", "seed", "progress"}  # the grid sets these for each run
    shared = [k for k in recorded if k not in per_run]
    assert {k: preset[k] for k in shared} == {k: recorded[k] for k in shared}
