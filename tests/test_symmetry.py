"""``--symmetric``: a policy and value net built on a task's left-right reflection. The reflection
must be an involution with keys it negates in place, the policy exactly equivariant and the value
invariant under it whatever the weights, in torch and in the exported graphs; the rollout must
store what the learner sees; Go1's reflection must be the physics' own (a mirrored state under
mirrored actions steps into the mirrored observation), and a task without one is refused in one
line."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from stridelab.config import build_config, validate
from stridelab.envs.go1 import Go1Config, Go1Joystick
from stridelab.envs.mujoco import MujocoVecEnv
from stridelab.errors import ConfigError
from stridelab.export import describe_graph, export_policy
from stridelab.models import ActorCritic, Reflection
from stridelab.rollout import RolloutStorage, collect

# A toy reflection over 6 observation entries and 4 actions: pairs swap, some signs flip; entries
# 5 and 2 are negated in place, and their signs (5's first) say which half a state lies in.
TOY = {"obs_index": [1, 0, 2, 4, 3, 5], "obs_sign": [1, 1, -1, -1, -1, -1], "act_index": [1, 0, 3, 2],
       "act_sign": [1, 1, -1, -1], "key_index": [5, 2]}
SCALE = torch.tensor([1.0, 3.0, 0.5, 2.0, 1.0, 0.7])


def toy_agent(state_dependent_std: bool) -> ActorCritic:
    torch.manual_seed(0)
    agent = ActorCritic(6, 4, hidden_sizes=(16, 16), state_dependent_std=state_dependent_std,
                        reflection=Reflection.from_spec(TOY))
    for p in agent.parameters():  # weights far from symmetric, so only the construction makes it so
        p.data.normal_(0.0, 0.5)
    agent.obs_rms.update(torch.randn(64, 6) * SCALE + torch.arange(6.0))
    return agent


def states(n: int = 32) -> torch.Tensor:
    """Raw observations, a quarter with the first key exactly 0 (the second decides)."""
    s = torch.randn(n, 6) * 2
    s[: n // 4, 5] = 0.0
    return s


def test_a_reflection_that_is_not_an_involution_or_has_a_bad_key_is_refused():
    with pytest.raises(ValueError, match="obs reflection is not an involution"):
        Reflection([1, 2, 0], [1, 1, 1], [0], [1], [0])  # a 3-cycle: twice is not the identity
    with pytest.raises(ValueError, match="act reflection is not an involution"):
        Reflection([0], [-1], [1, 0], [1, -1], [0])  # swapped with opposite signs: twice flips both
    with pytest.raises(ValueError, match="key_index \\[3\\]: give entries the reflection negates in place"):
        Reflection(**{**TOY, "key_index": [3]})  # negated, but swapped with entry 4
    r = Reflection.from_spec(TOY)
    x = torch.randn(3, 6)
    assert torch.equal(r.obs(r.obs(x)), x)
    with pytest.raises(ValueError, match="covers 6 observation and 4 action entries; the task has 5 and 4"):
        ActorCritic(5, 4, reflection=r)
    with pytest.raises(ValueError, match="action box is not its own mirror image"):  # action 2 mirrors to -action 3
        ActorCritic(6, 4, action_low=[-1, -1, 0, -1], action_high=[1, 1, 2, 1], reflection=r)


def test_the_first_nonzero_key_says_which_half_a_state_lies_in():
    r = Reflection.from_spec(TOY)
    x = torch.zeros(5, 6)
    x[:, 5] = torch.tensor([-1.0, 2.0, 0.0, 0.0, 0.0])
    x[:, 2] = torch.tensor([3.0, -3.0, -1.0, 1.0, 0.0])
    assert r.mirrored(x).squeeze(1).tolist() == [True, False, True, False, False]
    s = states()
    assert torch.equal(r.mirrored(r.obs(s)), ~r.mirrored(s))


@pytest.mark.parametrize("state_dependent_std", [True, False])
def test_the_symmetric_policy_is_equivariant_and_its_value_invariant(state_dependent_std):
    agent, r = toy_agent(state_dependent_std), Reflection.from_spec(TOY)
    s = states()
    # A state and its mirror image are the same state to the networks ...
    assert torch.equal(agent.canonical(r.obs(s)), agent.canonical(s))
    assert torch.equal(agent.canonical(agent.canonical(s)), agent.canonical(s))
    torch.testing.assert_close(agent.get_value(r.obs(s)), agent.get_value(s), rtol=0, atol=0)
    # ... and the env gets mirrored actions for them, sampled or not.
    torch.testing.assert_close(agent(r.obs(s)), r.act(agent(s)), rtol=0, atol=1e-6)  # the box mapping rounds
    torch.manual_seed(1)
    action, u = agent.act(s)
    torch.manual_seed(1)
    action_r, u_r = agent.act(r.obs(s))
    assert torch.equal(u_r, u)  # the learner's sample, in the canonical frame
    torch.testing.assert_close(action_r, r.act(action), rtol=0, atol=1e-6)
    flip = r.mirrored(s)
    assert 0 < int(flip.sum()) < len(s)
    torch.testing.assert_close(action, agent.to_env_action(torch.where(flip, r.act(u), u)), rtol=0, atol=0)
    # ... and not by accident: the same weights without the reflection are not equivariant
    plain = ActorCritic(6, 4, hidden_sizes=(16, 16), state_dependent_std=state_dependent_std)
    plain.load_state_dict({k: v for k, v in agent.state_dict().items() if "reflection" not in k})
    assert (plain(r.obs(s)) - r.act(plain(s))).abs().max() > 0.05


def test_a_go1_rollout_stores_what_the_learner_sees():
    """The observations and actions the rollout stores are the canonical half's (turning left, or
    else sidestepping left), so the update trains one network on both ways at no extra cost."""
    env = MujocoVecEnv(Go1Joystick(), 32, threads=1)
    agent = ActorCritic(env.spec.obs_dim, env.spec.act_dim, reflection=Reflection.from_spec(env.spec.reflection))
    storage = RolloutStorage(8, 32, env.spec.obs_dim, env.spec.act_dim, torch.device("cpu"))
    obs = env.reset(5)
    turning = obs[:, 47] != 0
    assert (obs[turning, 47] < 0).any() and (obs[turning, 47] > 0).any()  # the env turns both ways
    collect(env, agent, obs, storage)
    env.close()
    yaw, side = storage.obs[..., 47], storage.obs[..., 46]
    assert (yaw >= 0).all() and (side[yaw == 0] >= 0).all()
    mean, _ = agent.dist_params(storage.obs[0])
    torch.testing.assert_close(mean, agent.dist_params(obs)[0])  # the same states to the policy


@pytest.mark.parametrize("suffix", [".onnx", ".pt2", ".pt"])
def test_the_exported_symmetric_policy_computes_what_torch_does(tmp_path, suffix):
    agent, r = toy_agent(False), Reflection.from_spec(TOY)
    path = tmp_path / f"policy{suffix}"
    s = states(8)
    if suffix == ".pt":  # TorchScript warns that it is deprecated (tests/test_export.py reads the warnings)
        with pytest.warns(DeprecationWarning):
            export_policy(agent, path)
            program = torch.jit.load(str(path))
    else:
        export_policy(agent, path)
    if suffix == ".onnx":
        session = onnxruntime.InferenceSession(str(path))
        name = session.get_inputs()[0].name
        out, out_r = (torch.from_numpy(session.run(None, {name: x.numpy()})[0]) for x in (s, r.obs(s)))
    else:
        program = torch.export.load(path).module() if suffix == ".pt2" else program
        out, out_r = program(s), program(r.obs(s))
    torch.testing.assert_close(out, agent(s).detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(out_r, r.act(out), rtol=0, atol=1e-5)
    said = json.loads(json.dumps(describe_graph(agent, "float32")))["reflection"]  # what a robot-side loop reads
    assert said["key_index"] == TOY["key_index"] and said["act_sign"] == TOY["act_sign"]


def _reflect_state(q, v, reflection):
    """The mirror image of a Go1 state (free joint, then the 12 joints in actuator order)."""
    partner, sign = reflection["act_index"], np.array(reflection["act_sign"])
    qm, vm = q.copy(), v.copy()
    qm[1] = -q[1]  # y
    qm[3:7] = q[3:7] * [1, -1, 1, -1]  # a reflection in the x-z plane: quaternion (w, -x, y, -z)
    qm[7:] = q[7:][partner] * sign
    vm[:6] = v[:6] * [1, -1, 1, -1, 1, -1]  # linear (x, -y, z), angular (-x, y, -z)
    vm[6:] = v[6:][partner] * sign
    return qm, vm


def _mirror_error(reflection):
    """Largest gap between one env's reflected observation and its mirror twin's, one control step
    after starting as each other's mirror image and acting each other's mirrored actions."""
    env = MujocoVecEnv(Go1Joystick(Go1Config(noise_level=0.0)), 2, threads=1)
    r = Reflection.from_spec(reflection)
    env.reset(3)
    rng = np.random.default_rng(0)
    q, v = env.sim.qpos[0].copy(), env.sim.qvel[0].copy()
    q[7:] += rng.uniform(-0.2, 0.2, 12)
    v[6:] = rng.uniform(-1.0, 1.0, 12)
    env.sim.qpos[0], env.sim.qvel[0] = q, v
    env.sim.qpos[1], env.sim.qvel[1] = _reflect_state(q, v, reflection)
    env.task.command[:] = [[0.3, 0.2, 0.5], [0.3, -0.2, -0.5]]
    env.sim.forward(np.arange(2))
    a = torch.as_tensor(rng.uniform(-1.0, 1.0, (1, 12)), dtype=torch.float32)
    obs = env.step(torch.cat([a, r.act(a)])).obs
    env.close()
    return float((r.obs(obs[0]) - obs[1]).abs().max())


def test_go1s_reflection_mirrors_every_observation_part_of_a_tilted_spinning_state():
    """Before any step: the mirror image of a state (tilted, spinning, legs bent, moving) reads as
    the reflected observation, part by part, to float rounding."""
    env = MujocoVecEnv(Go1Joystick(Go1Config(noise_level=0.0)), 2, threads=1)
    reflection = env.spec.reflection
    r = Reflection.from_spec(reflection)
    env.reset(3)
    rng = np.random.default_rng(1)
    q, v = env.sim.qpos[0].copy(), env.sim.qvel[0].copy()
    q[3:7] = rng.normal(size=4)
    q[3:7] /= np.linalg.norm(q[3:7])  # any orientation: every gravity component nonzero
    q[7:] += rng.uniform(-0.3, 0.3, 12)
    v[:] = rng.uniform(-1.0, 1.0, 18)
    env.sim.qpos[0], env.sim.qvel[0] = q, v
    env.sim.qpos[1], env.sim.qvel[1] = _reflect_state(q, v, reflection)
    env.sim.forward(np.arange(2))
    env.task.command[:] = [[0.3, 0.2, 0.5], [0.3, -0.2, -0.5]]
    last = torch.as_tensor(rng.uniform(-1.0, 1.0, (1, 12)), dtype=torch.float32)
    env.task.last_action[:] = torch.cat([last, r.act(last)]).numpy()
    obs = torch.as_tensor(env.task.observe(env.sim, np.arange(2), rng))
    env.close()
    assert (obs[0].abs() > 1e-3).all()  # nothing hides a wrong sign by being zero
    torch.testing.assert_close(r.obs(obs[0]), obs[1], rtol=0, atol=1e-5)


def test_go1s_reflection_is_the_physics_own():
    reflection = MujocoVecEnv(Go1Joystick(), 1, threads=1).spec.reflection
    # Menagerie's trunk has its centre of mass 2 mm off the middle: the twins part a little.
    assert _mirror_error(reflection) < 0.1
    # The test can tell: leave the hips unflipped and the twins part at once.
    wrong = {**reflection, "act_sign": [1.0] * 12}
    wrong["obs_sign"] = [1.0 if i in range(9, 45) else s for i, s in enumerate(reflection["obs_sign"])]
    assert _mirror_error(wrong) > 0.3


def test_symmetric_on_a_task_without_a_reflection_is_refused_in_one_line():
    with pytest.raises(ConfigError) as e:
        validate(build_config({"env": "Hopper-v5", "symmetric": True}))
    assert "--symmetric: Hopper-v5 has no left-right reflection" in str(e.value)
    assert "Go1JoystickFlatTerrain" in str(e.value) and "\n" not in str(e.value)
