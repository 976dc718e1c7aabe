"""Nothing lost: the NaN guard, finite-only checkpoints, damaged and mismatched checkpoints,
kill -9 and resume, determinism."""

import json
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

import pytest
import torch

from stridelab.algos import get, register, unregister
from stridelab.checkpoint import CheckpointError, all_finite, atomic_torch_save, load_checkpoint
from stridelab.config import build_config
from stridelab.envs import make_env
from stridelab.report import read_scalars
from stridelab.train import NonFiniteError, train
from tests.test_cli import GYM, stridelab_here, stridelab_in_fixture

TINY = {"env": "InvertedPendulum-v5", "num_envs": 4, "num_steps": 64, "num_minibatches": 4, "update_epochs": 2,
        "vf_minibatches": 4, "vf_epochs": 2, "eval_episodes": 0, "progress": False, "checkpoint_every": 1,
        "keep_checkpoints": 100, "seed": 5}


def tiny(tmp_path, algo="ppo", **kw):
    return build_config({**TINY, "algo": algo, "total_steps": 2048, "run_dir": str(tmp_path / algo), **kw})


class NaNObs:
    """Wraps an env; from step ``start`` for ``count`` steps, env 0's observation is NaN."""

    def __init__(self, env, start, count):
        self.env, self.start, self.count, self.t = env, start, count, 0
        self.spec, self.num_envs, self.device = env.spec, env.num_envs, env.device

    def reset(self, seed):
        return self.env.reset(seed)

    def step(self, action):
        res = self.env.step(action)
        self.t += 1
        if self.start <= self.t < self.start + self.count:
            res.obs[0] = float("nan")
        return res

    def close(self):
        self.env.close()


def all_checkpoints_finite(run_dir):
    files = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert files
    for f in files:
        state = torch.load(f, weights_only=False)
        assert all_finite([state["agent"], state["algo"]]), f


def test_nan_observations_skip_the_update_and_training_goes_on(tmp_path):
    cfg = tiny(tmp_path)
    env = NaNObs(make_env(cfg.env, cfg.num_envs), start=130, count=3)
    with pytest.warns(RuntimeWarning, match="NaN or infinity in an observation or reward"):
        summary = train(cfg, env=env)
    env.close()
    assert summary["global_step"] == 2048
    all_checkpoints_finite(tmp_path / "ppo")


@pytest.fixture
def poisoned():
    """Registers ``poisoned-<algo>``: the algorithm whose value net comes out NaN from its
    third update on."""
    names = []

    def make(base: str) -> str:
        calls = []

        class Poisoned(get(base).cls):
            def update_value(self, batch):
                metrics = super().update_value(batch)
                calls.append(1)
                if len(calls) >= 3:
                    with torch.no_grad():
                        next(self.agent.value.parameters()).fill_(float("nan"))
                return metrics

        names.append(f"poisoned-{base}")
        register(names[-1], preset=base)(Poisoned)
        return names[-1]

    yield make
    for name in names:
        unregister(name)


# On Brax the next rollout starts during the update (while the critic learns): an update that is
# rolled back drops that rollout, collected by the policy being undone, and restarts the envs.
@pytest.mark.parametrize("algo,brax", [("ppo", False), ("trpo", False), ("ppo", True)])
def test_updates_that_poison_the_weights_are_rolled_back_then_training_stops(tmp_path, poisoned, algo, brax):
    extra = {"env": "ant", "num_envs": 32, "num_steps": 16, "total_steps": 512 * 6} if brax else {}
    cfg = tiny(tmp_path, poisoned(algo), max_nonfinite=3, **extra)
    with pytest.warns(RuntimeWarning, match="update skipped"):
        with pytest.raises(NonFiniteError, match="3 updates in a row"):
            train(cfg)
    all_checkpoints_finite(Path(cfg.run_dir))
    last = load_checkpoint(Path(cfg.run_dir) / "checkpoints" / "last.ckpt")
    assert last["iteration"] == 4  # 2 good updates, then 2 rolled back and checkpointed, the 3rd stops


def test_a_non_finite_state_is_never_written(tmp_path):
    good = {"agent": {"w": torch.ones(3)}}
    atomic_torch_save(good, tmp_path / "a.ckpt", check_finite=good)
    bad = {"agent": {"w": torch.tensor([1.0, float("inf")])}}
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        atomic_torch_save(bad, tmp_path / "a.ckpt", check_finite=bad)
    assert torch.equal(torch.load(tmp_path / "a.ckpt")["agent"]["w"], torch.ones(3))  # the good one stays


def _scalars_without_timing(run_dir):
    return {k: v for k, v in read_scalars(str(run_dir)).items()
            if k.startswith(("losses/", "trpo/")) or k in ("charts/episodic_return", "eval/episodic_return")}


@pytest.mark.parametrize("algo,env", [("ppo", "ant"), ("trpo", "InvertedPendulum-v5")])
def test_same_seed_same_metrics(tmp_path, algo, env):
    # Ant's evaluations in episodes of 100 steps, not 1,000: three of them per run
    extra = {"num_envs": 32, "num_steps": 16, "episode_length": 100} if env == "ant" else {}
    runs = []
    for i in range(2):
        cfg = tiny(tmp_path / str(i), algo, env=env, total_steps=1536, eval_episodes=2, eval_every=1024, **extra)
        train(cfg)
        runs.append(_scalars_without_timing(cfg.run_dir))
    assert runs[0] == runs[1]
    assert len(runs[0]["losses/value_loss"]) == cfg.num_iterations >= 3


def test_a_native_mujoco_run_repeats_from_its_seed_whatever_the_update_threads(tmp_path):
    """Go1 with every randomization on, trained by TRPO twice from one seed: once on one torch
    thread, once on two (``--torch-threads auto`` picks the count each iteration from the machine's
    load, and BLAS's dot products in the conjugate gradient changed with it)."""
    runs = []
    for threads in ("1", "2"):
        cfg = build_config({"env": "Go1JoystickFlatTerrain", "algo": "trpo", "num_envs": 32, "num_steps": 16,
                            "total_steps": 32 * 16 * 2, "eval_episodes": 0, "progress": False, "seed": 3,
                            "torch_threads": threads, "run_dir": str(tmp_path / threads)})
        train(cfg)
        runs.append(_scalars_without_timing(cfg.run_dir))
    assert runs[0] == runs[1]
    assert len(runs[0]["losses/value_loss"]) == 2


# --- damaged and mismatched checkpoints, through the CLI --------------------------------------
# (the command's own ``main`` in this process: what the user reads and the exit code are the
# subject, not the process)

@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("good") / "run"
    proc = stridelab_in_fixture("train", "--env", "InvertedPendulum-v5", "--total-steps", "1024", "--num-envs", "4",
                                "--num-steps", "128", "--eval-episodes", "0", "--no-progress", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def _damage(run, tmp_path, how):
    import shutil

    bad = tmp_path / how
    shutil.copytree(run, bad)
    for ckpt in (bad / "checkpoints").glob("*.ckpt"):  # every one: readers fall back past a single damaged file
        _damage_file(ckpt, how)
    return bad


def _damage_file(ckpt, how):
    data = ckpt.read_bytes()
    if how == "empty":
        ckpt.write_bytes(b"")
    elif how == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        ckpt.write_bytes(os.urandom(4096))
    elif how == "not_a_checkpoint":
        torch.save({"weights": [1, 2, 3]}, ckpt)
    elif how == "nan_weights":
        state = torch.load(ckpt, weights_only=False)
        next(iter(state["agent"].values())).fill_(float("nan"))
        torch.save(state, ckpt)
    elif how == "other_sizes":  # a checkpoint whose network does not fit its task
        state = torch.load(ckpt, weights_only=False)
        state["env_spec"]["obs_dim"] = 11
        torch.save(state, ckpt)


def _one_line_exit_2(result, needle):
    code, _, stderr = result
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "arning" not in ln]
    assert len(lines) == 1, stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("how,needle,resume_needle", [
    ("empty", "is damaged or not a stridelab checkpoint", None),
    ("truncated", "is damaged or not a stridelab checkpoint", None),
    ("garbage", "is damaged or not a stridelab checkpoint", None),
    ("not_a_checkpoint", "is not a stridelab checkpoint (missing agent", None),
    ("nan_weights", "holds NaN or infinite weights", None),
    # eval builds the network the checkpoint describes; resume checks it against the task first
    ("other_sizes", "does not fit this network", "(obs 11, act 1), not 'InvertedPendulum-v5' (obs 4, act 1)"),
])
def test_damaged_checkpoints_give_one_line_and_exit_2(good_run, tmp_path, how, needle, resume_needle, capsys):
    bad = _damage(good_run, tmp_path, how)
    _one_line_exit_2(stridelab_here(capsys, "eval", bad, "--episodes", "1"), needle)
    _one_line_exit_2(stridelab_here(capsys, "train", "--resume", bad, "--no-progress"), resume_needle or needle)


def test_resuming_with_another_task_is_refused(good_run, capsys):
    result = stridelab_here(capsys, "train", "--resume", good_run, "--env", "Hopper-v5", "--no-progress")
    _one_line_exit_2(result, "is for task 'InvertedPendulum-v5' (obs 4, act 1), not 'Hopper-v5' (obs 11, act 3)")


# --- kill -9 mid-run, then resume -----------------------------------------------------------

def test_sigkill_then_resume_loses_at_most_one_checkpoint_interval(tmp_path, capsys):
    run = tmp_path / "killed"
    every = 2  # iterations between checkpoints; an iteration is 512 env steps
    proc = subprocess.Popen([sys.executable, "-m", "stridelab", "train", "--total-steps", "100000000",
                             "--run-dir", str(run), *GYM[:-2], "--checkpoint-every", str(every)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while len(list((run / "checkpoints").glob("step_*.ckpt"))) < 3:
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read()[-2000:] if proc.poll() else ""
        time.sleep(0.2)
    time.sleep(0.7)  # somewhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    logged = max(s for s, _ in read_scalars(str(run))["charts/SPS"])
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert logged - saved <= every * 512, (logged, saved)  # at most one interval of work lost

    target = logged + 2048
    code, _, err = stridelab_here(capsys, "train", "--resume", run, "--total-steps", target, "--no-progress")
    assert code == 0, err[-3000:]
    steps = [s for s, _ in read_scalars(str(run))["charts/SPS"]]
    assert steps == list(range(512, target + 1, 512))  # one continuous curve, no gap, no step twice
    assert json.loads((run / "summary.json").read_text())["global_step"] == target


# --- generators after a resume ----------------------------------------------------------------

def test_a_resume_gives_each_data_parallel_process_its_own_generator_again():
    import random

    import numpy as np

    from stridelab.distributed import Comm
    from stridelab.runner import restore_rng_state, rng_state

    torch.manual_seed(5)
    saved = rng_state()  # rank 0's generators, as a checkpoint holds them

    def draws(comm):
        restore_rng_state(saved, comm)
        return torch.rand(3).tolist(), float(np.random.rand()), random.random()

    single = draws(Comm())
    assert single == draws(Comm()) and single[0] == torch.rand(3, generator=torch.Generator().manual_seed(5)).tolist()
    ranks = [Comm(lambda t: t, world_size=2, rank=r) for r in (0, 1)]
    first, second = (draws(c) for c in ranks)
    assert all(a != b for a, b in zip(first, second))  # torch, numpy and Python: each process its own
    assert first == draws(ranks[0]) and second == draws(ranks[1])  # and the same again on every resume
