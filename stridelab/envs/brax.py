"""Brax environments behind the :class:`~stridelab.envs.base.VecEnv` interface.

Our own adapter: Brax's ``envs.wrappers.gym`` and ``envs.wrappers.torch`` import the dead
``gym`` package. Arrays cross between JAX and torch through DLPack, which is zero-copy when both
live on the same device. The whole batched step (physics, time limit, episode statistics and
auto-reset) is one jitted function.

Auto-reset differs from Brax's ``AutoResetWrapper``: that wrapper sends every ended env back to
one first state stored at reset time, so all episodes of an env start alike. Here each ended env
restarts from a freshly sampled random initial state that no episode has used before: every env
holds a spare one, and the spares are redrawn (one vmapped reset for the batch) only when an env
ends whose spare is spent, not on every step. That redraw happens outside the compiled step (the
step halts, the spares are redrawn, the step runs again), so Brax's ``reset`` is compiled into one
program only and the step and rollout programs compile in about half the time (docs/benchmarks.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from stridelab.cores import affinity
from stridelab.envs.base import EnvSpec, StepResult

BACKENDS = ("spring", "positional", "generalized", "mjx")  # Brax's physics pipelines
PRESET_TABLE = "brax"
CONTRACT_TASK = "hopper"  # a task that ends both ways within 100 random steps (tests/test_vecenv_contract.py)
ENV_KWARGS = True  # make_vec_env takes env_kwargs (--env-kwargs): get_environment's keyword arguments


def setup() -> None:
    """What Brax runs need from JAX, done once before the first env is built (not at import):
    JAX must not grab most of a GPU's memory up front (torch shares the device), compiled
    programs are kept on disk (:func:`_enable_compilation_cache`), and the CPU is seen as one
    XLA device per available core (:func:`_split_cpu`), so that an env batch can be stepped on
    every core at once."""
    global _set_up
    if _set_up:
        return
    _set_up = True
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    _enable_compilation_cache()
    _split_cpu(len(affinity()))  # a pinned process counts its share


_set_up = False

# Fewer envs than this per shard and a shard's vmapped step stops paying for its own thread.
MIN_ENVS_PER_SHARD = 128
SHARD_AXIS = "envs"



def _split_cpu(devices: int) -> None:
    """Have JAX's CPU backend offer ``devices`` XLA devices, one per core.

    XLA runs one device's program on about one core, so a batch on one device leaves the other
    cores mostly idle; split over one device per core it steps 1.36 x faster on two cores
    (issue 21, docs/benchmarks.md). Only the CPU client is affected. Left alone when the user
    chose a count (``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``, or
    ``JAX_NUM_CPU_DEVICES``), and when JAX has already started its backends (the envs then
    shard over the devices there are).
    """
    chosen = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if devices <= 1 or chosen or "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    try:
        jax.config.update("jax_num_cpu_devices", int(devices))
    except RuntimeError:  # backends already initialized
        pass


def plan_shards(requested: int | str, num_envs: int, devices: int) -> tuple[int, str | None]:
    """How many shards to split ``num_envs`` envs into over ``devices`` XLA devices:
    ``(shards, note)``, the note one line for the user where ``auto`` uses fewer than every
    device. ``auto`` takes every device, but keeps :data:`MIN_ENVS_PER_SHARD` envs per shard and
    an equal share on each; an explicit count must fit (``ValueError`` otherwise)."""
    if requested != "auto":
        n = int(requested)
        if n < 1 or n > devices or num_envs % n:
            raise ValueError(f"--env-shards {n} needs 1 <= shards <= {devices} (the XLA devices there are) "
                             f"and num_envs {num_envs} divisible by it")
        return n, None
    n = max(1, min(devices, num_envs // MIN_ENVS_PER_SHARD))
    while num_envs % n:
        n -= 1
    if n == devices or num_envs < 2 * MIN_ENVS_PER_SHARD:
        return n, None
    return n, (f"{num_envs} envs run as {n} shard(s) on {devices} XLA devices: num_envs a multiple of "
               f"{devices} (and >= {devices * MIN_ENVS_PER_SHARD}) would use them all")


def _enable_compilation_cache() -> None:
    """Keep compiled simulator steps on disk: a new process then starts in ~10 s, not ~30 s.

    ``STRIDELAB_JAX_CACHE`` names the folder (default ``$XDG_CACHE_HOME/stridelab/jax``);
    ``STRIDELAB_JAX_CACHE=off`` turns it off. JAX keys entries by its own version and the
    program, so a stale entry is never used.
    """
    where = os.environ.get("STRIDELAB_JAX_CACHE")
    if where == "off":
        return
    if not where:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        where = os.path.join(base, "stridelab", "jax")
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def env_names() -> list[str]:
    # The registry get_environment reads, less "fast", a dummy env for Brax's own tests. It holds
    # the envs a user registered (brax.envs.register_environment) before calling stridelab too.
    return sorted(n for n in _import_brax_envs()._envs if n != "fast")


def validate(cfg: Any) -> None:
    if cfg.backend not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(str(cfg.backend), BACKENDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown backend {cfg.backend!r}{hint}; choose one of {', '.join(BACKENDS)}")
    if cfg.env_kwargs:
        _probe(cfg.env, cfg.backend, cfg.env_kwargs)


def _probe(name: str, backend: str, env_kwargs: dict[str, Any]) -> None:
    """Brax's env ``name`` can be made with ``env_kwargs`` (``ValueError``, one line, if not):
    checked before a run starts, since a rejected argument otherwise surfaces mid-setup. Once
    per process for each env, backend and arguments."""
    import json

    from stridelab.envs.arguments import call_kwargs, check_recordable

    check_recordable(env_kwargs)
    key = json.dumps([name, backend, env_kwargs], sort_keys=True)
    if key in _probed:
        return
    try:
        _make_brax_env(_import_brax_envs(), name, backend, call_kwargs(env_kwargs))
    except TypeError as e:
        pairs = " ".join(f"{k}={v!r}" for k, v in env_kwargs.items())
        raise ValueError(f"--env-kwargs {pairs}: Brax's {name} rejected its arguments (TypeError: {e})") from None
    _probed.add(key)


_probed: set[str] = set()


def _make_brax_env(envs: Any, name: str, backend: str, env_kwargs: dict[str, Any]) -> Any:
    """Brax's ``get_environment``, MuJoCo's warnings on loading the model reported once."""
    from stridelab.envs.model_warnings import mujoco_warnings

    with mujoco_warnings():
        return envs.get_environment(name, backend=backend, **env_kwargs)


def make_vec_env(name: str, num_envs: int, device: torch.device | str = "cpu", episode_length: int = 1000,
                 backend: str = "spring", shards: int | str = "auto",
                 env_kwargs: dict[str, Any] | None = None) -> BraxVecEnv:
    from stridelab.envs.arguments import call_kwargs

    return BraxVecEnv(name, num_envs, backend=backend, episode_length=episode_length, device=device, shards=shards,
                      **call_kwargs(env_kwargs))


# XLA's CPU compiler generates code for fused ops with its newer "fusion emitters" by default.
# On Brax's physics the classic emitters they replace compile in about half the time and run
# 5-12% faster (ant, humanoid, halfcheetah on spring; ant on positional; docs/benchmarks.md),
# so our CPU programs ask for those. ``STRIDELAB_XLA_DEFAULTS=1`` compiles with XLA's defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def _cpu_options() -> dict[str, Any]:
    if os.environ.get("STRIDELAB_XLA_DEFAULTS", "").lower() in ("1", "true", "yes", "on"):
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def jit(fun: Callable, device: Any = None, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)``, with :data:`CPU_COMPILER_OPTIONS` when ``device`` (default:
    JAX's first device) is a CPU. The options are part of the compilation cache's key."""
    platform = (device if device is not None else jax.devices()[0]).platform
    if platform == "cpu" and _cpu_options():
        kwargs["compiler_options"] = _cpu_options()
    return jax.jit(fun, **kwargs)


def xla_flags() -> str:
    """:data:`CPU_COMPILER_OPTIONS` written for ``XLA_FLAGS``: the way to give programs that
    others jit (Brax's own trainer, in benchmarks/) the same setting. Empty with
    ``STRIDELAB_XLA_DEFAULTS=1``."""
    return " ".join(f"--{k}={str(v).lower()}" for k, v in _cpu_options().items())


class _ClipCompat:
    """``jax.numpy`` with the ``clip(a, a_min=, a_max=)`` keywords JAX 0.10 removed.

    Brax 0.14's fluid model (``brax/fluid.py``, used by swimmer) still calls
    ``jp.clip(x, a_min=...)``; everything else passes through to ``jax.numpy``.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def clip(a: Any, a_min: Any = None, a_max: Any = None, **kwargs: Any) -> Any:
        return jnp.clip(a, kwargs.pop("min", a_min), kwargs.pop("max", a_max), **kwargs)


def _patch_brax_fluid() -> None:
    import inspect

    if "a_min" in inspect.signature(jnp.clip).parameters:
        return
    from brax import fluid

    if isinstance(getattr(fluid, "jp", None), type(jnp)):
        fluid.jp = _ClipCompat()


def _import_brax_envs() -> Any:
    """``brax.envs``, imported quietly: MuJoCo's optional warp backend prints to stdout when
    absent, and Brax warns on every system load that it is no longer maintained."""
    import contextlib
    import io
    import warnings

    setup()
    warnings.filterwarnings("ignore", message="Brax System, piplines and environments", category=UserWarning)
    with contextlib.redirect_stdout(io.StringIO()):
        from brax import envs
    _patch_brax_fluid()
    return envs


def host_crossing_note(torch_device: torch.device, jax_platform: str) -> str | None:
    """One line for the user when torch computes on a GPU but JAX has no GPU backend (JAX's
    plain wheels are CPU-only): Brax then simulates on the CPU and every step crosses through
    host memory. ``None`` when both share a device."""
    if torch_device.type != "cuda" or jax_platform == "gpu":
        return None
    return (f"torch uses {torch_device} but JAX runs on its {jax_platform} backend, so Brax simulates "
            "on the CPU and each step is copied through host memory; to simulate on the GPU install "
            "JAX's CUDA plugin: pip install 'jax[cuda13]>=0.10,<0.11' (jax[cuda12] with a CUDA 12 "
            "torch), or make install on a machine with nvidia-smi")


def _jax_to_torch(x: jax.Array, device: torch.device) -> torch.Tensor:
    t = torch.from_dlpack(x)
    return t if t.device == device else t.to(device, non_blocking=True)


def _torch_to_jax(t: torch.Tensor, via_host: bool) -> jax.Array:
    if via_host:
        t = t.cpu()  # torch on CUDA, JAX without it: copy through host memory
    return jnp.from_dlpack(t.detach().contiguous())


# shard_map's specs: arrays split along the env axis, the carry (state, step, return, key, spare,
# spare used) with its key replicated, rollout buffers [T, N, ...] split along N.
_ENVS = P("envs")
_CARRY = (_ENVS, _ENVS, _ENVS, P(), _ENVS, _ENVS)
_STEPS_ENVS = P(None, "envs")


class BraxVecEnv:
    """``num_envs`` copies of a Brax task stepped by one jitted, vmapped function.

    Args:
        name: Brax task name (``ant``, ``halfcheetah``, ...), see :func:`env_names`.
        num_envs: batch size ``N``.
        backend: Brax physics pipeline, one of :data:`BACKENDS`.
        episode_length: time limit in steps; reaching it is a truncation.
        device: torch device the tensors are handed to.
        shards: ``auto`` or a count: the batch is split into that many equal shards, each
            stepped on its own XLA device (a CPU core, or a GPU), see :func:`plan_shards`.
            Every result is gathered back into one ``[N, ...]`` (or ``[T, N, ...]``) tensor on
            ``device``, in the same env order as with one shard.
    """

    def __init__(
        self,
        name: str,
        num_envs: int,
        backend: str = "spring",
        episode_length: int = 1000,
        device: torch.device | str = "cpu",
        shards: int | str = "auto",
        **env_kwargs: Any,
    ) -> None:
        envs = _import_brax_envs()
        if backend not in BACKENDS:
            raise ValueError(f"unknown Brax backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        try:
            self._env = _make_brax_env(envs, name, backend, env_kwargs)
        except ValueError as e:
            if "backend" not in str(e).lower():
                raise
            raise ValueError(f"Brax env {name!r} does not run on backend {backend!r} ({e}); "
                             f"try --backend generalized") from None
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.backend = backend
        # Decided once, not per step: does an action need a host copy to reach JAX?
        note = host_crossing_note(self.device, jax.devices()[0].platform)
        self._via_host = note is not None
        if note is not None:
            import warnings

            warnings.warn(note, RuntimeWarning, stacklevel=2)
        # JAX computes where torch does: on the CPU for a CPU run even when JAX has a GPU (torch's
        # CPU tensors cannot meet GPU arrays in one program), and with several GPUs (one
        # data-parallel process each) on the GPU this process's torch uses.
        # Every input is placed on this device explicitly ("committed" in JAX's terms): a jitted
        # function compiles separately for committed and uncommitted inputs, and arrays handed
        # over by DLPack are committed, so an uncommitted first carry cost a second compilation.
        self._place(shards)
        limits = self._action_limits()
        self.spec = EnvSpec(
            name=name,
            simulator="brax",
            obs_dim=self._observation_size(),
            act_dim=int(self._env.action_size),
            action_low=limits[0],
            action_high=limits[1],
            dt=float(self._env.dt),
            episode_length=int(episode_length),
        )
        self._carry: tuple | None = None
        self._unfinished: Callable[[], dict[str, torch.Tensor]] | None = None  # a started rollout
        # The time limit is an argument, not a constant of the programs: envs of one task and
        # batch size share their compiled step and rollouts whatever their episode length.
        self._limit = self._put(jnp.int32(episode_length))
        self._pair_fn = self._program(self._draw_pair, (P(), P()), (_ENVS, _ENVS))
        self._step_fn = self._program(self._step_impl, (_CARRY, _ENVS, P()), (_CARRY, _ENVS, P()), donate=(0,))
        self._rollout_fns: dict[tuple, Any] = {}

    def _place(self, shards: int | str) -> None:
        """The JAX devices: ``_jax_device`` (where results are gathered, the one torch shares)
        and, with several shards, ``_mesh`` over one device per shard (``None`` with one)."""
        if self.device.type == "cuda" and not self._via_host:
            gpus = jax.devices("gpu")
            first = min(self.device.index or 0, len(gpus) - 1)
            devices = gpus[first:] + gpus[:first]
        else:
            devices = jax.devices("cpu")
        self.shards, note = plan_shards(shards, self.num_envs, len(devices))
        if note is not None:
            import sys

            print(f"note: {note}", file=sys.stderr)
        self._jax_device = devices[0]
        self._mesh = Mesh(np.array(devices[:self.shards]), (SHARD_AXIS,)) if self.shards > 1 else None

    def _program(self, fun: Callable, in_specs: Any, out_specs: Any, donate: tuple[int, ...] = ()) -> Any:
        """``fun`` jitted; with several shards each runs it on its own envs (``jax.shard_map``,
        arrays split along the specs' ``envs`` axis, the others replicated). ``check_vma`` is
        off: some Brax tasks write constants into their state, which JAX's check types as
        replicated where the loops' carries hold them per env; what is replicated here (keys,
        step counter, ``halted``) is so by construction (:meth:`_local`, :meth:`_any`)."""
        if self._mesh is not None:
            fun = jax.shard_map(fun, mesh=self._mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
        return jit(fun, self._jax_device, donate_argnums=donate)

    def _put(self, x: Any, spec: P = P()) -> Any:
        """``x`` committed to the env's device, or with shards laid out per ``spec``."""
        where = self._jax_device if self._mesh is None else NamedSharding(self._mesh, spec)
        return jax.device_put(x, where)

    def _local(self, full: jax.Array) -> jax.Array:
        """Inside a shard: its own rows of ``full [N, ...]``, an array every shard computed alike
        (keys, noise), so a shard draws what the same envs draw unsharded."""
        if self._mesh is None:
            return full
        n = self.num_envs // self.shards
        return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(SHARD_AXIS) * n, n)

    def _any(self, x: jax.Array) -> jax.Array:
        """Whether any env (of every shard) has ``x`` set."""
        local = jnp.any(x)
        if self._mesh is None:
            return local
        return jax.lax.psum(local.astype(jnp.int32), SHARD_AXIS) > 0

    def _observation_size(self) -> int:
        """Brax's ``observation_size`` runs ``reset`` op by op, 3-10 s per task on a CPU; the
        shapes alone (``jax.eval_shape``, nothing computed) take a tenth of a second."""
        obs = jax.eval_shape(self._env.reset, jax.ShapeDtypeStruct((2,), jnp.uint32)).obs
        return int(obs.shape[-1])

    def _action_limits(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Brax envs act in [-1, 1]: those with other actuator ranges (humanoid, pusher,
        inverted_pendulum) rescale inside ``step``, the others clip in the actuator."""
        n = int(self._env.action_size)
        return (-1.0,) * n, (1.0,) * n

    # --- jitted pure functions -------------------------------------------------------------

    def _draw_pair(self, key_a: jax.Array, key_b: jax.Array) -> tuple[Any, Any]:
        """Two batches of ``num_envs`` fresh random initial states, one key per env, in one
        vmapped reset of ``2 N`` envs. It is the only program that runs Brax's ``reset``:
        XLA compiles ``reset`` once, for the first states and for every redraw of spares."""
        n = self.num_envs
        keys = [self._local(jax.random.split(k, n)) for k in (key_a, key_b)]
        both = jax.vmap(self._env.reset)(jnp.concatenate(keys))
        n = keys[0].shape[0]  # this shard's envs
        return tuple(jax.tree.map(lambda x, s=s: x[s], both) for s in (slice(0, n), slice(n, 2 * n)))

    def _step_impl(self, carry: tuple, action: jax.Array, limit: jax.Array) -> tuple:
        """One step of every env, or none: ``(carry, out, halted)``; an episode reaching
        ``limit`` steps is truncated.

        An ended env restarts from its spare fresh initial state. If an env ends whose spare is
        already spent, nothing is stepped: the same ``carry`` comes back with ``halted`` set, the
        caller redraws every spare (:meth:`_refill`) and steps again with the same action. So the
        compiled step holds no ``reset``, and every restart still starts from a random state no
        episode has used, while the redraw costs one vmapped reset per many steps.
        """
        state, t, ep_return, key, spare, used = carry
        nxt = jax.vmap(self._env.step)(state, action)
        t1 = t + 1
        ep_return1 = ep_return + nxt.reward
        terminated = nxt.done > 0
        truncated = (t1 >= limit) & ~terminated
        done = terminated | truncated
        halted = self._any(done & used)

        def pick(new_leaf: jax.Array, old_leaf: jax.Array) -> jax.Array:
            mask = done.reshape(done.shape + (1,) * (old_leaf.ndim - 1))
            return jnp.where(mask, new_leaf, old_leaf)

        restarted = jax.tree.map(pick, spare, nxt)
        out = (restarted.obs, nxt.reward, terminated, truncated, nxt.obs, ep_return1, t1)
        stepped = (restarted, jnp.where(done, 0, t1), jnp.where(done, 0.0, ep_return1), jax.random.split(key)[0],
                   spare, used | done)
        carry = jax.tree.map(lambda old, new: jnp.where(halted, old, new), carry, stepped)
        return carry, out, halted

    # --- host-side driving of the compiled programs ----------------------------------------

    def _refill(self, carry: tuple) -> tuple:
        """Every env's spare replaced by a fresh initial state (from the carry's key, which the
        step then advances as usual), all marked unused."""
        state, t, ep_return, key, _spare, used = carry
        sub = jax.random.split(key)[1]
        fresh, _ = self._pair_fn(sub, sub)  # the second half (the same states) is dropped
        return (state, t, ep_return, key, fresh, jnp.zeros_like(used))

    def _key(self, seed: int) -> jax.Array:
        """A PRNG key committed to the env's JAX device (the carry then follows it)."""
        return self._put(jax.random.PRNGKey(seed))

    # --- torch-facing API ------------------------------------------------------------------

    def reset(self, seed: int) -> torch.Tensor:
        self._finish()
        key, key_a, key_b = jax.random.split(self._key(seed), 3)
        first, spare = self._pair_fn(key_a, key_b)
        n = self.num_envs
        zeros = self._put(jnp.zeros((n,), jnp.int32), _ENVS)
        # (state, steps in episode, episode return, key, spare fresh states, spare used up?)
        self._carry = (first, zeros, zeros.astype(jnp.float32), key, spare, zeros.astype(bool))
        # A copy, as the rollout's next_obs: the carry is donated to the next step, which may
        # write into its buffers (on the CPU) or refuse a buffer torch still views (on a GPU).
        return self._to_torch(first.obs)[0].clone()

    def step(self, action: torch.Tensor) -> StepResult:
        if self._carry is None:
            raise RuntimeError("call reset(seed) before step()")
        self._finish()
        act = _torch_to_jax(action.float(), self._via_host)
        if self._mesh is not None:
            act = self._put(act, _ENVS)
        carry, out, halted = self._step_fn(self._carry, act, self._limit)
        if bool(halted):  # an env ended with its spare spent: redraw the spares, step again
            carry, out, halted = self._step_fn(self._refill(carry), act, self._limit)
        self._carry = carry
        return StepResult(*self._to_torch(*out))

    def rollout(self, agent: Any, num_steps: int, seed: int) -> dict[str, torch.Tensor]:
        """``num_steps`` steps of ``agent``'s stochastic policy in one compiled program.

        The same as ``start_rollout(agent, num_steps, seed)()``.
        """
        return self.start_rollout(agent, num_steps, seed)()

    def start_rollout(self, agent: Any, num_steps: int, seed: int) -> Callable[[], dict[str, torch.Tensor]]:
        """Start :meth:`rollout` and return at once; calling the result waits for its tensors.

        JAX dispatches the compiled program asynchronously, so torch can work meanwhile (the
        critic's update, see :func:`stridelab.rollout.start_collect`) as long as it leaves the
        policy's weights and the observation normalizer alone until the tensors are fetched.

        The policy's forward pass runs inside the jitted loop (:mod:`stridelab.envs.jax_policy`)
        on weights handed over once; the noise comes from a JAX key made from ``seed``. Returns
        ``[T, N, ...]`` tensors: ``obs`` (seen before each step), ``u`` (the unclipped samples),
        ``reward``, ``terminated``, ``truncated``, ``final_obs``, ``episode_return``,
        ``episode_length``, and ``next_obs [N, obs_dim]`` to continue from.

        The loop stops early where a step halts (an env ends with its spare spent, see
        :meth:`_step_impl`); fetching the result then redraws the spares and runs the loop on
        from that step, with the same keys, so the trajectory does not depend on where it stopped.
        """
        from stridelab.envs import jax_policy

        if self._carry is None:
            raise RuntimeError("call reset(seed) before rollout()")
        self._finish()
        T = int(num_steps)
        fn = self._rollout_program(T, float(agent.obs_rms.clip), float(agent.policy.min_std),
                                   jax_policy.structure(agent))
        params, key = jax_policy.policy_params(agent, self._via_host), self._key(seed)
        if self._mesh is not None:
            params = self._put(params)
        fields = self._rollout_fields()
        bufs = tuple(self._put(jnp.zeros((T, self.num_envs) + tail, dtype), _STEPS_ENVS)
                     for tail, dtype in fields.values())
        t0 = self._put(jnp.zeros((), jnp.int32))
        self._carry, bufs, t_end = fn(self._carry, params, key, t0, self._limit, bufs)
        done: dict[str, torch.Tensor] = {}

        def result() -> dict[str, torch.Tensor]:
            nonlocal bufs, t_end
            if done:
                return done
            while int(t_end) < T:  # halted: redraw the spares, go on from that step
                self._carry, bufs, t_end = fn(self._refill(self._carry), params, key, t_end, self._limit, bufs)
            *tensors, next_obs = self._to_torch(*bufs, self._carry[0].obs)
            done.update(zip(fields, tensors))
            # A copy: the carry's buffers are donated to (and overwritten by) the next call.
            done["next_obs"] = next_obs.clone()
            self._unfinished = None
            return done

        self._unfinished = result
        return result

    def _rollout_fields(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        """The rollout's outputs per step: name -> (shape after ``[T, N]``, dtype), in the
        order the loop writes them."""
        od, ad, f32 = self.spec.obs_dim, self.spec.act_dim, jnp.float32
        return {"obs": ((od,), f32), "u": ((ad,), f32), "reward": ((), f32), "terminated": ((), bool),
                "truncated": ((), bool), "final_obs": ((od,), f32), "episode_return": ((), f32),
                "episode_length": ((), jnp.int32)}

    def _rollout_program(self, num_steps: int, clip: float, min_std: float, layers: tuple[str, ...]) -> Any:
        """The jitted rollout loop for this policy shape (compiled once per shape and number of steps)."""
        from stridelab.envs import jax_policy

        fn_key = (num_steps, clip, min_std, layers)
        if fn_key in self._rollout_fns:
            return self._rollout_fns[fn_key]

        def run(carry: tuple, params: dict, key: jax.Array, t0: jax.Array, limit: jax.Array, bufs: tuple) -> tuple:
            keys = jax.random.split(key, num_steps)

            def body(loop: tuple) -> tuple:
                t, c, b, _ = loop
                obs = c[0].obs
                action, u = jax_policy.sample(params, obs, keys[t], clip, min_std, layers, self._normal)
                c, out, halted = self._step_impl(c, action, limit)
                # A halted step's row is written and then overwritten when the loop resumes.
                b = tuple(buf.at[t].set(x) for buf, x in zip(b, (obs, u) + out[1:]))
                return jnp.where(halted, t, t + 1), c, b, halted

            def cond(loop: tuple) -> jax.Array:
                return (loop[0] < num_steps) & ~loop[3]

            t, carry, bufs, _ = jax.lax.while_loop(cond, body, (t0, carry, bufs, jnp.zeros((), bool)))
            return carry, bufs, t

        fn = self._rollout_fns[fn_key] = self._program(run, (_CARRY, P(), P(), P(), P(), _STEPS_ENVS),
                                                       (_CARRY, _STEPS_ENVS, P()), donate=(0, 5))
        return fn

    def _normal(self, key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
        """The policy's noise ``[n, act_dim]`` for this shard's ``n`` envs: its rows of the
        draw for all ``N`` (the same numbers as one shard's, whatever the shard count; the
        extra draws cost little next to a physics step)."""
        return self._local(jax.random.normal(key, (self.num_envs,) + tuple(shape[1:]), dtype))

    def _to_torch(self, *xs: jax.Array) -> list[torch.Tensor]:
        """JAX results as torch tensors on ``device``: gathered onto one device first when they
        are split over shards (DLPack hands over one device's buffer), all in one transfer."""
        if self._mesh is not None:
            xs = jax.device_put(xs, self._jax_device)
        return [_jax_to_torch(x, self.device) for x in xs]

    def _finish(self) -> None:
        """Run a started rollout to its end before anything else uses the carry."""
        if self._unfinished is not None:
            self._unfinished()

    @property
    def pipeline_states(self) -> Any:
        """Current batched Brax physics state (for rendering)."""
        self._finish()
        return None if self._carry is None else self._carry[0].pipeline_state

    @property
    def brax_env(self) -> Any:
        return self._env

    def close(self) -> None:
        self._carry, self._unfinished = None, None


