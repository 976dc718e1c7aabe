"""Export a trained policy as one file: raw observations in, env actions out.

Every format carries the observation normalizer and the action mapping, so running it needs
neither stridelab nor the run directory. The format goes by the file's suffix:

- ``.onnx`` (the documented path): ONNX opset 18, input ``obs`` ``[batch, obs_dim]`` (any batch
  size) of the chosen observation dtype (float32 by default), output ``action`` float32
  ``[batch, act_dim]``; runs on ONNX Runtime::

      session = onnxruntime.InferenceSession("policy.onnx")
      action = session.run(None, {"obs": obs.astype(np.float32)})[0]

- ``.pt2``: a ``torch.export`` program with a dynamic batch dimension::

      policy = torch.export.load("policy.pt2").module()
      action = policy(torch.as_tensor(obs, dtype=torch.float32))

- ``.pt``: TorchScript, kept so old users' files and scripts go on working; torch 2.13 deprecates
  TorchScript, so it is no longer the documented way.

A task with a deployment description (native MuJoCo's robot tasks, e.g. ``Go1JoystickFlatTerrain``:
observation layout and definitions, joint order, default pose, action scale, PD gains, control
period) gets it as JSON beside the file (``go1.onnx`` -> ``go1.deploy.json``, any format) and,
for ``.onnx``, in the file's ``metadata_props`` under :data:`DEPLOY_KEY`; its ``policy`` section
says what the graph holds (the normalizer and the action range: a robot feeds raw observations).
docs/robots.md reads it; examples/go1_deploy_loop.py runs a policy from it alone.

Input contract (tested in tests/test_export.py): ONNX and ``.pt2`` are graphs whose input type is
fixed: float32, or float64 with ``obs_dtype="float64"`` (``--obs-dtype float64``), for callers
whose observations are float64 (Gymnasium's). One graph cannot take both, and casting every dtype
inside would let float16 or integer observations pass silently, so any other dtype, a wrong width
or rank is refused by the runtime with a message naming the expected type or size. A float64 file
casts to float32 first and then computes as the float32 file does, so both give the same actions
(to 1e-5); a caller who needs one float32 file for both dtypes casts outside (the README's ``act``
wrapper). TorchScript checks at run time: float32 and float64 are accepted, anything else is
refused with a message naming ``[B, obs_dim]``. An observation row holding a NaN gives a row of
NaN actions (every component, every format); +-inf are clipped by the normalizer like any other
out-of-range value.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stridelab.errors import ConfigError, unknown_choice
from stridelab.models import ActorCritic

FORMATS = (".onnx", ".pt2", ".pt")
OBS_DTYPES = {"float32": torch.float32, "float64": torch.float64}
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "obs", "action"
DEPLOY_KEY = "stridelab.deploy"  # the ONNX metadata_props key holding the deployment description (JSON)


class DeterministicPolicy(nn.Module):
    """``clip(mean(normalize(obs)))`` mapped onto the action box, in float32.

    A row of ``obs`` holding a NaN gives a row of NaN actions. torch and ONNX Runtime carry NaN
    through clamp/Clip and ReLU today, but neither op promises it (a max-style ReLU may return 0
    for NaN, making a finite, meaningless action); the explicit ``where`` makes NaN in, NaN out
    part of the exported file itself.
    """

    def __init__(self, agent: ActorCritic) -> None:
        super().__init__()
        rms = agent.obs_rms
        self.register_buffer("obs_mean", rms.mean.detach().float().clone())
        self.register_buffer("obs_std", torch.sqrt(rms.var + rms.epsilon).detach().float().clone())
        self.clip = float(rms.clip)
        self.policy = copy.deepcopy(agent.policy).float()  # the one policy definition, its mean alone
        self.reflection = copy.deepcopy(agent.reflection)  # a symmetric policy's (ActorCritic.canonical)
        self.register_buffer("action_low", agent.action_low.detach().float().clone())
        self.register_buffer("action_high", agent.action_high.detach().float().clone())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        seen, flip = (obs, None) if self.reflection is None else self.reflection.canonical(obs)
        x = ((seen - self.obs_mean) / self.obs_std).clamp(-self.clip, self.clip)
        u = self.policy.mean(x)
        if flip is not None:
            u = torch.where(flip, self.reflection.act(u), u)
        action = self.action_low + (u + 1.0) * 0.5 * (self.action_high - self.action_low)
        return torch.where(obs.isnan().any(dim=-1, keepdim=True), torch.nan, action)


class CheckedPolicy(nn.Module):
    """:class:`DeterministicPolicy` behind an input check naming the expected ``[B, obs_dim]``.

    Under TorchScript the checks run at every call. Under ``torch.export`` the dtype and rank
    are fixed by the example input (float32 or float64), so the Python checks only run while
    tracing; the program then refuses other dtypes through the dtype assertion ``torch.export``
    records for ``obs.to(float32)``, and other shapes through its input guards. The cast comes
    before the normalizer, so a float64 file computes exactly what the float32 file computes on
    ``obs.float()``.
    """

    def __init__(self, agent: ActorCritic) -> None:
        super().__init__()
        self.obs_dim = int(agent.obs_dim)
        self.policy = DeterministicPolicy(agent)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dtype != torch.float32 and obs.dtype != torch.float64:
            # (TorchScript prints a dtype as a number, so the message names the allowed ones.)
            raise ValueError("obs must be float32 or float64 of shape [B, {}], got another dtype; "
                             "cast it with obs.float()".format(self.obs_dim))
        if obs.dim() != 2 or obs.size(1) != self.obs_dim:
            raise ValueError("obs must have shape [B, {}] (B observations of obs_dim={}), got {}".format(
                self.obs_dim, self.obs_dim, list(obs.shape)))
        return self.policy(obs.to(torch.float32))


def check_obs_dtype(suffix: str, obs_dtype: str) -> None:
    """:class:`ConfigError` unless ``obs_dtype`` is one of :data:`OBS_DTYPES` and fits the format:
    a ``.pt`` file takes float32 and float64 whatever it is asked, so float64 there is refused
    rather than silently meaning nothing."""
    if not isinstance(obs_dtype, str) or obs_dtype not in OBS_DTYPES:
        raise unknown_choice("obs dtype", obs_dtype, tuple(OBS_DTYPES))
    if suffix == ".pt" and obs_dtype != "float32":
        raise ConfigError(f"--obs-dtype {obs_dtype} applies to .onnx and .pt2; .pt takes float32 and float64 already")


def export_policy(agent: ActorCritic, path: Path, obs_dtype: str = "float32",
                  deploy: dict[str, Any] | None = None) -> Path:
    """Write the deterministic policy to ``path`` in the format its suffix names (see
    :data:`FORMATS`), its graph's input of dtype ``obs_dtype`` (see :data:`OBS_DTYPES`; the
    computation and the actions stay float32), atomically (a temporary file renamed into place);
    returns the path. ``deploy`` (a task's deployment description) is written with the graph's
    own contract (:func:`describe_graph`) into the ONNX metadata and to :func:`deploy_file`;
    without it a description left there by an earlier export is removed, so one beside a policy
    always describes it."""
    path = Path(path)
    description = None if deploy is None else {**deploy, "policy": describe_graph(agent, obs_dtype)}
    metadata = {} if description is None else {DEPLOY_KEY: json.dumps(description)}
    writers: dict[str, Callable[[nn.Module, tuple[torch.Tensor], Path], None]] = {
        ".onnx": functools.partial(_write_onnx, metadata=metadata), ".pt2": _write_pt2, ".pt": _write_torchscript}
    if path.suffix not in writers:
        raise ValueError(f"unknown export format {path.suffix or path.name!r}; "
                         f"use a file name ending in {', '.join(FORMATS)}")
    check_obs_dtype(path.suffix, obs_dtype)
    if path.suffix == ".pt":
        warnings.warn("TorchScript export (.pt) is kept for old users: torch deprecates TorchScript; "
                      "export .onnx or .pt2 instead", DeprecationWarning, stacklevel=2)
    module = CheckedPolicy(copy.deepcopy(agent).cpu()).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        writers[path.suffix](module, _example(agent.obs_dim, OBS_DTYPES[obs_dtype]), tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    _write_description(deploy_file(path), description)
    return path


def deploy_file(path: Path) -> Path:
    """Where the deployment description of policy file ``path`` lies: ``go1.onnx`` -> ``go1.deploy.json``."""
    return Path(path).with_suffix(".deploy.json")


def describe_graph(agent: ActorCritic, obs_dtype: str) -> dict[str, Any]:
    """What the exported graph itself does, for a robot-side loop: raw observations in (the
    training run's normalizer is inside), the deterministic action on the action range out."""
    rms = agent.obs_rms
    graph = {
        "input": {"name": INPUT_NAME, "shape": ["batch", int(agent.obs_dim)], "dtype": obs_dtype,
                  "raw_observations": True,
                  "note": "feed the observation exactly as 'observation' defines it; do not normalize it"},
        "normalizer": {"in_graph": True, "clip": float(rms.clip), "epsilon": float(rms.epsilon),
                       "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip, clip), mean and var frozen "
                                  "from training" + ("; obs is the reflected observation where 'reflection' "
                                                     "says so" if agent.reflection is not None else "")},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", int(agent.act_dim)], "dtype": "float32",
                   "low": agent.action_low.tolist(), "high": agent.action_high.tolist(),
                   "note": "the policy's mean action, mapped onto [low, high] in the graph; an observation row "
                           "holding NaN gives a row of NaN actions (hold the last targets or stop)"},
    }
    if agent.reflection is not None:
        r = agent.reflection
        graph["reflection"] = {
            "in_graph": True, "obs_index": r.obs_index.tolist(), "obs_sign": r.obs_sign.tolist(),
            "act_index": r.act_index.tolist(), "act_sign": r.act_sign.tolist(), "key_index": r.key_index.tolist(),
            "formula": "where the first nonzero obs[key_index] is negative, the policy acts on "
                       "obs[obs_index] * obs_sign and its action a comes out as a[act_index] * act_sign",
            "note": "a left-right symmetric policy (--symmetric); commands exactly 0 on every key entry (standing, "
                    "walking straight) are not reflected, so give the robot's joystick a deadzone: a yaw "
                    "command flickering around 0 switches between a state and its mirror image"}
    return graph


def _write_description(path: Path, description: dict[str, Any] | None) -> None:
    """``description`` as JSON at ``path`` (atomically), or no file there when it is ``None``."""
    if description is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(description, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _example(obs_dim: int, dtype: torch.dtype) -> tuple[torch.Tensor]:
    """The input the graph formats are traced with; its dtype becomes the file's input type.
    Batch 2, not 1: torch.export specializes a dimension of size 0 or 1 to a constant."""
    return (torch.zeros(2, obs_dim, dtype=dtype),)


def _batch_dim() -> dict[str, dict[int, torch.export.Dim]]:
    return {"obs": {0: torch.export.Dim("batch", min=1)}}


def _write_pt2(module: nn.Module, example: tuple[torch.Tensor], path: Path) -> None:
    program = torch.export.export(module, example, dynamic_shapes=_batch_dim())
    torch.export.save(program, path)


def _write_onnx(module: nn.Module, example: tuple[torch.Tensor], path: Path,
                metadata: dict[str, str] | None = None) -> None:
    """torch.onnx's dynamo exporter (torch.export, then onnxscript), ``metadata`` into the
    model's ``metadata_props``, checked with onnx.checker."""
    import onnx

    with warnings.catch_warnings(), _quiet_onnx_registry():
        # torch 2.13's exporter deep-copies its exported program, and copying a pytree spec
        # constructs a LeafSpec, which torch itself deprecates: a warning about torch's own
        # internals that nothing on our side can act on.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        program = torch.onnx.export(module, example, None, dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=_batch_dim(), verbose=False)
    program.model.metadata_props.update(metadata or {})
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)


@contextlib.contextmanager
def _quiet_onnx_registry() -> Iterator[None]:
    """Silence the exporter's log lines about torchvision's operators (``torchvision is not
    installed. Skipping torchvision::nms``): stridelab has no use for torchvision."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_torchscript(module: nn.Module, example: tuple[torch.Tensor], path: Path) -> None:
    """TorchScript for old users; torch 2.13 warns (DeprecationWarning) that it is deprecated.
    Scripted, not traced: ``example`` is unused, the checks in :class:`CheckedPolicy` run at
    every call."""
    torch.jit.script(module).save(str(path))
