"""The Brax adapter: shapes, termination vs truncation, final observations, resets, determinism."""

import jax
import pytest
import torch

from stridelab.envs import make_env

N, LIMIT = 32, 30  # 32 envs: the batch size other tests compile Ant's programs for (tests/test_cli.py)
HEALTHY_Z = (0.2, 1.0)  # Brax Ant terminates when the torso height leaves this range; obs[0] is z


@pytest.fixture(scope="module")
def env():
    e = make_env("ant", N, episode_length=LIMIT)
    yield e
    e.close()


def test_spec_and_shapes(env):
    assert env.spec.obs_dim == 27 and env.spec.act_dim == 8
    assert env.spec.dt == pytest.approx(0.05)
    obs = env.reset(0)
    assert obs.shape == (N, 27) and obs.dtype == torch.float32
    res = env.step(torch.zeros(N, 8))
    assert res.obs.shape == res.final_obs.shape == (N, 27)
    for t in (res.reward, res.terminated, res.truncated, res.episode_return, res.episode_length):
        assert t.shape == (N,)
    assert res.terminated.dtype == res.truncated.dtype == torch.bool


def test_time_limit_is_a_truncation_with_the_true_final_observation(env):
    env.reset(1)
    rewards = torch.zeros(N)
    for t in range(LIMIT):
        res = env.step(torch.zeros(N, 8))  # standing still never terminates
        rewards += res.reward
        if t < LIMIT - 1:
            assert not res.done.any()
            torch.testing.assert_close(res.obs, res.final_obs)
    assert res.truncated.all() and not res.terminated.any()
    assert (res.episode_length == LIMIT).all()
    torch.testing.assert_close(res.episode_return, rewards, rtol=1e-4, atol=1e-3)
    # The reset observation is a fresh start, not the state the time limit cut.
    assert ((res.obs - res.final_obs).abs().sum(1) > 1e-3).all()
    nxt = env.step(torch.zeros(N, 8))
    assert not nxt.done.any()


def test_falling_over_is_a_termination_and_restarts_from_fresh_random_states(env):
    env.reset(2)
    g = torch.Generator().manual_seed(0)
    returns = torch.zeros(N)
    seen_terminal = 0
    for _ in range(LIMIT - 1):
        res = env.step(torch.randint(0, 2, (N, 8), generator=g).float() * 2 - 1)  # bang-bang flails
        returns += res.reward
        assert not res.truncated.any()
        term = res.terminated
        if term.any():
            z = res.final_obs[term, 0]
            assert ((z < HEALTHY_Z[0]) | (z > HEALTHY_Z[1])).all(), "terminal state must be unhealthy"
            torch.testing.assert_close(res.episode_return[term], returns[term], rtol=1e-4, atol=1e-3)
            fresh = res.obs[term]
            assert ((fresh[:, 0] > HEALTHY_Z[0]) & (fresh[:, 0] < HEALTHY_Z[1])).all()
            if len(fresh) > 1:  # envs restarted together got different random states
                assert torch.cdist(fresh, fresh).add(torch.eye(len(fresh)) * 1e9).min() > 1e-4
            returns[term] = 0.0
            seen_terminal += int(term.sum())
    assert seen_terminal > 0


def test_no_two_episodes_start_from_the_same_state(env):
    """Restarts come from spare fresh states redrawn only when needed: across four time limits
    (all envs at once, so the second one finds every spare spent) no start repeats."""
    starts = [env.reset(4).clone()]
    for _ in range(4):
        for _ in range(LIMIT):
            res = env.step(torch.zeros(N, 8))
        assert res.truncated.all()
        starts.append(res.obs.clone())
    starts = torch.cat(starts)
    assert torch.cdist(starts, starts).add(torch.eye(len(starts)) * 1e9).min() > 1e-4


def test_reset_is_random_across_envs_and_deterministic_per_seed(env):
    def trajectory(seed):
        obs = [env.reset(seed)]
        g = torch.Generator().manual_seed(1)
        for _ in range(LIMIT + 5):  # crosses resets
            obs.append(env.step(torch.rand(N, 8, generator=g) * 2 - 1).obs)
        return torch.stack(obs)

    a, b, c = trajectory(7), trajectory(7), trajectory(8)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], c[0])
    first = a[0]
    assert torch.cdist(first, first).add(torch.eye(N) * 1e9).min() > 1e-4


@pytest.mark.parametrize("task", ["inverted_pendulum"])
def test_the_cpu_compiler_options_change_speed_not_physics(monkeypatch, task):
    """Our CPU programs use XLA's classic code generation (``CPU_COMPILER_OPTIONS``): the same
    trajectory, across resets, as XLA's default code generation, to float32 rounding."""
    from stridelab.envs.brax import CPU_COMPILER_OPTIONS, xla_flags

    def trajectory():
        e = make_env(task, 4, episode_length=20)
        obs = [e.reset(3)]
        g = torch.Generator().manual_seed(2)
        for _ in range(50):
            obs.append(e.step(torch.rand(4, e.spec.act_dim, generator=g) * 2 - 1).obs)
        return torch.stack(obs)

    ours = trajectory()
    monkeypatch.setenv("STRIDELAB_XLA_DEFAULTS", "1")
    assert xla_flags() == ""
    xla_default = trajectory()
    assert CPU_COMPILER_OPTIONS and ours.abs().max() > 0.1
    torch.testing.assert_close(ours, xla_default, rtol=1e-4, atol=1e-4)


def test_envs_that_differ_only_in_episode_length_compile_the_same_step():
    """The time limit is an argument of the compiled step, so such envs share one program (and
    its entry in the compilation cache); each still truncates at its own limit."""
    envs = [make_env("inverted_pendulum", 4, episode_length=limit) for limit in (3, 5)]
    texts, lengths = [], []
    for e in envs:
        e.reset(0)
        texts.append(e._step_fn.lower(e._carry, jax.numpy.zeros((4, 1)), e._limit).as_text())
        ends = [e.step(torch.zeros(4, 1)) for _ in range(5)]
        lengths.append({int(x) for r in ends for x in r.episode_length[r.truncated]})
    assert texts[0] == texts[1]
    assert lengths == [{3}, {5}]


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown env 'antt'.*did you mean 'ant'.*halfcheetah"):
        make_env("antt", 4)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown Brax backend 'sprong'"):
        make_env("ant", 4, backend="sprong")


def test_a_backend_the_task_does_not_support_is_a_clear_error():
    with pytest.raises(ValueError, match="Brax env 'swimmer' does not run on backend 'spring'.*--backend generalized"):
        make_env("swimmer", 2, backend="spring")


def test_presets_pick_the_backend_a_task_needs():
    from stridelab.config import build_config

    assert build_config({"env": "swimmer", "algo": "ppo"}).backend == "generalized"
    assert build_config({"env": "ant", "algo": "trpo"}).backend == "spring"
    assert build_config({"env": "swimmer", "algo": "ppo", "backend": "positional"}).backend == "positional"


def test_a_gpu_torch_beside_a_cpu_only_jax_is_named_with_the_fix():
    from stridelab.envs.brax import host_crossing_note

    note = host_crossing_note(torch.device("cuda", 1), "cpu")
    assert "cuda:1" in note and "jax[cuda13]" in note and "\n" not in note
    assert host_crossing_note(torch.device("cuda"), "gpu") is None
    assert host_crossing_note(torch.device("cpu"), "cpu") is None
    assert host_crossing_note(torch.device("cpu"), "gpu") is None


def _jax_has_a_gpu():
    import jax

    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


@pytest.mark.skipif(not _jax_has_a_gpu(), reason="JAX has no GPU here: a CPU run cannot land anywhere else")
def test_the_envs_compute_on_the_cpu_for_a_cpu_run_while_jax_has_a_gpu():
    import jax

    env = make_env("ant", 4, device="cpu")
    obs = env.reset(seed=0)
    res = env.step(torch.zeros(4, env.spec.act_dim))
    assert obs.device.type == res.obs.device.type == "cpu"
    assert env._jax_device == jax.devices("cpu")[0]


def test_the_first_observation_is_not_overwritten_by_the_next_steps():
    """reset's observations are torch's own: the carry they came from is donated to each step.
    (XLA's CPU client copies a donated buffer that torch still views; a GPU client refuses the
    donation and the step fails, so on a GPU this test fails without reset's copy.)"""
    env = make_env("ant", N, device="cpu")  # the module's batch size: its programs are compiled already
    obs = env.reset(seed=3)
    kept = obs.clone()
    for _ in range(3):
        nxt = env.step(torch.zeros(N, env.spec.act_dim)).obs
    assert not torch.equal(nxt, kept)  # the state did move ...
    assert torch.equal(obs, kept)  # ... and the first observations stayed as they were
