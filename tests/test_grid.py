"""benchmarks/grid.py: a grid over algorithms, switches and seeds whose per-run JSONs make it
resumable anywhere the repository is."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def grid(tmp_path, *extra):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "InvertedPendulum-v5",
           "--algos", "ppo", "--seeds", "1", "2", "--total-steps", "512", "--vary", "norm_adv=true,false",
           "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--nice", "0",
           "--num-envs", "4", "--num-steps", "64", "--eval-episodes", "2", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_the_grid_records_each_run_and_skips_what_is_recorded(tmp_path):
    first = grid(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    files = sorted((tmp_path / "results").glob("*.json"))
    assert [f.stem for f in files] == [f"InvertedPendulum-v5_ppo_norm_adv={v}_s{s}" for v in ("false", "true")
                                       for s in (1, 2)]
    data = json.loads(files[0].read_text())
    assert data["config"]["norm_adv"] is False and data["config"]["num_envs"] == 4 and data["seed"] == 1
    assert data["summary"]["global_step"] == 512 and [s for s, _ in data["eval_curve"]] == [0, 512]
    again = grid(tmp_path)
    assert again.returncode == 0 and "0 runs to do" in again.stdout
    # Seed 2 recorded again as if the presets had changed its discount: the table says the seeds differ.
    seed2 = tmp_path / "results" / "InvertedPendulum-v5_ppo_norm_adv=true_s2.json"
    data = json.loads(seed2.read_text())
    data["config"]["gamma"] = 0.5
    seed2.write_text(json.dumps(data))
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grid_table.py"), str(tmp_path / "results")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    rows = [line for line in table.stdout.splitlines() if "InvertedPendulum" in line]
    assert len(rows) == 2 and ["settings differ" in row for row in rows] == [False, True], table.stdout
    assert "ppo norm_adv=true (settings differ between seeds: gamma)" in rows[1]
    # A grid of the presets adopts the recorded runs whose config is its own (norm_adv is on by
    # default; seed 2's "true" run now has another discount) and trains only seed 2.
    adopting = grid(tmp_path, "--vary", "--results", str(tmp_path / "presets"), "--adopt", str(tmp_path / "results"))
    assert adopting.returncode == 0, adopting.stderr[-3000:] + adopting.stdout[-3000:]
    assert "InvertedPendulum-v5_ppo_s1: adopting results/InvertedPendulum-v5_ppo_norm_adv=true_s1" in adopting.stdout
    assert "1 runs to do" in adopting.stdout and "training InvertedPendulum-v5_ppo_s2" in adopting.stdout
    adopted = json.loads((tmp_path / "presets" / "InvertedPendulum-v5_ppo_s1.json").read_text())
    assert adopted["copied_from"] == "results/InvertedPendulum-v5_ppo_norm_adv=true_s1: the same config"
    assert adopted["name"] == "InvertedPendulum-v5_ppo_s1" and adopted["switches"] == {}


def test_a_second_grid_skips_the_runs_another_grid_holds(tmp_path):
    (tmp_path / "runs").mkdir()
    held = [open(tmp_path / "runs" / f".InvertedPendulum-v5_ppo_norm_adv={v}_s{s}.claim", "a")
            for v, s in (("true", 1), ("false", 1), ("true", 2))]
    for lock in held:  # as the first grid holds the runs it is training
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    second = grid(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:] + second.stdout[-3000:]
    assert second.stdout.count("another grid is running it") == 3
    assert [f.stem for f in (tmp_path / "results").glob("*.json")] == ["InvertedPendulum-v5_ppo_norm_adv=false_s2"]
    for lock in held:
        lock.close()
    assert "3 runs to do" in grid(tmp_path, "--dry-run").stdout


def test_runs_are_niced_as_a_session_and_ctrl_c_stops_each_at_a_checkpoint(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "InvertedPendulum-v5",
           "--algos", "ppo", "--seeds", "1", "--total-steps", "10000000", "--runs", str(tmp_path / "runs"),
           "--results", str(tmp_path / "results"), "--nice", "10", "--num-envs", "4", "--num-steps", "64",
           "--eval-episodes", "0", "--checkpoint-every", "1"]
    # As from a terminal: a shell without job control (CI's) starts its children ignoring SIGINT.
    grid_proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        run_dir = tmp_path / "runs" / "InvertedPendulum-v5_ppo_s1"
        deadline = time.monotonic() + 120
        while not list((run_dir / "checkpoints").glob("*.ckpt")) and time.monotonic() < deadline:
            time.sleep(0.5)  # until it trains
        children = Path(f"/proc/{grid_proc.pid}/task/{grid_proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        child = int(children[0])
        assert os.getsid(child) == child != os.getsid(grid_proc.pid)  # a session of its own
        nice = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice == min(19, os.nice(0) + 10)
        if Path("/proc/self/autogroup").exists():  # where sessions are scheduled as groups, its group too
            assert Path(f"/proc/{child}/autogroup").read_text().split()[-1] == "10"
        grid_proc.send_signal(signal.SIGINT)
        out, err = grid_proc.communicate(timeout=180)
    finally:
        grid_proc.kill()  # only if an assertion above failed: the run then stops with it
    assert grid_proc.returncode == 1 and "[grid] interrupted: every run stopped at a checkpoint" in err, err[-3000:]
    assert not Path(f"/proc/{child}").exists()
    log = (tmp_path / "runs" / ".InvertedPendulum-v5_ppo_s1.log").read_text()
    assert "stopped by SIGINT; checkpoint written" in log and "continue with: stridelab train --resume" in log, log
    assert "--resume" in subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, timeout=60, cwd=ROOT).stdout


def test_the_grid_runs_seed_by_seed_across_tasks(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "Hopper-v5", "Ant-v5",
           "--algos", "ppo", "--seeds", "1", "2", "--total-steps", "512", "--results", str(tmp_path),
           "--runs", str(tmp_path / "runs"), "--dry-run"]
    planned = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    runs = [line.split("--run-dir ")[1].split()[0].rsplit("/", 1)[1] for line in planned.stdout.splitlines()[1:]]
    assert runs == ["Hopper-v5_ppo_s1", "Ant-v5_ppo_s1", "Hopper-v5_ppo_s2", "Ant-v5_ppo_s2"]


def test_a_run_with_a_checkpoint_is_resumed_and_a_bad_vary_is_one_line(tmp_path):
    run_dir = tmp_path / "runs" / "InvertedPendulum-v5_ppo_norm_adv=true_s1"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    stopped_early = tmp_path / "runs" / "InvertedPendulum-v5_ppo_norm_adv=false_s1"  # before its first checkpoint
    stopped_early.mkdir(parents=True)
    (stopped_early / "config.json").write_text("{}")
    planned = grid(tmp_path, "--dry-run")
    assert planned.returncode == 0 and "4 runs to do" in planned.stdout
    assert f"--resume {run_dir}" in planned.stdout
    lines = planned.stdout.splitlines()
    assert [("--overwrite" in line) for line in lines if "--run-dir" in line] == [True, False, False]
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "ant",
                          "--algos", "ppo", "--total-steps", "10", "--vary", "init_std", "--dry-run"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "--vary 'init_std': write NAME=VALUE" in bad.stderr
    nowhere = grid(tmp_path, "--adopt", str(tmp_path / "nowhere"), "--dry-run")
    assert nowhere.returncode != 0 and nowhere.stderr.strip() == f"--adopt {tmp_path / 'nowhere'}: not a folder of a grid's results"


def test_the_grid_runs_as_ray_tasks_records_each_run_and_reports_a_failed_one(tmp_path, one_ray_cluster_at_a_time):
    pytest.importorskip("ray")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "InvertedPendulum-v5",
           "--algos", "ppo", "--seeds", "1", "--total-steps", "512", "--vary", "init_std=0.5,-1",
           "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--nice", "0",
           "--num-envs", "4", "--num-steps", "64", "--eval-episodes", "2", "--launcher", "ray"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 1, done.stderr[-3000:] + done.stdout[-3000:]
    assert done.stdout.count("(Ray task)") == 2 and "InvertedPendulum-v5_ppo_init_std=-1_s1 failed (exit 2)" in done.stdout
    files = list((tmp_path / "results").glob("*.json"))
    assert [f.stem for f in files] == ["InvertedPendulum-v5_ppo_init_std=0.5_s1"]
    assert json.loads(files[0].read_text())["summary"]["global_step"] == 512
    stray = grid(tmp_path, "--ray-address", "auto", "--dry-run")
    assert stray.returncode != 0 and stray.stderr.strip() == "grid.py: --ray-address needs --launcher ray"
    placed = grid(tmp_path, "--launcher", "ray", "--jobs", "2", "--dry-run")
    assert placed.returncode != 0 and "--jobs 2: with --launcher ray, Ray places the runs" in placed.stderr


def test_the_peers_run_as_grid_algorithms_and_are_recorded_alike(tmp_path):
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("sb3_contrib")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "grid.py"), "--name", "t", "--env", "InvertedPendulum-v5",
           "--algos", "sb3-ppo", "sb3-trpo", "--seeds", "1", "--total-steps", "1000", "--nice", "0",
           "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    scratch = tmp_path / "tmp"  # the runs' temporary directory: SB3 left to itself makes a folder there per learn()
    scratch.mkdir()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert not list(scratch.glob("SB3-*"))
    for algo, library in (("sb3-ppo", "stable-baselines3"), ("sb3-trpo", "sb3-contrib")):
        data = json.loads((tmp_path / "results" / f"InvertedPendulum-v5_{algo}_s1.json").read_text())
        # 1,000 steps asked, one whole rollout of 2,048 trained (PPO: 1 env x 2,048; TRPO: 2 x 1,024).
        assert data["peer"]["library"] == library and data["peer"]["steps"] == data["summary"]["global_step"] == 2048
        returns = data["peer"]["eval_returns"]
        assert len(returns) == 16 and data["summary"]["eval/episodic_return"] == pytest.approx(sum(returns) / 16)
    table = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "grid_table.py"), str(tmp_path / "results")],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert table.returncode == 0 and "sb3-trpo" in table.stdout, table.stderr[-2000:]
    mixed = subprocess.run([*cmd, "--vary", "init_std=0.3", "--dry-run"], capture_output=True, text=True, timeout=60,
                           cwd=ROOT)
    assert mixed.returncode != 0 and "--algos sb3-ppo sb3-trpo: the peers run with their own settings" in mixed.stderr
