"""Headless rendering: the video decodes with the expected number of frames; the HTML viewer is
one self-contained page."""

import base64
import html
import json
import re
import zlib
from importlib import resources

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from stridelab.config import TrainConfig
from stridelab.models import ActorCritic
from stridelab.render import make_video, show_html

STEPS = 12


@pytest.fixture(scope="module")
def agent_and_cfg():
    return ActorCritic(27, 8, init_std=0.3), TrainConfig(env="ant", seed=0)


def test_mp4_decodes_with_one_frame_per_step_and_plays_at_real_time(agent_and_cfg, tmp_path):
    agent, cfg = agent_and_cfg
    path, traj, n = make_video(agent, cfg, tmp_path / "walk.mp4", max_steps=STEPS)
    assert n == STEPS + 1  # the first state and one per step: standing still never falls in 12 steps
    assert traj.steps == STEPS  # what a caption's "over N steps" says: the start frame is no step
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


def _unpack(b64: str) -> str:
    return zlib.decompress(base64.b64decode(b64)).decode("utf-8")


def test_html_viewer_loads_nothing_from_the_network_and_carries_viewer_and_trajectory(agent_and_cfg, tmp_path):
    page, _, frames = make_video(*agent_and_cfg, tmp_path / "walk.html", max_steps=8)
    text = page.read_text()
    assert not re.search(r"""\bsrc\s*=\s*["']?\s*(https?:)?//""", text, re.I)  # no <script src="http...">
    assert not re.search(r"""\bhref\s*=\s*["']?\s*(https?:)?//""", text, re.I)  # no stylesheet or icon links
    modules = {name: _unpack(b64) for name, b64 in
               json.loads(re.search(r"var MODULES_B64 = (\{.*?\});", text, re.S).group(1)).items()}
    for name, source in modules.items():
        assert not re.search(r"""\b(import|from)\s*\(?\s*["'](https?:)?//""", source), name
        imported = set(re.findall(r"""\b(?:import|from)\s*["']([^"']+)["']""", source))
        assert imported <= modules.keys(), (name, imported - modules.keys())  # all served from the page
    brax_js = resources.files("brax") / "visualizer" / "js"
    assert modules["viewer"].replace("'brax-viewer/", "'./") == (brax_js / "viewer.js").read_text()
    assert modules["brax-viewer/system.js"] == (brax_js / "system.js").read_text()
    assert "REVISION = '150'" in modules["three"]  # three.js r150, the one Brax's viewer names
    assert "pako 2.1.0" in text and "p as GUI" in modules["lilgui"]  # pako inline, lil-gui exports GUI
    system = json.loads(_unpack(re.search(r'var SYSTEM_B64 = "([^"]+)"', text).group(1)))
    assert len(system["states"]["x"]) == frames == 9 and len(system["link_names"]) == 9  # Ant: torso + 8 limbs
    assert len(text) < 600_000  # about 0.45 MB, most of it three.js (compressed)


def test_show_html_embeds_the_whole_page_for_a_notebook(tmp_path):
    page = "<html><body><script>var a = \"x\" && 1 < 2;</script></body></html>"
    (tmp_path / "walk.html").write_text(page)
    shown = show_html(tmp_path / "walk.html", height=300)._repr_html_()
    srcdoc = re.fullmatch(r'<iframe srcdoc="([^"]*)" style="[^"]*height: 300px[^"]*"></iframe>', shown).group(1)
    assert html.unescape(srcdoc) == page


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


def test_side_by_side_doubles_the_width_labels_each_policy_and_holds_the_shorter_ones_last_frame(tmp_path):
    from stridelab.render import LABEL_HEIGHT, label_strip, side_by_side, write_video

    red = [np.full((48, 64, 3), (200, 30, 30), np.uint8) for _ in range(6)]
    blue = [np.full((48, 64, 3), (30, 30, 200), np.uint8) for _ in range(4)]  # fell after 4 frames
    blue[-1][10:20] = 255
    frames = side_by_side({"PPO": red, "TRPO": blue})
    assert len(frames) == 6 and frames[0].shape == (48 + LABEL_HEIGHT, 128, 3)
    assert (frames[0][LABEL_HEIGHT:, :64] == red[0]).all() and (frames[0][LABEL_HEIGHT:, 64:] == blue[0]).all()
    assert (frames[5][LABEL_HEIGHT:, 64:] == blue[-1]).all()  # held
    strip = label_strip("PPO", 64)
    assert strip.shape == (LABEL_HEIGHT, 64, 3) and strip.std() > 5  # text drawn on the strip
    assert not np.array_equal(label_strip("TRPO", 64), strip)
    path = write_video(frames, tmp_path / "both.mp4", fps=20)
    decoded = iio.imread(path, plugin="pyav") if _has_pyav() else _ffmpeg_frames(path)
    assert len(decoded) == 6 and decoded[0].shape == (48 + LABEL_HEIGHT, 128, 3)
    with pytest.raises(ValueError, match="differ in size"):
        side_by_side({"a": red, "b": [np.zeros((10, 10, 3), np.uint8)]})


def test_a_go1_video_follows_its_command_script_captioned_frame_by_frame(tmp_path, monkeypatch):
    """A short script at a small size (Go1's own is 13 s: stand, walk, turn, sidestep, stop); the
    untrained policy stands through it. The caption strip stays within a command and changes
    between commands, in the decoded MP4 too."""
    from stridelab.envs.go1 import Go1Joystick

    script = ((0.1, (0.0, 0.0, 0.0), "stand"), (0.1, (0.5, 0.0, 0.0), "walk forward 0.5 m/s"),
              (0.06, (0.0, 0.0, 0.8), "turn left 0.8 rad/s"))
    monkeypatch.setattr(Go1Joystick, "video_script", script)
    agent, cfg = ActorCritic(48, 12, init_std=0.3), TrainConfig(env="Go1JoystickFlatTerrain", seed=0)
    path, traj, n = make_video(agent, cfg, tmp_path / "go1.mp4", width=96, height=64)
    assert n == traj.steps + 1 == 5 + 5 + 3 + 1  # the whole script: no fall, no time limit
    assert traj.captions == ["stand"] * 6 + ["walk forward 0.5 m/s"] * 5 + ["turn left 0.8 rad/s"] * 3
    frames = np.stack(iio.imread(path, plugin="pyav") if _has_pyav() else _ffmpeg_frames(path)).astype(float)
    assert frames.shape == (n, 64, 96, 3) and frames[0, 16:].std() > 5  # the scene under the caption
    strip = frames[:, :16]
    change = [np.abs(strip[i + 1] - strip[i]).mean() for i in range(n - 1)]
    assert max(change[:5] + change[6:10] + change[11:]) < 2.0 < min(change[5], change[10])
