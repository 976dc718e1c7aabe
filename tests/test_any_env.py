"""Any environment (issue 31): a user's own Gymnasium env by id (``module:EnvId``) with
constructor arguments, a Python factory, a Brax env registered by the user, the presets of a task
without its own, MuJoCo's warnings, and every bad input as one line and exit code 2.

``tests/user_envs`` is the user's package: it registers ``PointMass-v0`` on import. Runs are tiny
(a few hundred steps) and made once per module; the verbs run in this process (``main([...])``)."""

import json
import math

import numpy as np
import pytest

import stridelab
from stridelab.cli import main
from stridelab.envs import factories, make_env
from stridelab.envs.arguments import check_recordable, format_pair, parse_pair
from tests.test_cli import assert_one_line_and_exit_2
from tests.user_envs import PointMass, make_point_mass, make_point_mass_vector

ID = "tests.user_envs:PointMass-v0"
TINY = ["--num-envs", "2", "--num-steps", "64", "--num-minibatches", "2", "--vf-minibatches", "2",
        "--eval-episodes", "2", "--no-progress"]
TINY_API = dict(num_envs=2, num_steps=64, num_minibatches=2, vf_minibatches=2, eval_episodes=2, progress=False)


def goals_reaching_the_env(verb):
    """The ``goal`` of every PointMass the callable ``verb`` made (and its result)."""
    PointMass.goals_made.clear()
    result = verb()
    return set(PointMass.goals_made), result


# --- --env-kwargs: the KEY=VALUE syntax -------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("xml_file=scene.xml", ("xml_file", "scene.xml")),
    ("xml_file=/a/b/scene.xml", ("xml_file", "/a/b/scene.xml")),
    ("frame_skip=25", ("frame_skip", 25)),
    ("contact_cost_weight=5e-4", ("contact_cost_weight", 5e-4)),
    ("healthy_z_range=0.195,0.75", ("healthy_z_range", (0.195, 0.75))),
    ("healthy_z_range=(0.195, 0.75)", ("healthy_z_range", (0.195, 0.75))),
    ("include_cfrc_ext_in_observation=true", ("include_cfrc_ext_in_observation", True)),
    ("exclude_current_positions_from_observation=False", ("exclude_current_positions_from_observation", False)),
    ("camera_name=none", ("camera_name", None)),
    ("name='25'", ("name", "25")),
    ("words=a,b", ("words", ("a", "b"))),
])
def test_env_kwargs_read_as_typed_in_a_shell(text, expected):
    assert parse_pair(text) == expected
    assert parse_pair(format_pair(*expected)) == expected  # compare hands them on unchanged


@pytest.mark.parametrize("text", ["frame_skip", "=3", "2x=3"])
def test_env_kwargs_without_a_name_are_refused(text):
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_pair(text)


@pytest.mark.parametrize("kwargs,needle", [({"a": np.zeros(2)}, "numpy.ndarray cannot be saved"),
                                           ({"a": math.nan}, "non-finite number nan"),
                                           ({"a": [1, object()]}, "builtins.object cannot be saved")])
def test_env_kwargs_config_json_cannot_hold_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        check_recordable(kwargs)


# --- the user's env by id, from the command line ----------------------------------------------


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """256 steps of PPO on the user's env with goal=1.0, trained by the command's own main()."""
    run = tmp_path_factory.mktemp("any_env") / "cli"
    goals, code = goals_reaching_the_env(lambda: main(["train", "--env", ID, "--env-kwargs", "goal=1.0",
                                                       "--total-steps", "256", "--run-dir", str(run), *TINY]))
    assert code == 0
    return run, goals


def test_the_cli_trains_the_users_env_with_its_arguments_recorded(cli_run):
    run, goals = cli_run
    assert goals == {1.0}  # training's and evaluation's envs got the argument
    config = json.loads((run / "config.json").read_text())
    assert config["env"] == ID and config["env_kwargs"] == {"goal": 1.0}
    assert config["episode_length"] == 50  # the env's registered time limit
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 256
    presets = summary["presets"]
    assert presets["own"] is False and presets["tables"][-2:] == ["gymnasium", "gymnasium.ppo"]
    assert "no preset of its own: it trains with the gymnasium family's defaults" in presets["note"]


def test_the_cli_evaluates_renders_and_exports_the_same_env(cli_run, tmp_path, capsys):
    run, _ = cli_run
    capsys.readouterr()
    goals, code = goals_reaching_the_env(lambda: main(["eval", str(run), "--episodes", "3", "--json"]))
    assert code == 0 and goals == {1.0}
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["returns"]) == 3
    video = tmp_path / "walk.mp4"
    goals, code = goals_reaching_the_env(lambda: main(["video", str(run), "--out", str(video), "--steps", "10"]))
    assert code == 0 and goals == {1.0}
    import imageio.v3 as iio

    frames = iio.imread(video)
    assert frames.shape[1:] == (240, 320, 3)  # the env's 64 x 48 frames, resized to the size asked for
    assert frames.std() > 5
    assert main(["export", str(run), "--out", str(tmp_path / "p.onnx")]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    actions = session.run(None, {"obs": np.zeros((5, 3), dtype=np.float32)})[0]
    assert actions.shape == (5, 1) and bool((np.abs(actions) <= 1).all())


def test_the_cli_resumes_the_same_env_and_refuses_another(cli_run, capsys):
    run, _ = cli_run
    goals, code = goals_reaching_the_env(lambda: main(["train", "--resume", str(run), "--total-steps", "384",
                                                       "--no-progress"]))
    assert code == 0 and goals == {1.0}
    assert json.loads((run / "summary.json").read_text())["global_step"] == 384
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--env-kwargs", "goal=2"])
    assert_one_line_and_exit_2(code, capsys.readouterr().err, "a resumed run keeps the env it was trained on")


def test_compare_runs_the_users_env_with_two_algorithms(tmp_path):
    out = tmp_path / "cmp"
    code = main(["compare", "--env", ID, "--algos", "ppo", "trpo", "--seeds", "1", "--total-steps", "256",
                 "--video-steps", "0", "--out", str(out), "--env-kwargs", "goal=1.0", *TINY[:-1]])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["algorithms"]) == ["ppo", "trpo"]
    assert "| env_kwargs | {'goal': 1.0} | {'goal': 1.0} |" in (out / "report.md").read_text()
    for name in ("ppo_s1", "trpo_s1"):
        config = json.loads((out / name / "config.json").read_text())
        assert config["env"] == ID and config["env_kwargs"] == {"goal": 1.0}
        assert json.loads((out / name / "summary.json").read_text())["global_step"] == 256


# --- from Python: the id with env_kwargs, and a factory ---------------------------------------


def test_python_trains_an_id_with_env_kwargs_and_its_verbs_rebuild_it(tmp_path):
    goals, run = goals_reaching_the_env(lambda: stridelab.train(env=ID, env_kwargs={"goal": -1.0}, total_steps=128,
                                                                run_dir=tmp_path / "id", **TINY_API))
    assert goals == {-1.0} and run.config.env_kwargs == {"goal": -1.0}
    for verb in (lambda: run.evaluate(episodes=2), lambda: run.video(steps=3),
                 lambda: stridelab.train(run_dir=run.path, resume=True, total_steps=256)):
        assert goals_reaching_the_env(verb)[0] == {-1.0}
    assert run.export().is_file() and run.summary["global_step"] == 256


def test_a_factory_run_records_the_function_and_its_verbs_take_it_again(tmp_path, monkeypatch, capsys):
    run = stridelab.train(env=make_point_mass, total_steps=128, run_dir=tmp_path / "f", **TINY_API)
    assert run.config.env == "factory:tests.user_envs.make_point_mass"
    assert run.path.name == "f" and run.summary["global_step"] == 128
    monkeypatch.delitem(factories._FACTORIES, run.config.env)  # as in a later process
    with pytest.raises(stridelab.ConfigError, match=r"stridelab.load\(RUN_DIR, env=make_point_mass\)"):
        stridelab.load(run.path).evaluate()
    capsys.readouterr()
    assert_one_line_and_exit_2(main(["eval", str(run.path)]), capsys.readouterr().err,
                               "is a Python function this process was not given")
    assert run.export().is_file()  # needs no env
    again = stridelab.load(run.path, env=make_point_mass)
    goals, result = goals_reaching_the_env(lambda: again.evaluate(episodes=2))
    assert goals == {-0.5} and len(result["returns"]) == 2
    assert again.video(steps=3).is_file()
    resumed = stridelab.train(env=make_point_mass, run_dir=run.path, resume=True, total_steps=256)
    assert resumed.summary["global_step"] == 256


def test_a_run_on_a_named_env_refuses_a_factory(cli_run):
    with pytest.raises(stridelab.ConfigError, match="not on a Python function; drop env="):
        stridelab.load(cli_run[0], env=make_point_mass)


def test_a_factory_of_vector_envs_is_asked_for_each_count(tmp_path):
    run = stridelab.train(env=make_point_mass_vector, total_steps=128, run_dir=tmp_path / "v", **TINY_API)
    assert len(run.evaluate(episodes=3)["returns"]) == 3  # 2 envs to train, 3 to evaluate


def test_compare_refuses_a_factory(tmp_path):
    with pytest.raises(stridelab.ConfigError, match="a Python function cannot reach"):
        stridelab.compare(env=make_point_mass, algos=["ppo"], seeds=1, total_steps=128, out=tmp_path / "c")


# --- Brax: an env the user registered ---------------------------------------------------------


def test_a_brax_env_the_user_registered_trains_with_the_fused_rollout(tmp_path):
    import jax
    from brax.envs import register_environment
    from brax.envs.inverted_pendulum import InvertedPendulum

    from stridelab.envs.brax import plan_shards

    register_environment("stridelab_tests_pendulum", InvertedPendulum)
    run = stridelab.train(env="stridelab_tests_pendulum", total_steps=1024, num_envs=32, num_steps=16,
                          num_minibatches=4, vf_minibatches=4, eval_episodes=0, episode_length=100, progress=False,
                          run_dir=tmp_path / "b")
    assert run.summary["rollout/fused"] == 1.0 and run.summary["presets"]["family"] == "brax"
    env = make_env("stridelab_tests_pendulum", 256)
    assert env.shards == plan_shards("auto", 256, len(jax.devices("cpu")))[0]  # split over the cores, as Ant
    env.close()
    from stridelab.envs.registry import simulator_of

    assert simulator_of("tests.user_envs.brax_envs:user_pendulum") == "brax"  # registered by importing its module


# --- presets of a task without its own --------------------------------------------------------


@pytest.mark.parametrize("env,limit", [("InvertedPendulum-v5", 1000), ("Pusher-v5", 100)])
def test_a_task_without_presets_takes_its_familys_and_its_registered_time_limit(env, limit):
    from stridelab.config import build_config, presets_used

    used = presets_used(env, "trpo")
    assert used["own"] is False and used["tables"] == ["common", "trpo", "gymnasium", "gymnasium.trpo"]
    assert used["note"].startswith(f"{env} has no preset of its own: it trains with the gymnasium family's "
                                   f"defaults ([gymnasium], [gymnasium.trpo]")
    cfg = build_config({"env": env, "algo": "trpo"})
    assert (cfg.episode_length, cfg.cg_iters, cfg.num_steps) == (limit, 25, 256)
    assert "note" not in presets_used("Hopper-v5", "trpo")


def test_default_run_directories_name_the_task_plainly():
    from stridelab.config import run_name

    assert [run_name(e) for e in (ID, "factory:__main__.<lambda>", "phys2d/CartPole-v1", "Hopper-v5")] == [
        "PointMass-v0", "_lambda_", "phys2d_CartPole-v1", "Hopper-v5"]


def test_max_episode_steps_among_env_kwargs_is_the_time_limit():
    from stridelab.config import build_config

    cfg = build_config({"env": "Hopper-v5", "env_kwargs": {"max_episode_steps": 300, "frame_skip": 5}})
    assert cfg.episode_length == 300 and cfg.env_kwargs == {"frame_skip": 5}


def test_ant_v5_takes_the_menagerie_go1_as_gymnasiums_tutorial_does():
    """Gymnasium's Go1 tutorial's arguments, through the env's constructor: 12 joints, not 8."""
    import mujoco_menagerie as mm

    try:
        scene = str(mm.get("unitree_go1").xml("scene"))
    except mm.MenagerieError as e:
        pytest.skip(f"no Menagerie Go1 here: {e}")
    kwargs = {"xml_file": scene, "forward_reward_weight": 1, "ctrl_cost_weight": 0.05, "contact_cost_weight": 5e-4,
              "healthy_reward": 1, "main_body": 1, "healthy_z_range": [0.195, 0.75], "frame_skip": 25,
              "include_cfrc_ext_in_observation": True, "exclude_current_positions_from_observation": False,
              "reset_noise_scale": 0.1}
    env = make_env("Ant-v5", 1, env_kwargs=kwargs)
    assert env.spec.act_dim == 12 and env.spec.dt == pytest.approx(0.05)  # 25 x 2 ms
    env.close()


# --- bad input: one line, exit code 2, nothing written -----------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--env", "CartPole-v1"], "CartPole-v1's action space is Discrete(2): stridelab trains continuous actions only"),
    (["--env", "tests.user_envs:PointMassMultiDiscrete-v0"], "action space is MultiDiscrete([3 3])"),
    (["--env", "tests.user_envs:PointMassDictObs-v0"], "observation space is Dict("),
    (["--env", "tests.user_envs:PointMassImageObs-v0"], "observation is an image (Box(0, 255, (48, 64, 3), uint8))"),
    (["--env", "PointMas-v0"], "unknown env 'PointMas-v0'"),
    (["--env", "tests.user_envs:PointMas-v0"], "module 'tests.user_envs' registers no env 'PointMas-v0' (did you "
                                                "mean 'PointMass-v0'?)"),
    (["--env", "tests.user_envs.broken:X-v0"], "importing module 'tests.user_envs.broken' failed "
                                                "(ModuleNotFoundError: No module named 'stridelab_tests_no_such"),
    (["--env", ID, "--env-kwargs", "gaol=1"], "--env-kwargs gaol=1: PointMass-v0 rejected its arguments "
                                              "(TypeError: PointMass.__init__() got an unexpected keyword argument 'gaol'"),
    (["--env", "Hopper-v5", "--env-kwargs", "xml_file=no_such.xml"], "Gymnasium could not make 'Hopper-v5' with "
                                                                     "--env-kwargs xml_file='no_such.xml' (OSError"),
    (["--env", "Hopper-v5", "--env-kwargs", "frame_skip"], "--env-kwargs: expected KEY=VALUE"),
    (["--env", "Go1JoystickFlatTerrain", "--env-kwargs", "a=1"], "--env-kwargs a: Go1JoystickFlatTerrain has no "
                                                                  "such setting; it takes action_scale, command_range"),
    (["--env", "Hopper-v5", "--env-kwargs", "max_episode_steps=200", "--episode-length", "100"], "disagree"),
])
def test_bad_env_input_is_one_line_exit_2_and_writes_nothing(args, needle, tmp_path, capsys):
    run = tmp_path / "run"
    try:
        code = main(["train", *args, "--run-dir", str(run)])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert_one_line_and_exit_2(code, capsys.readouterr().err, needle)
    assert not run.exists()


# --- MuJoCo's warnings: through Python's warnings, once ----------------------------------------

SETTOTALMASS = ('<mujoco><compiler settotalmass="5"/><worldbody><body><freejoint/><geom size=".1"/></body>'
                '</worldbody></mujoco>')


def test_mujoco_warnings_on_loading_a_model_are_python_warnings_reported_once(monkeypatch, capfd):
    import mujoco

    from stridelab.envs import model_warnings

    monkeypatch.setattr(model_warnings, "_reported", set())  # as in a fresh process
    with pytest.warns(model_warnings.MujocoWarning, match="MuJoCo: compiler attribute 'settotalmass' is deprecated") \
            as caught:
        with model_warnings.mujoco_warnings():
            with model_warnings.mujoco_warnings():  # nested (a table of envs): the outermost block reports
                mujoco.MjModel.from_xml_string(SETTOTALMASS)
            assert not caught
            mujoco.MjModel.from_xml_string(SETTOTALMASS)
        with model_warnings.mujoco_warnings():
            mujoco.MjModel.from_xml_string(SETTOTALMASS)  # reported already
    assert len(caught) == 1
    assert "WARNING" not in capfd.readouterr().err  # MuJoCo printed nothing itself
    assert mujoco.get_mju_user_warning() is None  # and has its own handler back


def test_a_simulator_without_constructor_arguments_refuses_env_kwargs_in_one_line(monkeypatch):
    import stridelab.envs.mujoco as native  # every built-in takes them: a plugin simulator may not

    monkeypatch.setattr(native, "ENV_KWARGS", False)
    with pytest.raises(ValueError, match=r"^--env-kwargs: native MuJoCo's tasks take no constructor arguments "
                                         r"\(Gymnasium's and Brax's do\)$"):
        make_env("Go1JoystickFlatTerrain", 1, env_kwargs={"action_scale": 0.4})
