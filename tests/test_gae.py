"""GAE against an independent float64 reference: forward sums of discounted TD errors."""

import numpy as np
import pytest
import torch

from stridelab.ops import compute_gae


def naive_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """For each (t, env): sum_k (gamma*lam)^k delta_{t+k}, stopping after the step that ends the episode."""
    T, N = rewards.shape
    adv = np.zeros((T, N), dtype=np.float64)
    for n in range(N):
        for t in range(T):
            total, coef = 0.0, 1.0
            for k in range(t, T):
                bootstrap = 0.0 if terminated[k, n] else gamma * next_values[k, n]
                delta = rewards[k, n] + bootstrap - values[k, n]
                total += coef * delta
                if terminated[k, n] or truncated[k, n]:
                    break
                coef *= gamma * lam
            adv[t, n] = total
    return adv


def random_rollout(seed, T=12, N=5, p_term=0.15, p_trunc=0.1):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(T, N))
    values = rng.normal(size=(T, N))
    next_values = rng.normal(size=(T, N))
    terminated = rng.random((T, N)) < p_term
    truncated = (rng.random((T, N)) < p_trunc) & ~terminated
    return rewards, values, next_values, terminated, truncated


def run_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    adv, ret = compute_gae(t(rewards), t(values), t(next_values), torch.as_tensor(terminated),
                           torch.as_tensor(terminated | truncated), gamma, lam)
    return adv.numpy(), ret.numpy()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.97, 0.5), (0.9, 1.0), (0.8, 0.0)])
def test_gae_matches_naive_loop(seed, gamma, lam):
    data = random_rollout(seed)
    adv, ret = run_gae(*data, gamma, lam)
    expected = naive_gae(*data, gamma, lam)
    np.testing.assert_allclose(adv, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, expected + data[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_lambda_one_gives_monte_carlo_returns(seed):
    """lambda=1: returns are discounted reward sums to the episode end, bootstrapped only on
    truncation (from the final observation's value) or at the end of the rollout."""
    rewards, values, next_values, terminated, truncated = random_rollout(seed)
    # Consistent values, as a real rollout has them: where the episode goes on, the next state's
    # value is the value of the following step.
    goes_on = ~(terminated | truncated)
    next_values[:-1][goes_on[:-1]] = values[1:][goes_on[:-1]]
    gamma = 0.95
    _, ret = run_gae(rewards, values, next_values, terminated, truncated, gamma, 1.0)
    T, N = rewards.shape
    for n in range(N):
        for t in range(T):
            g, coef = 0.0, 1.0
            for k in range(t, T):
                g += coef * rewards[k, n]
                coef *= gamma
                if terminated[k, n]:
                    break
                if truncated[k, n] or k == T - 1:
                    g += coef * next_values[k, n]
                    break
            assert ret[t, n] == pytest.approx(g, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_lambda_zero_gives_td0(seed):
    rewards, values, next_values, terminated, truncated = random_rollout(seed)
    gamma = 0.9
    adv, _ = run_gae(rewards, values, next_values, terminated, truncated, gamma, 0.0)
    td0 = rewards + gamma * next_values * (~terminated) - values
    np.testing.assert_allclose(adv, td0, rtol=1e-12, atol=1e-12)


def test_truncation_bootstraps_but_termination_does_not():
    rewards = np.zeros((1, 2))
    values = np.zeros((1, 2))
    next_values = np.full((1, 2), 10.0)
    terminated = np.array([[True, False]])
    truncated = np.array([[False, True]])
    adv, _ = run_gae(rewards, values, next_values, terminated, truncated, 0.5, 0.9)
    assert adv[0, 0] == 0.0 and adv[0, 1] == 5.0


def test_make_batch_bootstraps_from_the_value_of_each_reached_observation():
    """make_batch evaluates V only on final observations it has not seen as the next step's
    observation; the result must equal GAE with V(final_obs) computed for every step."""
    from stridelab.models import ActorCritic
    from stridelab.rollout import RolloutStorage, make_batch

    T, N, OBS, ACT, gamma, lam = 10, 6, 4, 2, 0.97, 0.9
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    agent = ActorCritic(OBS, ACT).double()
    st = RolloutStorage(T, N, OBS, ACT, torch.device("cpu"))
    for name in ("obs", "final_obs", "actions", "rewards", "ep_returns"):
        setattr(st, name, getattr(st, name).double())
    st.terminated = torch.rand(T, N, generator=g) < 0.1
    truncated = (torch.rand(T, N, generator=g) < 0.1) & ~st.terminated
    st.dones = st.terminated | truncated
    st.obs[0] = torch.randn(N, OBS, generator=g, dtype=torch.float64)
    for t in range(T):  # the env's contract: final_obs is the next obs unless the episode ended
        st.final_obs[t] = torch.randn(N, OBS, generator=g, dtype=torch.float64)
        if t + 1 < T:
            fresh = torch.randn(N, OBS, generator=g, dtype=torch.float64)
            st.obs[t + 1] = torch.where(st.dones[t, :, None], fresh, st.final_obs[t])
    st.actions.normal_(generator=g)
    st.rewards.normal_(generator=g)
    batch = make_batch(agent, st, gamma, lam, update_normalizer=True)

    with torch.no_grad():  # the reference: the normalizer after the update, V on every final obs
        values = agent.get_value(st.obs.reshape(T * N, OBS)).reshape(T, N)
        next_values = agent.get_value(st.final_obs.reshape(T * N, OBS)).reshape(T, N)
    adv = naive_gae(st.rewards.numpy(), values.numpy(), next_values.numpy(), st.terminated.numpy(),
                    truncated.numpy(), gamma, lam)
    assert st.dones.any() and st.terminated.any()
    np.testing.assert_allclose(batch.advantages.numpy(), adv.reshape(-1), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(batch.returns.numpy(), (adv + values.numpy()).reshape(-1), rtol=1e-10, atol=1e-10)
