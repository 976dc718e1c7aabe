"""The Gymnasium MuJoCo adapter against single, unwrapped-by-us Gymnasium envs stepped by hand."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from stridelab.envs import check_env_name, make_env
from stridelab.envs.gymnasium import GymnasiumVecEnv


def test_spec_of_hopper():
    env = make_env("Hopper-v5", 2)
    spec = env.spec
    assert (spec.simulator, spec.obs_dim, spec.act_dim, spec.episode_length) == ("gymnasium", 11, 3, 1000)
    assert spec.dt == pytest.approx(0.008)
    assert spec.action_low == (-1.0,) * 3 and spec.action_high == (1.0,) * 3
    env.close()


def test_action_box_other_than_unit_is_reported():
    env = make_env("InvertedPendulum-v5", 1)
    assert env.spec.action_low == (-3.0,) and env.spec.action_high == (3.0,)
    env.close()


def test_steps_match_single_envs_with_final_obs_returns_and_time_limit():
    """Every env of the batch equals a Gymnasium env seeded ``seed + i`` and driven by the same
    actions: observations, rewards, the true final observation, episode returns and lengths,
    terminations (Hopper falls) apart from truncations (a 40-step limit)."""
    n, seed, limit = 3, 7, 40
    env = GymnasiumVecEnv("Hopper-v5", n, episode_length=limit)
    refs = [gym.make("Hopper-v5", max_episode_steps=limit) for _ in range(n)]
    obs = env.reset(seed)
    ref_obs = [r.reset(seed=seed + i)[0] for i, r in enumerate(refs)]
    np.testing.assert_allclose(obs.numpy(), np.stack(ref_obs), rtol=1e-6, atol=1e-6)
    rng = np.random.default_rng(0)
    ret, length = np.zeros(n), np.zeros(n, dtype=int)
    seen_term = seen_trunc = 0
    for _ in range(120):
        act = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
        res = env.step(torch.from_numpy(act))
        for i, r in enumerate(refs):
            o, rew, term, trunc, _ = r.step(act[i].astype(np.float64))
            ret[i] += rew
            length[i] += 1
            assert res.reward[i].item() == pytest.approx(rew, rel=1e-5, abs=1e-5)
            assert bool(res.terminated[i]) == term and bool(res.truncated[i]) == (trunc and not term)
            np.testing.assert_allclose(res.final_obs[i].numpy(), o, rtol=1e-5, atol=1e-5)
            if term or trunc:
                seen_term += term
                seen_trunc += trunc and not term
                assert res.episode_return[i].item() == pytest.approx(ret[i], rel=1e-5)
                assert res.episode_length[i].item() == length[i]
                ret[i], length[i] = 0.0, 0
                # The batch restarted this env on its own; the reference follows it.
                assert not np.allclose(res.obs[i].numpy(), o)
                r.reset()
                r.unwrapped.set_state(*_qpos_qvel(env, i))
            else:
                np.testing.assert_allclose(res.obs[i].numpy(), o, rtol=1e-5, atol=1e-5)
    assert seen_term > 0 and seen_trunc > 0
    env.close()


def _qpos_qvel(env, i):
    data = env._env.envs[i].unwrapped.data
    return data.qpos.copy(), data.qvel.copy()


def test_episode_time_limit_from_presets_and_names():
    env = make_env("Reacher-v5", 1, episode_length=50)
    assert env.spec.episode_length == 50
    env.close()
    with pytest.raises(ValueError, match="did you mean 'Hopper-v5'"):
        check_env_name("hopper-v5")
    with pytest.raises(ValueError, match="did you mean 'HalfCheetah-v5'"):
        check_env_name("HalfCheetah-v9")
    check_env_name("HalfCheetah-v4")  # registered: any Gymnasium id goes (issue 31)
