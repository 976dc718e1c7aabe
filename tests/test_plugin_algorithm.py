"""A new algorithm from outside stridelab: defined and registered in this file, then trained by
``stridelab train``, ``compare`` and ``report`` with no edit to stridelab (the commands import
this module because ``STRIDELAB_PLUGINS`` names it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stridelab.algos import Algorithm, register
from stridelab.ops import gaussian_entropy, gaussian_log_prob, value_loss
from stridelab.report import read_scalars

ROOT = Path(__file__).resolve().parents[1]


@register("pg-test", preset="ppo", description="plain policy gradient, one Adam step per batch",
          fields=("learning_rate", "update_epochs"))
class PlainPolicyGradient(Algorithm):
    """REINFORCE with GAE advantages: one Adam step on ``-mean(log pi(a|s) * A)`` per batch,
    the value net fitted with ``update_epochs`` full-batch steps."""

    def __init__(self, agent, cfg, comm):
        super().__init__(agent, cfg, comm)
        self.optimizers["policy"] = torch.optim.Adam(agent.policy.parameters(), lr=cfg.learning_rate)
        self.optimizers["value"] = torch.optim.Adam(agent.value.parameters(), lr=cfg.learning_rate)

    def update_policy(self, batch):
        obs = self.agent.obs_rms.normalize(batch.obs)
        adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
        mean, std = self.agent.policy(obs)
        loss = -(gaussian_log_prob(mean, std, batch.actions) * adv).mean()
        self.optimizers["policy"].zero_grad()
        loss.backward()
        self.optimizers["policy"].step()
        return {"losses/policy_loss": float(loss), "losses/entropy": float(gaussian_entropy(std).mean())}

    def update_value(self, batch):
        obs = self.agent.obs_rms.normalize(batch.obs)
        for _ in range(self.cfg.update_epochs):
            loss = value_loss(self.agent.value(obs), batch.returns)
            self.optimizers["value"].zero_grad()
            loss.backward()
            self.optimizers["value"].step()
        return {"losses/value_loss": float(loss)}


TASK = ["--env", "InvertedPendulum-v5", "--num-envs", "4", "--num-steps", "128", "--eval-episodes", "4",
        "--no-progress"]


def stridelab_with_plugin(*args):
    env = {**os.environ, "STRIDELAB_PLUGINS": "tests.test_plugin_algorithm",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "stridelab", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=ROOT)


def test_a_registered_algorithm_trains_through_the_command_line(tmp_path):
    run = tmp_path / "pg"
    proc = stridelab_with_plugin("train", "--algo", "pg-test", "--total-steps", "4096", "--eval-every", "2048",
                                 "--run-dir", str(run), *TASK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scalars = read_scalars(run)
    assert [s for s, _ in scalars["losses/policy_loss"]] == list(range(512, 4097, 512))
    assert [s for s, _ in scalars["eval/episodic_return"]] == [0, 2048, 4096]  # from the untrained policy
    config = json.loads((run / "config.json").read_text())
    assert config["algo"] == "pg-test" and config["learning_rate"] == 3e-4  # from the [ppo] preset it names
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert set(state["algo"]) == {"policy", "value"}  # its own optimizers, saved and ...
    resumed = stridelab_with_plugin("train", "--resume", str(run), "--total-steps", "5120")
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # ... loaded again
    assert json.loads((run / "summary.json").read_text())["global_step"] == 5120


def test_compare_and_report_know_a_registered_algorithm(tmp_path):
    out = tmp_path / "cmp"
    proc = stridelab_with_plugin("compare", "--algos", "pg-test", "ppo", "--seeds", "1", "--total-steps", "2048",
                                 "--out", str(out), "--video-steps", "0", "--jobs", "2", *TASK[:6])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "P(PG-TEST beats PPO)" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert list(report["algorithms"]) == ["pg-test", "ppo"]
    md = (out / "report.md").read_text()
    assert "# PG-TEST vs PPO on InvertedPendulum-v5" in md
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ") and line.count("|") == 4}
    assert rows["update_epochs"] == ["10", "10"]  # a setting both use
    assert rows["clip_coef"] == ["-", "0.2"]  # PPO's alone
    rerun = stridelab_with_plugin("report", str(out))
    assert rerun.returncode == 0 and "PG-TEST: IQM" in rerun.stdout


def test_without_the_plugin_the_name_is_unknown_and_said_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stridelab", "train", "--algo", "pg-test", "--run-dir",
                           str(tmp_path / "x"), *TASK], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k != "STRIDELAB_PLUGINS"})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("stridelab train: error: unknown algo 'pg-test'")
    assert line.endswith("; choose one of ppo, trpo, npg, vpg, ppo-m, trpo+")


@pytest.fixture(autouse=True, scope="module")
def _forget_the_test_algorithm():
    """This module registers ``pg-test`` in the test process too: forget it afterwards."""
    yield
    from stridelab.algos import unregister

    unregister("pg-test")
