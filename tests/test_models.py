import numpy as np
import pytest
import torch

from stridelab.models import ActorCritic, GaussianPolicy, RunningMeanStd


def test_normalizer_matches_numpy_on_a_stream():
    rng = np.random.default_rng(0)
    rms = RunningMeanStd((3,))
    chunks = [rng.normal(loc=[1.0, -2.0, 5.0], scale=[0.5, 3.0, 10.0], size=(n, 3)) for n in (1, 7, 100, 3, 256)]
    for c in chunks:
        rms.update(torch.as_tensor(c, dtype=torch.float32 if len(c) == 7 else torch.float64))
    everything = np.concatenate(chunks)
    np.testing.assert_allclose(rms.mean.numpy(), everything.mean(0), rtol=1e-6)
    np.testing.assert_allclose(rms.var.numpy(), everything.var(0), rtol=1e-6)
    assert rms.count.item() == len(everything)
    x = torch.as_tensor(everything[:5])
    expected = np.clip((everything[:5] - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8), -10, 10)
    np.testing.assert_allclose(rms.normalize(x).numpy(), expected, rtol=1e-5)


def test_normalizer_clips_outliers():
    rms = RunningMeanStd((1,))
    rms.update(torch.randn(1000, 1, dtype=torch.float64))
    assert rms.normalize(torch.tensor([[1e6]])).item() == 10.0


def test_policy_bounds_mean_and_std():
    pol = GaussianPolicy(4, 2)
    with torch.no_grad():
        for p in pol.parameters():
            p.mul_(100)
        mean, std = pol(torch.randn(512, 4) * 100)
    assert mean.abs().max() <= 1.0
    assert std.min() >= 1e-3


def test_agent_maps_actions_into_env_range_and_state_dict_carries_normalizer():
    agent = ActorCritic(3, 2, action_low=[-0.4, 0.0], action_high=[0.4, 2.0])
    agent.obs_rms.update(torch.randn(50, 3) * 4 + 1)
    action, u = agent.act(torch.randn(1000, 3), deterministic=False)
    assert (action[:, 0].abs() <= 0.4 + 1e-6).all() and (action[:, 1] >= 0).all() and (action[:, 1] <= 2).all()
    other = ActorCritic(3, 2)
    other.load_state_dict(agent.state_dict())
    torch.testing.assert_close(other.obs_rms.mean, agent.obs_rms.mean)
    torch.testing.assert_close(other.action_high, agent.action_high)


@pytest.mark.parametrize("deterministic", [True, False])
def test_act_shapes(deterministic):
    agent = ActorCritic(5, 3)
    a, u = agent.act(torch.randn(7, 5), deterministic=deterministic)
    assert a.shape == u.shape == (7, 3)
