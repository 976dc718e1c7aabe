import math

import pytest
import torch

from stridelab.ops import (
    clipped_surrogate_loss,
    explained_variance,
    gaussian_entropy,
    gaussian_kl,
    gaussian_log_prob,
    value_loss,
)


def test_ppo_loss_at_ratio_one_is_minus_mean_advantage():
    adv = torch.randn(1000, dtype=torch.float64)
    logp = torch.randn(1000, dtype=torch.float64)
    loss, m = clipped_surrogate_loss(logp, logp.clone(), adv, 0.2)
    assert loss.item() == pytest.approx(-adv.mean().item(), rel=1e-12)
    assert m["clipfrac"].item() == 0.0
    assert m["approx_kl"].item() == 0.0


def test_ppo_loss_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    new = torch.randn(200, generator=g, dtype=torch.float64) * 0.3
    old = torch.randn(200, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(200, generator=g, dtype=torch.float64)
    loss, m = clipped_surrogate_loss(new, old, adv, 0.1)
    total, clipped = 0.0, 0
    for a, b, c in zip(new.tolist(), old.tolist(), adv.tolist()):
        r = math.exp(a - b)
        total += min(r * c, min(max(r, 0.9), 1.1) * c)
        clipped += abs(r - 1) > 0.1
    assert loss.item() == pytest.approx(-total / 200, rel=1e-12)
    assert m["clipfrac"].item() == pytest.approx(clipped / 200)


def test_ppo_loss_gradient_vanishes_when_clipped_in_the_favourable_direction():
    logp = torch.tensor([0.5], requires_grad=True)  # ratio e^0.5 > 1.2, positive advantage
    loss, _ = clipped_surrogate_loss(logp, torch.zeros(1), torch.ones(1), 0.2)
    loss.backward()
    assert logp.grad.item() == 0.0


def test_value_loss_and_explained_variance():
    v = torch.tensor([1.0, 2.0, 3.0])
    r = torch.tensor([1.0, 2.0, 5.0])
    assert value_loss(v, r).item() == pytest.approx(0.5 * 4 / 3)
    assert explained_variance(r, r).item() == pytest.approx(1.0)
    assert math.isnan(explained_variance(v, torch.ones(3)).item())


def test_gaussian_kl_sums_over_action_dims_and_matches_torch():
    g = torch.Generator().manual_seed(1)
    m0, m1 = torch.randn(64, 6, generator=g), torch.randn(64, 6, generator=g)
    s0, s1 = torch.rand(64, 6, generator=g) + 0.1, torch.rand(64, 6, generator=g) + 0.1
    ours = gaussian_kl(m0, s0, m1, s1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m0, s0), torch.distributions.Normal(m1, s1)).sum(-1)
    torch.testing.assert_close(ours, ref)
    assert ours.shape == (64,)
    torch.testing.assert_close(gaussian_kl(m0, s0, m0, s0), torch.zeros(64))


def test_gaussian_kl_against_monte_carlo():
    torch.manual_seed(0)
    m0, s0 = torch.tensor([[0.0, 1.0]], dtype=torch.float64), torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    m1, s1 = torch.tensor([[0.5, 0.0]], dtype=torch.float64), torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    p, q = torch.distributions.Normal(m0, s0), torch.distributions.Normal(m1, s1)
    x = p.sample((400_000,))
    mc = (p.log_prob(x) - q.log_prob(x)).sum(-1).mean()
    assert gaussian_kl(m0, s0, m1, s1).item() == pytest.approx(mc.item(), abs=0.01)


def test_gaussian_log_prob_and_entropy_match_a_naive_float64_loop_and_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mean, x = torch.randn(32, 5, generator=g), 2 * torch.randn(32, 5, generator=g)
    std = torch.rand(32, 5, generator=g) + 1e-3
    logp, ent = gaussian_log_prob(mean, std, x), gaussian_entropy(std)
    assert logp.shape == ent.shape == (32,)
    for b in range(32):
        ref_logp = ref_ent = 0.0
        for j in range(5):
            m, s, v = float(mean[b, j]), float(std[b, j]), float(x[b, j])
            ref_logp += -((v - m) ** 2) / (2 * s * s) - math.log(s) - 0.5 * math.log(2 * math.pi)
            ref_ent += 0.5 * math.log(2 * math.pi * math.e * s * s)
        assert logp[b].item() == pytest.approx(ref_logp, rel=1e-5, abs=1e-4)
        assert ent[b].item() == pytest.approx(ref_ent, rel=1e-5, abs=1e-5)
    # Same values and gradients as torch.distributions.
    params = [t.clone().requires_grad_() for t in (mean, std)]
    ref_params = [t.clone().requires_grad_() for t in (mean, std)]
    (gaussian_log_prob(params[0], params[1], x).sum() + gaussian_entropy(params[1]).sum()).backward()
    d = torch.distributions.Normal(*ref_params)
    (d.log_prob(x).sum() + d.entropy().sum()).backward()
    for ours, ref in zip(params, ref_params):
        torch.testing.assert_close(ours.grad, ref.grad)
