"""Run an exported Go1 policy in a plain MuJoCo loop, from its deployment description alone.

    stridelab export RUN --out go1.onnx          # writes go1.onnx and go1.deploy.json
    python examples/go1_deploy_loop.py go1.onnx --forward 0.5 --seconds 5

Nothing here is stridelab: Menagerie's go1 scene (through ``mujoco_menagerie``; set
``MENAGERIE_ROOT`` to use a local copy), the PD loop and the observation built from ``MjData``
exactly as the description says (the JSON beside the policy, or the ONNX file's metadata), and
the policy on ONNX Runtime. It is the skeleton of a robot-side loop: on a Go1, ``observe`` reads
the robot's state instead and the targets go to the motor driver (docs/robots.md).

The physics follows the description's ``training_physics`` (timestep, integrator, solver, joint
damping); the contacts stay the Menagerie's (every collision geom touches the floor, where the
training model lets only the feet and the trunk): that sim-to-sim gap is kept on purpose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

DEPLOY_KEY = "stridelab.deploy"  # the ONNX metadata key
MAX_TILT_DEG = 70.0  # a fall: the trunk tilted further than this
MIN_TRUNK_HEIGHT = 0.12  # m, a fall: the trunk this low


def load_description(policy: str | Path) -> dict[str, Any]:
    """The deployment description of ``policy``: from the ONNX file's metadata, else the JSON
    beside it (``go1.onnx`` -> ``go1.deploy.json``)."""
    policy = Path(policy)
    if policy.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(policy)).metadata_props}
        if DEPLOY_KEY in props:
            return json.loads(props[DEPLOY_KEY])
    return json.loads(policy.with_suffix(".deploy.json").read_text())


def plain_model(desc: dict[str, Any]) -> mujoco.MjModel:
    """Menagerie's scene of ``desc['robot']``, its actuators set to the described PD loop and its
    options to the described training physics (contacts unchanged)."""
    import mujoco_menagerie

    model = mujoco_menagerie.load(desc["robot"], "scene")
    physics = desc["training_physics"]
    model.opt.timestep = desc["physics_timestep_s"]
    model.opt.integrator = getattr(mujoco.mjtIntegrator, physics["integrator"])
    model.opt.cone = getattr(mujoco.mjtCone, physics["cone"])
    model.opt.solver = getattr(mujoco.mjtSolver, physics["solver"])
    model.opt.iterations, model.opt.impratio = physics["iterations"], physics["impratio"]
    for name, damping in zip(desc["joint_names"], physics["joint_damping"]):
        model.dof_damping[model.jnt_dofadr[model.joint(name).id]] = damping
    gains = desc["pd_gains"]
    for name, kp, kd, limit in zip(desc["actuator_names"], gains["kp"], gains["kd"], desc["torque_limits"]):
        i = model.actuator(name).id  # a position actuator: torque = kp * (ctrl - q) - kd * qdot, clipped
        model.actuator_gainprm[i, 0] = kp
        model.actuator_biasprm[i, :3] = [0.0, -kp, -kd]
        model.actuator_forcerange[i] = [-limit, limit]
        model.actuator_forcelimited[i] = True
    return model


def observe(model: mujoco.MjModel, data: mujoco.MjData, desc: dict[str, Any], last_action: np.ndarray,
            command: np.ndarray) -> np.ndarray:
    """The policy's input, ``[obs_dim]`` float32, each part as ``desc['observation']`` defines it
    (its ``mujoco`` entries), from ``data`` after ``mj_forward``."""
    velocity = np.zeros(6)  # [angular, linear], in the imu site's frame
    mujoco.mj_objectVelocity(model, data, mujoco.mjtObj.mjOBJ_SITE, model.site(desc["imu_site"]).id, velocity, 1)
    trunk_rotation = data.xmat[model.body(desc["trunk_body"]).id].reshape(3, 3)
    joints = [model.joint(name).id for name in desc["joint_names"]]
    parts = {
        "base_lin_vel": velocity[3:], "base_ang_vel": velocity[:3],
        "projected_gravity": trunk_rotation.T @ np.array([0.0, 0.0, -1.0]),
        "joint_pos": data.qpos[model.jnt_qposadr[joints]] - np.asarray(desc["default_joint_pos"]),
        "joint_vel": data.qvel[model.jnt_dofadr[joints]], "last_action": last_action, "command": command,
    }
    obs = np.zeros(desc["obs_dim"], dtype=np.float32)
    for part in desc["observation"]:
        start, stop = part["slice"]
        obs[start:stop] = np.asarray(parts[part["name"]]) * part["scale"]
    return obs


class Policy:
    """The exported graph on ONNX Runtime: one raw observation in, one action out."""

    def __init__(self, path: str | Path, desc: dict[str, Any]) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        graph = desc["policy"]
        self.input, self.dtype = graph["input"]["name"], np.dtype(graph["input"]["dtype"])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: obs[None].astype(self.dtype)})[0][0]


def fallen(model: mujoco.MjModel, data: mujoco.MjData, desc: dict[str, Any]) -> bool:
    trunk = model.body(desc["trunk_body"]).id
    upright = data.xmat[trunk][8]  # the trunk's z axis . world z
    return bool(upright < np.cos(np.radians(MAX_TILT_DEG)) or data.xpos[trunk][2] < MIN_TRUNK_HEIGHT)


def run(policy: str | Path, command: tuple[float, float, float], seconds: float,
        desc: dict[str, Any] | None = None) -> dict[str, Any]:
    """Stand the robot in ``standing_qpos`` (facing +x) and run the policy for ``seconds`` under
    ``command``, stopping early at a fall; returns the trunk's start and end positions (world,
    m), its heading change (rad, counterclockwise, unwrapped), the seconds run and whether it fell."""
    desc = desc or load_description(policy)
    model, act = plain_model(desc), Policy(policy, desc)
    data = mujoco.MjData(model)
    data.qpos[:] = desc["standing_qpos"]
    mujoco.mj_forward(model, data)
    actuators = [model.actuator(name).id for name in desc["actuator_names"]]
    default, scale = np.asarray(desc["default_joint_pos"]), desc["action"]["scale"]
    low, high = desc["action"]["clip"]
    period = desc["control_period_s"]
    substeps = round(period / model.opt.timestep)
    trunk = model.body(desc["trunk_body"]).id
    start, last_action, steps, fell = data.xpos[trunk].copy(), np.zeros(len(actuators)), 0, False
    headings = [heading(data, trunk)]
    while steps < round(seconds / period) and not fell:
        action = np.clip(act(observe(model, data, desc, last_action, np.asarray(command))), low, high)
        if not np.isfinite(action).all():
            raise FloatingPointError(f"the policy returned {action} at step {steps}")
        applied = last_action if desc["action"]["latency_steps"] else action  # as in training
        data.ctrl[actuators] = default + scale * applied
        for _ in range(substeps):
            mujoco.mj_step(model, data)
        mujoco.mj_forward(model, data)  # the observation reads the state after the step
        last_action, steps, fell = action, steps + 1, fallen(model, data, desc)
        headings.append(heading(data, trunk))
    return {"start": start, "end": data.xpos[trunk].copy(), "turned": float(np.unwrap(headings)[-1] - headings[0]),
            "seconds": steps * period, "fell": fell}


def heading(data: mujoco.MjData, trunk: int) -> float:
    """The trunk's yaw in the world, rad: the direction its x axis points in the floor's plane."""
    x_axis = data.xmat[trunk].reshape(3, 3)[:, 0]
    return float(np.arctan2(x_axis[1], x_axis[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("policy", help="the exported policy (go1.onnx), its go1.deploy.json beside it or inside")
    parser.add_argument("--forward", type=float, default=0.5, help="m/s (default 0.5)")
    parser.add_argument("--sideways", type=float, default=0.0, help="m/s, left positive")
    parser.add_argument("--yaw", type=float, default=0.0, help="rad/s, counterclockwise positive")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    result = run(args.policy, (args.forward, args.sideways, args.yaw), args.seconds)
    moved = result["end"] - result["start"]
    print(f"{result['seconds']:.2f} s: trunk moved {moved[0]:+.2f} m forward, {moved[1]:+.2f} m sideways, turned "
          f"{result['turned']:+.2f} rad ({'fell' if result['fell'] else 'still standing'})")


if __name__ == "__main__":
    main()
