"""Evaluation a roboticist reads (issue 30, item 5): ``--randomize`` as a run setting, the command
set's metrics (by hand, then on the real Go1 with a scripted policy), ``stridelab eval``'s table,
the TensorBoard tags a Go1 run logs (``reward/<term>``, ``eval/lin_vel_error``, ...) and the
report's command-set table. The model is read from MENAGERIE_ROOT (tests/conftest.py)."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from stridelab import locomotion
from stridelab.cli import main
from stridelab.config import ConfigError, TrainConfig, build_config, validate
from stridelab.envs import make_env
from stridelab.envs.go1 import Randomization
from stridelab.envs.registry import task_options
from stridelab.locomotion import COMMANDS, Tally, summarize, tracking_errors
from stridelab.report import RunData, build_report, command_stats, group, read_scalars

GO1 = "Go1JoystickFlatTerrain"
TINY = {"env": GO1, "algo": "ppo", "total_steps": 1024, "num_envs": 8, "num_steps": 64, "num_minibatches": 4,
        "vf_minibatches": 4, "episode_length": 60, "eval_episodes": 2, "eval_every": 512, "progress": False,
        "randomize": "all", "env_shards": "1", "env_kwargs": {"action_scale": 0.4, "penalty_curriculum": (0.3, 0.5)}}


# --- the setting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, on", [("none", set()), ("all", {f.name for f in dataclasses.fields(Randomization)}),
                                      ("foot_friction, pushes", {"foot_friction", "pushes"})])
def test_randomize_takes_none_all_or_a_list_of_switches(text, on):
    cfg = build_config({"env": GO1, "randomize": text})
    validate(cfg)
    chosen = Randomization.parse(text)
    assert {k for k, v in dataclasses.asdict(chosen).items() if v} == on
    assert task_options(cfg) == ({} if text == "none" else {"randomization": text})
    env = make_env(GO1, 2, **task_options(cfg))
    assert env.task.cfg.randomization == chosen  # what the training envs are built with
    env.close()


@pytest.mark.parametrize("env, value, words", [
    (GO1, "frictin", ["'frictin'", "did you mean 'foot_friction'?", "none, all, or a comma list of foot_friction"]),
    (GO1, "pushes,", ["unknown randomization ''", "action_latency"]),
    ("Hopper-v5", "all", ["--randomize 'all'", "Gymnasium's tasks have no domain randomization", "use --randomize none"]),
])
def test_a_bad_or_unsupported_randomize_is_one_line_naming_it(env, value, words):
    with pytest.raises(ConfigError) as e:
        validate(build_config({"env": env, "randomize": value}))
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_simulators_without_task_options_refuse_them():
    with pytest.raises(ValueError, match="Gymnasium's tasks take no task options, got randomization"):
        make_env("Hopper-v5", 1, randomization="all")


def test_the_cli_refuses_a_bad_randomize_with_exit_2(capsys):
    assert main(["train", "--env", GO1, "--randomize", "payload,gravity", "--run-dir", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'gravity'" in err and "payload, com_shift" in err


# --- the metrics ---------------------------------------------------------------------------------


def test_tracking_errors_on_hand_made_velocities():
    command = np.array([[0.5, 0.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.3, 0.5]])
    lin_vel = np.array([[0.2, 0.4, 9.0], [0.0, 0.0, 0.0], [0.6, 0.3, -1.0]])  # z velocity is not tracked
    ang_vel = np.array([[5.0, 5.0, 0.0], [0.0, 0.0, 0.7], [0.0, 0.0, 0.5]])  # nor roll and pitch rates
    lin, yaw = tracking_errors(command, lin_vel, ang_vel)
    np.testing.assert_allclose(lin, [0.5, 0.0, 0.0])  # (0.3, -0.4): 0.5 m/s
    np.testing.assert_allclose(yaw, [0.0, 0.3, 0.0])


def test_summarize_pools_steps_per_command_and_counts_falls():
    tally = Tally.zeros(4)  # envs 0, 1 ran command "a"; 2, 3 command "b"
    tally.add_step(np.array([True, True, True, False]), np.array([1.0, 3.0, 0.5, 9.0]), np.array([0.1, 0.3, 0.0, 9.0]))
    tally.add_step(np.array([True, False, False, False]), np.array([2.0, 9.0, 9.0, 9.0]), np.array([0.2, 9.0, 9.0, 9.0]))
    tally.episode_return[:] = [10.0, 4.0, 1.0, 3.0]
    tally.fell[:] = [False, True, False, True]
    rows = summarize(tally, np.array([0, 0, 1, 1]), ["a", "b"])
    assert rows["a"]["lin_vel_error"] == pytest.approx((1 + 3 + 2) / 3)  # over all counted steps of its envs
    assert rows["a"]["yaw_rate_error"] == pytest.approx(0.6 / 3)
    assert (rows["a"]["falls_per_episode"], rows["a"]["return"], rows["a"]["steps"]) == (0.5, 7.0, 3)
    assert rows["b"]["lin_vel_error"] == 0.5 and rows["b"]["falls_per_episode"] == 0.5
    assert rows["overall"]["lin_vel_error"] == pytest.approx(6.5 / 4) and rows["overall"]["episodes"] == 4
    nothing = summarize(Tally.zeros(1), np.array([0]), ["a"])  # fell before anything was measured
    assert nothing["a"]["lin_vel_error"] is None and np.isnan(locomotion.scalars(nothing)["eval/lin_vel_error"])
    assert locomotion.settle_steps(0.02, 1000) == 50 and locomotion.settle_steps(0.02, 60) == 30


class StandStill:
    """A policy holding the home pose (action 0) whatever it sees."""

    def act(self, obs, deterministic=True):
        return torch.zeros(obs.shape[0], 12), None


def test_a_robot_standing_still_misses_every_command_by_the_command_itself(monkeypatch):
    built = []
    monkeypatch.setattr(locomotion, "make_env", lambda *a, **k: built.append(k) or make_env(*a, **k))
    rows = locomotion.evaluate_condition(StandStill(), GO1, episode_length=200, envs_per_command=2, seed=0)
    assert built[0]["randomization"] == "none"
    for name, (vx, vy, wz) in COMMANDS.items():  # (it settles from the push it starts with)
        r = rows[name]
        assert r["falls_per_episode"] == 0.0 and r["episodes"] == 2 and r["steps"] == 2 * 149  # 51-199: from 1 s on, to the time limit
        assert r["lin_vel_error"] == pytest.approx(np.hypot(vx, vy), abs=0.05), name
        assert r["yaw_rate_error"] == pytest.approx(abs(wz), abs=0.05), name
    locomotion.evaluate_condition(StandStill(), GO1, episode_length=60, envs_per_command=1, seed=0,
                                  randomization="all")
    assert built[1]["randomization"] == "all"


# --- a tiny Go1 run, end to end ----------------------------------------------------------------


@pytest.fixture(scope="module")
def go1_run(tmp_path_factory):
    """1,024 steps of PPO on 8 randomized envs; its training envs' options recorded."""
    import importlib

    train_module = importlib.import_module("stridelab.train")  # (stridelab.train is also the function)

    run = tmp_path_factory.mktemp("go1") / "ppo_s1"
    built, progress = [], []

    def recording(*args, **kwargs):
        built.append(kwargs)
        env = make_env(*args, **kwargs)
        told, which = env.set_progress, len(built)
        env.set_progress = lambda fraction: (progress.append((which, fraction)), told(fraction))
        return env

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "make_env", recording)
        mp.setattr(locomotion, "make_env", recording)
        train_module.train(TrainConfig(**{**TINY, "run_dir": str(run)}))
    return run, built, progress


def test_the_training_envs_are_randomized_and_the_evaluation_envs_nominal(go1_run):
    run, built, _ = go1_run
    assert built[0]["randomization"] == "all" and "randomization" not in built[1]  # train, then eval
    assert json.loads((run / "config.json").read_text())["randomize"] == "all"


def test_the_tasks_settings_reach_every_env_the_run_builds_and_its_export(go1_run, tmp_path):
    run, built, _ = go1_run  # the training envs, the episodes' evaluation and the command set's
    assert len(built) >= 3 and all(b["env_kwargs"] == TINY["env_kwargs"] for b in built)
    assert json.loads((run / "config.json").read_text())["env_kwargs"] == {"action_scale": 0.4,
                                                                           "penalty_curriculum": [0.3, 0.5]}
    assert main(["export", str(run), "--out", str(tmp_path / "go1.onnx")]) == 0
    desc = json.loads((tmp_path / "go1.deploy.json").read_text())
    assert desc["action"]["scale"] == 0.4  # what the robot-side loop multiplies actions by
    assert desc["trained"]["task_options"]["env_kwargs"]["action_scale"] == 0.4


@pytest.mark.parametrize("kwargs, words", [
    ({"comand_range": 1}, ["--env-kwargs comand_range", "did you mean 'command_range'?", "penalty_curriculum"]),
    ({"command_range": (1.5, 0.8)}, ["command_range=(1.5, 0.8)", "give 3 numbers", "command_range=1.0,0.6,1.2"]),
    ({"reward_weights": {"posee": 0}}, ["give a dict of terms to weights", "feet_slip"]),
    ({"noise_level": "high"}, ["noise_level='high'", "give a number"]),
    ({"randomization": "all"}, ["domain randomization is --randomize"]),
])
def test_bad_task_settings_are_one_line_naming_them(kwargs, words):
    with pytest.raises(ConfigError) as e:
        validate(build_config({"env": GO1, "env_kwargs": kwargs}))
    message = str(e.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_task_settings_replace_only_what_they_name():
    env = make_env(GO1, 2, env_kwargs={"reward_weights": {"pose": 0.0}, "command_range": [1.5, 0.8, 1.2]})
    cfg = env.task.cfg
    assert cfg.reward_weights["pose"] == 0.0 and cfg.reward_weights["orientation"] == -5.0
    assert cfg.command_range == (1.5, 0.8, 1.2) and cfg.action_scale == 0.5
    env.close()


def test_training_tells_its_envs_where_it_stands_before_each_rollout(go1_run):
    _, _, progress = go1_run  # the task's cost curriculum reads it; evaluation envs never hear it
    assert progress == [(1, 0.0), (1, 0.5)]


def test_tensorboard_has_reward_terms_and_command_set_metrics(go1_run):
    run, _, _ = go1_run
    scalars = read_scalars(run)
    assert {"reward/tracking_lin_vel", "reward/feet_slip", "reward/termination"} <= set(scalars)
    assert [s for s, _ in scalars["reward/tracking_lin_vel"]] == [512, 1024]  # one point per iteration
    for tag in ("eval/lin_vel_error", "eval/yaw_rate_error", "eval/falls_per_episode"):
        assert [s for s, _ in scalars[tag]] == [0, 512, 1024], tag
    summary = json.loads((run / "summary.json").read_text())
    table = summary["command_set"]
    assert set(table["nominal"]) == set(table["randomized"]) == {*COMMANDS, "overall"}
    assert summary["eval/lin_vel_error"] == pytest.approx(table["nominal"]["overall"]["lin_vel_error"])
    assert table["envs_per_command"] == 2 and table["nominal"]["overall"]["episodes"] == 14


def test_stridelab_eval_prints_the_command_table_and_json_holds_it(go1_run, capsys):
    run, _, _ = go1_run
    assert main(["eval", str(run), "--episodes", "2", "--envs-per-command", "1"]) == 0
    out = capsys.readouterr().out
    assert "velocity tracking over 7 commands, 1 episode each" in out
    assert "nominal" in out and "randomized" in out and "lin m/s" in out and "errors from 0.6 s after reset" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert all(name in lines for name in [*COMMANDS, "overall"])
    assert main(["eval", str(run), "--episodes", "2", "--envs-per-command", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    table = result["command_set"]
    assert table["settle_s"] == 0.6 and table["commands"]["turn_right"] == [0.0, 0.0, -1.0]  # half of 60 steps
    for condition in ("nominal", "randomized"):
        row = table[condition]["overall"]
        assert set(row) >= {"lin_vel_error", "yaw_rate_error", "falls_per_episode", "return"}
        assert row["episodes"] == 7 and 0.0 <= row["falls_per_episode"] <= 1.0 and row["lin_vel_error"] >= 0.0
    assert main(["eval", str(run), "--envs-per-command", "0"]) == 2


def test_the_report_tabulates_and_plots_the_command_set_per_algorithm(go1_run, tmp_path):
    run, _, _ = go1_run
    shutil.copytree(run, tmp_path / "ppo_s1")
    mine = json.loads((run / "summary.json").read_text())["command_set"]
    for seed, error in ((1, 0.1), (2, 0.3)):  # hand-made TRPO runs: mean error 0.2 m/s
        other = tmp_path / f"trpo_s{seed}"
        other.mkdir()
        config = {**json.loads((run / "config.json").read_text()), "algo": "trpo", "seed": seed}
        (other / "config.json").write_text(json.dumps(config))
        table = json.loads(json.dumps(mine))
        table["randomized"]["forward_1.0"]["lin_vel_error"] = error
        (other / "summary.json").write_text(json.dumps({"eval/episodic_return": 1.0, "command_set": table}))
    result = build_report(tmp_path)
    stats = result["command_set"]
    assert stats["trpo"]["runs"] == 2 and stats["trpo"]["randomized"]["forward_1.0"]["lin_vel_error"] == pytest.approx(0.2)
    assert stats["ppo"]["nominal"]["overall"]["lin_vel_error"] == pytest.approx(mine["nominal"]["overall"]["lin_vel_error"])
    md = (tmp_path / "report.md").read_text()
    assert "## Following velocity commands" in md and "figures/command_set.png" in md
    assert "| randomized | forward_1.0 | TRPO | 2 | 0.20 |" in md and "| randomize | all | all |" in md
    assert (tmp_path / "figures" / "command_set.png").stat().st_size > 10_000
    page = (tmp_path / "report.html").read_text()
    assert "Following velocity commands" in page and "alt='command_set'" in page


def test_runs_without_a_command_set_get_no_such_section():
    runs = [RunData("ppo_s1", "ppo", 1, "ant", {}, {"eval/episodic_return": 1.0})]
    assert command_stats(group(runs)) is None
