"""Headless rendering: the video decodes with the expected number of frames."""

import imageio.v3 as iio
import pytest
from PIL import Image

from stridelab.config import TrainConfig
from stridelab.models import ActorCritic
from stridelab.render import make_video

STEPS = 12


@pytest.fixture(scope="module")
def agent_and_cfg():
    return ActorCritic(27, 8, init_std=0.3), TrainConfig(env="ant", seed=0)


def test_mp4_decodes_with_one_frame_per_step_and_plays_at_real_time(agent_and_cfg, tmp_path):
    agent, cfg = agent_and_cfg
    path, traj, n = make_video(agent, cfg, tmp_path / "walk.mp4", max_steps=STEPS)
    assert n == STEPS + 1  # the first state and one per step: standing still never falls in 12 steps
    frames = iio.imread(path, plugin="pyav") if _has_pyav() else _ffmpeg_frames(path)
    assert len(frames) == STEPS + 1
    assert frames[0].shape == (240, 320, 3)
    assert frames[0].std() > 5  # not a blank image
    assert 1.0 / traj.dt == pytest.approx(20.0)  # Ant's dt is 0.05 s


def test_gif_and_html(agent_and_cfg, tmp_path):
    agent, cfg = agent_and_cfg
    gif, _, n = make_video(agent, cfg, tmp_path / "walk.gif", max_steps=5, width=64, height=48)
    with Image.open(gif) as im:
        assert im.n_frames == n == 6 and im.size == (64, 48)
        assert im.info["duration"] == pytest.approx(50, abs=1)
    page, _, _ = make_video(agent, cfg, tmp_path / "walk.html", max_steps=5)
    assert "<html" in page.read_text().lower()


def test_unknown_format_is_refused(agent_and_cfg, tmp_path):
    with pytest.raises(ValueError, match="unknown video format '.avi'"):
        make_video(*agent_and_cfg, tmp_path / "walk.avi", max_steps=2)


def _has_pyav():
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def _ffmpeg_frames(path):
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        return [f for f in reader]
