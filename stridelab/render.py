"""Watch a policy: MP4 or GIF rendered headless with MuJoCo, or Brax's interactive HTML viewer.

Rendering needs no display server: MuJoCo's renderer runs on EGL (Mesa's software rasterizer on
a machine without a GPU). ``MUJOCO_GL`` is set to ``egl`` on Linux unless already set (before
MuJoCo is first imported, see :mod:`stridelab`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stridelab.config import TrainConfig
from stridelab.models import ActorCritic

FORMATS = (".mp4", ".gif", ".html")


EPISODE_STEPS = 300  # a video's length where the task scripts none (env steps)


@dataclass
class Trajectory:
    """One episode and its return: Brax physics states (unbatched pipeline states, rendered
    later) or, for Gymnasium and native MuJoCo tasks, the frames rendered while recording (a
    native MuJoCo task's captioned with the command held, ``captions`` one per frame)."""

    states: list[Any]
    episode_return: float
    dt: float
    sys: Any = None
    frames: list[np.ndarray] | None = None
    steps: int = 0  # env steps the return is summed over (the start frame is not one)
    captions: list[str] | None = None

    def __len__(self) -> int:
        return len(self.frames) if self.frames is not None else len(self.states)


@torch.no_grad()
def record_episode(agent: ActorCritic, cfg: TrainConfig, max_steps: int | None = None, seed: int = 0,
                   deterministic: bool = True, width: int = 320, height: int = 240) -> Trajectory:
    """Run the policy and keep what a video shows, by the task's simulator: one episode of Brax
    physics states or of a Gymnasium task's own frames (``width`` x ``height``), or a native
    MuJoCo task's scripted commands (its ``video_script``), rendered and captioned as it goes.
    At most ``max_steps`` env steps (default: the whole script, or :data:`EPISODE_STEPS`)."""
    from stridelab.envs.registry import simulator_of

    recorders = {"brax": _record_brax, "gymnasium": _record_gymnasium, "mujoco": _record_mujoco}
    simulator = simulator_of(cfg.env)
    if simulator not in recorders:
        raise ValueError(f"no video for {cfg.env}: stridelab renders the {', '.join(recorders)} simulators' tasks")
    return recorders[simulator](agent, cfg, max_steps, seed, deterministic, width, height)


def _record_brax(agent: ActorCritic, cfg: TrainConfig, max_steps: int | None, seed: int, deterministic: bool,
                 width: int, height: int) -> Trajectory:
    """The physics states of one episode (rendered later, :func:`render_frames`)."""
    import jax

    from stridelab.envs import make_env

    env = make_env(cfg.env, 1, backend=cfg.backend, episode_length=cfg.episode_length, env_kwargs=cfg.env_kwargs)
    take_first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
    obs = env.reset(seed)
    states = [take_first(env.pipeline_states)]
    total, steps = 0.0, 0
    for steps in range(1, (max_steps or EPISODE_STEPS) + 1):
        action, _ = agent.act(obs, deterministic=deterministic)
        res = env.step(action)
        total += float(res.reward[0])
        if bool(res.done[0]):  # the env has already restarted; the fall itself is the last frame kept
            break
        states.append(take_first(env.pipeline_states))
        obs = res.obs
    sys = env.brax_env.sys
    env.close()
    return Trajectory(states, total, env.spec.dt, sys, steps=steps)


def _record_gymnasium(agent: ActorCritic, cfg: TrainConfig, max_steps: int | None, seed: int, deterministic: bool,
                      width: int, height: int) -> Trajectory:
    """The env's own frames (a MuJoCo task's camera follows the robot), rendered at every step."""
    from stridelab.envs.gymnasium import GymnasiumVecEnv
    from stridelab.envs.registry import import_task

    env = GymnasiumVecEnv(import_task(cfg.env), 1, episode_length=cfg.episode_length, render_size=(width, height),
                          env_kwargs=cfg.env_kwargs)
    try:
        obs = env.reset(seed)
        frames = [env.render()]
        total, steps = 0.0, 0
        for steps in range(1, (max_steps or EPISODE_STEPS) + 1):
            action, _ = agent.act(obs, deterministic=deterministic)
            res = env.step(action)
            total += float(res.reward[0])
            if bool(res.done[0]):
                break
            frames.append(env.render())
            obs = res.obs
    finally:
        env.close()
    return Trajectory(states=[], episode_return=total, dt=env.spec.dt, frames=frames, steps=steps)


def _record_mujoco(agent: ActorCritic, cfg: TrainConfig, max_steps: int | None, seed: int, deterministic: bool,
                   width: int, height: int) -> Trajectory:
    """The task's ``video_script`` (Go1: stand, walk, turn, sidestep, stop), each command held in
    turn (``hold_commands``), rendered as it goes with the command captioned on every frame; ends
    early at a fall or after ``max_steps``, not at the training time limit. A changed command
    reaches the policy one step later (its observation was taken before): 20 ms at 50 Hz."""
    from stridelab.envs import make_env

    env = make_env(cfg.env, 1, episode_length=2**31 - 1, shards=1,  # the script's length, not training's limit
                   env_kwargs=cfg.env_kwargs)
    try:
        schedule = script_steps(env.task.video_script, env.spec.dt)[:max_steps]
        env.task.hold_commands(np.asarray(schedule[0][0]))
        obs = env.reset(seed)
        with MujocoView(env.sim.batch, width, height) as view:
            frames, captions = [view.frame(schedule[0][1])], [schedule[0][1]]
            total, steps = 0.0, 0
            for steps, (command, caption) in enumerate(schedule, 1):
                env.task.hold_commands(np.asarray(command))
                action, _ = agent.act(obs, deterministic=deterministic)
                res = env.step(action)
                total += float(res.reward[0])
                if bool(res.done[0]):  # fell: the env has already restarted
                    break
                frames.append(view.frame(caption))
                captions.append(caption)
                obs = res.obs
    finally:
        env.close()
    return Trajectory(states=[], episode_return=total, dt=env.spec.dt, frames=frames, steps=steps, captions=captions)


def script_steps(script: Any, dt: float) -> list[tuple[tuple[float, ...], str]]:
    """A video script's ``(seconds, command, caption)`` parts as one ``(command, caption)`` per
    env step of ``dt`` seconds."""
    return [(tuple(command), caption) for seconds, command, caption in script for _ in range(round(seconds / dt))]


class MujocoView:
    """Captioned frames of env 0 of a native MuJoCo batch (``mujoco.batch.Batch``): a camera
    tracking the robot's main body from its front left, rendered on EGL from a copy of that env's
    model, visual meshes (Menagerie's group 2) included.

    On a machine without a GPU, Mesa's software rasterizer draws every pass over the Go1's 206k
    mesh triangles itself: shadows of both lights, the floor's reflection and 4x multisampling
    made a 320 x 240 frame 2-3 x slower than one light's shadow alone, which is what is kept.
    """

    def __init__(self, batch: Any, width: int, height: int, distance: float = 1.3) -> None:
        import mujoco

        self.batch, self.model = batch, batch.get_model(0)  # a copy: the settings below stay off the env's
        self.data = mujoco.MjData(self.model)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, width)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, height)
        self.model.vis.quality.offsamples = 0
        self.model.light_castshadow[1:] = False  # only the first light (Go1: the spotlight on its trunk)
        self.renderer = mujoco.Renderer(self.model, height=height, width=width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        self.camera.trackbodyid, self.camera.distance, self.camera.elevation = 1, distance, -20.0
        self._sync()
        heading = self.data.xmat[1].reshape(3, 3)[:2, 0]  # the body's x axis on the floor
        self.camera.azimuth = math.degrees(math.atan2(heading[1], heading[0])) - 135.0
        self.caption_height = max(16, height // 10)
        self._strips: dict[str, np.ndarray] = {}

    def _sync(self) -> None:
        import mujoco

        self.batch.get_data(0, self.data)
        mujoco.mj_forward(self.model, self.data)

    def frame(self, caption: str) -> np.ndarray:
        """The env's current state, ``[height, width, 3]`` uint8, ``caption`` across the top."""
        self._sync()
        self.renderer.update_scene(self.data, camera=self.camera)
        image = self.renderer.render().copy()
        if caption not in self._strips:
            self._strips[caption] = label_strip(caption, image.shape[1], self.caption_height)
        image[:self.caption_height] = self._strips[caption]
        return image

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> MujocoView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def render_frames(traj: Trajectory, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """RGB frames ``[H, W, 3]`` uint8, the camera tracking the robot's main body."""
    if traj.frames is not None:  # rendered while recording (Gymnasium tasks)
        return traj.frames
    import mujoco

    model = traj.sys.mj_model
    data = mujoco.MjData(model)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
    camera.trackbodyid = 1 if model.nbody > 1 else 0
    camera.distance = 3.5  # metres: the whole robot in view (the model extent includes the floor)
    camera.elevation = -25.0
    camera.azimuth = 90.0
    # The offscreen buffer is the model's (640 x 480 unless it says more); a larger frame needs a larger one.
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    frames = []
    with mujoco.Renderer(model, height=height, width=width) as renderer:
        for state in traj.states:
            data.qpos[:] = np.asarray(state.q)
            data.qvel[:] = np.asarray(state.qd)
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    return frames


LABEL_HEIGHT = 24  # pixels of the caption strip above each policy in a side-by-side video


def label_strip(text: str, width: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """``text`` in white on a dark strip, RGB ``[height, width, 3]`` uint8 (drawn by matplotlib
    once per video, then reused for every frame)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="#222222")
    fig.text(0.5, 0.5, text, color="white", ha="center", va="center", fontsize=0.42 * height,
             family="DejaVu Sans", weight="bold")
    canvas = FigureCanvasAgg(fig)  # off screen, whatever pyplot's backend is
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:height, :width, :3].copy()


def side_by_side(videos: dict[str, list[np.ndarray]]) -> list[np.ndarray]:
    """One video of several, left to right, each under its caption (the dict's keys). A video
    that ends earlier (the robot fell) holds its last frame until the longest ends."""
    if not videos:
        raise ValueError("side_by_side needs at least one video")
    shapes = {frames[0].shape for frames in videos.values()}
    if len(shapes) != 1:
        raise ValueError(f"the videos' frames differ in size: {sorted(shapes)}")
    height, width, _ = shapes.pop()
    labels = [label_strip(text, width) for text in videos]
    length = max(len(frames) for frames in videos.values())
    out = []
    for i in range(length):
        columns = [np.vstack([label, frames[min(i, len(frames) - 1)]])
                   for label, frames in zip(labels, videos.values())]
        out.append(np.hstack(columns))
    return out


def write_video(frames: list[np.ndarray], path: Path, fps: float) -> Path:
    """MP4 (H.264 through imageio-ffmpeg) or GIF (Pillow), played at ``fps``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        from PIL import Image

        # Browsers play GIF frames shorter than 20 ms at 100 ms: keep at most 50 frames a second
        # by dropping frames, so the playback stays real time.
        stride = max(1, math.ceil(fps / 50.0))
        frames, fps = frames[::stride], fps / stride

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=1000.0 / fps, loop=0)
    else:
        import warnings

        import imageio.v2 as imageio

        # imageio-ffmpeg starts ffmpeg with fork+exec; Python warns about forking a process that
        # runs JAX threads, but the child execs ffmpeg at once and never touches them.
        warnings.filterwarnings("ignore", message="os.fork\\(\\) was called", category=RuntimeWarning)
        with imageio.get_writer(path, fps=fps, codec="libx264", quality=7, macro_block_size=8,
                                ffmpeg_log_level="error") as writer:
            for f in frames:
                writer.append_data(f)
    return path


def write_html(traj: Trajectory, path: Path) -> Path:
    """Brax's interactive three.js viewer as one self-contained page that works offline."""
    if traj.sys is None:
        raise ValueError("the HTML viewer is Brax's and shows Brax tasks only; write .mp4 or .gif for this task")
    from brax.io import json as brax_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(viewer_page(brax_json.dumps(traj.sys, traj.states)), encoding="utf-8")
    return path


# Brax's viewer modules, shipped in its wheel; viewer.js imports the other three.
_BRAX_MODULES = ("viewer.js", "animator.js", "selector.js", "system.js")
_IMPORT = re.compile(r"""\b(?:import|from)\s*['"]([^'"]+)['"]""")


def viewer_page(system_json: str, title: str = "stridelab: Brax viewer") -> str:
    """The HTML page for Brax's system JSON (``brax.io.json.dumps(sys, states)``), with Brax's
    viewer, three.js, lil-gui and pako inlined (see stridelab/render_assets/README.md).

    Brax's own page (``brax.io.html``) loads these from public CDNs and stays blank offline.
    """
    from importlib import resources

    assets = resources.files("stridelab") / "render_assets"
    modules = {name: _pack(source) for name, source in _viewer_modules(assets).items()}
    fill = {"__TITLE__": html.escape(title), "__PAKO__": (assets / "pako_inflate.min.js").read_text(),
            "__SYSTEM__": _pack(system_json), "__MODULES__": json.dumps(modules, indent=0)}
    return re.sub("|".join(fill), lambda m: fill[m.group(0)], (assets / "viewer.html").read_text())


def _viewer_modules(assets: Any) -> dict[str, str]:
    """Import-map specifier -> ES module source, every import of every module among the keys.

    Brax's modules import their siblings by relative path (``'./system.js'``), which a ``blob:``
    URL cannot resolve, so those imports are renamed to bare specifiers (``'brax-viewer/system.js'``).
    """
    from importlib import resources

    modules = {"three": (assets / "three.module.js").read_text(),
               "three/addons/controls/OrbitControls.js": (assets / "OrbitControls.js").read_text(),
               "lilgui": (assets / "lil-gui.esm.min.js").read_text()}
    brax_js = resources.files("brax") / "visualizer" / "js"
    for name in _BRAX_MODULES:
        source = re.sub(r"""from\s*(['"])\./([\w-]+\.js)\1""", r"from 'brax-viewer/\2'",
                        (brax_js / name).read_text())
        modules["viewer" if name == "viewer.js" else f"brax-viewer/{name}"] = source
    for name, source in modules.items():  # a Brax release with another import fails here, not blank
        missing = set(_IMPORT.findall(source)) - modules.keys()
        if missing:
            raise RuntimeError(f"the viewer module {name!r} imports {sorted(missing)}, which stridelab does not bundle")
    return modules


def _pack(text: str) -> str:
    """zlib-compressed, base64-encoded text (the page inflates it with pako)."""
    return base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


@dataclass
class InlineViewer:
    """A viewer page shown inline in a Jupyter notebook (``_repr_html_``: an iframe whose
    ``srcdoc`` holds the whole page), so it needs neither IPython here nor a file server."""

    page: str
    height: int = 480

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.page, quote=True)}" '
                f'style="width: 100%; height: {int(self.height)}px; border: 0"></iframe>')


def show_html(path: Path, height: int = 480) -> InlineViewer:
    """Show a page written by ``stridelab video RUN --out walk.html`` in a notebook: make this the
    last expression of a cell (or pass it to ``IPython.display.display``)."""
    return InlineViewer(Path(path).read_text(encoding="utf-8"), height)


def make_video(agent: ActorCritic, cfg: TrainConfig, out: Path, max_steps: int | None = None, seed: int = 0,
               width: int = 320, height: int = 240, deterministic: bool = True) -> tuple[Path, Trajectory, int]:
    """Record an episode (see :func:`record_episode`; ``max_steps`` by default the task's whole
    video script, or :data:`EPISODE_STEPS`) and write it to ``out`` (.mp4, .gif or .html);
    returns the frame count."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"unknown video format {out.suffix or out.name!r}; use one of {', '.join(FORMATS)}")
    from stridelab.envs.registry import simulator_of

    if out.suffix == ".html" and simulator_of(cfg.env) != "brax":
        raise ValueError(f"the HTML viewer is Brax's; {cfg.env} is a {simulator_of(cfg.env)} task: write .mp4 or .gif")
    traj = record_episode(agent, cfg, max_steps, seed=seed, deterministic=deterministic, width=width, height=height)
    if out.suffix == ".html":
        return write_html(traj, out), traj, len(traj.states)
    frames = render_frames(traj, width, height)
    return write_video(frames, out, fps=1.0 / traj.dt), traj, len(frames)
