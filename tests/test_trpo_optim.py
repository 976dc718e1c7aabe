"""The TRPO optimizer against independent references: linalg.solve, explicit Hessians, quadratics."""

import pytest
import torch
from torch.func import functional_call

from stridelab.models import GaussianPolicy
from stridelab.ops import gaussian_kl, gaussian_log_prob
from stridelab.distributed import normalize_advantages
from stridelab.ops.cg import conjugate_gradient, fisher_vector_product, flat_params
from stridelab.ops.sums import dot, total
from stridelab.optim import TRPO

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("n,seed", [(5, 0), (20, 1), (50, 2)])
def test_cg_matches_linalg_solve_on_random_spd(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + 1e-1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x, residual = conjugate_gradient(lambda v: A @ v, b, iters=10 * n, tol=1e-28)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)
    assert residual.item() < 1e-8


def test_cg_residual_reports_the_true_residual_after_few_iterations():
    g = torch.Generator().manual_seed(3)
    M = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    x, residual = conjugate_gradient(lambda v: A @ v, b, iters=3)
    assert residual.item() == pytest.approx((b - A @ x).norm().item(), rel=1e-6)


def _tiny_problem(seed, dtype=torch.float64, obs_dim=3, act_dim=2, batch=16):
    torch.manual_seed(seed)
    policy = GaussianPolicy(obs_dim, act_dim, hidden=(5, 4)).to(dtype)
    for p in policy.parameters():  # break the small output init so the problem is generic
        torch.nn.init.normal_(p, std=0.5)
    obs = torch.randn(batch, obs_dim, dtype=dtype)
    with torch.no_grad():
        mean_old, std_old = policy(obs)
        actions = mean_old + std_old * torch.randn_like(mean_old)
    adv = torch.randn(batch, dtype=dtype)
    return policy, obs, mean_old, std_old, actions, adv


def test_fisher_vector_product_equals_explicit_hessian_of_the_kl():
    policy, obs, mean_old, std_old, _, _ = _tiny_problem(0)
    names = [n for n, _ in policy.named_parameters()]
    shapes = [p.shape for p in policy.parameters()]
    theta0 = flat_params(list(policy.parameters()))

    def kl_of(theta):
        chunks, i = {}, 0
        for name, shape in zip(names, shapes):
            n = shape.numel()
            chunks[name] = theta[i : i + n].view(shape)
            i += n
        mean, std = functional_call(policy, chunks, (obs,))
        return gaussian_kl(mean_old, std_old, mean, std).mean()

    H = torch.autograd.functional.hessian(kl_of, theta0)
    torch.testing.assert_close(H, H.T, rtol=1e-10, atol=1e-12)
    assert torch.linalg.eigvalsh(H).min().item() > -1e-10

    params = list(policy.parameters())
    mean, std = policy(obs)
    fvp = fisher_vector_product(gaussian_kl(mean_old, std_old, mean, std).mean(), params, damping=0.1)
    for k in range(3):
        v = torch.randn(theta0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        torch.testing.assert_close(fvp(v), H @ v + 0.1 * v, rtol=1e-9, atol=1e-10)


class Quadratic:
    """loss = c.d + beta_loss |d|^2 and kl = 0.5 d'Ad + beta_kl |d|^4 of d = x - x0.

    The KL's Hessian at d = 0 is A whatever beta_kl is, so TRPO's quadratic model is exact when
    beta_kl = 0 and too optimistic when beta_kl > 0.
    """

    def __init__(self, n=6, beta_kl=0.0, beta_loss=0.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        M = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.A = M @ M.T + torch.eye(n, dtype=torch.float64)
        self.c = torch.randn(n, generator=g, dtype=torch.float64)
        self.x = torch.nn.Parameter(torch.randn(n, generator=g, dtype=torch.float64))
        self.x0 = self.x.detach().clone()
        self.beta_kl, self.beta_loss = beta_kl, beta_loss

    def kl_at(self, x):
        d = x - self.x0
        return 0.5 * d @ self.A @ d + self.beta_kl * d.dot(d) ** 2

    def closure(self):
        d = self.x - self.x0
        return self.c @ d + self.beta_loss * d.dot(d), self.kl_at(self.x)


def test_line_search_takes_the_full_step_when_the_model_is_exact():
    q = Quadratic()
    opt = TRPO([q.x], max_kl=0.01, damping=0.0, cg_iters=50)
    info = opt.step(q.closure)
    s = -torch.linalg.solve(q.A, q.c)
    expected_x = q.x0 + torch.sqrt(2 * 0.01 / (s @ q.A @ s)) * s
    assert info["accepted"] == 1.0 and info["backtracks"] == 0.0
    torch.testing.assert_close(q.x.detach(), expected_x, rtol=1e-8, atol=1e-10)
    assert info["kl"] == pytest.approx(0.01, rel=1e-6)
    assert info["loss_after"] < info["loss_before"]
    assert info["expected_improvement"] == pytest.approx(info["loss_before"] - info["loss_after"], rel=1e-6)


def test_line_search_shrinks_when_the_kl_would_be_exceeded():
    q = Quadratic(beta_kl=50.0)
    opt = TRPO([q.x], max_kl=0.01, damping=0.0, cg_iters=50, backtrack_ratio=0.8, max_backtracks=20)
    s = -torch.linalg.solve(q.A, q.c)
    full = torch.sqrt(2 * 0.01 / (s @ q.A @ s)) * s
    first_ok = next(i for i in range(20) if q.kl_at(q.x0 + 0.8**i * full) <= 0.01)
    assert first_ok > 0
    info = opt.step(q.closure)
    assert info["accepted"] == 1.0 and info["backtracks"] == first_ok
    torch.testing.assert_close(q.x.detach(), q.x0 + 0.8**first_ok * full, rtol=1e-8, atol=1e-10)
    assert info["kl"] <= 0.01


def test_line_search_restores_the_parameters_when_nothing_passes():
    q = Quadratic(beta_loss=1e6)  # every step makes the loss worse
    opt = TRPO([q.x], max_kl=0.01, damping=0.0, max_backtracks=5)
    info = opt.step(q.closure)
    assert info["accepted"] == 0.0 and info["step_norm"] == 0.0
    assert torch.equal(q.x.detach(), q.x0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", range(12))
def test_step_respects_the_trust_region_and_never_increases_the_loss(seed, dtype, device):
    policy, obs, mean_old, std_old, actions, adv = _tiny_problem(seed, dtype, obs_dim=4, act_dim=3, batch=64)
    policy.to(device)
    obs, mean_old, std_old, actions, adv = (t.to(device) for t in (obs, mean_old, std_old, actions, adv))
    logp_old = gaussian_log_prob(mean_old, std_old, actions)
    max_kl = [0.001, 0.01, 0.05][seed % 3]

    def closure():
        mean, std = policy(obs)
        loss = -(torch.exp(gaussian_log_prob(mean, std, actions) - logp_old) * adv).mean()
        return loss, gaussian_kl(mean_old, std_old, mean, std).mean()

    with torch.no_grad():
        loss_before, kl_before = closure()
    assert kl_before.item() == pytest.approx(0.0, abs=1e-6)
    info = TRPO(policy.parameters(), max_kl=max_kl).step(closure)
    with torch.no_grad():
        loss_after, kl_after = closure()
    assert kl_after.item() <= max_kl + 1e-6
    assert loss_after.item() <= loss_before.item()
    # From the old policy a small enough step along the natural gradient always improves.
    assert info["accepted"] == 1.0 and 0 <= info["backtracks"] < 10
    assert loss_after.item() < loss_before.item()
    assert info["kl"] == pytest.approx(kl_after.item(), rel=1e-4, abs=1e-7)
    assert info["loss_after"] == pytest.approx(loss_after.item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("case", ["zero advantages", "a loss the step makes worse"])
def test_a_step_that_cannot_improve_is_refused_and_the_weights_stay(case):
    policy, obs, mean_old, std_old, actions, adv = _tiny_problem(0, torch.float64, obs_dim=4, act_dim=3, batch=64)
    if case == "zero advantages":  # no gradient: no direction to go
        adv = torch.zeros_like(adv)
    logp_old = gaussian_log_prob(mean_old, std_old, actions)

    def closure():
        mean, std = policy(obs)
        loss = -(torch.exp(gaussian_log_prob(mean, std, actions) - logp_old) * adv).mean()
        kl = gaussian_kl(mean_old, std_old, mean, std).mean()
        # A penalty flat at the old policy (no gradient there) that any step of KL ~ max_kl outweighs.
        return loss + (1e4 * kl if case != "zero advantages" else 0.0), kl

    before = [p.detach().clone() for p in policy.parameters()]
    info = TRPO(policy.parameters(), max_kl=0.01, max_backtracks=1 if case != "zero advantages" else 10).step(closure)
    assert info["accepted"] == 0.0 and info["kl"] == 0.0 and info["step_norm"] == 0.0
    assert info["loss_after"] == info["loss_before"]
    for p, b in zip(policy.parameters(), before):
        assert torch.equal(p, b)


def test_works_on_a_plain_list_of_tensors_and_rejects_bad_settings():
    q = Quadratic(n=3)
    assert TRPO([q.x]).step(q.closure)["accepted"] == 1.0
    with pytest.raises(ValueError, match="max_kl"):
        TRPO([q.x], max_kl=-1)
    with pytest.raises(ValueError, match="backtrack_ratio"):
        TRPO([q.x], backtrack_ratio=1.5)


def _policy_closures(seed, frac):
    policy, obs, mean_old, std_old, actions, adv = _tiny_problem(seed, torch.float64, obs_dim=4, act_dim=3, batch=128)
    logp_old = gaussian_log_prob(mean_old, std_old, actions)
    sub = torch.arange(int(128 * frac))

    def closure():
        mean, std = policy(obs)
        loss = -(torch.exp(gaussian_log_prob(mean, std, actions) - logp_old) * adv).mean()
        return loss, gaussian_kl(mean_old, std_old, mean, std).mean()

    def fisher_closure():
        mean, std = policy(obs[sub])
        return gaussian_kl(mean_old[sub], std_old[sub], mean, std).mean()

    return policy, closure, fisher_closure


def test_fisher_closure_on_the_whole_batch_gives_the_same_step():
    p1, c1, f1 = _policy_closures(5, 1.0)
    p2, c2, _ = _policy_closures(5, 1.0)
    TRPO(p1.parameters(), max_kl=0.02).step(c1, f1)
    TRPO(p2.parameters(), max_kl=0.02).step(c2)
    torch.testing.assert_close(flat_params(list(p1.parameters())), flat_params(list(p2.parameters())))


@pytest.mark.parametrize("seed", range(4))
def test_subsampled_fisher_still_respects_the_trust_region_on_the_whole_batch(seed):
    policy, closure, fisher_closure = _policy_closures(seed, 0.25)
    info = TRPO(policy.parameters(), max_kl=0.01).step(closure, fisher_closure)
    with torch.no_grad():
        _, kl = closure()
    assert kl.item() <= 0.01 + 1e-9
    assert info["accepted"] == 1.0


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [7, 24_344, 300_000])
def test_dot_and_total_are_float64s_and_the_same_on_one_thread_or_two(n):
    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    one, two = (_with_threads(t, lambda: (dot(a, b), total(a))) for t in (1, 2))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    assert one[0].item() == pytest.approx(a.double().dot(b.double()).item(), abs=1e-6 * n**0.5)
    assert one[1].item() == pytest.approx(a.double().sum().item(), abs=1e-6 * n**0.5)
    if n == 300_000:  # where the sum is long enough for torch to split it, its own are not
        assert not torch.equal(*(_with_threads(t, lambda: a.dot(b)) for t in (1, 2)))
        assert not all(torch.equal(*(_with_threads(t, lambda: x.sum()) for t in (1, 2)))
                       for x in (a[:65_536 + k] for k in range(20)))


def test_normalized_advantages_are_the_same_on_one_thread_or_two():
    adv = torch.randn(262_144, generator=torch.Generator().manual_seed(0)) * 3 + 1  # 1,024 envs x 256 steps
    one, two = (_with_threads(t, lambda: normalize_advantages(adv)) for t in (1, 2))
    assert torch.equal(one, two)
    torch.testing.assert_close(one, (adv - adv.mean()) / adv.std(), rtol=0, atol=1e-5)


def test_a_trpo_step_is_the_same_whatever_torchs_thread_count():
    """A run whose update threads follow the machine's load (``--torch-threads auto``) repeats
    from its seed only if the step does not depend on them (the conjugate gradient's dot products
    were BLAS's, whose last bits did)."""
    torch.manual_seed(0)
    obs, act, adv = torch.randn(1024, 48), torch.randn(1024, 12), torch.randn(1024)
    policy = GaussianPolicy(48, 12, hidden=(128, 128))  # Go1's: BLAS splits its 24k weights' dot products
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    with torch.no_grad():
        mean_old, std_old = policy(obs)
        logp_old = gaussian_log_prob(mean_old, std_old, act)

    def step():
        policy.load_state_dict(start)
        opt = TRPO(policy.parameters(), max_kl=0.01)

        def closure():
            mean, std = policy(obs)
            loss = -(torch.exp(gaussian_log_prob(mean, std, act) - logp_old) * adv).mean()
            return loss, gaussian_kl(mean_old, std_old, mean, std).mean()

        info = opt.step(closure)
        return info, flat_params(list(policy.parameters()))

    (info1, w1), (info2, w2) = (_with_threads(t, step) for t in (1, 2))
    assert info1["accepted"] == 1.0 and info1 == info2
    assert torch.equal(w1, w2)
