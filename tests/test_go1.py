"""Go1JoystickFlatTerrain on the native MuJoCo simulator: the model, the env's contract beyond
tests/test_vecenv_contract.py (seeding across thread counts, commands, falls, the time limit),
domain randomization's ranges and switches, and the model's offline error. The model is read
from MENAGERIE_ROOT (tests/conftest.py points it at ../shared/menagerie when that exists)."""

import dataclasses
import json

import mujoco
import numpy as np
import pytest
import torch

from stridelab.envs.go1 import (FEET, FOOT_RADIUS, KP, OBSERVATION, REWARD_WEIGHTS, REWARDS, Go1Config, Go1Joystick, Randomization,
                                build_model)
from stridelab.envs.mujoco import MujocoVecEnv, make_vec_env
from stridelab.errors import ConfigError

EXACT = Go1Config(noise_level=0.0)  # readings without sensor noise
SLICES = {}
_start = 0
for _name, _size, _, _ in OBSERVATION:
    SLICES[_name] = slice(_start, _start + _size)
    _start += _size


def go1(n, episode_length=1000, threads=1, **task):
    return MujocoVecEnv(Go1Joystick(**task), n, episode_length=episode_length, threads=threads)


def rollout(env, seed, actions):
    """Every StepResult (copied) of ``actions`` from ``reset(seed)``, and the first observation."""
    first = env.reset(seed).clone()
    return first, [type(r)(*(x.clone() for x in r)) for r in map(env.step, actions)]


def test_the_model_is_menageries_go1_with_the_tasks_sensors_standing_on_the_floor():
    m = build_model()
    assert (m.nq, m.nv, m.nu, m.opt.timestep) == (19, 18, 12, 0.004)
    feet = [f"{f}_{k}" for f in FEET for k in ("pos", "vel", "contact")]
    for name in ("gyro", "linvel", "upvector", "trunk_contact", *feet):
        m.sensor(name)  # KeyError if missing
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    mujoco.mj_forward(m, d)
    assert [d.site(f).xpos[2] - FOOT_RADIUS for f in FEET] == pytest.approx([0.0] * 4, abs=1e-9)
    assert np.allclose(m.actuator_gainprm[:, 0], KP) and np.all(m.dof_damping[6:] == 0)


def test_observations_follow_the_deploy_spec_layout():
    env = go1(3, config=EXACT)
    obs = env.reset(0)
    spec = env.task.deploy_spec()
    json.dumps(spec)  # JSON-ready
    assert obs.shape == (3, spec["obs_dim"]) == (3, 48) and obs.dtype == torch.float32
    assert [o["slice"] for o in spec["observation"]] == [[s.start, s.stop] for s in SLICES.values()]
    parts = env.task.observation_parts(env.sim, np.arange(3))
    for name, cols in SLICES.items():
        np.testing.assert_allclose(obs[:, cols].numpy(), parts[name], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(obs[:, SLICES["projected_gravity"]].numpy(), [[0, 0, -1]] * 3, atol=1e-6)
    m = env.task.model
    assert spec["actuator_names"][:3] == ["FR_hip", "FR_thigh", "FR_calf"]
    assert spec["joint_names"] == [m.joint(m.actuator_trnid[i, 0]).name for i in range(12)]
    assert spec["default_joint_pos"] == m.key_ctrl[m.key("home").id].tolist()
    assert (spec["control_period_s"], spec["action"]["scale"], spec["pd_gains"]["kp"][0]) == (0.02, 0.5, KP)


def test_the_same_seed_gives_the_same_episode_on_any_thread_count():
    g = torch.Generator().manual_seed(0)
    actions = [torch.rand(4, 12, generator=g) * 2 - 1 for _ in range(30)]
    first_a, a = rollout(go1(4, threads=1), 5, actions)
    first_b, b = rollout(go1(4, threads=2), 5, actions)
    first_c, _ = rollout(go1(4, threads=1), 6, actions[:1])
    assert torch.equal(first_a, first_b) and not torch.equal(first_a, first_c)
    for ra, rb in zip(a, b):
        assert all(torch.equal(x, y) for x, y in zip(ra, rb))


def test_commands_are_redrawn_within_episodes_and_some_are_exactly_zero():
    cfg = dataclasses.replace(EXACT, command_seconds=(0.1, 0.3))  # a redraw every 5-15 steps
    env = go1(16, config=cfg)
    obs, changes, zero, seen = env.reset(1), 0, 0, 0
    for _ in range(60):
        res = env.step(torch.zeros(16, 12))
        before, after = obs[:, SLICES["command"]], res.final_obs[:, SLICES["command"]]
        changes += int(((before != after).any(1) & ~res.done).sum())
        zero += int((after == 0).all(1).sum())
        seen += 16
        obs = res.obs
    assert changes >= 16 * 3  # at least ~60 / 15 redraws per env
    assert 0 < zero < seen
    n = 200_000
    commands = env.task.draw_commands(n, np.random.default_rng(0))
    assert np.all(np.abs(commands) <= np.array(cfg.command_range))
    standing = (commands == 0).all(1).mean()
    expected = cfg.standing_fraction + (1 - cfg.standing_fraction) * np.prod(1 - np.array(cfg.command_nonzero))
    assert standing == pytest.approx(expected, abs=0.005)
    nonzero = (commands != 0).mean(0)  # each axis by its own chance, outside the standing commands
    np.testing.assert_allclose(nonzero, (1 - cfg.standing_fraction) * np.array(cfg.command_nonzero), atol=0.005)


def test_a_robot_knocked_over_or_on_the_floor_terminates_and_restarts_upright():
    env = go1(3, config=EXACT)
    env.reset(2)
    env.sim.qpos[0, 2], env.sim.qpos[0, 3:7] = 0.4, [0.0, 1.0, 0.0, 0.0]  # upside down
    env.sim.qpos[1, 2] = 0.06  # lying on its belly
    env.sim.forward(np.array([0, 1]))
    res = env.step(torch.zeros(3, 12))
    assert res.terminated.tolist() == [True, True, False] and not res.truncated.any()
    gravity = SLICES["projected_gravity"]
    assert res.final_obs[0, gravity][2] > 0.9  # gravity points up the trunk: upside down
    np.testing.assert_allclose(res.obs[:2, gravity].numpy(), [[0, 0, -1]] * 2, atol=1e-6)  # restarted upright
    assert (res.episode_length[:2] == 1).all() and (res.reward[:2] < 0).all()  # the termination penalty


def test_the_time_limit_truncates_and_standing_still_with_zero_action_does_not_fall():
    env = go1(8, episode_length=500)
    env.reset(3)
    for t in range(1, 501):
        res = env.step(torch.zeros(8, 12))
        assert not res.terminated.any(), f"fell at step {t}"
        assert res.truncated.all() == (t == 500) and (res.truncated.any() == (t == 500))
        if res.reward.min() > 0:  # the logged terms are the reward's parts (no floor, no fall)
            assert sum(env.info.values()) == pytest.approx(float(res.reward.double().mean()), rel=1e-4)
        if t == 499:
            assert (env.sim.qpos[:, 2] > 0.2).all()
    assert (res.episode_length == 500).all() and set(env.info) == {f"reward/{k}" for k in REWARDS}


def test_randomization_draws_stay_in_their_ranges_and_nominal_draws_nothing():
    cfg = Go1Config(randomization=Randomization.all_on())
    env = go1(64, config=cfg)
    env.reset(4)
    task, expanded = env.task, env.sim.batch.expanded
    friction = expanded("geom_friction")[:, task.feet, 0]
    assert (friction == friction[:, :1]).all() and friction.std() > 0.1  # one draw per env, shared by its feet
    assert ((friction >= 0.4) & (friction <= 1.0)).all()
    payload = expanded("body_mass")[:, task.trunk] - task.trunk_mass
    assert ((payload >= -1.0) & (payload <= 2.0)).all() and payload.std() > 0.5
    subtree = expanded("body_subtreemass")[:, task.trunk] - task.model.body_subtreemass[task.trunk]
    np.testing.assert_allclose(subtree, payload, atol=1e-9)  # set_const followed the new masses
    shift = np.abs(expanded("body_ipos")[:, task.trunk] - task.trunk_ipos)
    assert (shift <= np.array(cfg.com_shift_m)).all() and (shift > 0).all()
    strength = expanded("actuator_gainprm")[:, :, 0] / KP
    assert ((strength >= 0.9) & (strength <= 1.1)).all() and strength.std() > 0.03
    np.testing.assert_allclose(expanded("actuator_biasprm")[:, :, 1], -KP * strength)
    np.testing.assert_allclose(expanded("actuator_forcerange"), task.forcerange * strength[..., None])
    nominal = go1(2)
    nominal.reset(4)
    assert all(nominal.sim.batch.expanded(f) is None for f in ("geom_friction", "body_mass", "actuator_gainprm"))


def test_pushes_change_the_base_velocity_by_at_most_the_kick():
    kicks = dataclasses.replace(EXACT, randomization=Randomization(pushes=True), push_interval_s=(0.01, 0.01))
    pushed, calm = go1(4, config=kicks), go1(4, config=EXACT)
    for env in (pushed, calm):
        env.reset(5)
        env.step(torch.zeros(4, 12))
    dv = np.abs(pushed.sim.qvel[:, :2] - calm.sim.qvel[:, :2])
    assert (dv.max(1) > 1e-3).all() and dv.max() < kicks.push_velocity + 0.05


def test_latency_delays_the_action_by_exactly_one_step():
    late = go1(2, config=dataclasses.replace(EXACT, randomization=Randomization(action_latency=True),
                                             latency_chance=1.0))
    now = go1(2, config=dataclasses.replace(EXACT, randomization=Randomization(action_latency=True),
                                            latency_chance=0.0))  # the same draws, never late
    g = torch.Generator().manual_seed(1)
    actions = [torch.rand(2, 12, generator=g) * 2 - 1 for _ in range(6)]
    late.reset(7)
    now.reset(7)
    default = late.task.default_pose
    for t, action in enumerate(actions):
        late.step(action)
        now.step(actions[t - 1] if t else torch.zeros(2, 12))
        previous = actions[t - 1].double().numpy() if t else 0.0
        np.testing.assert_allclose(late.sim.ctrl, np.broadcast_to(default + 0.5 * previous, (2, 12)))
        assert np.array_equal(late.sim.qpos, now.sim.qpos)  # the same physics, one step later


def test_a_state_that_blows_up_ends_its_episode(capfd):
    env = go1(2, config=EXACT)
    env.reset(8)
    env.sim.qvel[0, 6] = 1e11  # beyond MuJoCo's limit: the engine resets that simulation
    res = env.step(torch.zeros(2, 12))
    assert res.terminated.tolist() == [True, False]
    assert torch.isfinite(res.obs).all() and torch.isfinite(res.final_obs).all()


def test_reward_weights_must_name_the_terms():
    with pytest.raises(ValueError, match="tracking_lin_vel"):
        Go1Joystick(Go1Config(reward_weights={"tracking": 1.0}))


def test_the_simulator_builds_it_by_name_on_the_threads_asked_for():
    env = make_vec_env("Go1JoystickFlatTerrain", 2, episode_length=20, shards=1)
    assert (env.spec.simulator, env.spec.dt, env.sim.threads) == ("mujoco", 0.02, 1)
    env.close()


def test_the_rollout_runs_the_policy_on_one_torch_thread_then_gives_the_others_back(monkeypatch):
    """The batch steps on threads of its own; torch's workers, spinning after the policy's kernels,
    would slow it (MujocoVecEnv.policy_threads, docs/benchmarks.md)."""
    from stridelab.models import ActorCritic
    from stridelab.rollout import RolloutStorage, collect

    env = go1(4)
    agent = ActorCritic(env.spec.obs_dim, env.spec.act_dim, hidden_sizes=(8,))
    threads, act = [], agent.act_and_see
    monkeypatch.setattr(agent, "act_and_see", lambda obs, **kw: (threads.append(torch.get_num_threads()),
                                                                act(obs, **kw))[1])
    storage = RolloutStorage(3, 4, env.spec.obs_dim, env.spec.act_dim, torch.device("cpu"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        collect(env, agent, env.reset(0), storage)
        assert threads == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    env.close()


def test_without_network_or_local_copy_the_error_says_how_to_get_the_model(monkeypatch, tmp_path):
    from stridelab.envs.menagerie import robot_spec

    monkeypatch.delenv("MENAGERIE_ROOT", raising=False)
    monkeypatch.setenv("MENAGERIE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MENAGERIE_BASE_URL", (tmp_path / "nowhere").as_uri())  # a download that fails at once
    with pytest.raises(ConfigError) as e:
        robot_spec("unitree_go1")
    message = str(e.value)
    assert "\n" not in message and "connect to the network" in message and "MENAGERIE_ROOT" in message


def test_held_commands_survive_redraws_and_resets():
    env = go1(3, config=dataclasses.replace(EXACT, command_seconds=(0.02, 0.04)))
    held = np.array([[0.5, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -0.8]])
    env.task.hold_commands(held)
    obs = env.reset(9)
    for _ in range(5):
        np.testing.assert_array_equal(obs[:, SLICES["command"]].numpy(), held.astype(np.float32))
        obs = env.step(torch.zeros(3, 12)).obs
    env.task.hold_commands(None)
    for _ in range(5):
        obs = env.step(torch.zeros(3, 12)).obs
    assert not np.array_equal(obs[:, SLICES["command"]].numpy(), held.astype(np.float32))


def test_the_cost_curriculum_scales_the_penalties_by_training_progress_and_nothing_else():
    """Hwangbo et al. 2019: penalty terms x (start -> 1 over the ramp); tracking, pose, air time and
    the fall's penalty untouched; an env never told its progress (evaluation) pays the full penalties."""
    actions = [torch.full((4, 12), 0.3 * (-1) ** t) for t in range(20)]
    full = go1(4, config=EXACT)
    rollout(full, 5, actions)
    assert full.info["reward/action_rate"] < 0 and full.info["reward/torques"] < 0  # penalties to scale
    expected = {"none": 1.0, 0.0: 0.3, 0.25: 0.65, 0.5: 1.0, 0.9: 1.0}
    for progress, scale in expected.items():
        env = go1(4, config=dataclasses.replace(EXACT, penalty_curriculum=(0.3, 0.5)))
        if progress != "none":
            env.set_progress(progress)
        rollout(env, 5, actions)
        for term, value in env.info.items():
            weight = REWARD_WEIGHTS[term.removeprefix("reward/")]
            factor = scale if weight < 0 and term != "reward/termination" else 1.0
            assert value == pytest.approx(factor * full.info[term], rel=1e-9, abs=1e-12), (progress, term)


def test_latency_is_drawn_per_episode_so_the_policy_sees_both_timings():
    env = go1(400, config=dataclasses.replace(EXACT, randomization=Randomization(action_latency=True)))
    env.reset(3)
    first = env.task.late.copy()
    assert 0.4 < first.mean() < 0.6  # latency_chance 0.5
    action = torch.full((400, 12), 0.5)
    env.step(action)
    expected = env.task.default_pose + 0.5 * np.where(first[:, None], 0.0, 0.5)  # late: still the zero action
    np.testing.assert_allclose(env.sim.ctrl, expected)
    env.reset(4)
    assert 0.3 < (env.task.late != first).mean() < 0.7  # redrawn at every episode start
    nominal = go1(400, config=EXACT)
    nominal.reset(3)
    assert nominal.task.late.shape == (400,) and not nominal.task.late.any()
