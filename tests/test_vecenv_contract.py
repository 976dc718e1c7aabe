"""The VecEnv contract, checked against every registered simulator: a new simulator module passes
this file, and nothing else is asked of it (stridelab/envs/registry.py lists what it provides)."""

import pytest
import torch

from stridelab.envs import make_env
from stridelab.envs.registry import SIMULATORS, simulator_module, simulator_of

N, LIMIT, STEPS = 4, 40, 100


def random_actions(spec, generator):
    low, high = torch.tensor(spec.action_low), torch.tensor(spec.action_high)
    return low + torch.rand(N, spec.act_dim, generator=generator) * (high - low)


def run(env, seed, steps=STEPS):
    """``steps`` random steps from ``reset(seed)``; returns the first obs and every StepResult."""
    first = env.reset(seed).clone()
    g = torch.Generator().manual_seed(seed)
    results = []
    for _ in range(steps):
        res = env.step(random_actions(env.spec, g))
        results.append(type(res)(*(x.clone() for x in res)))
    return first, results


@pytest.fixture(scope="module", params=list(SIMULATORS))
def sim(request):
    module = simulator_module(request.param)
    env = make_env(module.CONTRACT_TASK, N, episode_length=LIMIT)
    yield request.param, module, env
    env.close()


def test_the_task_and_its_spec(sim):
    name, module, env = sim
    spec = env.spec
    assert all(callable(getattr(env, method, None)) for method in ("reset", "step", "close"))
    assert simulator_of(module.CONTRACT_TASK) == name and module.CONTRACT_TASK in module.env_names()
    assert (spec.name, spec.simulator, spec.episode_length, env.num_envs) == (module.CONTRACT_TASK, name, LIMIT, N)
    assert spec.obs_dim > 0 and spec.act_dim > 0 and spec.dt > 0
    assert len(spec.action_low) == len(spec.action_high) == spec.act_dim
    assert all(lo < hi for lo, hi in zip(spec.action_low, spec.action_high))
    assert isinstance(module.PRESET_TABLE, str)


def test_shapes_dtypes_and_device(sim):
    _, _, env = sim
    obs = env.reset(3)
    spec = env.spec
    assert obs.shape == (N, spec.obs_dim) and obs.dtype == torch.float32 and obs.device == env.device
    res = env.step(torch.zeros(N, spec.act_dim))
    expected = {"obs": ((N, spec.obs_dim), torch.float32), "reward": ((N,), torch.float32),
                "terminated": ((N,), torch.bool), "truncated": ((N,), torch.bool),
                "final_obs": ((N, spec.obs_dim), torch.float32), "episode_return": ((N,), torch.float32),
                "episode_length": ((N,), torch.int32)}
    for field, (shape, dtype) in expected.items():
        x = getattr(res, field)
        assert (tuple(x.shape), x.dtype, x.device) == (shape, dtype, env.device), field
    assert torch.isfinite(res.obs).all() and torch.isfinite(res.reward).all()


def test_episodes_end_by_termination_or_the_time_limit_and_restart(sim):
    _, _, env = sim
    _, results = run(env, seed=1)
    steps_in_episode = torch.zeros(N, dtype=torch.int64)
    returns = torch.zeros(N, dtype=torch.float64)
    ends = {"terminated": 0, "truncated": 0}
    for res in results:
        steps_in_episode += 1
        returns += res.reward.double()
        assert not (res.terminated & res.truncated).any()  # one way to end, never both
        assert torch.equal(res.truncated, (steps_in_episode >= LIMIT) & ~res.terminated)  # exactly at the limit
        assert (steps_in_episode <= LIMIT).all()
        done = res.done
        # where the episode goes on, the next observation is the one reached
        assert torch.equal(res.final_obs[~done], res.obs[~done])
        if done.any():  # the statistics of the ended episodes, and a new episode's first observation
            assert torch.equal(res.episode_length[done].long(), steps_in_episode[done])
            torch.testing.assert_close(res.episode_return[done].double(), returns[done], rtol=1e-4, atol=1e-3)
            assert not torch.equal(res.final_obs[done], res.obs[done])
        ends["terminated"] += int(res.terminated.sum())
        ends["truncated"] += int(res.truncated.sum())
        steps_in_episode[done], returns[done] = 0, 0.0
    assert ends["terminated"] > 0 and ends["truncated"] > 0, ends


def test_the_same_seed_gives_the_same_trajectory_and_another_seed_another(sim):
    _, _, env = sim
    first_a, a = run(env, seed=7, steps=50)
    first_b, b = run(env, seed=7, steps=50)
    first_c, _ = run(env, seed=8, steps=1)
    assert torch.equal(first_a, first_b) and not torch.equal(first_a, first_c)
    for ra, rb in zip(a, b):
        for xa, xb in zip(ra, rb):
            assert torch.equal(xa, xb)
    assert len(set(map(tuple, first_a.tolist()))) == N  # every env its own initial state
