"""Exported policies (ONNX, torch.export, TorchScript) against the run's own deterministic policy.

One tiny real run (Hopper-v5, 1,024 PPO steps) gives a checkpoint with real normalizer statistics;
observations come from the task itself. The exported files are run the way a user outside
stridelab runs them: onnxruntime, ``torch.export.load(...).module()``, ``torch.jit.load``.
"""

import json
import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stridelab.api import ConfigError, load
from stridelab.cli import main
from stridelab.envs import make_env
from stridelab.evaluate import load_agent
from stridelab.export import export_policy
from tests.test_cli import stridelab_in_fixture

OBS_DIM, ACT_DIM = 11, 3  # Hopper-v5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("export") / "ppo"
    proc = stridelab_in_fixture("train", "--env", "Hopper-v5", "--algo", "ppo", "--total-steps", "1024",
                                "--num-envs", "4", "--num-steps", "128", "--eval-episodes", "0", "--no-progress",
                                "--seed", "2", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def agent(run):
    """The run's agent (its real normalizer), with policy weights drawn wide and an asymmetric
    action box: after 1,024 steps the mean head is still near its small initialisation, whose
    actions sit at the box centre and would hardly test the network or the action mapping."""
    agent, _, _ = load_agent(run)
    torch.manual_seed(0)
    for layer in [*agent.policy.trunk, agent.policy.mu]:
        if isinstance(layer, torch.nn.Linear):  # scaled so the tanh spreads the actions, not saturates
            torch.nn.init.normal_(layer.weight, std=1.0 / layer.in_features ** 0.5)
            torch.nn.init.zeros_(layer.bias)
    agent.action_low.copy_(torch.tensor([-0.4, -1.0, 0.0]))
    agent.action_high.copy_(torch.tensor([0.4, 1.0, 2.0]))
    return agent


@pytest.fixture(scope="module")
def real_obs(agent):
    """300 observations [300, 11] float32 from Hopper-v5 episodes of the agent's sampled actions."""
    env = make_env("Hopper-v5", 6)
    try:
        obs, seen = env.reset(7), []
        for _ in range(50):
            seen.append(obs)
            action, _ = agent.act(obs)
            obs = env.step(action).obs
    finally:
        env.close()
    obs = torch.cat(seen)
    assert obs.shape == (300, OBS_DIM) and obs.dtype == torch.float32 and obs.std(0).min() > 0
    return obs


@pytest.fixture(scope="module")
def exported(agent, tmp_path_factory):
    """``{suffix: callable(obs tensor) -> actions tensor}`` for the three formats, loaded as a
    user would; exporting ONNX and .pt2 raises on any warning (ours or a library's we did not
    name), TorchScript warns that it is deprecated, ours and torch's."""
    out = tmp_path_factory.mktemp("policies")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        onnx_path = export_policy(agent, out / "policy.onnx")
        pt2_path = export_policy(agent, out / "policy.pt2")
    with pytest.warns(DeprecationWarning) as record:  # no match=: pytest re-emits what a match leaves out
        pt_path = export_policy(agent, out / "policy.pt")
    messages = [str(w.message) for w in record]
    assert any("TorchScript export" in m for m in messages)  # ours
    assert any("torch.jit" in m for m in messages)  # torch's own deprecation, seen too
    assert sorted(p.name for p in out.iterdir()) == ["policy.onnx", "policy.pt", "policy.pt2"]  # no temp files

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pt2 = torch.export.load(pt2_path).module()
    with pytest.deprecated_call(match="torch.jit.load"):
        scripted = torch.jit.load(str(pt_path))
    return {
        ".onnx": lambda obs: torch.from_numpy(session.run(None, {"obs": obs.numpy()})[0]),
        ".pt2": lambda obs: pt2(obs),
        ".pt": lambda obs: scripted(obs),
        "session": session, "onnx_path": onnx_path,
    }


def test_onnx_file_is_one_graph_with_a_dynamic_batch_and_opset_18(exported):
    model = onnx.load(str(exported["onnx_path"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
    assert [i.name for i in model.graph.input] == ["obs"] and [o.name for o in model.graph.output] == ["action"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value and dims[1].dim_value == OBS_DIM
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


@torch.no_grad()
def test_every_format_gives_the_agents_actions_for_every_batch_size(agent, real_obs, exported):
    expected_all, _ = agent.act(real_obs, deterministic=True)
    low, high = agent.action_low, agent.action_high
    assert (expected_all.std(0) > 0.05 * (high - low)).all()  # actions spread over the box
    for suffix in (".onnx", ".pt2", ".pt"):
        worst = 0.0
        for batch in range(1, 257):
            actions = exported[suffix](real_obs[:batch])
            assert actions.shape == (batch, ACT_DIM) and actions.dtype == torch.float32, suffix
            worst = max(worst, float((actions - expected_all[:batch]).abs().max()))
        assert worst <= 1e-5, (suffix, worst)


@torch.no_grad()
def test_a_nan_observation_gives_a_nan_action_row_and_inf_is_clipped(agent, real_obs, exported):
    obs = real_obs[:4].clone()
    obs[1, 3] = float("nan")
    obs[2, 0] = float("inf")
    for suffix in (".onnx", ".pt2", ".pt"):
        actions = exported[suffix](obs)
        assert torch.isnan(actions[1]).all(), suffix
        assert torch.isfinite(actions[[0, 2, 3]]).all(), suffix
        assert ((actions[2] >= agent.action_low) & (actions[2] <= agent.action_high)).all(), suffix
        torch.testing.assert_close(actions[[0, 3]], exported[suffix](real_obs[[0, 3]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad,onnx_says,pt2_says,pt_says", [
    (torch.zeros(3, OBS_DIM, dtype=torch.float64), "Actual: (tensor(double)) , expected: (tensor(float))",
     "Expected: Float, Got: double", None),
    (torch.zeros(3, OBS_DIM, dtype=torch.float16), "Actual: (tensor(float16)) , expected: (tensor(float))",
     "Expected: Float, Got: c10::Half", "must be float32 or float64 of shape [B, 11]"),
    (torch.zeros(3, OBS_DIM, dtype=torch.int64), "Actual: (tensor(int64)) , expected: (tensor(float))",
     "Expected: Float, Got: long int", "must be float32 or float64 of shape [B, 11]"),
    (torch.zeros(3, OBS_DIM + 1), "index: 1 Got: 12 Expected: 11", "obs.size()[1] == 11",
     "must have shape [B, 11] (B observations of obs_dim=11), got [3, 12]"),
    (torch.zeros(OBS_DIM), "Invalid rank for input: obs Got: 1 Expected: 2", "", "got [11]"),
    (torch.zeros(()), "Invalid rank for input: obs Got: 0 Expected: 2", "", "got []"),
])
def test_input_dtype_and_shape_are_checked(exported, real_obs, bad, onnx_says, pt2_says, pt_says):
    with pytest.raises(Exception) as onnx_error:
        exported["session"].run(None, {"obs": bad.numpy()})
    assert onnx_says in str(onnx_error.value)
    with pytest.raises(Exception) as pt2_error:  # torch.export's own dtype assertion and input guards
        exported[".pt2"](bad)
    assert pt2_says in str(pt2_error.value)
    if pt_says is None:  # TorchScript takes float64 (what Gymnasium returns) and computes in float32
        torch.testing.assert_close(exported[".pt"](real_obs[:3].double()), exported[".pt"](real_obs[:3]))
    else:
        with pytest.raises(torch.jit.Error, match=re.escape(pt_says)):
            exported[".pt"](bad)


def test_unknown_export_format_is_one_line_and_exit_2(run, capsys):
    assert main(["export", str(run), "--out", str(run / "policy.tflite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"stridelab export: error: --out {str(run / 'policy.tflite')!r}: unknown export format; "
                   "use a name ending in .onnx, .pt2, .pt"]


def test_exported_files_outside_stridelab_give_the_returns_of_stridelab_eval(run, tmp_path, capsys):
    episodes, seed = 4, 11
    assert main(["export", str(run)]) == 0  # default: RUN/policy.onnx
    assert main(["export", str(run), "--out", str(tmp_path / "policy.pt2")]) == 0
    assert main(["eval", str(run), "--json", "--episodes", str(episodes), "--seed", str(seed)]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime.InferenceSession" in out and "torch.export.load" in out
    reference = json.loads(out.strip().splitlines()[-1])["returns"]

    session = ort.InferenceSession(str(run / "policy.onnx"), providers=["CPUExecutionProvider"])
    pt2 = torch.export.load(tmp_path / "policy.pt2").module()
    policies = {"onnx": lambda obs: session.run(None, {"obs": obs.astype(np.float32)})[0],
                "pt2": lambda obs: pt2(torch.as_tensor(obs, dtype=torch.float32)).detach().numpy()}
    config = json.loads((run / "config.json").read_text())
    for name, policy in policies.items():
        returns = _episode_returns(policy, config, episodes, seed)
        np.testing.assert_allclose(returns, reference, rtol=1e-3, err_msg=name)
    assert len(set(np.round(reference, 3))) > 1  # the episodes differ: the seed reached every env


def _episode_returns(policy, config: dict, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted return of each env's first episode, actions from ``policy(obs numpy)``."""
    env = make_env(config["env"], episodes, backend=config["backend"], episode_length=config["episode_length"])
    returns, finished = np.zeros(episodes), np.zeros(episodes, dtype=bool)
    try:
        obs = env.reset(seed)
        for _ in range(env.spec.episode_length):
            res = env.step(torch.from_numpy(policy(obs.numpy())))
            done = res.done.numpy()
            returns = np.where(done & ~finished, res.episode_return.numpy(), returns)
            finished |= done
            obs = res.obs
            if finished.all():
                break
    finally:
        env.close()
    assert finished.all()
    return returns


def _act(run, obs, obs_dim=OBS_DIM):
    """The README's cast wrapper for the graph formats: float32 or float64 in, refused otherwise."""
    obs = np.asarray(obs)
    if obs.dtype not in (np.float32, np.float64) or obs.ndim != 2 or obs.shape[1] != obs_dim:
        raise ValueError(f"obs must be float32 or float64 of shape [B, {obs_dim}], got {obs.dtype} {list(obs.shape)}")
    return run(obs.astype(np.float32))


@torch.no_grad()
def test_float64_through_the_documented_cast_gives_the_float32_actions(exported, real_obs):
    runs = {".onnx": lambda x: exported["session"].run(None, {"obs": x})[0],
            ".pt2": lambda x: exported[".pt2"](torch.from_numpy(x)).numpy()}
    as64 = real_obs.double().numpy()
    for suffix, run in runs.items():
        np.testing.assert_allclose(_act(run, as64), exported[suffix](real_obs).numpy(), rtol=0, atol=1e-5,
                                   err_msg=suffix)
        for bad in (real_obs.half().numpy(), real_obs.long().numpy(), as64[:, :-1], as64[0]):
            with pytest.raises(ValueError, match=re.escape(f"of shape [B, {OBS_DIM}]")):
                _act(run, bad)
    torch.testing.assert_close(exported[".pt"](real_obs.double()), exported[".pt"](real_obs), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def exported64(agent, tmp_path_factory):
    """``{suffix: callable(obs tensor) -> actions tensor}`` for ``.onnx`` and ``.pt2`` files
    exported with ``obs_dtype="float64"``, loaded as a user would; any warning is an error."""
    out = tmp_path_factory.mktemp("policies64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        onnx_path = export_policy(agent, out / "policy.onnx", obs_dtype="float64")
        pt2_path = export_policy(agent, out / "policy.pt2", obs_dtype="float64")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pt2 = torch.export.load(pt2_path).module()
    return {".onnx": lambda obs: torch.from_numpy(session.run(None, {"obs": obs.numpy()})[0]),
            ".pt2": lambda obs: pt2(obs), "session": session, "onnx_path": onnx_path}


def _as_float64(obs: torch.Tensor) -> torch.Tensor:
    """float64 observations with digits below float32's resolution, as Gymnasium returns them,
    so a file that did not round them the way ``obs.float()`` does would show it."""
    gen = torch.Generator().manual_seed(3)
    return obs.double() * (1 + 1e-9 * torch.randn(obs.shape, generator=gen, dtype=torch.float64))


def test_a_float64_onnx_file_takes_double_and_gives_float(exported64):
    model = onnx.load(str(exported64["onnx_path"]))
    (obs,), (action,) = model.graph.input, model.graph.output
    assert obs.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert action.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = obs.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value and dims[1].dim_value == OBS_DIM


@torch.no_grad()
def test_float64_files_give_the_float32_files_actions(agent, real_obs, exported, exported64):
    obs64 = _as_float64(real_obs)
    assert (obs64 != real_obs.double()).float().mean() > 0.5  # the extra digits are there
    expected_all, _ = agent.act(real_obs, deterministic=True)
    for suffix in (".onnx", ".pt2"):
        for batch in (1, 2, 3, 17, 64, 300):
            actions = exported64[suffix](obs64[:batch])
            assert actions.shape == (batch, ACT_DIM) and actions.dtype == torch.float32, (suffix, batch)
            torch.testing.assert_close(actions, exported[suffix](obs64[:batch].float()), rtol=0, atol=1e-6)
            torch.testing.assert_close(actions, expected_all[:batch], rtol=0, atol=1e-5)


@torch.no_grad()
def test_a_nan_observation_in_a_float64_file_gives_a_nan_action_row(agent, real_obs, exported, exported64):
    obs = real_obs[:4].double()
    obs[1, 3] = float("nan")
    obs[2, 0] = float("inf")
    for suffix in (".onnx", ".pt2"):
        actions = exported64[suffix](obs)
        assert torch.isnan(actions[1]).all() and torch.isfinite(actions[[0, 2, 3]]).all(), suffix
        torch.testing.assert_close(actions, exported[suffix](obs.float()), rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("bad,onnx_says,pt2_error,pt2_says", [
    (torch.zeros(3, OBS_DIM), "Unexpected input data type. Actual: (tensor(float)) , expected: (tensor(double))",
     RuntimeError, "Tensor dtype mismatch! Expected: Double, Got: float"),
    (torch.zeros(3, OBS_DIM, dtype=torch.float16), "Actual: (tensor(float16)) , expected: (tensor(double))",
     RuntimeError, "Expected: Double, Got: c10::Half"),
    (torch.zeros(3, OBS_DIM, dtype=torch.int64), "Actual: (tensor(int64)) , expected: (tensor(double))",
     RuntimeError, "Expected: Double, Got: long int"),
    (torch.zeros(3, OBS_DIM + 1, dtype=torch.float64), "index: 1 Got: 12 Expected: 11", AssertionError,
     "Guard failed: obs.size()[1] == 11"),
    (torch.zeros(OBS_DIM, dtype=torch.float64), "Invalid rank for input: obs Got: 1 Expected: 2", IndexError, ""),
])
def test_a_float64_file_refuses_other_dtypes_and_shapes(exported64, bad, onnx_says, pt2_error, pt2_says):
    with pytest.raises(Exception) as onnx_error:
        exported64["session"].run(None, {"obs": bad.numpy()})
    assert onnx_says in str(onnx_error.value)
    with pytest.raises(pt2_error) as info:
        exported64[".pt2"](bad)
    assert pt2_says in str(info.value)


@torch.no_grad()
def test_export_obs_dtype_float64_from_the_cli_and_the_api(run, real_obs, tmp_path, capsys):
    expected, _ = load_agent(run)[0].act(real_obs, deterministic=True)
    obs64 = _as_float64(real_obs).numpy()
    assert main(["export", str(run), "--out", str(tmp_path / "p.onnx"), "--obs-dtype", "float64"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "p.pt2"), "--obs-dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "{'obs': obs.astype(np.float64)})[0]  # float64 obs [B, 11] -> action float32 [B, 3]" in out
    assert ".module()(obs.double())  # float64 obs [B, 11]" in out
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"obs": obs64})[0], expected.numpy(), rtol=0, atol=1e-5)
    pt2 = torch.export.load(tmp_path / "p.pt2").module()
    torch.testing.assert_close(pt2(torch.from_numpy(obs64)), expected, rtol=0, atol=1e-5)

    path = load(run).export(tmp_path / "api.onnx", obs_dtype="float64")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"obs": obs64})[0], expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("out,obs_dtype,message", [
    ("p.onnx", "float16", "unknown obs dtype 'float16' (did you mean 'float64'?); choose one of float32, float64"),
    ("p.pt2", "double", "unknown obs dtype 'double'; choose one of float32, float64"),
    ("p.pt", "float64", "--obs-dtype float64 applies to .onnx and .pt2; .pt takes float32 and float64 already"),
])
def test_a_bad_obs_dtype_is_one_line_exit_2_and_the_apis_config_error(run, tmp_path, capsys, out, obs_dtype, message):
    assert main(["export", str(run), "--out", str(tmp_path / out), "--obs-dtype", obs_dtype]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"stridelab export: error: {message}"] and captured.out == ""
    with pytest.raises(ConfigError) as info:
        load(run).export(tmp_path / out, obs_dtype=obs_dtype)
    assert str(info.value) == message
    assert not list(tmp_path.iterdir())  # nothing written


def test_obs_dtype_must_be_the_name_not_a_dtype_object(run, tmp_path):
    # a numpy dtype compares equal to its name; refused all the same, with the name as the hint
    with pytest.raises(ConfigError, match=re.escape("(did you mean 'float64'?)")):
        load(run).export(tmp_path / "p.onnx", obs_dtype=np.dtype("float64"))
