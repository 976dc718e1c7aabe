"""The updates run as the policy's steps (``update_policy``), then the value net's
(``update_value``; the runner starts the next rollout in between): PPO against the joint-loss
update of CleanRL and SB3 written out here step by step, TRPO against itself with a draw from
torch's generator in between (as the next rollout's seed is)."""

import dataclasses

import pytest
import torch

from stridelab.algos.ppo import PPOAlgorithm
from stridelab.algos.trpo import TRPOAlgorithm
from stridelab.config import build_config
from stridelab.models import ActorCritic
from stridelab.ops import gaussian_log_prob
from stridelab.rollout import Batch

OBS, ACT, B = 6, 3, 256


def _agent() -> ActorCritic:
    torch.manual_seed(3)
    return ActorCritic(OBS, ACT, init_std=0.5).double()


def _batch(agent: ActorCritic) -> Batch:
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(B, OBS, generator=g, dtype=torch.float64) * 2 + 0.5
    agent.obs_rms.update(obs)
    with torch.no_grad():
        mean, std = agent.dist_params(obs)
        actions = mean + std * torch.randn(B, ACT, generator=g, dtype=torch.float64)
        values = agent.get_value(obs)
    adv = torch.randn(B, generator=g, dtype=torch.float64) * 3
    return Batch(obs, actions, gaussian_log_prob(mean, std, actions), mean, std, values, adv, values + adv)


def _joint_reference(agent: ActorCritic, cfg, batch: Batch, generator: torch.Generator) -> int:
    """One Adam on ``pg - c_ent * H + c_v * V`` per minibatch, each network's gradient clipped
    on its own; stops every network at the minibatch where approx KL passes target_kl."""
    opt = torch.optim.Adam(list(agent.policy.parameters()) + list(agent.value.parameters()),
                           lr=cfg.learning_rate, eps=1e-5)
    obs_n = agent.obs_rms.normalize(batch.obs)
    mb = B // cfg.num_minibatches
    steps = 0
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(B, generator=generator)
        for start in range(0, B, mb):
            i = perm[start : start + mb]
            adv = batch.advantages[i]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            mean, std = agent.policy(obs_n[i])
            log_ratio = gaussian_log_prob(mean, std, batch.actions[i]) - batch.logp_old[i]
            ratio = log_ratio.exp()
            pg = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
            entropy = std.log().sum(-1).mean()  # + a constant, which has no gradient
            v = 0.5 * (agent.value(obs_n[i]) - batch.returns[i]).square().mean()
            opt.zero_grad()
            (pg - cfg.ent_coef * entropy + cfg.vf_coef * v).backward()
            torch.nn.utils.clip_grad_norm_(agent.policy.parameters(), cfg.max_grad_norm)
            torch.nn.utils.clip_grad_norm_(agent.value.parameters(), cfg.max_grad_norm)
            opt.step()
            steps += 1
            if cfg.target_kl is not None and ((ratio - 1) - log_ratio).mean().item() > cfg.target_kl:
                return steps
    return steps


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("target_kl", [None, 0.004])
def test_two_pass_update_equals_the_joint_loss_update(target_kl):
    cfg = build_config({"algo": "ppo", "env": "ant", "update_epochs": 3, "num_minibatches": 4, "learning_rate": 3e-3,
                        "ent_coef": 0.01, "target_kl": target_kl})
    ref_agent = _agent()
    batch = _batch(ref_agent)
    agent = _agent()
    agent.obs_rms.load_state_dict(ref_agent.obs_rms.state_dict())
    policy0, value0 = _flat(agent.policy), _flat(agent.value)

    ref_steps = _joint_reference(ref_agent, cfg, batch, torch.Generator().manual_seed(9))
    algo = PPOAlgorithm(agent, cfg)
    algo.generator = torch.Generator().manual_seed(9)
    metrics = algo.update_policy(batch)
    # the policy is done and the value net untouched when the next rollout may start
    policy_between, value_between = _flat(agent.policy).clone(), _flat(agent.value).clone()
    metrics.update(algo.update_value(batch))

    if target_kl is None:
        assert ref_steps == 12
    else:
        assert 1 <= ref_steps < 12  # the early stop happened mid-way
    assert metrics["losses/num_minibatch_updates"] == ref_steps
    torch.testing.assert_close(_flat(agent.policy), _flat(ref_agent.policy), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(_flat(agent.value), _flat(ref_agent.value), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(policy_between, _flat(agent.policy), rtol=0, atol=0)
    torch.testing.assert_close(value_between, value0, rtol=0, atol=0)
    assert (_flat(agent.policy) - policy0).abs().max() > 1e-3 and (_flat(agent.value) - value0).abs().max() > 1e-3


def test_trpo_draws_the_critics_minibatches_before_the_next_rollout_may_start():
    cfg = build_config({"algo": "trpo", "env": "ant", "vf_epochs": 2, "vf_minibatches": 4, "fisher_fraction": 0.5,
                        "max_kl": 0.02})
    results = []
    for draw_between in (False, True):
        agent = _agent()
        batch = _batch(agent)
        value0 = _flat(agent.value)
        torch.manual_seed(11)
        algo = TRPOAlgorithm(agent, cfg)
        metrics = algo.update_policy(batch)
        policy_between, value_between = _flat(agent.policy).clone(), _flat(agent.value).clone()
        if draw_between:
            torch.rand(5)  # the next rollout's seed comes from the same generator
        metrics.update(algo.update_value(batch))
        torch.testing.assert_close(policy_between, _flat(agent.policy), rtol=0, atol=0)
        torch.testing.assert_close(value_between, value0, rtol=0, atol=0)
        assert metrics["trpo/accepted"] == 1.0
        results.append((_flat(agent.policy), _flat(agent.value)))
    (p0, v0), (p1, v1) = results
    torch.testing.assert_close(p1, p0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v1, v0, rtol=1e-10, atol=1e-12)  # the critic's minibatches drawn before
    assert (v1 - value0).abs().max() > 1e-4


def test_trpos_entropy_bonus_is_the_only_force_when_advantages_vanish():
    """``ent_coef`` adds ``-c * mean(entropy)`` to TRPO's surrogate (Baselines' ``entcoeff``):
    with zero advantages the step raises the entropy, to the trust region's edge; without it the
    step has nothing to follow."""
    entropies = {}
    for ent_coef in (0.0, 0.01):
        agent = _agent()
        batch = dataclasses.replace(_batch(agent), advantages=torch.zeros(B, dtype=torch.float64))
        cfg = build_config({"algo": "trpo", "env": "Hopper-v5", "ent_coef": ent_coef, "norm_adv": False,
                            "fisher_fraction": 1.0})
        algo = TRPOAlgorithm(agent, cfg)
        before = [p.detach().clone() for p in agent.policy.parameters()]
        info = algo.update_policy(batch)
        moved = sum(float((p.detach() - q).abs().sum()) for p, q in zip(agent.policy.parameters(), before))
        entropies[ent_coef] = (info["losses/entropy"], moved, info["trpo/kl"])
    (h0, moved0, _), (h1, moved1, kl1) = entropies[0.0], entropies[0.01]
    assert moved0 == 0.0 and moved1 > 0.0
    assert h1 > h0 + 1e-3 and 0.5 * cfg.max_kl < kl1 <= cfg.max_kl * 1.0001
