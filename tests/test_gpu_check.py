"""benchmarks/gpu_check.py: its rehearsal on the CPU runs every stage to the end, and a stage past
its budget is cut off while the next stages still run."""

import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import gpu_check as gc

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict, str]:
    """The rehearsal as a user runs it (in this Python), once for the tests below."""
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--rehearsal", "--python", sys.executable,
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert (out / "results.json").is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_the_rehearsal_runs_every_stage_to_the_end(rehearsal) -> None:
    proc, results, _ = rehearsal
    statuses = {name: s["status"] for name, s in results["stages"].items()}
    assert statuses == {name: "ok" for name in gc.STAGES}, proc.stdout[-3000:]
    assert proc.returncode == 0
    assert results["rehearsal"] is True
    assert all(s["seconds"] <= s["budget_s"] for s in results["stages"].values())


def test_the_rehearsal_reports_devices_install_and_tests(rehearsal) -> None:
    _, results, _ = rehearsal
    dev = results["stages"]["devices"]
    assert dev["torch"] and dev["jax"] and dev["jax_devices"]
    assert dev["dlpack"]["zero_copy"] is True  # the adapter's hand-over shares the buffer
    install = results["stages"]["install"]
    assert "pip install" in install["planned_install"]
    assert install["cuda_extra"] == (shutil.which("nvidia-smi") is not None)
    tests = results["stages"]["tests"]
    assert set(tests) >= {"gpu", "sample"}
    assert all(tests[k]["rc"] == 0 and "passed" in tests[k]["summary"] for k in ("gpu", "sample"))


def test_the_rehearsal_measures_every_part_and_rates_the_goals(rehearsal) -> None:
    _, results, md = rehearsal
    rows = results["stages"]["throughput"]["measurements"]
    assert {(r["part"], r["num_envs"]) for r in rows} == {(p, n) for p in gc.PARTS for n in results["plan"]["sizes"]}
    for r in rows:
        assert r["status"] == "ok" and r["sps"] > 0 and r["first_update_s"] > 0, r
        assert f"{r['sps']:,.0f}" in md
    for g in results["goals"]:
        assert g["ppo_over_simulator"] > 0 and g["ppo_over_brax_ppo"] > 0
        assert {g["ppo_over_simulator_verdict"], g["ppo_over_brax_ppo_verdict"]} <= {"PASS", "FAIL"}
        assert f"{g['ppo_over_simulator']:.2f} {g['ppo_over_simulator_verdict']}" in md


def test_the_rehearsal_trains_and_reads_the_evaluations_against_time(rehearsal) -> None:
    _, results, md = rehearsal
    t = results["stages"]["training"]
    assert t["rc"] == 0 and t["stopped_at_time_limit"] is False
    points = t["eval"]
    assert len(points) == results["plan"]["eval_points"] + 1  # and the untrained policy's at step 0
    steps = [p["step"] for p in points]
    assert steps[0] == 0
    walls = [p["wall_clock_s"] for p in points]
    assert steps == sorted(steps) and steps[-1] == t["total_steps"]
    assert all(w is not None and w >= 0 for w in walls) and walls == sorted(walls)
    for p in points:
        assert math.isfinite(p["return"])
        assert f"| {p['step']:,} | {p['wall_clock_s']:.1f} | {p['return']:.1f} |" in md


def test_without_a_gpu_the_memory_is_null_and_said_so(rehearsal) -> None:
    _, results, md = rehearsal
    if shutil.which("nvidia-smi") or results["stages"]["devices"]["torch_cuda"]:
        pytest.skip("this machine has a GPU")
    mem = results["peak_memory"]
    assert (mem["torch_mib"], mem["jax_mib"], mem["nvidia_smi_mib"]) == (None, None, None)
    assert "no CUDA device and no nvidia-smi" in md


def test_a_stage_past_its_budget_is_timed_out_and_the_next_stage_still_runs(tmp_path: Path) -> None:
    # Importing torch and JAX alone takes longer than 0.5 s: the devices stage cannot finish.
    plan = replace(gc.REHEARSAL_PLAN, stages=("devices", "tests"),
                   budgets={**gc.REHEARSAL_PLAN.budgets, "devices": 0.5},
                   tests={"sample": ["tests/test_gae.py", "-x"]})
    results = gc.check(plan, tmp_path, python=sys.executable)
    devices, tests = results["stages"]["devices"], results["stages"]["tests"]
    assert devices["status"] == "timed out after 0.5 s"
    assert devices["seconds"] < 5  # killed at its budget, not waited for
    assert tests["status"] == "ok" and "passed" in tests["sample"]["summary"]
    md = (tmp_path / "results.md").read_text()
    assert "| devices | timed out after 0.5 s |" in md and "| tests | ok |" in md
    assert json.loads((tmp_path / "results.json").read_text())["stages"]["devices"]["status"] == devices["status"]


def _python_child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_a_child_is_stopped_with_sigterm_first_and_killed_at_its_deadline(tmp_path: Path) -> None:
    graceful = _python_child(tmp_path, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: (print("checkpointed", flush=True), sys.exit(0)))
        print("ready", flush=True)
        time.sleep(60)
    """)
    t0 = time.monotonic()
    c = gc.run_child(graceful, deadline=t0 + 30, stop_at=t0 + 2)
    assert (c.stopped, c.timed_out, c.rc) == (True, False, 0) and "checkpointed" in c.out
    assert c.seconds < 10

    stubborn = _python_child(tmp_path, """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(60)
    """)
    t0 = time.monotonic()
    c = gc.run_child(stubborn, deadline=t0 + 2, stop_at=t0 + 0.5)
    assert (c.stopped, c.timed_out) == (True, True) and c.rc == -9
    assert c.seconds < 6


def test_the_goals_are_pass_fail_or_unmeasured_per_size() -> None:
    sps = {2048: {"simulator": 100.0, "stridelab-ppo": 90.0, "brax-ppo": 80.0},  # 0.90 PASS, 1.12 PASS
           8192: {"simulator": 100.0, "stridelab-ppo": 80.0, "brax-ppo": 81.0},  # 0.80 FAIL, 0.99 FAIL
           32768: {"simulator": 100.0}}  # PPO not measured
    rows = [{"num_envs": n, "part": part, "sps": v} for n, parts in sps.items() for part, v in parts.items()]
    rows.append({"num_envs": 32768, "part": "stridelab-ppo", "status": "timed out after 60 s"})
    g = {r["num_envs"]: r for r in gc.goals(rows, [2048, 8192, 32768])}
    assert (g[2048]["ppo_over_simulator_verdict"], g[2048]["ppo_over_brax_ppo_verdict"]) == ("PASS", "PASS")
    assert (g[8192]["ppo_over_simulator_verdict"], g[8192]["ppo_over_brax_ppo_verdict"]) == ("FAIL", "FAIL")
    assert g[32768]["ppo_over_simulator"] is None
    assert g[32768]["ppo_over_simulator_verdict"] == g[32768]["ppo_over_brax_ppo_verdict"] == "unmeasured"
    results = {"goals": list(g.values()), "stages": {"throughput": {"measurements": rows}}}
    table = "\n".join(gc._throughput_table(results))
    assert "| 8,192 | 100 | 80 | 81 | - | 0.80 FAIL | 0.99 FAIL |" in table
    assert "| 32,768 | 100 | timed out after 60 s | - | - | - unmeasured | - unmeasured |" in table


def test_the_gpu_plan_fits_eight_minutes_and_its_training_steps_fill_two() -> None:
    plan = gc.GPU_PLAN
    assert sum(plan.budgets.values()) <= 480 and set(plan.budgets) == set(gc.STAGES)
    assert plan.sizes == [2048, 8192, 32768] and plan.train_seconds == 120
    measured = {"stages": {"throughput": {"measurements": [
        {"part": "stridelab-ppo", "num_envs": 2048, "sps": 100_000.0}]}}}
    total, every = gc.training_steps(plan, measured)
    batch = 2048 * gc.STEPS_PER_ENV
    assert every % batch == 0 and total == 2 * plan.eval_points * every
    assert abs(every * plan.eval_points - 100_000 * 120) < batch * plan.eval_points  # evaluations fill the time


def test_the_gpu_training_run_gets_its_two_minutes_then_time_to_checkpoint_and_be_read() -> None:
    plan, t0 = gc.GPU_PLAN, 1000.0
    stop_at, kill_at = gc.training_clock(plan.train_seconds, t0, t0 + plan.budgets["training"])
    assert stop_at == t0 + plan.train_seconds  # not shortened by the stage's budget
    assert kill_at - stop_at >= gc.STOP_GRACE_S and kill_at < t0 + plan.budgets["training"]
    stop_at, _ = gc.training_clock(300.0, t0, t0 + 100)  # a budget too small for the time asked
    assert stop_at == t0 + 100 - gc.READ_RESERVE_S - gc.STOP_GRACE_S
