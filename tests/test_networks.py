"""A network other than the default, end to end: it trains with the fused rollout (the JAX
mirror walks its layers), is stored with the run, and evaluates and exports after a reload."""

import json
import warnings

import numpy as np
import pytest
import torch

from stridelab.config import ConfigError, build_config, validate
from stridelab.evaluate import load_agent
from stridelab.export import export_policy
from stridelab.train import train
from tests.test_cli import stridelab_here


def test_a_wider_tanh_network_trains_fused_reloads_evaluates_and_exports(tmp_path, capsys):
    run = tmp_path / "wide"
    cfg = build_config({"env": "ant", "algo": "ppo", "num_envs": 32, "num_steps": 16, "total_steps": 1024,
                        "hidden_sizes": [256, 256], "activation": "tanh", "eval_episodes": 2,
                        "episode_length": 50, "run_dir": str(run), "progress": False})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg)
    assert summary["rollout/fused"] == 1.0
    assert not [w for w in caught if "step by step" in str(w.message)]
    assert json.loads((run / "config.json").read_text())["hidden_sizes"] == [256, 256]

    agent, loaded_cfg, _ = load_agent(run)
    linears = [m for m in agent.policy.trunk if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [256, 256] and loaded_cfg.activation == "tanh"
    assert sum(isinstance(m, torch.nn.Tanh) for m in agent.value.net) == 2

    code, out, err = stridelab_here(capsys, "eval", run, "--episodes", "2", "--json")
    assert code == 0, err[-2000:]
    assert np.isfinite(json.loads(out.splitlines()[-1])["mean"])

    import onnxruntime

    path = export_policy(agent, tmp_path / "wide.onnx")
    obs = torch.randn(64, agent.obs_dim) * 2
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"obs": obs.numpy()})[0]
    np.testing.assert_allclose(got, agent(obs).detach().numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("values,message", [
    ({"hidden_sizes": []}, "--hidden-sizes must be one or more positive integers, got []"),
    ({"hidden_sizes": [64, 0]}, "--hidden-sizes must be one or more positive integers, got [64, 0]"),
    ({"value_hidden_sizes": [-3]}, "--value-hidden-sizes must be one or more positive integers, got [-3]"),
    ({"activation": "relu6"}, "unknown activation 'relu6' (did you mean 'relu'?); choose one of relu, tanh, elu, silu"),
])
def test_bad_network_settings_are_one_line(values, message):
    with pytest.raises(ConfigError) as e:
        validate(build_config({"env": "Hopper-v5", **values}))
    assert str(e.value) == message
