"""The fused Brax rollout (policy inside the jitted simulator loop) against the step-by-step path."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from stridelab.algos import get, register, unregister
from stridelab.checkpoint import load_checkpoint
from stridelab.config import build_config
from stridelab.envs import jax_policy, make_env
from stridelab.models import ActorCritic
from stridelab.report import read_scalars
from stridelab.rollout import RolloutStorage, can_fuse, collect
from stridelab.train import train


def _agent(obs_dim: int, act_dim: int, seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    agent = ActorCritic(obs_dim, act_dim, init_std=0.4)
    with torch.no_grad():  # non-trivial normalizer and a mean that is not near zero
        agent.obs_rms.update(torch.randn(500, obs_dim, dtype=torch.float64) * 3 + 1)
        agent.policy.mu.weight.mul_(100.0)
    return agent


@pytest.mark.parametrize("hidden,activation,state_dependent_std", [
    ((128, 128), "relu", True), ((64, 32, 16), "tanh", True), ((48,), "elu", False), ((32, 32), "silu", False)])
def test_jax_policy_equals_the_torch_policy(hidden, activation, state_dependent_std):
    """The JAX mirror walks the torch policy's layers: any trunk of Linear layers and the
    offered activations computes the same mean and std."""
    torch.manual_seed(0)
    agent = ActorCritic(27, 8, hidden_sizes=hidden, activation=activation, init_std=0.4,
                        state_dependent_std=state_dependent_std)
    agent.obs_rms.update(torch.randn(500, 27) * 3 + 1)
    with torch.no_grad():  # weights far from their initial ones, so the heads matter
        for p in agent.policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    obs = torch.randn(300, 27) * 4
    import jax.numpy as jnp

    layers = jax_policy.structure(agent)
    assert layers.count("linear") == len(hidden) and layers.count(activation) == len(hidden)
    if not state_dependent_std:  # one std per action dimension, learned away from its start
        with torch.no_grad():
            agent.policy.log_std.add_(torch.linspace(-0.5, 0.5, 8))
    mean_j, std_j = jax_policy.mean_std(jax_policy.policy_params(agent), jnp.asarray(obs.numpy()),
                                         agent.obs_rms.clip, agent.policy.min_std, layers)
    with torch.no_grad():
        mean_t, std_t = agent.dist_params(obs)
    assert float(mean_t.abs().mean()) > 0.1 and float(std_t.std()) > 1e-3  # not about zeros or constants
    assert layers[-1] == ("softplus_std" if state_dependent_std else "log_std")
    # float32 both sides, summed in another order: pre-activations of tens give differences of 1e-5
    np.testing.assert_allclose(np.asarray(mean_j), mean_t.detach().numpy(), rtol=1e-5, atol=3e-5)
    np.testing.assert_allclose(np.asarray(std_j), std_t.detach().numpy(), rtol=1e-5, atol=3e-5)


def test_a_policy_the_mirror_does_not_know_is_named_and_never_a_silent_slowdown():
    env = make_env("ant", 4)
    agent = ActorCritic(env.spec.obs_dim, env.spec.act_dim)
    assert jax_policy.unsupported(agent) is None and can_fuse(env, agent)
    agent.policy.trunk.insert(1, torch.nn.LayerNorm(128))
    assert jax_policy.unsupported(agent) == "the policy's layer LayerNorm has no JAX mirror"
    with pytest.warns(RuntimeWarning) as caught:
        assert not can_fuse(env, agent)
    assert [str(w.message) for w in caught] == [
        "the policy's layer LayerNorm has no JAX mirror, so the rollout runs step by step from Python (several "
        "times slower than the fused rollout); --no-fused-rollout asks for that and silences this"]
    env.close()


def test_fused_rollout_replays_step_by_step():
    """Feeding the fused rollout's sampled actions to a twin env step by step gives the same
    trajectory: observations, rewards, ends of episodes (time limit 5 inside a 16-step rollout,
    so auto-resets happen), final observations and episode statistics. 32 envs x 16 steps: the
    rollout tests/test_cli.py's training compiles."""
    N, T = 32, 16
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
    assert int(storage.dones.sum()) >= 3 * N  # every env hit the time limit three times
    assert bool(storage.dones[4].all()) and bool(storage.dones[9].all()) and bool(storage.dones[14].all())

    # The samples follow the policy: standardized noise ~ N(0, 1), independent across steps.
    with torch.no_grad():
        mean, std = agent.dist_params(storage.obs.reshape(T * N, -1))
    z = (storage.actions.reshape(T * N, -1) - mean) / std
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05
    assert float(torch.corrcoef(torch.stack([z[:-N].flatten(), z[N:].flatten()]))[0, 1]) < 0.1


def test_fused_rollout_is_reproducible_and_seeded():
    N, T = 32, 16  # the batch and length of the test above: the same compiled rollout
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


class SlowStart:
    """An env whose first reset takes a second longer (a slow set-up); everything else,
    the fused rollout included, is the wrapped env's."""

    def __init__(self, env):
        self.env, self.waited = env, False

    def reset(self, seed):
        if not self.waited:
            time.sleep(1.0)
            self.waited = True
        return self.env.reset(seed)

    def __getattr__(self, name):
        return getattr(self.env, name)


@pytest.fixture
def timed_ppo():
    """Registers ``timed-ppo``: PPO that notes the clock at the end of each update."""
    done: list[float] = []

    class TimedPPO(get("ppo").cls):
        def update_value(self, batch):
            metrics = super().update_value(batch)
            done.append(time.perf_counter())
            return metrics

    register("timed-ppo", preset="ppo")(TimedPPO)
    yield done
    unregister("timed-ppo")


@pytest.mark.parametrize("fused", [True, False])
def test_training_on_brax_with_and_without_fusing(tmp_path, timed_ppo, fused):
    cfg = build_config({"env": "ant", "algo": "timed-ppo", "num_envs": 32, "num_steps": 16, "total_steps": 2048,
                        "fused_rollout": fused, "eval_episodes": 2, "eval_every": 1024,
                        "run_dir": str(tmp_path / "run"), "progress": False})
    env = SlowStart(make_env("ant", 32))
    called = time.perf_counter()
    summary = train(cfg, env=env)
    env.close()
    assert summary["global_step"] == 2048
    assert np.isfinite(summary["eval/episodic_return"])
    # The time to the first update counts from the call: set-up (here >= 1 s of it) and compilation included.
    assert summary["time/first_update_s"] == pytest.approx(timed_ppo[0] - called, abs=0.5)
    assert summary["time/first_update_s"] > 1.0


def test_fitting_the_critic_during_the_next_rollout_changes_nothing_but_the_clock(tmp_path):
    """The next rollout needs only the policy, so it may run while the value net learns: the
    same seed gives the same losses and weights with and without the overlap (an evaluation in
    the middle waits for the rollout in flight). TRPO's update: tests/test_two_pass_updates.py."""
    # Both runs step the same envs (each run resets them): one compilation.
    env, eval_env = make_env("ant", 32, episode_length=40), make_env("ant", 2, episode_length=40)
    runs = {}
    for overlap in (True, False):
        run_dir = tmp_path / str(overlap)
        cfg = build_config({"env": "ant", "algo": "ppo", "num_envs": 32, "num_steps": 16, "total_steps": 1536,
                            "overlap_critic": overlap, "eval_episodes": 2, "eval_every": 1024, "episode_length": 40,
                            "run_dir": str(run_dir), "progress": False, "seed": 4})
        train(cfg, env=env, eval_env=eval_env)
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
