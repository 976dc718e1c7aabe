"""The CLI end to end, as a user runs it: in a process of its own where the process is the
subject (the installed command, signals, compare's runs), else through the command's own ``main``
in this process (a process per command spent ~13 s importing torch and JAX and tracing Brax).
Tests of the CLI's mechanics (resume, signals, TRPO's metrics) train a small Gymnasium task;
`make demo`'s command, compare on Brax's ant, stays on Brax."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.tbread import read_scalars
from stridelab.cli import main

# Episodes of 100 steps: the evaluations below step Ant 2 x 100 times, not 2 x 1,000.
SMALL = ["--env", "ant", "--num-envs", "32", "--num-steps", "16", "--num-minibatches", "4",
         "--vf-minibatches", "4", "--eval-episodes", "0", "--no-progress", "--checkpoint-every", "2",
         "--episode-length", "100"]


# The CLI's mechanics on a Gymnasium task (no JAX): 4 envs x 128 steps, the same 512-step batch.
GYM = ["--env", "InvertedPendulum-v5", "--num-envs", "4", "--num-steps", "128", "--num-minibatches", "4",
       "--vf-minibatches", "4", "--eval-episodes", "0", "--no-progress", "--checkpoint-every", "2"]


def stridelab_here(capsys, *args):
    """``stridelab ARGS`` through the command's own ``main`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def stridelab_in_fixture(*args):
    """The same for a module fixture (which cannot take capsys), as a finished process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def stridelab(*args, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "stridelab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """A small Brax run, trained in this process (then its eval traces no Brax program anew);
    compare's test below runs `stridelab train` on Brax as a process of its own."""
    run = tmp_path_factory.mktemp("cli") / "ppo"
    proc = stridelab_in_fixture("train", "--algo", "ppo", "--total-steps", "3072", "--seed", "3", "--run-dir", run,
                                *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc


def test_train_writes_tensorboard_scalars_config_and_checkpoint(ppo_run):
    run, proc = ppo_run
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    scalars = read_scalars(str(run))
    for tag in ["charts/SPS", "charts/learning_rate", "losses/policy_loss", "losses/value_loss", "losses/entropy",
                "losses/approx_kl", "losses/clipfrac", "losses/explained_variance"]:
        assert tag in scalars, tag
    assert [s for s, _ in scalars["charts/SPS"]] == [512 * i for i in range(1, 7)]  # against env steps
    assert "charts/SPS" in proc.stdout


def test_summary_gives_the_cpu_time_an_env_step_costs(ppo_run):
    """CPU time over the steady iterations: positive, and at most what every core could give in
    the same wall-clock time (``time/steady_sps`` is over the same iterations)."""
    import os

    summary = json.loads((ppo_run[0] / "summary.json").read_text())
    cpu, sps = summary["time/steady_cpu_us_per_step"], summary["time/steady_sps"]
    assert 0 < cpu <= 1.1 * len(os.sched_getaffinity(0)) * 1e6 / sps, (cpu, sps)


def test_eval_of_the_checkpoint_prints_mean_and_std(ppo_run, capsys):
    run, _ = ppo_run
    # 2 episodes: an evaluation batch of 2 ant envs, whose programs other tests compile too
    code, stdout, stderr = stridelab_here(capsys, "eval", run, "--episodes", "2", "--json")
    assert code == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["episodes"] == 2 and len(out["returns"]) == 2
    assert out["mean"] == pytest.approx(sum(out["returns"]) / 2, rel=1e-5)
    assert out["global_step"] == 3072


def test_export_writes_a_program_that_acts(ppo_run, tmp_path, capsys):
    run, _ = ppo_run
    out = tmp_path / "policy.onnx"
    code, _, err = stridelab_here(capsys, "export", run, "--out", out)
    assert code == 0, err[-3000:]
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    actions = session.run(None, {"obs": np.zeros((5, 27), dtype=np.float32)})[0]
    assert actions.shape == (5, 8) and bool((np.abs(actions) <= 1).all())


def test_trpo_trains_end_to_end_with_its_metrics(tmp_path, capsys):
    run = tmp_path / "trpo"
    code, _, err = stridelab_here(capsys, "train", "--algo", "trpo", "--total-steps", "1024", "--run-dir", run, *GYM)
    assert code == 0, err[-3000:]
    scalars = read_scalars(str(run))
    for tag in ["trpo/kl", "trpo/backtracks", "trpo/accepted", "trpo/cg_residual", "trpo/step_norm",
                "losses/value_loss", "charts/SPS"]:
        assert tag in scalars, tag
    assert all(v <= 0.01 + 1e-6 for _, v in scalars["trpo/kl"])


@pytest.mark.parametrize("args,needle", [
    (["train", "--env", "antt"], "unknown env 'antt'"),
    (["train", "--algo", "a2c"], "unknown algo 'a2c'"),
    (["train", "--algo", "ppp"], "did you mean 'ppo'"),
    (["train", "--backend", "sprin"], "unknown backend 'sprin' (did you mean 'spring'?)"),
    (["train", "--num-envs", "0"], "--num-envs must be a positive integer"),
    (["train", "--gamma", "1.5"], "--gamma must be in [0, 1]"),
    (["train", "--num-envs", "10", "--num-steps", "3", "--num-minibatches", "4"], "does not divide"),
    (["train", "--num-envs", "4", "--num-steps", "2", "--num-minibatches", "8"], "fewer than 2 samples"),
    (["train", "--learning-rate", "nan"], "expected a finite number"),
    (["train", "--device", "tpu"], "unknown device 'tpu'"),
    (["eval", "/nonexistent/run"], "does not exist"),
    (["train", "--total-steps", "-5"], "--total-steps must be a positive integer"),
    (["train", "--total-steps", "1e6x"], "expected an integer, got '1e6x'"),
    (["train", "--total-steps", "100"], "less than one batch"),
    (["train", "--clip-coef", "0"], "--clip-coef must be a finite number > 0"),
    (["train", "--max-kl", "inf"], "expected a finite number"),
    (["train", "--fisher-fraction", "1.5"], "--fisher-fraction must be in (0, 1]"),
    (["train", "--init-std", "0"], "--init-std must be a finite number > 0.001"),
    (["train", "--ent-coef", "-1"], "--ent-coef must be a finite number >= 0"),
    (["train", "--gae-lambda", "-0.1"], "--gae-lambda must be in [0, 1]"),
    (["train", "--max-nonfinite", "0"], "--max-nonfinite must be a positive integer"),
    (["train", "--env", "hopper-v5"], "did you mean 'Hopper-v5'"),
    (["train", "--resume", "/nonexistent/run"], "does not exist"),
    (["eval", "/nonexistent/run", "--episodes", "0"], "--episodes must be a positive integer"),
    (["video", "/nonexistent/run", "--out", "walk.avi"], "unknown video format"),
    (["eval", "/nonexistent/run", "--device", "gpu"], "unknown device 'gpu'"),
    (["compare", "--algos", "ppo", "ppo"], "lists an algorithm twice"),
    (["compare", "--seeds", "0"], "--seeds must be a positive integer"),
    (["compare", "--algos", "sac"], "unknown algo 'sac'"),
    (["train", "--total", "5"], "unrecognized arguments: --total 5"),  # no abbreviations ...
    (["compare", "--seed", "3"], "--seed is set by compare itself"),  # ... so this is not --seeds 3
    (["train", "--hidden-sizes", "64", "x"], "expected an integer, got 'x'"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, needle, capsys):
    """The command's own ``main`` in this process (a new process per case spent ~4 s importing
    torch and JAX); the installed command's process is checked on its own below."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert_one_line_and_exit_2(code, capsys.readouterr().err, needle)


@pytest.mark.parametrize("args,needle", [(["train", "--gamma", "1.5"], "--gamma must be in [0, 1]"),
                                         (["train", "--total", "5"], "unrecognized arguments: --total 5")])
def test_bad_input_to_the_installed_command_is_one_line_and_exit_code_2(args, needle):
    proc = stridelab(*args, timeout=120)
    assert_one_line_and_exit_2(proc.returncode, proc.stderr, needle)


def assert_one_line_and_exit_2(code, stderr, needle):
    assert code == 2
    lines = [ln for ln in stderr.splitlines() if ln.strip() and "warp" not in ln and "Warning" not in ln
             and "warnings.warn" not in ln]
    assert len(lines) == 1, stderr
    assert needle in lines[0]
    assert "Traceback" not in stderr


def test_resume_continues_the_step_counter_and_the_curve(tmp_path, capsys):
    run = tmp_path / "resumed"
    code, _, err = stridelab_here(capsys, "train", "--algo", "ppo", "--total-steps", "1024", "--run-dir", run, *GYM)
    assert code == 0, err[-3000:]
    code, _, err = stridelab_here(capsys, "train", "--resume", run, "--total-steps", "2048", "--no-progress")
    assert code == 0, err[-3000:]
    steps = [s for s, _ in read_scalars(str(run))["charts/SPS"]]
    assert steps == [512, 1024, 1536, 2048]
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] == 2048 and state["iteration"] == 4
    assert state["config"]["total_steps"] == 2048
    assert state["stats"]["last_sps"] > 0
    code, _, err = stridelab_here(capsys, "train", "--resume", run, "--no-progress")  # nothing left to train
    assert code == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 2048 and summary["charts/SPS"] == pytest.approx(state["stats"]["last_sps"])
    # Resumed with half the steps per env (256 steps an iteration instead of 512): it still stops at --total-steps.
    code, _, err = stridelab_here(capsys, "train", "--resume", run, "--num-steps", "64", "--total-steps", "3072",
                                  "--no-progress")
    assert code == 0, err[-3000:]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 3072
    code, _, err = stridelab_here(capsys, "train", "--resume", run, "--network", "baselines", "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert "--network 'baselines': a resumed run keeps the network its weights were trained with ('' in its" in err


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    import signal
    import time

    run = tmp_path / "term"
    proc = subprocess.Popen([sys.executable, "-m", "stridelab", "train", "--total-steps", "10000000",
                             "--run-dir", str(run), *GYM, "--checkpoint-every", "1000"],  # the stop's checkpoint only
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run / "tb").exists() or not list((run / "tb").glob("events*")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.5)
    time.sleep(3)  # inside the training loop now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "--resume" in err
    import torch

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] > 0 and state["global_step"] % 512 == 0


def test_compare_runs_the_grid_then_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    # `make demo`'s command (compare on Brax's ant), its run a `stridelab train` process of its own
    args = ["compare", "--env", "ant", "--algos", "ppo", "--seeds", "1", "--total-steps", "1024",
            "--out", str(out), "--video-steps", "0", "--num-envs", "32", "--num-minibatches", "4",
            "--eval-episodes", "2", "--eval-every", "0"]
    code, _, err = stridelab_here(capsys, *args)
    assert code == 0, err[-3000:]
    assert (out / "ppo_s1" / "summary.json").is_file() and (out / "report.html").is_file()
    assert (out / "ppo_s1" / "checkpoints" / "best.ckpt").is_file()  # kept at the best evaluation
    mtime = (out / "ppo_s1" / "summary.json").stat().st_mtime
    code, stdout, err = stridelab_here(capsys, *args)
    assert code == 0, err[-3000:]
    assert "ppo_s1: finished earlier, skipped" in stdout
    assert (out / "ppo_s1" / "summary.json").stat().st_mtime == mtime


def _children(pid):
    """The process ids whose parent is ``pid`` (Linux's /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_ctrl_c_on_compare_stops_each_run_with_its_stop_checkpoint(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground process group: compare and its runs."""
    import signal
    import time

    out = tmp_path / "cmp"
    args = ["compare", "--env", "InvertedPendulum-v5", "--algos", "ppo", "--seeds", "1", "--total-steps", "10000000",
            "--out", str(out), "--video-steps", "0", "--num-envs", "4", "--num-steps", "128", "--num-minibatches", "4",
            "--eval-episodes", "0", "--checkpoint-every", "1000"]
    # As from a terminal, SIGINT raises KeyboardInterrupt: a shell's background job (a test runner
    # may be one) starts with SIGINT ignored, and Python then leaves it ignored.
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from stridelab.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    tb = out / "ppo_s1" / "tb"
    deadline = time.time() + 300
    while not (tb.exists() and list(tb.glob("events*"))):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.5)
    time.sleep(3)  # inside the training loop now
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # leave nothing running: compare's runs (each a session of its own), then compare
            for child in _children(proc.pid):
                os.killpg(child, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "run the same command again to continue" in err
    import torch

    state = torch.load(out / "ppo_s1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["global_step"] > 0 and state["global_step"] % 512 == 0
    log = (out / ".ppo_s1.log").read_text()
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]


def test_stridelab_cpus_pins_the_process_before_anything_starts():
    import os

    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs CPU affinity and two cores")
    code = "import os; from stridelab.cores import pin_from_env; pin_from_env(); print(sorted(os.sched_getaffinity(0)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "STRIDELAB_CPUS": "1"})
    assert proc.stdout.strip() == "[1]", proc.stderr


def test_compare_refuses_to_mix_budgets(tmp_path, capsys):
    out = tmp_path / "cmp"
    (out / "ppo_s1").mkdir(parents=True)
    (out / "ppo_s1" / "config.json").write_text(json.dumps({"total_steps": 1_000_000, "algo": "ppo", "seed": 1}))
    code, _, err = stridelab_here(capsys, "compare", "--algos", "ppo", "--seeds", "1", "--total-steps", "2000000",
                                  "--out", out)
    assert code == 2
    assert "was trained with --total-steps 1000000, not 2000000" in err


def test_cuda_asked_for_without_cuda_is_one_line_and_exit_code_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = stridelab_here(capsys, "train", "--device", "cuda")
    assert code == 2 and "Traceback" not in err
    assert "--device cuda was asked for but no CUDA device is available" in err
