"""Nothing lost, take two (issue 20): one writer per run directory, no silent overwrite, readers
fall back to the newest intact checkpoint, operating-system errors as one line with their exit
code, start-up Ctrl-C, compare's runs dying with it.

One tiny run (InvertedPendulum-v5, four checkpoints and best.ckpt) is trained once; each case
works on a copy of it, so the original stays as the "nothing lost" reference.
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stridelab import rundir
from stridelab.checkpoint import atomic_torch_save, load_checkpoint
from stridelab.config import build_config
from stridelab.errors import EXIT_ENVIRONMENT, EXIT_USAGE, describe_os_error
from stridelab.report import RunData, pair_line, pairwise
from stridelab.train import train
from tests.test_cli import stridelab, stridelab_here

TINY = {"env": "InvertedPendulum-v5", "algo": "ppo", "num_envs": 4, "num_steps": 64, "num_minibatches": 4,
        "update_epochs": 2, "vf_minibatches": 4, "vf_epochs": 2, "progress": False, "checkpoint_every": 1,
        "keep_checkpoints": 100, "seed": 5, "eval_episodes": 2, "eval_every": 512, "total_steps": 1024}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("lost") / "run"
    train(build_config({**TINY, "run_dir": str(run)}))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", *(f"step_{s:012d}.ckpt" for s in (256, 512, 768, 1024))], names
    return run


def fingerprint(run):
    """sha256 of every checkpoint and TensorBoard event file of a run."""
    files = sorted([*(run / "checkpoints").glob("*.ckpt"), *(run / "tb").rglob("events*")])
    assert files
    return {str(f.relative_to(run)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def copy(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def here(capsys, *args):
    """``stridelab ARGS`` through the command's own ``main`` in this process, as a finished process
    (where another process is not the subject: each new one spent seconds importing torch)."""
    return subprocess.CompletedProcess(args, *stridelab_here(capsys, *args))


def one_line(proc, code, *needles):
    """Exit ``code``, exactly one line on stderr holding every needle, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- one writer, no silent overwrite ----------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_live_pid_and_nothing_is_lost(run, tmp_path):
    live = copy(run, tmp_path)
    before = fingerprint(live)
    rundir.acquire(live)  # this test process is the live writer
    try:
        resume = stridelab("train", "--resume", str(live), "--no-progress", timeout=120)
        one_line(resume, EXIT_ENVIRONMENT, f"is being written by another stridelab process (pid {os.getpid()})")
        fresh = stridelab("train", "--env", "InvertedPendulum-v5", "--run-dir", str(live), "--overwrite", timeout=120)
        one_line(fresh, EXIT_ENVIRONMENT, str(live), f"pid {os.getpid()}")
    finally:
        rundir.release(live)
    assert fingerprint(live) == before


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / rundir.LOCK_NAME).write_text("999999999\n")  # kill -9 leaves the file, the kernel drops the lock
    assert rundir.acquire(tmp_path)
    assert (tmp_path / rundir.LOCK_NAME).read_text().strip() == str(os.getpid())
    rundir.release(tmp_path)


def test_a_fresh_train_into_a_run_refuses_and_overwrite_starts_clean(run, tmp_path, capsys):
    old = copy(run, tmp_path)
    before = fingerprint(old)
    flags = ["--env", "InvertedPendulum-v5", "--run-dir", str(old), "--num-envs", "4", "--num-steps", "64",
             "--num-minibatches", "4", "--vf-minibatches", "4", "--total-steps", "256", "--eval-episodes", "0",
             "--no-progress"]
    refused = here(capsys, "train", *flags)
    one_line(refused, EXIT_USAGE, str(old), f"--resume {old}", "--overwrite")
    assert fingerprint(old) == before
    fresh = here(capsys, "train", *flags, "--overwrite")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == ["last.ckpt", "step_000000000256.ckpt"]
    assert len(list((old / "tb").rglob("events*"))) == 1  # nothing of the old run's curve
    assert json.loads((old / "summary.json").read_text())["global_step"] == 256


# --- the newest intact checkpoint ---------------------------------------------------------------

def _damage(path, how):
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "garbage":
        path.write_bytes(os.urandom(4096))
    elif how == "nan":
        state = torch.load(path, weights_only=False)
        next(iter(state["agent"].values())).fill_(float("nan"))
        torch.save(state, path)


@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "nan"])
def test_readers_fall_back_to_the_newest_intact_checkpoint(run, tmp_path, how):
    bad = copy(run, tmp_path)
    ckpts = bad / "checkpoints"
    _damage(ckpts / "last.ckpt", how)
    _damage(ckpts / "step_000000001024.ckpt", how)
    said = []
    path, state = rundir.choose_checkpoint(bad, warn=said.append)
    assert path == ckpts / "step_000000000768.ckpt" and state["global_step"] == 768
    assert len(said) == 1 and "last.ckpt" in said[0] and "and 1 more" in said[0] and "step_000000000768" in said[0]


def test_the_fallback_order_ends_with_best_and_every_reader_says_which_it_used(run, tmp_path, capsys):
    bad = copy(run, tmp_path)
    for f in (bad / "checkpoints").glob("*.ckpt"):
        if f.name != "best.ckpt":
            _damage(f, "truncated")
    assert rundir.choose_checkpoint(bad, warn=lambda m: None)[0].name == "best.ckpt"
    proc = here(capsys, "eval", bad, "--episodes", "1", "--json")
    line = one_line(proc, 0, "warning:", "last.ckpt' is damaged", "and 4 more unusable", "best.ckpt")
    assert "using" in line
    _damage(bad / "checkpoints" / "best.ckpt", "empty")
    one_line(here(capsys, "export", bad), EXIT_USAGE, "no intact checkpoint in", "the 5 other(s)")


def test_checkpoint_flag_picks_one_and_names_what_exists(run, tmp_path, capsys):
    from stridelab.cli import main

    assert main(["eval", str(run), "--episodes", "1", "--json", "--checkpoint", "step_000000000512.ckpt"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["global_step"] == 512
    assert main(["eval", str(run), "--episodes", "1", "--checkpoint", "step_7"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--checkpoint 'step_7': no such file" in err[0] and "best.ckpt" in err[0]


def test_resume_falls_back_and_continues_without_a_step_twice(run, tmp_path, capsys):
    from stridelab.report import read_scalars

    bad = copy(run, tmp_path)
    _damage(bad / "checkpoints" / "last.ckpt", "garbage")
    _damage(bad / "checkpoints" / "step_000000001024.ckpt", "nan")
    proc = here(capsys, "train", "--resume", bad, "--total-steps", "1280", "--no-progress", "--eval-episodes", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "using" in proc.stderr and "step_000000000768.ckpt" in proc.stderr
    assert (bad / "checkpoints" / "superseded" / "step_000000001024.ckpt").is_file()  # set aside, not deleted
    assert load_checkpoint(bad / "checkpoints" / "last.ckpt")["global_step"] == 1280
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(bad / "tb"), size_guidance={"scalars": 0})
    acc.Reload()  # as TensorBoard shows it: the steps after 768 the first process logged are purged
    steps = [e.step for e in acc.Scalars("charts/SPS")]
    assert steps == list(range(256, 1281, 256)), steps
    assert [s for s, _ in read_scalars(bad)["charts/SPS"]] == steps


def test_a_checkpoint_of_another_task_is_refused(run, tmp_path, capsys):
    other = copy(run, tmp_path)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "env": "ant"}))
    one_line(here(capsys, "eval", other, "--episodes", "1"), EXIT_USAGE,
             "is for task 'InvertedPendulum-v5' (obs 4, act 1), but run", "trains 'ant'", "does not belong")


# --- operating-system errors and unclear messages -----------------------------------------------

def _bad_config_run(run, tmp_path):
    bad = copy(run, tmp_path, "gamma")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "gamma": "high"}))
    return bad


def _report_dir(run, tmp_path):
    out = tmp_path / "cmp"
    shutil.copytree(run, out / "ppo_s1")
    config = json.loads((out / "ppo_s1" / "config.json").read_text())
    del config["algo"]
    (out / "ppo_s1" / "config.json").write_text(json.dumps(config))
    return out


CASES = [  # (name, command built from (run, tmp_path), exit code, needles of the one line)
    ("run-dir is a file", lambda r, t: ["train", "--run-dir", str(r / "config.json")], EXIT_USAGE,
     ["--run-dir", "config.json' is a file, not a directory"]),
    ("export --out a directory", lambda r, t: ["export", str(r), "--out", str((t / "x.onnx").mkdir() or t / "x.onnx")],
     EXIT_USAGE, ["--out", "x.onnx' is a directory"]),
    ("compare --out a file", lambda r, t: ["compare", "--out", str(r / "config.json")], EXIT_USAGE,
     ["--out", "is a file, not a directory"]),
    ("video --out under a file", lambda r, t: ["video", str(r), "--out", str(r / "config.json" / "walk.mp4")],
     EXIT_USAGE, ["config.json' is a file, not a directory"]),
    ("a wrong type in config.json", lambda r, t: ["train", "--resume", str(_bad_config_run(r, t))], EXIT_USAGE,
     ["config.json'", "field 'gamma' must be a number, got 'high'"]),
    ("report without algo", lambda r, t: ["report", str(_report_dir(r, t))], EXIT_USAGE,
     ["config.json'", "field 'algo' must be a string, got None"]),
    ("eval --seed -1", lambda r, t: ["eval", str(r), "--seed", "-1"], EXIT_USAGE, ["--seed must be an integer"]),
    ("train --seed -1", lambda r, t: ["train", "--seed", "-1"], EXIT_USAGE, ["--seed must be an integer"]),
    ("video --width 20000", lambda r, t: ["video", str(r), "--width", "20000"], EXIT_USAGE,
     ["--width must be between 16 and 4096 pixels, got 20000"]),
    ("--resume R --run-dir X", lambda r, t: ["train", "--resume", str(r), "--run-dir", str(t / "x")], EXIT_USAGE,
     ["--run-dir", "differs from --resume", "drop --run-dir"]),
    ("--overwrite with --resume", lambda r, t: ["train", "--resume", str(r), "--overwrite"], EXIT_USAGE,
     ["--overwrite starts a new run"]),
]


@pytest.mark.parametrize("name,args,code,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_paths_and_values_are_one_line_with_their_exit_code(run, tmp_path, capsys, name, args, code, needles):
    """In this process (a traceback would fail the test itself); other tests run the command."""
    from stridelab.cli import main

    before = fingerprint(run)
    got = main(args(run, tmp_path))
    one_line(subprocess.CompletedProcess([], got, "", capsys.readouterr().err), code, *needles)
    assert fingerprint(run) == before


@pytest.mark.parametrize("err,code,cause", [
    (OSError(errno.ENOSPC, "No space left on device", "runs/x/checkpoints/last.ckpt"), EXIT_ENVIRONMENT, "disk full"),
    (PermissionError(errno.EACCES, "Permission denied", "runs/x"), EXIT_ENVIRONMENT, "permission denied"),
    (OSError(errno.EROFS, "Read-only file system", "runs/x"), EXIT_ENVIRONMENT, "read-only file system"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "a/file/x"), EXIT_USAGE, "not a directory"),
])
def test_os_errors_name_the_path_and_the_cause(err, code, cause):
    message, got = describe_os_error(err)
    assert got == code and cause in message and repr(err.filename) in message


def test_permission_denied_is_one_line_and_exit_3(run, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads and writes regardless of permissions")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    one_line(stridelab("export", str(run), "--out", str(locked / "p.onnx"), timeout=120), EXIT_ENVIRONMENT,
             "permission denied")


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"agent": {"w": torch.ones(2)}}, path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_torch_save({"agent": {"w": torch.zeros(2)}}, path)
    message, code = describe_os_error(e.value)
    assert code == EXIT_ENVIRONMENT and message == f"{str(path)!r}: disk full"
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["agent"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary file left


def test_one_seed_per_algorithm_gives_no_probability():
    def runs(algo, returns):
        return [RunData(f"{algo}_s{i}", algo, i, "ant", {}, {"eval/episodic_return": r}) for i, r in enumerate(returns)]

    one = pairwise({"trpo": runs("trpo", [900.0]), "ppo": runs("ppo", [500.0])})
    assert one[0]["p"] is None
    line = pair_line(one[0])
    assert line.startswith("P(TRPO beats PPO) = n/a") and "one seed of TRPO cannot give a probability" in line
    three = pairwise({"trpo": runs("trpo", [900.0, 800.0, 700.0]), "ppo": runs("ppo", [500.0, 850.0, 600.0])})
    assert three[0]["p"] == pytest.approx(7 / 9) and pair_line(three[0]).startswith("P(TRPO beats PPO) = 0.78 [")


def test_num_nodes_says_it_waits_for_the_other_machines(tmp_path):
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29581", "NODE_RANK": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "stridelab", "train", "--env", "InvertedPendulum-v5",
                             "--num-nodes", "2", "--device", "cpu", "--run-dir", str(tmp_path / "r")],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:  # it blocks after the note, waiting for the other machine
            if "--num-nodes" in line:
                break
    finally:
        proc.kill()
        proc.wait()
    assert "--num-nodes 2: waiting for the other machines to join" in line and "NODE_RANK=1..1" in line


# --- signals ------------------------------------------------------------------------------------

def _wait_for(what, deadline_s, proc=None):
    deadline = time.time() + deadline_s
    while not what():
        assert time.time() < deadline and (proc is None or proc.poll() is None), \
            proc.communicate()[1][-2000:] if proc is not None and proc.poll() is not None else "timed out"
        time.sleep(0.1)


def test_ctrl_c_during_start_up_stops_the_run(tmp_path):
    """SIGINT while JAX and Brax start (the lock is taken before the simulator is built)."""
    run = tmp_path / "r"
    # As from a terminal: SIGINT raises (a test runner's background job may start with it ignored).
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from stridelab.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.Popen([sys.executable, "-c", code, "train", "--env", "ant", "--num-envs", "32", "--num-steps",
                             "16", "--num-minibatches", "4", "--vf-minibatches", "4", "--total-steps", "100000",
                             "--no-progress", "--run-dir", str(run)], stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: (run / rundir.LOCK_NAME).is_file(), 120, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "Exception ignored" not in err and "Traceback" not in err, err[-2000:]
    assert "stopped by SIGINT" in err
    assert not (run / "summary.json").exists()
    if (run / "checkpoints").exists():  # stopped after set-up began writing: a checkpoint to resume
        assert "--resume" in err


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal and /proc are Linux's")
def test_kill_9_of_compare_takes_its_runs_with_it(tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.Popen([sys.executable, "-m", "stridelab", "compare", "--env", "InvertedPendulum-v5", "--algos",
                             "ppo", "--seeds", "1", "--total-steps", "10000000", "--out", str(out), "--video-steps",
                             "0", "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "4",
                             "--vf-minibatches", "4", "--eval-episodes", "0", "--jobs", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lock = out / "ppo_s1" / rundir.LOCK_NAME
    _wait_for(lambda: lock.is_file() and lock.read_text().strip(), 120, proc)
    child = int(lock.read_text())
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        _wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 120)
    finally:
        if Path(f"/proc/{child}").exists():
            os.kill(child, signal.SIGKILL)
    assert rundir.acquire(out / "ppo_s1")  # a re-run finds no live writer
    rundir.release(out / "ppo_s1")


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
