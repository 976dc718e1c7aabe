"""Reward normalization by the running std of the discounted return, against a naive loop."""

import numpy as np
import torch

from stridelab.rollout import ReturnNormalizer


def naive(rollouts, gamma, clip=10.0, eps=1e-8):
    """Plain Python: per env, G = gamma * G + r restarted after an ended episode; every G of
    every rollout so far goes into one population variance; rewards / sqrt(var + eps)."""
    n = rollouts[0][0].shape[1]
    g = [0.0] * n
    seen, outs = [], []
    for rewards, dones in rollouts:
        for t in range(rewards.shape[0]):
            for i in range(n):
                g[i] = gamma * g[i] + float(rewards[t, i])
                seen.append(g[i])
                if dones[t, i]:
                    g[i] = 0.0
        scale = np.sqrt(np.var(np.array(seen, dtype=np.float64)) + eps)
        outs.append(np.clip(rewards.astype(np.float64) / scale, -clip, clip))
    return outs


def test_matches_naive_loop_over_several_rollouts():
    rng = np.random.default_rng(0)
    T, N, gamma = 16, 5, 0.97
    rollouts = [(rng.normal(2.0, 3.0, size=(T, N)).astype(np.float32), rng.random((T, N)) < 0.1) for _ in range(3)]
    norm = ReturnNormalizer(N, gamma)
    for (r, d), expected in zip(rollouts, naive(rollouts, gamma)):
        got = norm(torch.from_numpy(r), torch.from_numpy(d))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_clips_and_survives_a_state_dict_round_trip():
    norm = ReturnNormalizer(2, 0.99, clip=1.0)
    r = torch.tensor([[1.0, 1.0], [1.0, 1000.0]])
    out = norm(r, torch.zeros(2, 2, dtype=torch.bool))
    assert out.abs().max().item() <= 1.0
    copy = ReturnNormalizer(2, 0.99, clip=1.0)
    copy.load_state_dict(norm.state_dict())
    assert torch.equal(copy.rms.var, norm.rms.var) and torch.equal(copy.ret, norm.ret)
