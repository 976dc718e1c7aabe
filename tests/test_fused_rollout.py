"""The fused Brax rollout (policy inside the jitted simulator loop) against the step-by-step path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stridelab.envs import jax_policy, make_env
from stridelab.models import Agent
from stridelab.rollout import RolloutStorage, can_fuse, collect


def _agent(obs_dim: int, act_dim: int, seed: int = 0) -> Agent:
    torch.manual_seed(seed)
    agent = Agent(obs_dim, act_dim, init_std=0.4)
    with torch.no_grad():  # non-trivial normalizer and a mean that is not near zero
        agent.obs_rms.update(torch.randn(500, obs_dim, dtype=torch.float64) * 3 + 1)
        agent.policy.mu.weight.mul_(100.0)
    return agent


def test_jax_policy_equals_the_torch_policy():
    agent = _agent(27, 8)
    obs = torch.randn(300, 27) * 4
    import jax.numpy as jnp

    mean_j, std_j = jax_policy.mean_std(jax_policy.policy_params(agent), jnp.asarray(obs.numpy()),
                                         agent.obs_rms.clip, agent.policy.min_std)
    mean_t, std_t = agent.dist_params(obs)
    assert float(mean_t.abs().mean()) > 0.1  # the check is not about zeros
    np.testing.assert_allclose(np.asarray(mean_j), mean_t.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(std_j), std_t.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_fused_rollout_replays_step_by_step():
    """Feeding the fused rollout's sampled actions to a twin env step by step gives the same
    trajectory: observations, rewards, ends of episodes (time limit 5 inside a 12-step rollout,
    so auto-resets happen), final observations and episode statistics."""
    N, T = 16, 12
    fused_env = make_env("ant", N, backend="spring", episode_length=5)
    twin = make_env("ant", N, backend="spring", episode_length=5)
    agent = _agent(fused_env.spec.obs_dim, fused_env.spec.act_dim)
    assert can_fuse(fused_env, agent)
    obs0 = fused_env.reset(3).clone()
    torch.testing.assert_close(twin.reset(3), obs0)
    storage = RolloutStorage(T, N, fused_env.spec.obs_dim, fused_env.spec.act_dim, torch.device("cpu"))
    next_obs = collect(fused_env, agent, obs0, storage, fused_seed=11)

    obs = obs0
    for t in range(T):
        torch.testing.assert_close(storage.obs[t], obs, rtol=1e-4, atol=1e-4)
        res = twin.step(agent.to_env_action(storage.actions[t]))
        torch.testing.assert_close(storage.rewards[t], res.reward, rtol=1e-4, atol=1e-4)
        assert torch.equal(storage.terminated[t], res.terminated)
        assert torch.equal(storage.dones[t], res.done)
        torch.testing.assert_close(storage.final_obs[t], res.final_obs, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(storage.ep_returns[t], res.episode_return, rtol=1e-4, atol=1e-4)
        assert torch.equal(storage.ep_lengths[t], res.episode_length)
        obs = res.obs
    torch.testing.assert_close(next_obs, obs, rtol=1e-4, atol=1e-4)
    assert int(storage.dones.sum()) >= 2 * N  # every env hit the time limit twice
    assert bool(storage.dones[4].all()) and bool(storage.dones[9].all())

    # The samples follow the policy: standardized noise ~ N(0, 1), independent across steps.
    mean, std = agent.dist_params(storage.obs.reshape(T * N, -1))
    z = (storage.actions.reshape(T * N, -1) - mean) / std
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    assert float(torch.corrcoef(torch.stack([z[:-N].flatten(), z[N:].flatten()]))[0, 1]) < 0.1


def test_fused_rollout_is_reproducible_and_seeded():
    N, T = 8, 6
    env = make_env("ant", N, backend="spring")
    agent = _agent(env.spec.obs_dim, env.spec.act_dim)
    runs = []
    for seed in (5, 5, 6):
        obs = env.reset(0)
        storage = RolloutStorage(T, N, env.spec.obs_dim, env.spec.act_dim, torch.device("cpu"))
        collect(env, agent, obs, storage, fused_seed=seed)
        runs.append(storage.actions.clone())
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])


@pytest.mark.parametrize("fused", [True, False])
def test_training_on_brax_with_and_without_fusing(tmp_path, monkeypatch, fused):
    import time

    from stridelab.config import build_config
    import stridelab.train as train_mod

    real_make_env, real_make_algo = train_mod.make_env, train_mod.make_algo
    updates_done: list[float] = []

    def slow_make_env(*args, **kwargs):  # a set-up that takes a while
        time.sleep(1.0)
        return real_make_env(*args, **kwargs)

    def timed_make_algo(*args, **kwargs):
        algo = real_make_algo(*args, **kwargs)
        update = algo.update

        def timed_update(*a, **k):
            out = update(*a, **k)
            updates_done.append(time.perf_counter())
            return out

        algo.update = timed_update
        return algo

    monkeypatch.setattr(train_mod, "make_env", slow_make_env)
    monkeypatch.setattr(train_mod, "make_algo", timed_make_algo)
    cfg = build_config({"env": "ant", "algo": "ppo", "num_envs": 32, "num_steps": 16, "total_steps": 2048,
                        "fused_rollout": fused, "eval_episodes": 2, "eval_every": 1024,
                        "run_dir": str(tmp_path / "run"), "progress": False})
    called = time.perf_counter()
    summary = train_mod.train(cfg)
    assert summary["global_step"] == 2048
    assert np.isfinite(summary["eval/episodic_return"])
    # The time to the first update counts from the call: set-up (here >= 1 s of it) and compilation included.
    assert summary["time/first_update_s"] == pytest.approx(updates_done[0] - called, abs=0.5)


def test_fitting_the_critic_during_the_next_rollout_changes_nothing_but_the_clock(tmp_path, monkeypatch):
    """The next rollout needs only the policy, so it may run while the value net learns: the
    same seed gives the same losses and weights with and without the overlap (an evaluation in
    the middle waits for the rollout in flight). TRPO's update: tests/test_two_pass_updates.py."""
    from stridelab.checkpoint import load_checkpoint
    from stridelab.config import build_config
    from stridelab.report import read_scalars
    import stridelab.train as train_mod

    envs: dict = {}
    real_make_env = train_mod.make_env

    def make_env_once(*args, **kwargs):  # both runs step the same envs (each run resets them): one compilation
        key = repr((args, kwargs))
        if key not in envs:
            envs[key] = real_make_env(*args, **kwargs)
        return envs[key]

    monkeypatch.setattr(train_mod, "make_env", make_env_once)
    runs = {}
    for overlap in (True, False):
        run_dir = tmp_path / str(overlap)
        cfg = build_config({"env": "ant", "algo": "ppo", "num_envs": 32, "num_steps": 16, "total_steps": 1536,
                            "overlap_critic": overlap, "eval_episodes": 2, "eval_every": 1024, "episode_length": 40,
                            "run_dir": str(run_dir), "progress": False, "seed": 4})
        train_mod.train(cfg)
        scalars = {k: v for k, v in read_scalars(str(run_dir)).items()
                   if k.startswith("losses/") or k in ("charts/episodic_return", "eval/episodic_return")}
        runs[overlap] = scalars, load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["agent"]
    (s_on, w_on), (s_off, w_off) = runs[True], runs[False]
    assert s_on.keys() == s_off.keys() and len(s_on["losses/value_loss"]) == 3
    for key in s_on:
        steps_on, values_on = zip(*s_on[key])
        steps_off, values_off = zip(*s_off[key])
        assert steps_on == steps_off
        np.testing.assert_allclose(values_on, values_off, rtol=1e-4, atol=1e-5, err_msg=key)
    for key in w_on:
        torch.testing.assert_close(w_on[key], w_off[key], rtol=1e-4, atol=1e-5)
