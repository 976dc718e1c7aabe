"""Deploying a Go1JoystickFlatTerrain policy: ``stridelab export`` writes the deployment
description (in the ONNX metadata and beside the file), and examples/go1_deploy_loop.py, a plain
MuJoCo loop that knows only that description, computes what the training env computes: the
observation from the same states, the PD torques from the same targets; and a trained policy
walks, turns and stands there: tests/data/go1_ppo.onnx (exported by ``stridelab export`` from a PPO
run with the presets, docs/results.md "Go1"), or the one STRIDELAB_GO1_POLICY names. The model is
read from MENAGERIE_ROOT (tests/conftest.py)."""

import importlib.util
import json
import os
from pathlib import Path

import stridelab  # noqa: F401, I001  before MuJoCo: it sets MUJOCO_GL=egl, so renders later in this process work
import mujoco
import numpy as np
import onnx
import pytest
import torch

from stridelab.envs.go1 import OBSERVATION, Go1Config, Go1Joystick, build_model
from stridelab.envs.mujoco import MujocoVecEnv
from stridelab.evaluate import load_agent
from stridelab.export import DEPLOY_KEY, deploy_file, export_policy
from stridelab.models import ActorCritic
from tests.test_cli import stridelab_in_fixture

LOOP_PATH = Path(__file__).resolve().parents[1] / "examples" / "go1_deploy_loop.py"
POLICY_VARIABLE = "STRIDELAB_GO1_POLICY"
TRAINED_POLICY = Path(__file__).resolve().parent / "data" / "go1_ppo.onnx"


def _load_loop():
    spec = importlib.util.spec_from_file_location("go1_deploy_loop", LOOP_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loop = _load_loop()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Go1 run (256 PPO steps: real normalizer statistics) exported as ONNX and .pt2."""
    out = tmp_path_factory.mktemp("go1_deploy")
    run = out / "run"
    proc = stridelab_in_fixture("train", "--env", "Go1JoystickFlatTerrain", "--algo", "ppo", "--total-steps", "256",
                                "--num-envs", "4", "--num-steps", "64", "--eval-episodes", "0", "--no-progress",
                                "--seed", "1", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("go1.onnx", "other.pt2"):
        proc = stridelab_in_fixture("export", run, "--out", out / name)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deployment: " in proc.stdout and "docs/robots.md" in proc.stdout
    return {"run": run, "onnx": out / "go1.onnx", "pt2": out / "other.pt2"}


def test_export_writes_the_description_into_the_onnx_metadata_and_beside_every_format(exported):
    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    desc = json.loads(props[DEPLOY_KEY])
    assert json.loads(deploy_file(exported["onnx"]).read_text()) == desc
    assert deploy_file(exported["onnx"]).name == "go1.deploy.json" and deploy_file(exported["pt2"]).is_file()
    trained_with = json.loads((exported["run"] / "config.json").read_text())["randomize"]  # the presets': all
    task_spec = json.loads(json.dumps(Go1Joystick(randomization=trained_with).deploy_spec()))  # the env's own definitions
    assert desc == task_spec | {"policy": desc["policy"], "trained": desc["trained"]}
    assert [part["name"] for part in desc["observation"]] == [name for name, *_ in OBSERVATION]
    assert all(part["mujoco"] and part["on_robot"] for part in desc["observation"])
    assert desc["policy"]["input"]["raw_observations"] and desc["policy"]["normalizer"]["in_graph"]
    assert desc["policy"]["input"]["shape"] == ["batch", 48] and desc["policy"]["output"]["low"] == [-1.0] * 12
    assert desc["trained"]["algo"] == "ppo" and desc["trained"]["env_steps"] == 256
    assert loop.load_description(exported["onnx"]) == desc == loop.load_description(exported["pt2"])


def test_a_task_without_a_description_exports_as_before_and_drops_a_stale_one(tmp_path):
    stale = deploy_file(tmp_path / "hopper.onnx")
    stale.write_text("{}")
    export_policy(ActorCritic(11, 3), tmp_path / "hopper.onnx")
    assert not stale.exists()
    assert not onnx.load(str(tmp_path / "hopper.onnx")).metadata_props


def _states(n=6, steps=25):
    """A training env (no sensor noise) after ``steps`` random actions, some envs tilted and
    spinning: states whose every observation part is far from zero."""
    env = MujocoVecEnv(Go1Joystick(config=Go1Config(noise_level=0.0)), n, threads=1)
    env.reset(3)
    g = torch.Generator().manual_seed(4)
    for _ in range(steps):
        env.step(torch.rand(n, 12, generator=g) * 2 - 1)
    tilted = np.array([[0.9, 0.3, -0.2, 0.25], [0.7, -0.4, 0.5, 0.3]])
    env.sim.qpos[:2, 3:7] = tilted / np.linalg.norm(tilted, axis=1, keepdims=True)
    env.sim.qvel[:2, 3:6] = [[1.0, -2.0, 0.5], [-0.3, 0.8, 2.0]]
    env.sim.forward(np.arange(n))
    return env


def _plain_data(model, env, i):
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = env.sim.qpos[i], env.sim.qvel[i]
    mujoco.mj_forward(model, data)
    return data


def test_the_loops_observation_is_the_training_envs_noise_free_observation(exported):
    desc = loop.load_description(exported["onnx"])
    model, env = loop.plain_model(desc), _states()
    parts = env.task.observation_parts(env.sim, np.arange(env.num_envs))
    expected = np.concatenate([parts[name] for name, *_ in OBSERVATION], axis=1)
    assert (np.abs(expected[:, :9]).max(0) > 0.05).all()  # the velocities and gravity are all exercised
    for i in range(env.num_envs):
        got = loop.observe(model, _plain_data(model, env, i), desc, env.task.last_action[i], env.task.command[i])
        assert got.dtype == np.float32 and got.shape == (48,)
        np.testing.assert_allclose(got, expected[i], rtol=0, atol=1e-5, err_msg=f"env {i}")


def test_the_loops_pd_torques_are_the_training_models_for_the_same_targets(exported):
    desc = loop.load_description(exported["onnx"])
    plain, trained, env = loop.plain_model(desc), build_model(), _states()
    assert plain.opt.timestep == trained.opt.timestep and plain.opt.integrator == trained.opt.integrator
    rng = np.random.default_rng(5)
    for i in range(env.num_envs):
        target = np.asarray(desc["default_joint_pos"]) + desc["action"]["scale"] * rng.uniform(-3, 3, 12)
        forces = []
        for model in (plain, trained):
            data = _plain_data(model, env, i)
            data.ctrl[[model.actuator(name).id for name in desc["actuator_names"]]] = target
            mujoco.mj_forward(model, data)
            forces.append(data.actuator_force.copy())
        np.testing.assert_allclose(forces[0], forces[1], rtol=0, atol=1e-9)
    assert np.isclose(np.abs(forces[0]), desc["torque_limits"]).any()  # some target beyond the torque limit


@torch.no_grad()
def test_the_loop_runs_the_exported_policy_and_acts_as_the_run_does(exported):
    desc = loop.load_description(exported["onnx"])
    result = loop.run(exported["onnx"], (0.5, 0.0, 0.0), seconds=0.2, desc=desc)
    assert result["seconds"] == pytest.approx(0.2) and np.isfinite(result["end"]).all()
    agent, _, _ = load_agent(exported["run"])
    env = _states(n=3, steps=5)
    obs = env.task.observe(env.sim, np.arange(3), np.random.default_rng(0))
    expected, _ = agent.act(torch.from_numpy(obs), deterministic=True)
    policy = loop.Policy(exported["onnx"], desc)
    got = np.stack([policy(row) for row in obs])
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)


def test_the_committed_policy_is_the_presets_symmetric_one_with_its_reflection_in_the_graph():
    assert loop.load_description(TRAINED_POLICY)["policy"]["reflection"]["in_graph"]


@pytest.mark.parametrize("command, forward, sideways, turned", [
    ((0.5, 0.0, 0.0), (2.0, 3.0), (-0.5, 0.5), (-0.5, 0.5)),  # 2.5 m asked: within 20%, on course
    ((0.0, 0.0, 1.0), (-1.0, 1.0), (-1.0, 1.0), (3.5, 6.0)),  # 5 rad asked
    ((0.0, 0.0, -1.0), (-1.0, 1.0), (-1.0, 1.0), (-6.0, -3.5)),  # the policy's mirror image of the left turn
    ((0.0, 0.0, 0.0), (-0.25, 0.25), (-0.25, 0.25), (-0.3, 0.3)),  # stands still
], ids=["forward_0.5", "turn_left", "turn_right", "stand"])
def test_an_exported_policy_follows_commands_in_the_plain_mujoco_loop(command, forward, sideways, turned):
    result = loop.run(os.environ.get(POLICY_VARIABLE, TRAINED_POLICY), command, seconds=5.0)
    moved = result["end"] - result["start"]
    assert not result["fell"] and result["seconds"] == pytest.approx(5.0)
    for name, got, (low, high) in (("forward", moved[0], forward), ("sideways", moved[1], sideways),
                                   ("turned", result["turned"], turned)):
        assert low <= got <= high, f"{command}: {name} {got:+.2f}, expected {low} to {high} in 5 s"
