"""The same commands on a Gymnasium MuJoCo task, through the command's own ``main`` in this
process (``stridelab envs``, whose stderr and stdout interleave as a terminal shows them, in a
subprocess)."""

import json

import pytest

from tests.test_cli import stridelab_here, stridelab_in_fixture


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gym") / "trpo"
    proc = stridelab_in_fixture("train", "--env", "Hopper-v5", "--algo", "trpo", "--total-steps", "2048",
                                "--num-envs", "4", "--num-steps", "256", "--vf-epochs", "2", "--eval-episodes", "2",
                                "--no-progress", "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_config_in_effect_is_saved_and_shown_by_eval(hopper_run, capsys):
    saved = json.loads((hopper_run / "config.json").read_text())
    assert saved["env"] == "Hopper-v5" and saved["normalize_reward"] is True and saved["cg_iters"] == 25
    assert saved["num_envs"] == 4  # the flag beat the preset
    code, out, err = stridelab_here(capsys, "eval", hopper_run, "--episodes", "2")
    assert code == 0, err[-3000:]
    assert "(trpo, Hopper-v5, 2,048 steps)" in out
    assert "config: algo=trpo env=Hopper-v5" in out and "cg_iters=25" in out


def test_video_of_a_gymnasium_task(hopper_run, tmp_path, capsys):
    out = tmp_path / "hop.mp4"
    code, _, err = stridelab_here(capsys, "video", hopper_run, "--out", out, "--steps", "20")
    assert code == 0, err[-3000:]
    import imageio.v3 as iio

    frames = iio.imread(out)
    assert frames.shape[1:] == (240, 320, 3) and 2 <= frames.shape[0] <= 21
    assert frames.std() > 5  # a picture, not a blank frame
    code, _, err = stridelab_here(capsys, "video", hopper_run, "--out", tmp_path / "hop.html")
    assert code == 2 and "HTML viewer is Brax's" in err
    assert len(err.strip().splitlines()) == 1


def test_envs_lists_both_simulators_with_sizes_and_no_mujoco_warning_inside_the_table():
    """stdout and stderr as one stream, in the order a terminal shows them: MuJoCo 4's compiler
    warning for HalfCheetah's files (Gymnasium's and Brax's) comes once, after the table."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "stridelab", "envs"], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = [line for line in proc.stdout.splitlines() if "warp" not in line]  # JAX's optional-backend notes
    header = next(i for i, line in enumerate(lines) if line.startswith("env "))
    end = next(i for i in range(header + 1, len(lines)) if len(lines[i].split()) != 6)  # the first line not a row
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1:end]}
    assert rows["ant"][:3] == ["brax", "27", "8"]
    assert rows["swimmer"][0] == "brax"
    assert rows["Hopper-v5"][:3] == ["gymnasium", "11", "3"]
    assert rows["HalfCheetah-v5"][:3] == ["gymnasium", "17", "6"]
    assert rows["Reacher-v5"][3] == "50" and rows["Pusher-v5"][3] == "100"  # the registered time limits
    assert rows["InvertedPendulum-v5"][4] == "family" and rows["Hopper-v5"][4] == "own"
    assert len([r for r in rows.values() if r[0] == "gymnasium"]) == 11
    warnings = [i for i, line in enumerate(lines) if "settotalmass" in line]
    assert len(warnings) == 1 and warnings[0] >= end, lines  # once, after the table
    assert "MujocoWarning: MuJoCo: compiler attribute 'settotalmass' is deprecated" in lines[warnings[0]]
    assert any("any registered Gymnasium id" in line for line in lines[end:])
