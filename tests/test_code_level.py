"""The code-level optimizations as switches, the named variants, the baselines (VPG, NPG) and the
trust-region diagnostics: each against an independent reference (float64 loops, an explicit
solve, a hand-written Adam step)."""

import math

import pytest
import torch

from stridelab.algos import algorithm_names, get, make_algorithm
from stridelab.config import build_config, validate
from stridelab.models import ActorCritic
from stridelab.ops import gaussian_log_prob, policy_change
from stridelab.optim import TRPO
from stridelab.rollout import Batch, ReturnNormalizer, RolloutStorage, learning_rewards, make_batch
from tests.test_trpo_optim import Quadratic

# --- diagnostics --------------------------------------------------------------------------------


def _normal_logpdf(x, m, s):
    return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def test_policy_change_on_a_constructed_update():
    """Four states, two action dims: the new policy moves the first state's mean by (0.5, 0) and
    doubles the last state's std; KLs and ratios written out one by one in float64."""
    mean_old = torch.zeros(4, 2, dtype=torch.float64)
    std_old = torch.ones(4, 2, dtype=torch.float64)
    mean_new, std_new = mean_old.clone(), std_old.clone()
    mean_new[0, 0] = 0.5
    std_new[3] = 2.0
    actions = torch.tensor([[1.5, 0.0], [0.1, -0.2], [1.0, 1.0], [0.3, 0.4]], dtype=torch.float64)
    logp_old = gaussian_log_prob(mean_old, std_old, actions)
    got = policy_change(mean_old, std_old, logp_old, mean_new, std_new, actions, clip_coef=0.2)

    kls, ratios = [], []
    for i in range(4):
        kl, log_ratio = 0.0, 0.0
        for d in range(2):
            m0, s0, m1, s1 = (float(t[i, d]) for t in (mean_old, std_old, mean_new, std_new))
            kl += math.log(s1 / s0) + (s0**2 + (m0 - m1) ** 2) / (2 * s1**2) - 0.5
            a = float(actions[i, d])
            log_ratio += _normal_logpdf(a, m1, s1) - _normal_logpdf(a, m0, s0)
        kls.append(kl)
        ratios.append(math.exp(log_ratio))
    assert kls[1] == kls[2] == 0.0 and kls[0] == pytest.approx(0.125)  # a mean shift of 0.5 at std 1
    assert got["kl_mean"] == pytest.approx(sum(kls) / 4, rel=1e-12)
    assert got["kl_max"] == pytest.approx(max(kls), rel=1e-12)
    assert got["ratio_max"] == pytest.approx(max(ratios), rel=1e-12)
    assert got["ratio_min"] == pytest.approx(min(ratios), rel=1e-12)
    outside = sum(r < 0.8 or r > 1.2 for r in ratios) / 4
    assert outside == 0.5 and got["ratio_outside_clip"] == outside  # the first and the last state
    assert got["entropy"] == pytest.approx((4 * (1.4189385332046727 * 2) + 2 * math.log(2)) / 4, rel=1e-12)


def test_the_runner_logs_the_diagnostics_for_every_algorithm(tmp_path):
    from stridelab.report import read_scalars
    from stridelab.train import train

    for algo in ("ppo", "vpg"):
        cfg = build_config({"env": "InvertedPendulum-v5", "algo": algo, "num_envs": 4, "num_steps": 64,
                            "total_steps": 512, "eval_episodes": 0, "progress": False,
                            "run_dir": str(tmp_path / algo)})
        train(cfg)
        scalars = read_scalars(tmp_path / algo)
        for key in ("kl_mean", "kl_max", "ratio_max", "ratio_min", "ratio_outside_clip", "entropy"):
            assert len(scalars[f"diagnostics/{key}"]) == 2, (algo, key)
        kl_mean, kl_max = scalars["diagnostics/kl_mean"][-1][1], scalars["diagnostics/kl_max"][-1][1]
        assert 0 < kl_mean <= kl_max
        assert "losses/approx_kl" in scalars


# --- switches -----------------------------------------------------------------------------------


def test_orthogonal_initialization_with_layer_scaling():
    torch.manual_seed(0)
    agent = ActorCritic(11, 3, hidden_sizes=(64, 64), ortho_init=True)
    for layer in [m for m in agent.policy.trunk if isinstance(m, torch.nn.Linear)] + list(agent.value.net)[:-1:2]:
        w = layer.weight.double()  # rows orthogonal (out <= in) or columns (out > in), norm sqrt(2)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        torch.testing.assert_close(gram, 2.0 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    last = agent.value.net[-1].weight.double()
    assert last.norm().item() == pytest.approx(1.0, abs=1e-6)  # the value output: gain 1
    plain = ActorCritic(11, 3, hidden_sizes=(64, 64))
    assert plain.policy.trunk[0].bias.abs().sum() > 0  # torch's default init otherwise


@pytest.mark.parametrize("init_std", [None, 0.3])
def test_a_state_independent_std_is_one_learned_number_per_action_dimension(init_std):
    agent = ActorCritic(5, 3, init_std=init_std, state_dependent_std=False)
    _, std = agent.dist_params(torch.randn(7, 5) * 4)
    expected = 0.3 if init_std else math.log(2.0) + 1e-3  # the softplus head's start: softplus(0) + min_std
    torch.testing.assert_close(std, torch.full((7, 3), expected))
    assert agent.policy.log_std.requires_grad and not hasattr(agent.policy, "std")


def test_without_observation_normalization_or_clipping_the_policy_sees_raw_observations():
    agent = ActorCritic(3, 1, obs_clip=0.0)
    obs = torch.tensor([[100.0, -50.0, 3.0]])
    torch.testing.assert_close(agent.obs_rms.normalize(obs), obs)  # nothing learned, nothing clipped
    storage = RolloutStorage(4, 2, 3, 1, torch.device("cpu"))
    storage.obs.normal_(5.0, 2.0)
    make_batch(agent, storage, 0.99, 0.95, update_normalizer=False)
    assert agent.obs_rms.count.item() == 0.0
    clipped = ActorCritic(3, 1)
    assert clipped.obs_rms.normalize(obs).abs().max().item() == 10.0


def test_learning_rewards_are_normalized_then_clipped():
    storage = RolloutStorage(3, 2, 1, 1, torch.device("cpu"))
    storage.rewards.copy_(torch.tensor([[1.0, -30.0], [2.0, 0.5], [40.0, -1.0]]))
    torch.testing.assert_close(learning_rewards(storage, None, 0.0), storage.rewards)
    torch.testing.assert_close(learning_rewards(storage, None, 5.0), storage.rewards.clamp(-5, 5))
    norm = ReturnNormalizer(2, 0.9, clip=math.inf)
    reference = ReturnNormalizer(2, 0.9, clip=math.inf)
    expected = reference(storage.rewards, storage.dones).clamp(-1.0, 1.0)
    torch.testing.assert_close(learning_rewards(storage, norm, 1.0), expected)
    assert expected.abs().max() == 1.0 and (expected.abs() < 1.0).sum() >= 3  # some clipped, some not


def _agent_and_batch(seed=3, obs_dim=6, act_dim=3, size=256):
    torch.manual_seed(seed)
    agent = ActorCritic(obs_dim, act_dim, init_std=0.5).double()
    g = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(size, obs_dim, generator=g, dtype=torch.float64) * 2
    agent.obs_rms.update(obs)
    with torch.no_grad():
        mean, std = agent.dist_params(obs)
        actions = mean + std * torch.randn(size, act_dim, generator=g, dtype=torch.float64)
        values = agent.get_value(obs)
    adv = torch.randn(size, generator=g, dtype=torch.float64) * 3
    return agent, Batch(obs, actions, gaussian_log_prob(mean, std, actions), mean, std, values, adv, values + adv)


@pytest.mark.parametrize("algo", ["trpo", "vpg"])
def test_the_critic_learning_rate_anneals_with_anneal_lr(algo):
    agent, _ = _agent_and_batch()
    learner = make_algorithm(agent, build_config({"env": "ant", "algo": algo, "anneal_lr": True}))
    learner.set_progress(0.75)
    assert learner.optimizers["value_optimizer"].param_groups[0]["lr"] == pytest.approx(0.25 * 1e-3)


# --- variants -----------------------------------------------------------------------------------


def test_variants_are_a_base_algorithm_plus_switches_from_the_presets():
    assert {"ppo", "ppo-m", "trpo", "trpo+", "npg", "vpg"} <= set(algorithm_names())
    assert get("ppo-m").base == "ppo" and get("trpo+").cls is get("trpo").cls
    plain = build_config({"env": "Hopper-v5", "algo": "ppo"})
    minimal = build_config({"env": "Hopper-v5", "algo": "ppo-m"})
    plus = build_config({"env": "Hopper-v5", "algo": "trpo+"})
    # the variant's switches win over the Gymnasium tables ...
    assert (plain.normalize_reward, plain.reward_clip, plain.anneal_lr) == (True, 10.0, True)
    assert (minimal.normalize_obs, minimal.normalize_reward, minimal.reward_clip, minimal.anneal_lr,
            minimal.clip_grad, minimal.obs_clip) == (False, False, 0.0, False, False, 0.0)
    assert (plus.ortho_init, plus.clip_vloss, plus.activation, plus.anneal_lr) == (True, True, "tanh", True)
    # ... the rest comes from the base's presets, and a flag still wins
    assert (minimal.update_epochs, plus.cg_iters) == (10, 25)
    assert build_config({"env": "Hopper-v5", "algo": "ppo-m", "normalize_obs": True}).normalize_obs
    for name in ("ppo-m", "trpo+"):
        validate(build_config({"env": "ant", "algo": name}))


# --- the baselines ------------------------------------------------------------------------------


def test_npg_takes_the_full_natural_step_without_a_line_search():
    """On a quadratic the natural step is ``-sqrt(2 max_kl / g'A^-1 g) A^-1 g`` (A the KL's
    Hessian): NPG lands there, whatever the loss does, while TRPO would have backtracked."""
    q = Quadratic(n=5, beta_kl=5.0)  # the quadratic KL model is too optimistic: TRPO backtracks
    x0 = q.x.detach().clone()
    g = q.c  # the loss's gradient at d = 0
    s = torch.linalg.solve(q.A, g)
    expected = x0 - math.sqrt(2 * 0.05 / float(g @ s)) * s
    info = TRPO([q.x], max_kl=0.05, damping=0.0, cg_iters=50, line_search=False).step(q.closure)
    torch.testing.assert_close(q.x.detach(), expected, rtol=1e-8, atol=1e-10)
    assert info["accepted"] == 1.0 and info["backtracks"] == 0.0 and info["kl"] > 0.05  # past the region
    q2 = Quadratic(n=5, beta_kl=5.0)
    assert TRPO([q2.x], max_kl=0.05, damping=0.0, cg_iters=50).step(q2.closure)["kl"] <= 0.05


def test_vpg_takes_one_adam_step_on_the_policy_gradient_loss():
    agent, batch = _agent_and_batch()
    cfg = build_config({"env": "ant", "algo": "vpg", "learning_rate": 1e-2})
    reference = ActorCritic(6, 3, init_std=0.5).double()
    reference.load_state_dict(agent.state_dict())
    learner = make_algorithm(agent, cfg)
    metrics = learner.update_policy(batch)

    adam = torch.optim.Adam(reference.policy.parameters(), lr=1e-2, eps=1e-5)
    obs_n = reference.obs_rms.normalize(batch.obs)
    adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    mean, std = reference.policy(obs_n)
    loss = -(gaussian_log_prob(mean, std, batch.actions) * adv).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(reference.policy.parameters(), cfg.max_grad_norm)
    adam.step()
    for p, r in zip(agent.policy.parameters(), reference.policy.parameters()):
        torch.testing.assert_close(p, r, rtol=1e-10, atol=1e-12)
    assert metrics["losses/policy_loss"] == pytest.approx(loss.item(), rel=1e-10)
    assert metrics["losses/approx_kl"] > 0
    before = [p.detach().clone() for p in agent.value.parameters()]
    assert "losses/value_loss" in learner.update_value(batch)
    assert any(not torch.equal(p, b) for p, b in zip(agent.value.parameters(), before))


@pytest.mark.parametrize("suffix", [".onnx", ".pt2"])
def test_a_state_independent_std_policy_exports(tmp_path, suffix):
    from stridelab.export import export_policy

    torch.manual_seed(1)
    agent = ActorCritic(5, 2, state_dependent_std=False, ortho_init=True, activation="tanh")
    agent.obs_rms.update(torch.randn(100, 5) * 3)
    obs = torch.randn(17, 5) * 2
    path = export_policy(agent, tmp_path / f"policy{suffix}")
    if suffix == ".onnx":
        import onnxruntime

        got = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs.numpy()})[0]
    else:
        got = torch.export.load(str(path)).module()(obs).detach().numpy()
    torch.testing.assert_close(torch.as_tensor(got), agent(obs).detach(), atol=1e-5, rtol=0)
