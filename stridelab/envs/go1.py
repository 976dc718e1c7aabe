"""``Go1JoystickFlatTerrain``: a Unitree Go1 follows velocity commands on flat ground.

Three parts, kept apart: the robot (Menagerie's Go1, edited in memory: PD gains, the physics
options that make a CPU fast, the sensors the task reads), the task (commands, observations,
rewards, termination, domain randomization; all numpy over the batch) and the deploy
description (:meth:`Go1Joystick.deploy_spec`), generated from the same constants the env uses so
the two cannot drift. Every term and range, with its source (MuJoCo Playground's
``locomotion/go1/joystick.py``, mjlab's velocity task, legged_gym), is in docs/design.md,
"Go1JoystickFlatTerrain: terms and their sources". The simulator is :mod:`stridelab.envs.mujoco`;
this module needs only its ``BatchedSim``'s arrays.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import mujoco
import numpy as np

from stridelab.envs.menagerie import robot_spec

NAME = "Go1JoystickFlatTerrain"
ROBOT = "unitree_go1"  # Menagerie's name
FEET = ("FR", "FL", "RR", "RL")  # Menagerie's foot geoms and sites
TRUNK, IMU, FLOOR, HOME = "trunk", "imu", "floor", "home"
FOOT_RADIUS = 0.023  # m, the foot spheres
SIM_DT = 0.004  # s per physics step (Playground)
SUBSTEPS = 5  # physics steps per control step: 50 Hz control
CTRL_DT = SIM_DT * SUBSTEPS
KP, KD = 35.0, 0.5  # N m / rad, N m s / rad: the PD gains of every joint (Playground, mjlab)
PGS_ITERATIONS = 10
POSE_WEIGHTS = np.array([1.0, 1.0, 0.1] * 4)  # hip, thigh, calf: the knee may bend to walk (Playground)

# The observation, in order: (name, size, uniform noise amplitude at noise level 1, meaning).
# Scales are all 1 (the policy normalizes its inputs). Noise amplitudes from Playground.
OBSERVATION = (
    ("base_lin_vel", 3, 0.1, "velocimeter at the imu site, trunk frame, m/s"),
    ("base_ang_vel", 3, 0.2, "gyro at the imu site, trunk frame, rad/s"),
    ("projected_gravity", 3, 0.05, "unit gravity direction in the trunk frame ([0, 0, -1] upright)"),
    ("joint_pos", 12, 0.03, "joint angles minus the default pose, rad, in actuator order"),
    ("joint_vel", 12, 1.5, "joint velocities, rad/s, in actuator order"),
    ("last_action", 12, 0.0, "the previous action, as the policy output it"),
    ("command", 3, 0.0, "forward m/s, sideways m/s, yaw rate rad/s"),
)

# Each part from a plain MuJoCo model and data of Menagerie's go1 scene (no sensors added; ``m``,
# ``d``), and where a real Go1 gets it: the deploy description carries both (docs/robots.md;
# examples/go1_deploy_loop.py implements the first, tests/test_go1_deploy.py checks it against
# :meth:`Go1Joystick.observation_parts`). ``mj_objectVelocity(..., 1)`` is [angular, linear].
OBSERVATION_SOURCES = {
    "base_lin_vel": ("mj_objectVelocity(m, d, mjOBJ_SITE, site 'imu', flg_local=1)[3:6]: the imu site's linear "
                     "velocity in the site's frame (MuJoCo's velocimeter sensor)",
                     "no sensor measures it: a state estimator's body-frame velocity (legged odometry: IMU + "
                     "leg kinematics + foot contacts, e.g. a Kalman filter)"),
    "base_ang_vel": ("mj_objectVelocity(m, d, mjOBJ_SITE, site 'imu', flg_local=1)[0:3]: the trunk's angular "
                     "velocity in the imu site's frame (MuJoCo's gyro sensor)", "the IMU's gyroscope"),
    "projected_gravity": ("d.xmat[body 'trunk'].reshape(3, 3).T @ [0, 0, -1]: world -z in the trunk frame",
                          "R(q).T @ [0, 0, -1] with R(q) the rotation of the IMU's orientation quaternion q"),
    "joint_pos": ("d.qpos[m.jnt_qposadr[j]] - default_joint_pos, j over joint_names in order",
                  "the motors' encoder angles, in joint_names order, minus default_joint_pos"),
    "joint_vel": ("d.qvel[m.jnt_dofadr[j]], j over joint_names in order", "the motors' velocity readings"),
    "last_action": ("the policy's previous output (zeros before the first step)", "the same"),
    "command": ("the velocity command in the trunk frame: forward (x) m/s, sideways (y, left) m/s, yaw rate "
                "(about z, counterclockwise) rad/s", "the joystick, scaled into command_ranges"),
}

# The left-right reflection (the world mirrored in the trunk's x-z plane): each observation part's
# sign per component; joint-space parts swap each right leg with its left one and negate the hip
# (abduction) angles. Menagerie's Go1 is mirror-symmetric but for the trunk's centre of mass (2 mm
# off the middle), and its home pose is (hips at 0).
REFLECTED_SIGNS = {
    "base_lin_vel": (1, -1, 1), "base_ang_vel": (-1, 1, -1), "projected_gravity": (1, -1, 1),
    "command": (1, -1, -1),  # forward stays, sideways and yaw turn round
}
JOINT_PARTS = ("joint_pos", "joint_vel", "last_action")
MIRROR_LEGS = {"FR": "FL", "FL": "FR", "RR": "RL", "RL": "RR"}

# The scripted commands a video of the task follows: (seconds, command, caption).
VIDEO_SCRIPT = (
    (2.0, (0.0, 0.0, 0.0), "stand"),
    (3.0, (0.5, 0.0, 0.0), "walk forward 0.5 m/s"),
    (3.0, (0.0, 0.0, 0.8), "turn left 0.8 rad/s"),
    (3.0, (0.0, 0.3, 0.0), "sidestep left 0.3 m/s"),
    (2.0, (0.0, 0.0, 0.0), "stop"),
)

# Reward weights, per second of simulated time: a step's reward is dt x the weighted sum, floored
# at 0, plus dt x termination's on the step the robot falls, added after the floor (legged_gym).
REWARD_WEIGHTS = {
    "tracking_lin_vel": 1.0, "tracking_ang_vel": 0.5, "lin_vel_z": -0.5, "ang_vel_xy": -0.05,
    "orientation": -5.0, "pose": 0.5, "stand_still": -1.0, "dof_pos_limits": -1.0, "torques": -0.0002,
    "action_rate": -0.01, "feet_clearance": -2.0, "feet_slip": -0.1, "feet_air_time": 0.1, "termination": -1.0,
}


@dataclass(frozen=True)
class Randomization:
    """Domain randomization switches, all off ("nominal"); :meth:`all_on` is "randomized". The
    physical ones are redrawn for each env at every episode start; ranges are in :class:`Go1Config`."""

    foot_friction: bool = False
    payload: bool = False
    com_shift: bool = False
    motor_strength: bool = False
    pushes: bool = False
    action_latency: bool = False

    @classmethod
    def all_on(cls) -> Randomization:
        return cls(**{f.name: True for f in dataclasses.fields(cls)})

    @classmethod
    def parse(cls, text: str) -> Randomization:
        """``none``, ``all`` or a comma list of switch names (``foot_friction,pushes``), as
        ``--randomize`` takes it; ``ValueError`` (one line naming the bad value and the allowed
        ones) otherwise."""
        names = [f.name for f in dataclasses.fields(cls)]
        text = str(text).strip()
        if text in ("none", "all"):
            return cls() if text == "none" else cls.all_on()
        asked = [part.strip() for part in text.split(",")]
        bad = [part for part in asked if part not in names]
        if bad:
            import difflib

            close = difflib.get_close_matches(bad[0], names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown randomization {bad[0]!r} in --randomize {text!r}{hint}; choose none, all, or "
                             f"a comma list of {', '.join(names)}")
        return cls(**dict.fromkeys(asked, True))


@dataclass(frozen=True)
class Go1Config:
    """The task's constants, with units. Defaults: Playground's Go1 joystick unless noted."""

    action_scale: float = 0.5  # rad of joint target per unit action
    # The evaluated commands' sideways 0.5 m/s and in-place turns at 1 rad/s lie inside these ranges,
    # and one command in nine is a pure turn, one in fourteen a pure sidestep (ours, measured:
    # docs/results.md, "Go1"; at (1.0, 0.5, 1.0) and (0.9, 0.25, 0.5) TRPO barely turned in place).
    command_range: tuple[float, float, float] = (1.0, 0.6, 1.2)  # |forward| m/s, |sideways| m/s, |yaw| rad/s
    command_nonzero: tuple[float, float, float] = (0.6, 0.5, 0.6)  # chance each axis is drawn nonzero
    standing_fraction: float = 0.1  # chance a whole command is exactly zero (mjlab's rel_standing_envs)
    command_seconds: tuple[float, float] = (3.0, 8.0)  # time to the next redraw (mjlab)
    noise_level: float = 1.0  # multiplies OBSERVATION's noise amplitudes (0: exact readings)
    tracking_sigma: float = 0.25  # (m/s)^2, (rad/s)^2
    max_foot_height: float = 0.1  # m, the swing height feet_clearance asks for
    air_time_s: float = 0.1  # s, steps shorter than this are penalized by feet_air_time
    soft_limit: float = 0.95  # fraction of each joint's range dof_pos_limits allows, centred (legged_gym)
    max_tilt_deg: float = 70.0  # a fall (mjlab's bad_orientation)
    min_base_height: float = 0.12  # m, a fall (ours: the trunk box's bottom is 0.057 m below its centre)
    reset_velocity: float = 0.5  # m/s and rad/s: base velocities drawn at reset, uniform +-
    reward_weights: dict[str, float] = field(default_factory=lambda: dict(REWARD_WEIGHTS))
    # Hwangbo et al. 2019's cost curriculum: the penalty terms (negative weights but termination's)
    # are scaled by ``start`` when training begins, growing linearly to 1 over the first ``ramp``
    # of training. (1.0, 0.0): the full penalties throughout. Outside training the scale is 1.
    # (0.3, 0.5): Hwangbo's start; both algorithms walked 2-3M steps sooner (docs/results.md, "Go1").
    penalty_curriculum: tuple[float, float] = (0.3, 0.5)  # (start, ramp: a fraction of training)
    randomization: Randomization = Randomization()
    friction_range: tuple[float, float] = (0.4, 1.0)  # feet's sliding friction (Playground's floor range)
    payload_kg: tuple[float, float] = (-1.0, 2.0)  # added to the trunk (legged_gym -1..1, plus a 2 kg payload)
    com_shift_m: tuple[float, float, float] = (0.025, 0.025, 0.03)  # trunk CoM offset, uniform +- (mjlab)
    motor_strength: tuple[float, float] = (0.9, 1.1)  # kp and torque limit scale, per motor
    push_interval_s: tuple[float, float] = (1.0, 3.0)  # time between kicks (mjlab's push_robot)
    push_velocity: float = 0.5  # m/s, uniform +- added to the base's x and y velocity (mjlab)
    # Chance an episode's actions arrive one step late (action_latency on), else at once: a policy
    # trained always late fell turning on time (docs/results.md, "Go1"); robots' delays vary.
    latency_chance: float = 0.5

    def with_kwargs(self, kwargs: dict[str, Any]) -> Go1Config:
        """This config with fields replaced by ``--env-kwargs`` (``command_range=1.5,0.8,1.2``,
        ``reward_weights={'pose': 0}``: the named terms only); ``ValueError``, one line naming the
        bad key or value and what is allowed."""
        fields = [f.name for f in dataclasses.fields(self) if f.name != "randomization"]
        changes = {}
        for key, value in kwargs.items():
            if key not in fields:
                import difflib

                close = difflib.get_close_matches(key, fields, n=1)
                hint = (" (domain randomization is --randomize)" if key == "randomization"
                        else f" (did you mean {close[0]!r}?)" if close else "")
                raise ValueError(f"--env-kwargs {key}: {NAME} has no such setting{hint}; it takes {', '.join(fields)}")
            changes[key] = _field_value(key, value, getattr(self, key))
        return dataclasses.replace(self, **changes)


def _field_value(key: str, value: Any, default: Any) -> Any:
    """``value`` in the form of ``default`` (a number, a tuple of as many numbers, or reward
    weights by term), or ``ValueError`` naming it."""
    if isinstance(default, dict):
        if not isinstance(value, dict) or not set(value) <= set(default):
            raise ValueError(f"--env-kwargs {key}={value!r}: give a dict of terms to weights; terms: {', '.join(default)}")
        return {**default, **{k: _field_value(f"{key}[{k!r}]", v, default[k]) for k, v in value.items()}}
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise ValueError(f"--env-kwargs {key}={value!r}: give {len(default)} numbers, e.g. "
                             f"{key}={','.join(map(str, default))}")
        return tuple(_field_value(key, v, d) for v, d in zip(value, default, strict=True))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"--env-kwargs {key}={value!r}: give a number, e.g. {key}={default}")
    return float(value)


# --- the robot ---------------------------------------------------------------------------------


@functools.cache
def build_model() -> mujoco.MjModel:
    """Menagerie's Go1 scene, edited: shared (read-only) by every env built in this process."""
    spec = robot_spec(ROBOT, "scene")
    _fast_physics(spec)
    _collisions(spec)
    _pd_actuators(spec)
    _sensors(spec)
    model = spec.compile()
    _stand_on_the_floor(model)
    return model


def _fast_physics(spec: Any) -> None:
    """Playground's step (0.004 s, implicitfast, which integrates the PD's damping stably) with
    mjbatch's CPU solver: pyramidal cones and PGS, 10 iterations. Newton with Playground's single
    iteration is faster but blew up 18 of 256 envs in 60 random-action steps; Menagerie's own
    settings (elliptic cones, impratio 100, Newton) are 2.2 x slower (docs/benchmarks.md)."""
    spec.option.timestep = SIM_DT
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    spec.option.impratio = 1.0
    spec.option.solver = mujoco.mjtSolver.mjSOL_PGS
    spec.option.iterations = PGS_ITERATIONS


def _collisions(spec: Any) -> None:
    """Only the feet and the trunk touch the floor, never each other: a walking Go1 meets the
    ground with its feet, and the trunk's contact is what a fall is. The legs' capsules pass
    through the floor (as in Playground's feet-only scene); colliding them too made a step 1.4 x
    slower (docs/benchmarks.md)."""
    for geom in spec.geoms:
        if geom.name == FLOOR or (geom.contype == 0 and geom.conaffinity == 0):  # the floor, or visual
            continue
        if geom.name in FEET or geom.parent.name == TRUNK:
            geom.contype, geom.conaffinity = 0, 1  # touches the floor (contype 1) only
        else:
            geom.contype = geom.conaffinity = 0
        if geom.name in FEET:
            geom.condim = 3  # sliding friction in a pyramidal cone; the trunk's stays frictionless


def _pd_actuators(spec: Any) -> None:
    """Position actuators as the PD loop of Go1's motors (kp, kd); the joints' own damping goes,
    the PD's kd replaces it (Playground). Torque limits and joint ranges stay the Menagerie's."""
    for joint in spec.joints:
        if joint.type == mujoco.mjtJoint.mjJNT_HINGE:
            joint.damping = [0.0, 0.0, 0.0]
    for actuator in spec.actuators:
        actuator.set_to_position(kp=KP, kv=KD)


def _sensors(spec: Any) -> None:
    """Everything the task reads, computed by MuJoCo inside the batched step; each kind's four
    feet (or twelve motors) in a row, so the task reads them as one slice."""
    kind, site, geom = mujoco.mjtSensor, mujoco.mjtObj.mjOBJ_SITE, mujoco.mjtObj.mjOBJ_GEOM
    spec.add_sensor(name="gyro", type=kind.mjSENS_GYRO, objtype=site, objname=IMU)
    spec.add_sensor(name="linvel", type=kind.mjSENS_VELOCIMETER, objtype=site, objname=IMU)
    spec.add_sensor(name="upvector", type=kind.mjSENS_FRAMEZAXIS, objtype=mujoco.mjtObj.mjOBJ_XBODY,
                    objname="world", reftype=mujoco.mjtObj.mjOBJ_XBODY, refname=TRUNK)  # world z, trunk frame
    for foot in FEET:
        spec.add_sensor(name=f"{foot}_pos", type=kind.mjSENS_FRAMEPOS, objtype=site, objname=foot)
    for foot in FEET:
        spec.add_sensor(name=f"{foot}_vel", type=kind.mjSENS_FRAMELINVEL, objtype=site, objname=foot)
    found = [1 << int(mujoco.mjtConDataField.mjCONDATA_FOUND), 0, 1]  # data "found", no reduction, 1 match
    for foot in FEET:
        spec.add_sensor(name=f"{foot}_contact", type=kind.mjSENS_CONTACT, objtype=geom, objname=foot,
                        reftype=geom, refname=FLOOR, intprm=found)
    spec.add_sensor(name="trunk_contact", type=kind.mjSENS_CONTACT, objtype=mujoco.mjtObj.mjOBJ_BODY,
                    objname=TRUNK, reftype=geom, refname=FLOOR, intprm=found)
    for actuator in spec.actuators:
        spec.add_sensor(name=f"{actuator.name}_torque", type=kind.mjSENS_ACTUATORFRC,
                        objtype=mujoco.mjtObj.mjOBJ_ACTUATOR, objname=actuator.name)


def _sensor_slice(model: mujoco.MjModel, first: str, last: str) -> slice:
    """The columns of ``sensordata`` from sensor ``first`` to sensor ``last``, both included."""
    a, b = model.sensor(first), model.sensor(last)
    return slice(int(a.adr[0]), int(b.adr[0] + b.dim[0]))


def _stand_on_the_floor(model: mujoco.MjModel) -> None:
    """Raise the ``home`` keyframe so the feet rest on the floor: Menagerie's sinks them 1.8 cm."""
    key = model.key(HOME).id
    data = mujoco.MjData(model)
    mujoco.mj_resetDataKeyframe(model, data, key)
    mujoco.mj_kinematics(model, data)
    lowest = min(data.site(foot).xpos[2] for foot in FEET)
    model.key_qpos[key, 2] += FOOT_RADIUS - lowest


# --- the rewards: each a small function of the step's signals, [N] per env --------------------


class Signals(NamedTuple):
    """What the rewards read at the end of a step; ``[N, ...]`` arrays."""

    lin_vel: np.ndarray  # [N, 3] m/s, trunk frame
    ang_vel: np.ndarray  # [N, 3] rad/s, trunk frame
    gravity: np.ndarray  # [N, 3] unit gravity direction, trunk frame
    joint_pos: np.ndarray  # [N, 12] rad, actuator order
    torque: np.ndarray  # [N, 12] N m
    action: np.ndarray  # [N, 12] this step's
    last_action: np.ndarray  # [N, 12] the step before's
    command: np.ndarray  # [N, 3] forward m/s, sideways m/s, yaw rad/s
    foot_pos: np.ndarray  # [N, 4, 3] m, world frame (the foot spheres' centres)
    foot_vel: np.ndarray  # [N, 4, 3] m/s, world frame
    contact: np.ndarray  # [N, 4] bool, foot touches the floor
    first_contact: np.ndarray  # [N, 4] bool, landed this step after a swing
    air_time: np.ndarray  # [N, 4] s, the swing's length up to this step
    moving: np.ndarray  # [N] bool, the command is not zero
    fell: np.ndarray  # [N] bool


def tracking_lin_vel(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.exp(-np.sum((s.command[:, :2] - s.lin_vel[:, :2]) ** 2, 1) / task.cfg.tracking_sigma)


def tracking_ang_vel(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.exp(-((s.command[:, 2] - s.ang_vel[:, 2]) ** 2) / task.cfg.tracking_sigma)


def lin_vel_z(s: Signals, task: Go1Joystick) -> np.ndarray:
    return s.lin_vel[:, 2] ** 2


def ang_vel_xy(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.sum(s.ang_vel[:, :2] ** 2, 1)


def orientation(s: Signals, task: Go1Joystick) -> np.ndarray:
    """Zero when the trunk is level: gravity straight down its z axis."""
    return np.sum(s.gravity[:, :2] ** 2, 1)


def pose(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.exp(-np.sum(POSE_WEIGHTS * (s.joint_pos - task.default_pose) ** 2, 1))


def stand_still(s: Signals, task: Go1Joystick) -> np.ndarray:
    """Standing still is a skill: under a zero command, the pose itself."""
    return np.sum(np.abs(s.joint_pos - task.default_pose), 1) * ~s.moving


def dof_pos_limits(s: Signals, task: Go1Joystick) -> np.ndarray:
    below = np.maximum(task.soft_low - s.joint_pos, 0.0)
    above = np.maximum(s.joint_pos - task.soft_high, 0.0)
    return np.sum(below + above, 1)


def torques(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.sqrt(np.sum(s.torque**2, 1)) + np.sum(np.abs(s.torque), 1)


def action_rate(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.sum((s.action - s.last_action) ** 2, 1)


def feet_clearance(s: Signals, task: Go1Joystick) -> np.ndarray:
    """A foot moving sideways should be at the swing height; the faster, the more it counts."""
    speed = np.linalg.norm(s.foot_vel[..., :2], axis=-1)
    return np.sum(np.abs(s.foot_pos[..., 2] - task.cfg.max_foot_height) * np.sqrt(speed), 1)


def feet_slip(s: Signals, task: Go1Joystick) -> np.ndarray:
    return np.sum(np.sum(s.foot_vel[..., :2] ** 2, -1) * s.contact, 1) * s.moving


def feet_air_time(s: Signals, task: Go1Joystick) -> np.ndarray:
    """On landing, the swing's length beyond ``air_time_s`` (negative for shuffling steps)."""
    return np.sum((s.air_time - task.cfg.air_time_s) * s.first_contact, 1) * s.moving


def termination(s: Signals, task: Go1Joystick) -> np.ndarray:
    return s.fell.astype(np.float64)


REWARDS: dict[str, Callable[[Signals, Go1Joystick], np.ndarray]] = {
    f.__name__: f for f in (tracking_lin_vel, tracking_ang_vel, lin_vel_z, ang_vel_xy, orientation, pose,
                            stand_still, dof_pos_limits, torques, action_rate, feet_clearance, feet_slip,
                            feet_air_time, termination)}


# --- the task ----------------------------------------------------------------------------------


class Go1Joystick:
    """The task :class:`~stridelab.envs.mujoco.MujocoVecEnv` steps: nominal unless ``config``
    (or ``randomization``, a :class:`Randomization` or ``--randomize``'s text) says otherwise.
    Per-env state is ``[N, ...]`` numpy arrays."""

    name, substeps, ctrl_dt = NAME, SUBSTEPS, CTRL_DT
    video_script = VIDEO_SCRIPT  # what `stridelab video` shows (stridelab.render)

    def __init__(self, config: Go1Config | None = None, randomization: Randomization | str | None = None,
                 env_kwargs: dict[str, Any] | None = None) -> None:
        if isinstance(randomization, str):
            randomization = Randomization.parse(randomization)
        cfg = (config or Go1Config()).with_kwargs(env_kwargs or {})
        self.cfg = cfg if randomization is None else dataclasses.replace(cfg, randomization=randomization)
        if set(self.cfg.reward_weights) != set(REWARDS):
            raise ValueError(f"reward weights must name exactly the terms {', '.join(REWARDS)}")
        self.model = build_model()
        self.obs_dim = sum(size for _, size, _, _ in OBSERVATION)
        self.act_dim = self.model.nu
        self.info: dict[str, float] = {}
        self.penalty_scale = 1.0  # the cost curriculum's factor now (set_progress)
        self.held: np.ndarray | None = None  # see hold_commands
        self._index(self.model)
        self._allocate(0)

    @staticmethod
    def check_env_kwargs(env_kwargs: dict[str, Any]) -> None:
        """``ValueError`` (one line) unless ``env_kwargs`` name :class:`Go1Config` settings rightly."""
        Go1Config().with_kwargs(env_kwargs)

    def _index(self, m: mujoco.MjModel) -> None:
        """Where the task's quantities live in the model, and the nominal values randomization varies."""
        self.home, self.trunk = m.key(HOME).id, m.body(TRUNK).id
        self.joints = m.actuator_trnid[:, 0]
        self.qpos_index, self.dof_index = m.jnt_qposadr[self.joints], m.jnt_dofadr[self.joints]
        self.default_pose = m.key_qpos[self.home, self.qpos_index].copy()
        low, high = m.jnt_range[self.joints].T
        mid, half = (low + high) / 2, (high - low) / 2 * self.cfg.soft_limit
        self.soft_low, self.soft_high = mid - half, mid + half
        self.feet = np.array([m.geom(f).id for f in FEET])
        self.trunk_mass, self.trunk_ipos = float(m.body_mass[self.trunk]), m.body_ipos[self.trunk].copy()
        self.forcerange = m.actuator_forcerange.copy()
        self.cols = {"lin_vel": _sensor_slice(m, "linvel", "linvel"), "gyro": _sensor_slice(m, "gyro", "gyro"),
                     "up": _sensor_slice(m, "upvector", "upvector"),
                     "foot_pos": _sensor_slice(m, f"{FEET[0]}_pos", f"{FEET[-1]}_pos"),
                     "foot_vel": _sensor_slice(m, f"{FEET[0]}_vel", f"{FEET[-1]}_vel"),
                     "contact": _sensor_slice(m, f"{FEET[0]}_contact", f"{FEET[-1]}_contact"),
                     "trunk_contact": _sensor_slice(m, "trunk_contact", "trunk_contact"),
                     "torque": _sensor_slice(m, f"{m.actuator(0).name}_torque", f"{m.actuator(m.nu - 1).name}_torque")}

    def _allocate(self, n: int) -> None:
        """The per-env state, ``[n, ...]``: set for every env by :meth:`reset`."""
        self.n = n
        self.command = np.zeros((n, 3))
        self.command_timer = np.zeros(n, dtype=np.int64)  # steps to the next redraw
        self.push_timer = np.zeros(n, dtype=np.int64)
        self.last_action = np.zeros((n, self.act_dim))
        self.late = np.zeros(n, dtype=bool)  # this episode's actions arrive a step late (action_latency)
        self.air_time = np.zeros((n, len(FEET)))
        self.last_contact = np.zeros((n, len(FEET)), dtype=bool)

    # -- episode start --

    def reset(self, sim: Any, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Envs ``ids`` stand in the home pose facing a random way, moving a little, with their
        own physical parameters (where randomized) and a fresh command."""
        if self.n != sim.num_envs:
            self._allocate(sim.num_envs)
            if self.held is not None:
                self.held = np.broadcast_to(self.held, (self.n, 3))
        n, cfg = len(ids), self.cfg
        self._randomize(sim, ids, rng)
        sim.reset(ids, self.home)
        half_yaw = rng.uniform(-np.pi, np.pi, n) / 2
        zero = np.zeros(n)
        sim.qpos[ids, 3:7] = np.stack([np.cos(half_yaw), zero, zero, np.sin(half_yaw)], 1)
        sim.qvel[ids, :6] = rng.uniform(-cfg.reset_velocity, cfg.reset_velocity, (n, 6))
        sim.forward(ids)
        self.command[ids] = self.draw_commands(n, rng) if self.held is None else self.held[ids]
        self.command_timer[ids] = _steps(cfg.command_seconds, n, rng)
        self.push_timer[ids] = _steps(cfg.push_interval_s, n, rng)
        self.last_action[ids] = 0.0
        self.air_time[ids] = 0.0
        self.last_contact[ids] = False

    def hold_commands(self, command: np.ndarray | None) -> None:
        """From now on every env follows ``command`` (``[3]``, or ``[N, 3]`` one per env), also
        after resets, never redrawn: evaluation over a fixed command set, scripted videos.
        ``None`` draws commands again (from the next redraw or reset)."""
        self.held = None if command is None else np.asarray(command, dtype=np.float64)
        if self.held is not None and self.n:  # else the first reset sizes it
            self.held = np.broadcast_to(self.held, (self.n, 3))
            self.command[:] = self.held

    def draw_commands(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``[n, 3]`` commands: each axis uniform in its range or, by chance, zero; a whole
        command zero with ``standing_fraction``."""
        cfg = self.cfg
        command = rng.uniform(-1.0, 1.0, (n, 3)) * np.array(cfg.command_range)
        command *= rng.random((n, 3)) < np.array(cfg.command_nonzero)
        command[rng.random(n) < cfg.standing_fraction] = 0.0
        return command

    def _randomize(self, sim: Any, ids: np.ndarray, rng: np.random.Generator) -> None:
        """Redraw envs ``ids``' physical parameters for the switches that are on."""
        on, cfg, n = self.cfg.randomization, self.cfg, len(ids)
        if on.foot_friction:  # one draw for all four feet of an env (mjlab's shared_random)
            sim.expand("geom_friction")[ids[:, None], self.feet, 0] = rng.uniform(*cfg.friction_range, (n, 1))
        if on.payload:
            sim.expand("body_mass")[ids, self.trunk] = self.trunk_mass + rng.uniform(*cfg.payload_kg, n)
        if on.com_shift:
            shift = rng.uniform(-1.0, 1.0, (n, 3)) * np.array(cfg.com_shift_m)
            sim.expand("body_ipos")[ids, self.trunk] = self.trunk_ipos + shift
        if on.payload or on.com_shift:
            sim.set_const(ids)
        if on.motor_strength:
            scale = rng.uniform(*cfg.motor_strength, (n, self.act_dim))
            sim.expand("actuator_gainprm")[ids, :, 0] = KP * scale
            sim.expand("actuator_biasprm")[ids, :, 1] = -KP * scale
            sim.expand("actuator_forcerange")[ids] = self.forcerange * scale[..., None]
        if on.action_latency:
            self.late[ids] = rng.random(n) < cfg.latency_chance

    # -- one step --

    def act(self, sim: Any, action: np.ndarray, rng: np.random.Generator) -> None:
        """Joint targets around the home pose; where the episode is late, the previous step's action's."""
        applied = np.where(self.late[:, None], self.last_action, action)
        sim.ctrl[:] = self.default_pose + self.cfg.action_scale * applied
        if self.cfg.randomization.pushes:
            self._push(sim, rng)

    def _push(self, sim: Any, rng: np.random.Generator) -> None:
        """A kick: a random change of the base's horizontal velocity, at random intervals."""
        self.push_timer -= 1
        due = np.flatnonzero(self.push_timer <= 0)
        if due.size:
            v = self.cfg.push_velocity
            sim.qvel[due, 0:2] += rng.uniform(-v, v, (due.size, 2))  # world frame, the free joint's
            self.push_timer[due] = _steps(self.cfg.push_interval_s, due.size, rng)

    def set_progress(self, fraction_done: float) -> None:
        """Where training stands (0 to 1): sets the cost curriculum's penalty scale."""
        start, ramp = self.cfg.penalty_curriculum
        self.penalty_scale = 1.0 if ramp <= 0 else start + (1.0 - start) * min(1.0, fraction_done / ramp)

    def evaluate(self, sim: Any, action: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``(reward [N], terminated [N])`` of the step just simulated; then the task moves on
        (swing clocks, the last action, command redraws)."""
        s = self.signals(sim, action)
        weights = self.cfg.reward_weights
        terms = {name: self._weight(name, weights[name]) * f(s, self) for name, f in REWARDS.items()}
        fall = terms.pop("termination")
        reward = (np.maximum(sum(terms.values()), 0.0) + fall) * CTRL_DT  # legged_gym: the penalty after the floor
        self.info = {f"reward/{name}": float(np.mean(v)) * CTRL_DT for name, v in {**terms, "termination": fall}.items()}
        self._advance(s, action, rng)
        return reward, s.fell

    def _weight(self, name: str, weight: float) -> float:
        return weight * self.penalty_scale if weight < 0 and name != "termination" else weight

    def signals(self, sim: Any, action: np.ndarray) -> Signals:
        data, c = sim.sensordata, self.cols
        contact = data[:, c["contact"]] > 0
        gravity = -data[:, c["up"]]
        fell = ((data[:, c["trunk_contact"]][:, 0] > 0) | (-gravity[:, 2] < np.cos(np.radians(self.cfg.max_tilt_deg)))
                | (sim.qpos[:, 2] < self.cfg.min_base_height))
        return Signals(
            lin_vel=data[:, c["lin_vel"]], ang_vel=data[:, c["gyro"]], gravity=gravity,
            joint_pos=sim.qpos[:, self.qpos_index], torque=data[:, c["torque"]], action=action,
            last_action=self.last_action, command=self.command,
            foot_pos=data[:, c["foot_pos"]].reshape(-1, len(FEET), 3),
            foot_vel=data[:, c["foot_vel"]].reshape(-1, len(FEET), 3), contact=contact,
            first_contact=(self.air_time > 0) & (contact | self.last_contact),  # a bounce ends no stance
            air_time=self.air_time + CTRL_DT, moving=np.linalg.norm(self.command, axis=1) > 0.01, fell=fell)

    def _advance(self, s: Signals, action: np.ndarray, rng: np.random.Generator) -> None:
        self.air_time = s.air_time * ~s.contact
        self.last_contact = s.contact
        self.last_action = action.copy()
        self.command_timer -= 1
        due = np.flatnonzero(self.command_timer <= 0)
        if due.size and self.held is None:
            self.command[due] = self.draw_commands(due.size, rng)
            self.command_timer[due] = _steps(self.cfg.command_seconds, due.size, rng)

    # -- what the policy sees --

    def observe(self, sim: Any, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``[len(ids), obs_dim]`` float32: :data:`OBSERVATION`'s parts in order, with uniform noise."""
        parts = self.observation_parts(sim, ids)
        level, columns = self.cfg.noise_level, []
        for name, _, noise, _ in OBSERVATION:
            x = parts[name]
            if noise and level:
                x = x + rng.uniform(-1.0, 1.0, x.shape) * (noise * level)
            columns.append(x)
        return np.concatenate(columns, axis=1).astype(np.float32)

    def observation_parts(self, sim: Any, ids: np.ndarray) -> dict[str, np.ndarray]:
        """The noise-free parts, by :data:`OBSERVATION`'s names, ``[len(ids), size]`` each."""
        data, c = sim.sensordata[ids], self.cols
        return {"base_lin_vel": data[:, c["lin_vel"]], "base_ang_vel": data[:, c["gyro"]],
                "projected_gravity": -data[:, c["up"]],
                "joint_pos": sim.qpos[ids][:, self.qpos_index] - self.default_pose,
                "joint_vel": sim.qvel[ids][:, self.dof_index], "last_action": self.last_action[ids],
                "command": self.command[ids]}

    def reflection(self) -> dict[str, list[float]]:
        """:data:`REFLECTED_SIGNS` and the leg swap as :class:`~stridelab.envs.EnvSpec`'s
        ``reflection`` (indices and signs over the observation and the action)."""
        names = [self.model.actuator(i).name for i in range(self.act_dim)]  # "FR_hip", ...
        partner = [names.index(f"{MIRROR_LEGS[leg]}_{part}") for leg, part in (n.split("_") for n in names)]
        joint_sign = [-1.0 if n.endswith("_hip") else 1.0 for n in names]
        obs_index: list[int] = []
        obs_sign: list[float] = []
        starts: dict[str, int] = {}
        start = 0
        for name, size, _, _ in OBSERVATION:
            if name in JOINT_PARTS:
                obs_index += [start + j for j in partner]
                obs_sign += joint_sign
            else:
                obs_index += range(start, start + size)
                obs_sign += map(float, REFLECTED_SIGNS[name])
            starts[name] = start
            start += size
        return {"obs_index": obs_index, "obs_sign": obs_sign, "act_index": partner, "act_sign": joint_sign,
                # which half a state lies in: the yaw command's sign, or else the sideways one's
                "key_index": [starts["command"] + 2, starts["command"] + 1]}

    def deploy_spec(self) -> dict[str, Any]:
        """What a robot-side loop needs to run the policy, JSON-ready: the observation's layout and
        each part's definition from a plain MuJoCo model and data (and on the robot), the joint
        order by actuator name, the default and standing poses, how actions become PD targets, the
        gains and torque limits, the control period, and how the training physics differs from the
        Menagerie's model (docs/robots.md reads it)."""
        import mujoco_menagerie

        m, cfg = self.model, self.cfg
        return {
            "task": NAME, "robot": ROBOT, "menagerie_commit": mujoco_menagerie.commit(),
            "control_period_s": CTRL_DT, "physics_timestep_s": SIM_DT,
            "obs_dim": self.obs_dim, "observation": self._observation_layout(),
            "trunk_body": TRUNK, "imu_site": IMU,
            "actuator_names": [m.actuator(i).name for i in range(m.nu)],
            "joint_names": [m.joint(j).name for j in self.joints],
            "default_joint_pos": self.default_pose.tolist(),
            "standing_qpos": m.key_qpos[self.home].tolist(),
            "action": {"dim": self.act_dim, "clip": [-1.0, 1.0], "scale": cfg.action_scale,
                       "target": "default_joint_pos + scale * clip(action), rad",
                       "latency_steps": int(cfg.randomization.action_latency and cfg.latency_chance >= 1.0),
                       "latency_trained": (f"one step late in {cfg.latency_chance:.0%} of episodes, else at once"
                                           if cfg.randomization.action_latency else "at once")},
            "pd_gains": {"kp": [KP] * self.act_dim, "kd": [KD] * self.act_dim,
                         "law": "torque = clip(kp * (target - q) - kd * qdot, -torque_limits, torque_limits), "
                                "N m, at every physics step (the motor driver's loop on the robot)"},
            "torque_limits": self.forcerange[:, 1].tolist(),
            "joint_limits": m.jnt_range[self.joints].tolist(),
            "command_ranges": {"forward": cfg.command_range[0], "sideways": cfg.command_range[1],
                               "yaw": cfg.command_range[2]},
            "training_physics": self._training_physics(),
        }

    def _observation_layout(self) -> list[dict[str, Any]]:
        """:data:`OBSERVATION` in order, with each part's columns and definitions."""
        layout, start = [], 0
        for name, size, noise, meaning in OBSERVATION:
            in_mujoco, on_robot = OBSERVATION_SOURCES[name]
            layout.append({"name": name, "slice": [start, start + size], "scale": 1.0,
                           "noise_in_training": noise * self.cfg.noise_level, "meaning": meaning,
                           "mujoco": in_mujoco, "on_robot": on_robot})
            start += size
        return layout

    def _training_physics(self) -> dict[str, Any]:
        """The physics the policy was trained in, where it differs from Menagerie's go1 scene
        (:func:`build_model`'s edits); a plain MuJoCo loop sets what it wants of these."""
        opt = self.model.opt
        return {"timestep_s": float(opt.timestep), "integrator": mujoco.mjtIntegrator(opt.integrator).name,
                "cone": mujoco.mjtCone(opt.cone).name, "solver": mujoco.mjtSolver(opt.solver).name,
                "iterations": int(opt.iterations), "impratio": float(opt.impratio),
                "joint_damping": self.model.dof_damping[self.dof_index].tolist(),
                "contacts": f"only the feet (geoms {', '.join(FEET)}, condim 3) and the trunk's geoms touch the "
                            f"floor; the legs pass through it",
                "actuators": "position actuators with kp, kd and torque_limits (pd_gains)",
                "standing_qpos": "Menagerie's home keyframe raised so the feet rest on the floor"}


def _steps(seconds: tuple[float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n]`` control steps to wait, drawn uniformly between ``seconds``, at least one."""
    return np.maximum(1, np.round(rng.uniform(*seconds, n) / CTRL_DT)).astype(np.int64)
