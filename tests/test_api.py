"""The Python API: the CLI's verbs on the same code paths, one exception type for bad input.

A tiny Hopper-v5 run (1,024 PPO steps, in this process) and a tiny compare of PPO and TRPO
(two runs as the CLI starts them) are shared by the tests below.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stridelab
from stridelab.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_envs": 4, "num_steps": 128, "eval_episodes": 2, "eval_every": 512, "progress": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return stridelab.train(env="Hopper-v5", algo="ppo", total_steps=1024, seed=2,
                           run_dir=tmp_path_factory.mktemp("api") / "ppo", **TINY)


def test_importing_stridelab_loads_neither_torch_nor_jax_and_the_verbs_stay_the_apis():
    code = ("import sys, stridelab; heavy = sorted({'torch', 'jax'} & set(sys.modules)); "
            "import stridelab.train, stridelab.compare; "
            "print(heavy, callable(stridelab.train), stridelab.compare.__module__, stridelab.load.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.split() == ["[]", "True", "stridelab.api", "stridelab.api"], out.stderr[-2000:]


def test_train_returns_the_run_with_config_summary_metrics_and_a_curve_from_step_0(run):
    assert isinstance(run, stridelab.Run) and run.path.name == "ppo"
    assert run.config.algo == "ppo" and run.config.env == "Hopper-v5" and run.config.num_envs == 4
    summary = run.summary
    assert summary["global_step"] == 1024
    assert summary["provenance"]["command"].startswith("stridelab.train(env='Hopper-v5', algo='ppo'")
    steps, values = run.curve("eval/episodic_return")
    assert steps.tolist() == [0, 512, 1024] and np.isfinite(values).all()  # the untrained policy first
    rows = run.metrics
    assert [r["step"] for r in rows] == sorted({r["step"] for r in rows}) and rows[0]["step"] == 0
    assert any("losses/policy_loss" in r for r in rows) and "eval/episodic_return" in rows[0]
    assert "ppo on Hopper-v5" in repr(run)
    assert stridelab.load(run.path).summary == summary


def test_evaluate_is_the_cli_eval(run, capsys):
    mine = run.evaluate(episodes=3, seed=5)
    assert main(["eval", str(run.path), "--json", "--episodes", "3", "--seed", "5"]) == 0
    theirs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mine["returns"] == theirs["returns"] and mine["global_step"] == theirs["global_step"] == 1024


def test_export_and_video_write_files_outside_a_notebook(run, tmp_path):
    import onnxruntime

    path = run.export(tmp_path / "policy.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"obs": np.zeros((5, 11), np.float32)})[0].shape == (5, 3)
    assert run.export() == run.path / "policy.onnx"
    video = run.video(tmp_path / "walk.gif", steps=5, width=64, height=48)
    assert video == tmp_path / "walk.gif" and video.is_file()


def _cli_error(argv, capsys):
    assert main(argv) == 2
    return capsys.readouterr().err.strip().split(": error: ", 1)[1]


@pytest.mark.parametrize("call,argv", [
    (lambda: stridelab.train(env="Hopper-v5", algo="ppp"), ["train", "--env", "Hopper-v5", "--algo", "ppp"]),
    (lambda: stridelab.train(env="Hopper-v5", total_steps=-5), ["train", "--env", "Hopper-v5", "--total-steps", "-5"]),
    (lambda: stridelab.train(env="hoper"), ["train", "--env", "hoper"]),
    (lambda: stridelab.train(env="ant", device="gpu"), ["train", "--device", "gpu"]),
    (lambda: stridelab.train(env="ant", num_minibatches=3, num_envs=32, num_steps=16),
     ["train", "--num-minibatches", "3", "--num-envs", "32", "--num-steps", "16"]),
    (lambda: stridelab.train(resume=True, run_dir="/nonexistent/run"), ["train", "--resume", "/nonexistent/run"]),
    (lambda: stridelab.compare(algos=["ppo", "ppo"]), ["compare", "--algos", "ppo", "ppo"]),
    (lambda: stridelab.compare(seeds=0), ["compare", "--seeds", "0"]),
    (lambda: stridelab.compare(algos=["sac"]), ["compare", "--algos", "sac"]),
    (lambda: stridelab.compare(seed=3), ["compare", "--seed", "3"]),
    (lambda: stridelab.compare(num_envs=0), ["compare", "--num-envs", "0"]),
])
def test_bad_arguments_raise_config_error_with_the_clis_message(call, argv, capsys):
    with pytest.raises(stridelab.ConfigError) as info:
        call()
    assert str(info.value) == _cli_error(argv, capsys)


def test_bad_arguments_to_a_runs_verbs(run, tmp_path, capsys):
    for call, argv in [(lambda: run.evaluate(episodes=0), ["eval", str(run.path), "--episodes", "0"]),
                       (lambda: run.export(tmp_path / "p.tflite"), ["export", str(run.path), "--out",
                                                                   str(tmp_path / "p.tflite")]),
                       (lambda: run.video(tmp_path / "w.avi"), ["video", str(run.path), "--out", str(tmp_path / "w.avi")]),
                       (lambda: run.video(steps=0), ["video", str(run.path), "--steps", "0"]),
                       (lambda: run.video(width=20000), ["video", str(run.path), "--width", "20000"]),
                       (lambda: run.evaluate(seed=-1), ["eval", str(run.path), "--seed", "-1"]),
                       (lambda: run.export(tmp_path), ["export", str(run.path), "--out", str(tmp_path)]),
                       (lambda: run.evaluate(checkpoint="step_7"), ["eval", str(run.path), "--checkpoint", "step_7"])]:
        with pytest.raises(stridelab.ConfigError) as info:
            call()
        assert str(info.value) == _cli_error(argv, capsys)


@pytest.mark.parametrize("settings,message", [
    ({"lr": 1e-3}, "unknown setting 'lr'"),
    ({"learning_rat": 1e-3}, "unknown setting 'learning_rat' (did you mean 'learning_rate'?)"),
    ({"num_envs": "x"}, "argument --num-envs: expected an integer, got 'x'"),
    ({"num_envs": 2.5}, "argument --num-envs: expected an integer, got 2.5"),
    ({"hidden_sizes": [64, "x"]}, "argument --hidden-sizes: expected a list of integers"),
    ({"normalize_obs": 1}, "argument --normalize-obs: expected True or False, got 1"),
])
def test_settings_of_the_wrong_name_or_type_are_refused_before_anything_runs(settings, message):
    with pytest.raises(stridelab.ConfigError, match=None) as info:
        stridelab.train(env="Hopper-v5", **settings)
    assert message in str(info.value)
    with pytest.raises(stridelab.ConfigError):
        stridelab.load("/nonexistent/run")


def test_settings_become_the_flags_compare_passes_on():
    from stridelab.api import to_flags

    assert to_flags({"num_envs": 32, "clip_vloss": False, "norm_adv": True, "hidden_sizes": [64, 64],
                     "target_kl": None, "learning_rate": 3e-4}) == [
        "--num-envs", "32", "--no-clip-vloss", "--norm-adv", "--hidden-sizes", "64", "64", "--learning-rate", "0.0003"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "hopper"
    report = stridelab.compare(env="Hopper-v5", algos=["trpo", "ppo"], seeds=1, total_steps=512, out=out,
                               video_steps=8, num_envs=4, num_steps=128, eval_episodes=2, vf_minibatches=4, num_minibatches=4)
    return out, report


def test_compare_returns_the_report_shown_inline(compared):
    out, report = compared
    assert isinstance(report, stridelab.Report) and report.out == out.resolve()
    assert set(report.result["algorithms"]) == {"trpo", "ppo"}
    trpo = report.result["algorithms"]["trpo"]
    assert f"TRPO IQM {trpo['iqm']:.0f}, worst seed {trpo['worst']:.0f}, spread 0" in repr(report)  # one seed
    page = report._repr_html_()
    assert "<th>worst seed</th>" in page and "<th>spread (best - worst)</th>" in page
    assert page.count("data:image/png;base64,") == 2 and "data:image/gif;base64," in page  # curves, finals, video
    assert {"eval_return", "final_return", "train_return"} <= set(report.figures)
    assert report.image("eval_return") == report.figures["eval_return"]  # a path outside a notebook
    assert set(report.videos) == {"trpo", "ppo", "side_by_side"}
    assert set(report.runs()) == {"trpo_s1", "ppo_s1"}
    assert report.result["provenance"]["command"].startswith("stridelab.compare(env='Hopper-v5'")


def test_the_side_by_side_video_is_a_valid_mp4_of_twice_the_width_in_media_and_in_the_report(compared):
    import imageio.v2 as imageio

    out, report = compared
    with imageio.get_reader(out / "media" / "side_by_side.mp4", format="FFMPEG") as reader:
        frames = [f for f in reader]  # list() asks the reader for its length, unknown here
    with imageio.get_reader(out / "media" / "ppo.mp4", format="FFMPEG") as reader:
        single = next(iter(reader))
    assert frames[0].shape[1] == 2 * single.shape[1] and frames[0].shape[0] > single.shape[0]  # + captions
    assert 2 <= len(frames) <= 9
    assert "media/side_by_side.mp4" in report.markdown
    assert (out / "report.html").read_text().count("data:image/gif;base64,") == 3  # side by side, then each


def test_report_has_the_provenance_of_itself_and_its_runs(compared):
    out, report = compared
    md = report.markdown
    assert "## Provenance" in md
    for name in ("stridelab", "torch", "jax", "brax", "mujoco", "gymnasium", "device", "CPU", "GPU", "command",
                 "date (UTC)"):
        assert f"| {name} |" in md, name
    assert "the runs (2 of 2 recorded)" in md
    assert "<h2>Provenance</h2>" in (out / "report.html").read_text()
    for name in ("trpo_s1", "ppo_s1"):
        command = json.loads((out / name / "summary.json").read_text())["provenance"]["command"]
        assert command.startswith("stridelab train --algo") and f"--run-dir {out / name}" in command


def test_the_reports_curves_start_at_step_0(compared):
    from stridelab.report import aligned, group, load_runs

    out, _ = compared
    for algo, runs in group(load_runs(out)).items():
        steps, values = aligned(runs, "eval/episodic_return")
        assert steps[0] == 0 and steps[-1] == 512 and np.isfinite(values).all(), algo


def test_resuming_evaluates_step_0_once(run, tmp_path):
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    copy = tmp_path / "resumed"
    shutil.copytree(run.path, copy)
    resumed = stridelab.train(run_dir=copy, resume=True, total_steps=1536, progress=False)
    steps = []
    for events in sorted((copy / "tb").glob("events.out.tfevents.*")):  # every event, repeats included
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        steps += [e.step for e in acc.Scalars("eval/episodic_return")]
    assert sorted(steps) == [0, 512, 1024, 1536]
    assert resumed.summary["provenance"]["command"].startswith("stridelab.train(run_dir=")


def test_a_run_directory_holding_a_run_is_refused_without_overwrite(run, tmp_path, capsys):
    import hashlib
    import shutil

    def fingerprint(path):
        return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.rglob("*")) if f.is_file()}

    old = tmp_path / "old"
    shutil.copytree(run.path, old)
    before = fingerprint(old)
    with pytest.raises(stridelab.ConfigError) as info:
        stridelab.train(env="Hopper-v5", total_steps=512, run_dir=old, **TINY)
    assert str(info.value) == _cli_error(["train", "--env", "Hopper-v5", "--run-dir", str(old)], capsys)
    assert "already holds a run" in str(info.value) and fingerprint(old) == before
    with pytest.raises(stridelab.ConfigError, match="use it with --resume"):
        stridelab.train(env="Hopper-v5", run_dir=tmp_path / "new", checkpoint="best.ckpt")
    fresh = stridelab.train(env="Hopper-v5", total_steps=512, run_dir=old, overwrite=True, **TINY)
    assert fresh.summary["global_step"] == 512 and "overwrite=True" in fresh.summary["provenance"]["command"]
    assert sorted(p.name for p in (old / "checkpoints").glob("step_*")) == ["step_000000000512.ckpt"]


def test_checkpoint_picks_the_one_loaded_and_evaluated(run):
    import torch

    best = run.path / "checkpoints" / "best.ckpt"
    step = torch.load(best, weights_only=False)["global_step"]
    picked = stridelab.load(run.path, checkpoint="best.ckpt")
    assert picked.evaluate(episodes=1)["global_step"] == step, step
    assert run.evaluate(episodes=1, checkpoint=str(best))["global_step"] == step
    with pytest.raises(stridelab.ConfigError, match="--checkpoint 'nope': no such file"):
        stridelab.load(run.path, checkpoint="nope")
