"""``stridelab report DIR``: learning curves with confidence bands, final-performance statistics,
speed, hyperparameters and videos, as ``report.md`` (with PNGs beside it) and a self-contained
``report.html`` (images embedded).

Statistics follow Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice"):
interquartile mean (IQM), percentile bootstrap confidence intervals over seeds (with one task
the stratified bootstrap is the plain bootstrap over runs), and the probability of improvement
``P(X > Y)`` between two algorithms. Bootstraps use ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 5000


# --------------------------------------------------------------------------------------------
# statistics (pure numpy/scipy, tested on synthetic data)


def iqm(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% (25% trimmed from each end)."""
    return stats.trim_mean(x, 0.25, axis=axis)


def bootstrap_ci(samples: np.ndarray, statistic: Any = np.mean, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``statistic`` over ``samples`` (1-D). One sample: ``(x, x)``."""
    samples = np.asarray(samples, dtype=np.float64)
    if len(samples) == 0:
        return math.nan, math.nan
    if len(samples) == 1 or np.all(samples == samples[0]):
        v = float(statistic(samples))
        return v, v
    res = stats.bootstrap((samples,), lambda x, axis: statistic(x, axis=axis), vectorized=True,
                          confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``P(X > Y) + 0.5 P(X = Y)`` over all pairs of runs (the Mann-Whitney U statistic / nm)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xe, ye = np.expand_dims(x, axis - 1 if axis < 0 else axis + 1), np.expand_dims(y, axis)
    gt = (xe > ye).astype(np.float64) + 0.5 * (xe == ye)
    return gt.mean(axis=(axis, axis - 1) if axis < 0 else (axis, axis + 1))


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        v = float(probability_of_improvement(x, y))
        return v, v
    res = stats.bootstrap((x, y), lambda a, b, axis: probability_of_improvement(a, b, axis=axis), vectorized=True,
                          paired=False, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def band(values: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over seeds and its bootstrap CI at every point: ``values [seeds, points]``."""
    values = np.asarray(values, dtype=np.float64)
    mean = values.mean(0)
    if values.shape[0] < 2:
        return mean, mean.copy(), mean.copy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(N_RESAMPLES, values.shape[0]))
    boot = values[idx].mean(1)  # [resamples, points]
    alpha = (1 - CONFIDENCE) / 2
    return mean, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)


# --------------------------------------------------------------------------------------------
# loading runs


@dataclass
class RunData:
    name: str
    algo: str
    seed: int
    env: str
    config: dict[str, Any]
    summary: dict[str, Any]
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
        pts = self.scalars.get(tag, [])
        return np.array([p[0] for p in pts], dtype=np.float64), np.array([p[1] for p in pts], dtype=np.float64)

    @property
    def final_return(self) -> float:
        if self.summary.get("eval/episodic_return") is not None:
            return float(self.summary["eval/episodic_return"])
        steps, vals = self.series("eval/episodic_return")
        if len(vals):
            return float(vals[-1])
        return float(self.summary.get("train/final_return", math.nan))

    def wall_clock_at(self, steps: np.ndarray) -> np.ndarray:
        s, w = self.series("charts/wall_clock")
        return np.interp(steps, s, w) if len(s) else np.full_like(steps, math.nan)


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                out.setdefault(tag, {})[e.step] = e.value  # a resumed run may repeat a step
    return {k: sorted(v.items()) for k, v in out.items()}


def load_runs(out: Path) -> list[RunData]:
    runs = []
    for d in sorted(p for p in Path(out).iterdir() if p.is_dir() and (p / "config.json").is_file()):
        config = _run_config(d / "config.json")
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
        runs.append(RunData(d.name, config["algo"], int(config["seed"]), config["env"], config, summary, read_scalars(d)))
    return runs


def _run_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, with the fields the report needs checked (one line on a bad one)."""
    from stridelab.errors import ConfigError

    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{str(path)!r} is not valid JSON ({e})") from None
    for name, kind in (("algo", str), ("seed", int), ("env", str)):
        if not isinstance(config, dict) or not isinstance(config.get(name), kind):
            got = config.get(name) if isinstance(config, dict) else config
            raise ConfigError(f"{str(path)!r}: field {name!r} must be {'a string' if kind is str else 'an integer'}, "
                              f"got {got!r}; is {str(path.parent)!r} a stridelab run?")
    return config


def group(runs: list[RunData], order: list[str] | None = None) -> dict[str, list[RunData]]:
    """Runs by algorithm, in ``order`` (names it lacks last, alphabetically), each by seed."""
    rank = {a: i for i, a in enumerate(order or [])}
    groups: dict[str, list[RunData]] = {}
    for r in sorted(runs, key=lambda r: (rank.get(r.algo, len(rank)), r.algo, r.seed)):
        groups.setdefault(r.algo, []).append(r)
    return groups


def color(algo: str) -> str:
    """The same colour for an algorithm in every figure: its place in the registry."""
    from stridelab.algos import algorithm_names

    names = list(algorithm_names())
    return f"C{names.index(algo) % 10}" if algo in names else "C9"


def aligned(runs: list[RunData], tag: str, points: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Each run's ``tag`` on a common step grid: the runs' own steps when they all share them
    (evaluations), else interpolated onto ``points`` steps up to the shortest run. ``[runs, points]``."""
    series = [r.series(tag) for r in runs]
    series = [(s, v) for s, v in series if len(s)]
    if not series:
        return np.zeros(0), np.zeros((0, 0))
    if all(len(s) == len(series[0][0]) and np.array_equal(s, series[0][0]) for s, _ in series):
        return series[0][0], np.stack([v for _, v in series])
    end = min(s[-1] for s, _ in series)
    start = max(s[0] for s, _ in series)
    grid = np.linspace(start, end, points) if end > start else np.array([end])
    return grid, np.stack([np.interp(grid, s, v) for s, v in series])


# --------------------------------------------------------------------------------------------
# figures


def plot_curves(groups: dict[str, list[RunData]], path: Path, tag: str, ylabel: str, markers: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for algo, runs in groups.items():
        algo_color = color(algo)
        grid, vals = aligned(runs, tag)
        if not len(grid):
            continue
        mean, lo, hi = band(vals)
        minutes = np.mean([r.wall_clock_at(grid) for r in runs], axis=0) / 60.0
        label = f"{algo.upper()} (mean of {len(runs)} seeds, 95% CI)"
        for ax, x in ((axes[0], grid / 1e6), (axes[1], minutes)):
            line, = ax.plot(x, mean, color=algo_color, lw=2, label=label, marker="o" if markers else None, ms=5)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
            for r in runs:
                s, v = r.series(tag)
                xs = s / 1e6 if ax is axes[0] else r.wall_clock_at(s) / 60.0
                ax.plot(xs, v, color=line.get_color(), lw=0.6, alpha=0.35)
    for ax in axes:
        ax.set_xlim(left=0)
    axes[0].set_xlabel("env steps (millions)")
    axes[1].set_xlabel("wall-clock (minutes, mean over seeds)")
    for ax in axes:
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(loc="upper left", fontsize=9)
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    env = next(iter(groups.values()))[0].env
    fig.suptitle(f"{env}: {ylabel} (thin lines: single seeds)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


DIAGNOSTICS = [("diagnostics/kl_mean", "mean KL(old || new)"), ("diagnostics/kl_max", "max KL(old || new)"),
               ("diagnostics/ratio_max", "largest probability ratio"),
               ("diagnostics/ratio_outside_clip", "ratios outside [1-eps, 1+eps]")]


def plot_diagnostics(groups: dict[str, list[RunData]], path: Path) -> Path | None:
    """How far each update moved the policy, per algorithm over training (mean over seeds, log
    scale): Engstrom et al.'s point that PPO's clip does not bound the KL or the ratios. None when
    the runs logged no diagnostics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(DIAGNOSTICS[0][0] in r.scalars for rs in groups.values() for r in rs):
        return None
    fig, axes = plt.subplots(1, len(DIAGNOSTICS), figsize=(4 * len(DIAGNOSTICS), 3.6), constrained_layout=True)
    for ax, (tag, title) in zip(axes, DIAGNOSTICS):
        for algo, runs in groups.items():
            grid, vals = aligned(runs, tag)
            if len(grid):
                ax.plot(grid / 1e6, vals.mean(0), color=color(algo), lw=1.5, label=algo.upper())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("env steps (millions)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pairwise(groups: dict[str, list[RunData]], pairs: list[dict[str, Any]], path: Path) -> Path | None:
    """``P(row beats column)`` for every pair of algorithms, as a matrix (from three algorithms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    if len(names) < 3:
        return None
    matrix = np.full((len(names), len(names)), np.nan)
    for p in pairs:
        if p["p"] is None:
            continue
        i, j = names.index(p["x"]), names.index(p["y"])
        matrix[i, j], matrix[j, i] = p["p"], 1.0 - p["p"]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 0.9 + 0.8 * len(names)), constrained_layout=True)
    ax.imshow(matrix, cmap="RdBu", vmin=0, vmax=1)
    for i, j in itertools.product(range(len(names)), repeat=2):
        if i != j:
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if abs(matrix[i, j] - 0.5) > 0.3 else "black")  # legible on the dark ends
    ax.set_xticks(range(len(names)), [n.upper() for n in names], rotation=30)
    ax.set_yticks(range(len(names)), [n.upper() for n in names])
    ax.set_title("P(row's final return > column's)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def factor_cells(groups: dict[str, list[RunData]]) -> dict[tuple[str, str], np.ndarray] | None:
    """The final returns of the 2 x 2 design (core: clip / trust region; optimizations: off / on)
    by each algorithm's registry factors; None unless all four cells have runs."""
    from stridelab.algos import algorithm_names, get

    cells: dict[tuple[str, str], list[float]] = {}
    for algo, runs in groups.items():
        factors = get(algo).factors if algo in algorithm_names() else {}
        key = (factors.get("core", ""), factors.get("optimizations", ""))
        if key[0] in ("clip", "trust region") and key[1] in ("off", "on"):
            cells.setdefault(key, []).extend(r.final_return for r in runs)
    if len(cells) < 4:
        return None
    return {k: np.asarray(v, dtype=np.float64) for k, v in cells.items()}


def factor_effects(cells: dict[tuple[str, str], np.ndarray], seed: int = 0) -> dict[str, dict[str, float]]:
    """Effect sizes on the mean final return with 95% bootstrap CIs (seeds resampled within each
    cell): core (clip minus trust region, averaged over both optimization levels), optimizations
    (on minus off, averaged over both cores) and their interaction."""
    def effects(m: dict[tuple[str, str], float]) -> np.ndarray:
        c_on, c_off, t_on, t_off = (m[k] for k in (("clip", "on"), ("clip", "off"), ("trust region", "on"),
                                                   ("trust region", "off")))
        return np.array([((c_on - t_on) + (c_off - t_off)) / 2, ((c_on - c_off) + (t_on - t_off)) / 2,
                         (c_on - c_off) - (t_on - t_off)])

    rng = np.random.default_rng(seed)
    point = effects({k: float(v.mean()) for k, v in cells.items()})
    boot = np.stack([effects({k: float(rng.choice(v, len(v)).mean()) for k, v in cells.items()})
                     for _ in range(N_RESAMPLES)])
    lo, hi = np.quantile(boot, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2], axis=0)
    names = ("core: clip - trust region", "optimizations: on - off", "interaction")
    return {n: {"effect": float(e), "ci": (float(a), float(b))} for n, e, a, b in zip(names, point, lo, hi)}


def plot_factors(cells: dict[tuple[str, str], np.ndarray], effects: dict[str, dict[str, float]], path: Path) -> Path:
    """Left: mean final return of each cell (with its bootstrap CI) against the optimizations,
    one line per core method. Right: the effects with their CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for core, col in (("clip", "C0"), ("trust region", "C1")):
        means = [cells[(core, o)].mean() for o in ("off", "on")]
        cis = [bootstrap_ci(cells[(core, o)]) for o in ("off", "on")]
        err = np.array([[m - lo for m, (lo, _) in zip(means, cis)], [hi - m for m, (_, hi) in zip(means, cis)]])
        left.errorbar([0, 1], means, yerr=err, color=col, marker="o", capsize=4, lw=2, label=core)
    left.set_xticks([0, 1], ["code-level optimizations off", "on"])
    left.set_ylabel("mean final return (95% CI)")
    left.legend(fontsize=9)
    left.grid(alpha=0.3)
    for i, (name, e) in enumerate(effects.items()):
        right.plot(e["ci"], [i, i], color="C2", lw=6, alpha=0.4, solid_capstyle="butt")
        right.plot([e["effect"]], [i], "|", color="C2", ms=20, mew=3)
    right.axvline(0, color="gray", lw=1)
    right.set_yticks(range(len(effects)), list(effects))
    right.set_xlabel("effect on the mean final return (95% bootstrap CI)")
    right.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_final(groups: dict[str, list[RunData]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.7 * len(groups)), constrained_layout=True)
    for i, (algo, runs) in enumerate(groups.items()):
        x = np.array([r.final_return for r in runs])
        algo_color = color(algo)
        lo, hi = bootstrap_ci(x, iqm)
        ax.plot([lo, hi], [i, i], color=algo_color, lw=6, alpha=0.35, solid_capstyle="butt")
        ax.plot([iqm(x)], [i], "|", color=algo_color, ms=22, mew=3, label=f"{algo.upper()} IQM")
        ax.plot(x, np.full_like(x, i) + 0.18, "o", color=algo_color, ms=5, alpha=0.8)
    ax.set_yticks(range(len(groups)), [a.upper() for a in groups])
    ax.set_ylim(-0.6, len(groups) - 0.4)
    ax.set_xlabel("final evaluation return (bar: IQM with 95% bootstrap CI; dots: seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# velocity-command tasks: the command set (stridelab.locomotion), from each run's summary.json

COMMAND_METRICS = ("lin_vel_error", "yaw_rate_error", "falls_per_episode", "return")
# Issue 30's acceptance (every seed, randomized): drawn as dashed lines in the bar chart.
COMMAND_TARGETS = {"lin_vel_error": 0.2, "yaw_rate_error": 0.3, "falls_per_episode": 0.02}


def command_stats(groups: dict[str, list[RunData]]) -> dict[str, Any] | None:
    """Per algorithm, condition (nominal, randomized) and command (then ``overall``): each metric's
    mean over the seeds whose final evaluation measured it (``summary.json``'s ``command_set``),
    with ``runs``, how many runs had the table. None when no run has one (not a velocity-command task)."""
    tables = {algo: [r.summary["command_set"] for r in rs if isinstance(r.summary.get("command_set"), dict)]
              for algo, rs in groups.items()}
    if not any(tables.values()):
        return None
    result: dict[str, Any] = {}
    for algo, runs in tables.items():
        conditions = [c for c in ("nominal", "randomized") if runs and all(c in t for t in runs)]
        result[algo] = {"runs": len(runs), **{c: {name: _seed_means([t[c][name] for t in runs])
                                                   for name in runs[0][c]} for c in conditions}}
    return result


def _seed_means(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in COMMAND_METRICS:
        values = [row[key] for row in rows if row.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


COMMAND_PANELS = (("lin_vel_error", "linear-velocity error (m/s)"), ("yaw_rate_error", "yaw-rate error (rad/s)"),
                  ("falls_per_episode", "falls per episode"))


def plot_commands(stats_: dict[str, Any], path: Path) -> Path:
    """Bars per command, one per algorithm (mean over seeds): linear-velocity and yaw-rate
    tracking errors and falls per episode, nominal (top) and randomized (bottom); dashed:
    :data:`COMMAND_TARGETS`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = [c for c in ("nominal", "randomized") if any(c in s for s in stats_.values())]
    fig, axes = plt.subplots(len(conditions), len(COMMAND_PANELS), figsize=(16, 3.4 * len(conditions)),
                             squeeze=False, constrained_layout=True)
    width = 0.8 / len(stats_)
    for row, condition in zip(axes, conditions):
        names = next(list(s[condition]) for s in stats_.values() if condition in s)
        for ax, (key, label) in zip(row, COMMAND_PANELS):
            for i, (algo, s) in enumerate(stats_.items()):
                values = [s.get(condition, {}).get(n, {}).get(key) for n in names]
                ax.bar(np.arange(len(names)) + (i - (len(stats_) - 1) / 2) * width,
                       [math.nan if v is None else v for v in values], width, color=color(algo), label=algo.upper())
            ax.axhline(COMMAND_TARGETS[key], color="gray", ls="--", lw=1)
            ax.set_ylim(bottom=0)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"{condition}: {label} (dashed: target)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _command_blocks(stats_: dict[str, Any], image: Path) -> list[tuple[str, Any]]:
    header = ["condition", "command", "algorithm", "runs", "lin-vel error (m/s)", "yaw-rate error (rad/s)",
              "falls per episode", "return"]
    rows = []
    for condition in ("nominal", "randomized"):
        names = next((list(s[condition]) for s in stats_.values() if condition in s), [])
        for name, (algo, s) in itertools.product(names, stats_.items()):
            m = s.get(condition, {}).get(name)
            if m is not None:
                rows.append([condition, name, algo.upper(), str(s["runs"]),
                             *(_fmt(m[k], 2) for k in COMMAND_METRICS)])
    return [("h2", "Following velocity commands"),
            ("p", "Each run's final evaluation over a fixed command set (standing, forward 0.5 and 1.0 m/s, sideways "
                  "0.5 m/s, turning left and right at 1 rad/s, a mix), each command held for a whole episode, "
                  "deterministic actions, nominal and with every domain randomization on. Errors are means over "
                  "steps of the body-frame velocity's distance from the command (read noise-free), from 1 s after "
                  "reset until a fall; falls: the fraction of episodes ended by a fall. Mean over seeds; "
                  "`overall` pools every command's episodes."),
            ("img", image), ("table", (header, rows))]


# --------------------------------------------------------------------------------------------
# the report


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


# Shown for every algorithm; each algorithm's own settings follow (its registry entry's ``fields``).
COMMON_HYPERPARAMETERS = ["total_steps", "num_envs", "num_steps", "episode_length", "backend", "gamma", "gae_lambda",
                          "hidden_sizes", "value_hidden_sizes", "activation", "init_std", "state_dependent_std",
                          "ortho_init", "normalize_obs", "obs_clip", "normalize_reward", "reward_clip",
                          "reward_scale", "norm_adv", "clip_vloss", "clip_grad", "max_grad_norm", "eval_every",
                          "eval_episodes"]


def algo_fields(algo: str) -> tuple[str, ...]:
    """The settings only ``algo`` uses: its registry entry's, else those of the algorithm its
    presets come from (none for an algorithm this process does not know)."""
    from stridelab.algos import algorithm_names, get

    if algo not in algorithm_names():
        return ()
    entry = get(algo)
    if entry.fields or entry.preset == algo or entry.preset not in algorithm_names():
        return entry.fields
    return get(entry.preset).fields


def build_report(out: Path) -> dict[str, Any]:
    """Compute everything and write report.md, report.html, report.json and the figures into
    ``out``; returns what report.json holds: per algorithm its final returns and their IQM and
    mean with CIs, and the probability of improvement of every pair."""
    out = Path(out)
    runs = load_runs(out)
    if not runs:
        raise ValueError(f"no runs found in {str(out)!r} (expected <algo>_s<seed>/config.json folders)")
    groups = group(runs, _algo_order(out))
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    images = {
        "eval": plot_curves(groups, figs / "eval_return.png", "eval/episodic_return", "evaluation return",
                            markers=True),
        "train": plot_curves(groups, figs / "train_return.png", "charts/episodic_return", "training episode return"),
        "final": plot_final(groups, figs / "final_return.png"),
        "diagnostics": plot_diagnostics(groups, figs / "diagnostics.png"),
    }
    from stridelab.provenance import provenance

    result = {"algorithms": final_stats(groups), "pairs": pairwise(groups), "provenance": provenance()}
    images["pairwise"] = plot_pairwise(groups, result["pairs"], figs / "pairwise.png")
    cells = factor_cells(groups)
    if cells is not None:
        result["factors"] = factor_effects(cells)
        images["factors"] = plot_factors(cells, result["factors"], figs / "factors.png")
    commands = command_stats(groups)
    if commands is not None:  # a velocity-command task (Go1)
        result["command_set"] = commands
        images["commands"] = plot_commands(commands, figs / "command_set.png")
    blocks = _blocks(out, runs, groups, images, result)
    (out / "report.md").write_text(_to_markdown(blocks, out))
    (out / "report.html").write_text(_to_html(blocks, runs[0].env))
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _algo_order(out: Path) -> list[str]:
    """The order ``compare --algos`` gave (compare.json), else the registry's."""
    from stridelab.algos import algorithm_names

    meta = out / "compare.json"
    listed = json.loads(meta.read_text()).get("algos", []) if meta.is_file() else []
    return list(dict.fromkeys([*listed, *algorithm_names()]))


def final_stats(groups: dict[str, list[RunData]]) -> dict[str, dict[str, Any]]:
    """Per algorithm: the runs' final returns, IQM and mean with 95% bootstrap CIs, std."""
    result = {}
    for algo, rs in groups.items():
        x = np.array([r.final_return for r in rs])
        result[algo] = {"returns": x.tolist(), "iqm": float(iqm(x)), "iqm_ci": bootstrap_ci(x, iqm),
                        "mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
                        "mean_ci": bootstrap_ci(x, np.mean), "worst": float(x.min()), "best": float(x.max())}
    return result


def pairwise(groups: dict[str, list[RunData]]) -> list[dict[str, Any]]:
    """``P(X > Y)`` with its CI for every pair, X listed before Y (``compare --algos trpo ppo``:
    the probability that TRPO beats PPO)."""
    pairs = []
    algos = list(groups)
    for i, a in enumerate(algos):
        for b in algos[i + 1 :]:
            x, y = (np.array([r.final_return for r in groups[k]]) for k in (a, b))
            if min(len(x), len(y)) < 2:  # one pair of runs gives 0, 0.5 or 1: a coin, not a probability
                pairs.append({"x": a, "y": b, "p": None, "ci": None, "why": _why_no_probability(a, b, x, y)})
                continue
            lo, hi = probability_of_improvement_ci(x, y)
            pairs.append({"x": a, "y": b, "p": float(probability_of_improvement(x, y)), "ci": (lo, hi)})
    return pairs


def _why_no_probability(a: str, b: str, x: np.ndarray, y: np.ndarray) -> str:
    few = a if len(x) < 2 else b
    return (f"one seed of {few.upper()} cannot give a probability of improvement (a single pair of runs gives only "
            f"0, 0.5 or 1); run 2 or more seeds per algorithm (--seeds 3)")


def pair_line(p: dict[str, Any]) -> str:
    """``P(TRPO beats PPO) = 0.67 [0.20, 1.00]``, or ``n/a`` with the reason."""
    head = f"P({p['x'].upper()} beats {p['y'].upper()})"
    if p["p"] is None:
        return f"{head} = n/a: {p['why']}"
    return f"{head} = {p['p']:.2f} [{p['ci'][0]:.2f}, {p['ci'][1]:.2f}]"


def _final_rows(stats_: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = []
    for algo, s in stats_.items():
        (ilo, ihi), (mlo, mhi) = s["iqm_ci"], s["mean_ci"]
        rows.append([algo.upper(), str(len(s["returns"])), f"{_fmt(s['iqm'])} [{_fmt(ilo)}, {_fmt(ihi)}]",
                     f"{_fmt(s['mean'])} +- {_fmt(s['std'])}", f"[{_fmt(mlo)}, {_fmt(mhi)}]", _fmt(s["worst"]),
                     ", ".join(_fmt(v) for v in s["returns"])])
    return rows


def _pairs_text(pairs: list[dict[str, Any]]) -> str:
    return " ".join(f"Probability that {p['x'].upper()} beats {p['y'].upper()}: n/a, {p['why']}." if p["p"] is None
                    else f"Probability that {p['x'].upper()} beats {p['y'].upper()} (a random {p['x'].upper()} seed's "
                    f"final return above a random {p['y'].upper()} seed's): **{p['p']:.2f}** (95% CI "
                    f"[{p['ci'][0]:.2f}, {p['ci'][1]:.2f}])." for p in pairs)


def _speed_rows(groups: dict[str, list[RunData]]) -> list[list[str]]:
    rows = []
    for algo, rs in groups.items():
        sps, wall, steps = ([r.summary.get(k, math.nan) for r in rs]
                            for k in ("charts/SPS", "time/wall_clock_s", "global_step"))
        rows.append([algo.upper(), _fmt(float(np.mean(steps))), _fmt(float(np.mean(sps))),
                     f"{_fmt(float(np.mean(wall)) / 60, 1)} min"])
    return rows


def _hyperparameter_rows(groups: dict[str, list[RunData]]) -> list[list[str]]:
    """One row per setting, one column per algorithm; ``-`` where the algorithm does not use it."""
    from stridelab.envs.registry import simulator_of

    env = next(iter(groups.values()))[0].env
    keys = list(COMMON_HYPERPARAMETERS)
    for algo in groups:
        keys += [k for k in algo_fields(algo) if k not in keys]
    if simulator_of(env) != "brax":  # Brax's physics pipeline only
        keys.remove("backend")
    if simulator_of(env) == "mujoco":  # native MuJoCo's domain randomization of the training envs
        keys.insert(keys.index("episode_length") + 1, "randomize")
    if any(r.config.get("env_kwargs") for rs in groups.values() for r in rs):  # the env's own arguments
        keys.insert(0, "env_kwargs")
    rows = []
    for key in keys:
        cells = []
        for algo, rs in groups.items():
            others = {k for a in groups if a != algo for k in algo_fields(a)} - set(algo_fields(algo))
            cells.append("-" if key in others else str(rs[0].config.get(key, "-")))
        rows.append([key, *cells])
    return rows


def _factor_blocks(effects: dict[str, dict[str, float]], image: Path) -> list[tuple[str, Any]]:
    rows = [[name, _fmt(e["effect"]), f"[{_fmt(e['ci'][0])}, {_fmt(e['ci'][1])}]"] for name, e in effects.items()]
    return [("h2", "What each piece adds: the core method and the code-level optimizations"),
            ("p", "The runs in a 2 x 2 design (Engstrom et al. 2020): the core method (PPO's clip or TRPO's trust "
                  "region) and the code-level optimizations (off or on), each algorithm placed by its registry "
                  "factors (the switches behind them are in the hyperparameter table). Effects on the mean final "
                  "return, each averaged over the other factor's levels, with 95% bootstrap CIs over seeds."),
            ("img", image), ("table", (["effect", "size", "95% CI"], rows))]


def _blocks(out: Path, runs: list[RunData], groups: dict[str, list[RunData]], images: dict[str, Path],
            result: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's content, in order, for the Markdown and HTML writers."""
    blocks: list[tuple[str, Any]] = [
        ("h1", f"{' vs '.join(a.upper() for a in groups)} on {runs[0].env}"),
        ("p", f"{len(runs)} runs: " + ", ".join(f"{a.upper()} x {len(rs)} seeds" for a, rs in groups.items())
              + f"; budget {_fmt(float(runs[0].config['total_steps']))} env steps per run. Open the curves with "
              f"`tensorboard --logdir {out}`."),
        ("h2", "Learning curves"),
        ("p", "Deterministic evaluation return (mean action, fresh episodes; dots: evaluations) against env "
              "steps and against wall-clock; the band is the 95% bootstrap confidence interval of the mean over "
              "seeds."),
        ("img", images["eval"]),
        ("p", "Return of the training episodes (stochastic policy) that ended in each iteration. It trails the "
              "evaluation return: an episode ends early only by a fall, and until the envs reach the time limit "
              "(episode_length steps each) the episodes that end are mostly falls."),
        ("img", images["train"]),
        ("h2", "Final performance"),
        ("p", "Final deterministic evaluation return of each run. IQM: interquartile mean (the mean of the middle "
              "50% of runs; with fewer than 4 runs nothing is trimmed and it equals the mean); CIs: 95% "
              "percentile bootstrap over seeds (with 3 seeds these intervals are wide: read them as such)."),
        ("img", images["final"]),
        ("table", (["algorithm", "runs", "IQM [95% CI]", "mean +- std", "95% CI of mean", "worst seed", "runs' returns"],
                   _final_rows(result["algorithms"]))),
    ]
    if images.get("pairwise") is not None:
        blocks += [("p", "Probability of improvement between every two algorithms (a random seed of the row's "
                         "algorithm ends above a random seed of the column's):"), ("img", images["pairwise"])]
    elif result["pairs"]:
        blocks.append(("p", _pairs_text(result["pairs"])))
    if "factors" in result:
        blocks += _factor_blocks(result["factors"], images["factors"])
    if "command_set" in result:
        blocks += _command_blocks(result["command_set"], images["commands"])
    if images["diagnostics"] is not None:
        blocks += [("h2", "How far each update moves the policy"),
                   ("p", "After every update, on the whole batch: the KL from the old policy to the new (mean and "
                         "largest over the states), the largest probability ratio of the batch's actions, and the "
                         "share of ratios outside PPO's clip range, for every algorithm alike (mean over seeds). "
                         "Engstrom et al. 2020 showed PPO's clipping does not keep these bounded; TRPO's line search "
                         "keeps the mean KL under max_kl."),
                   ("img", images["diagnostics"])]
    blocks += [("h2", "Speed"), ("table", (["algorithm", "env steps", "steps/s", "wall-clock per run"],
                                           _speed_rows(groups)))]
    blocks += _media_blocks(out)
    blocks += [("h2", "Hyperparameters"), ("table", (["setting", *[a.upper() for a in groups]],
                                                     _hyperparameter_rows(groups)))]
    return blocks + _provenance_blocks(runs, result["provenance"])


def _media_blocks(out: Path) -> list[tuple[str, Any]]:
    """The best policies side by side from one start state, then each alone (``media/``)."""
    media_file = out / "media" / "media.json"
    media = json.loads(media_file.read_text()) if media_file.is_file() else {}
    if not media:
        return []
    blocks: list[tuple[str, Any]] = [("h2", "Best policies")]
    if (out / "media" / "side_by_side.gif").is_file():
        blocks += [("p", f"Each algorithm's best run from the same start state, side by side "
                         f"([MP4](media/side_by_side.mp4)):"), ("img", out / "media" / "side_by_side.gif")]
    for algo, m in media.items():
        blocks.append(("p", f"{algo.upper()}: run `{m['run']}` ([MP4]({m['mp4']}))"))
        blocks.append(("img", out / m["gif"]))
    return blocks


PROVENANCE_ROWS = [("stridelab", lambda p: f"{p['stridelab']} (commit {p['commit']})"),
                   *[(name, lambda p, n=name: p["versions"].get(n, "-"))
                     for name in ("torch", "jax", "brax", "mujoco", "gymnasium", "python")],
                   ("device", lambda p: p["device"]), ("CPU", lambda p: p["cpu"]), ("GPU", lambda p: p["gpu"] or "none"),
                   ("command", lambda p: p["command"]), ("date (UTC)", lambda p: p["date"])]


def _provenance_blocks(runs: list[RunData], mine: dict[str, Any]) -> list[tuple[str, Any]]:
    """Where the report and its runs came from: versions, commit, machine, command, date (the
    runs' values from their ``summary.json``, each distinct one with its count of runs)."""
    recorded = [r.summary["provenance"] for r in runs if isinstance(r.summary.get("provenance"), dict)]
    rows = []
    for name, value in PROVENANCE_ROWS:
        seen: dict[str, int] = {}
        for p in recorded:
            seen[str(value(p))] = seen.get(str(value(p)), 0) + 1
        if name == "command":
            runs_text = f"{len(recorded)} runs, each its own `stridelab train` command" if seen else "-"
        elif name == "date (UTC)" and len(seen) > 1:  # every run ends at its own time: the span says it
            runs_text = f"{min(seen)} to {max(seen)}"
        else:
            runs_text = "; ".join(v if len(seen) == 1 else f"{v} ({n} run{'s' * (n > 1)})"
                                  for v, n in seen.items()) or "-"
        rows.append([name, f"`{value(mine)}`" if name == "command" else str(value(mine)), runs_text])
    return [("h2", "Provenance"), ("table", (["", "this report", f"the runs ({len(recorded)} of {len(runs)} recorded)"],
                                             rows))]


def _to_markdown(blocks: list[tuple[str, Any]], out: Path) -> str:
    lines: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + content, ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "img":
            rel = Path(content).relative_to(out)
            lines += [f"![{rel.stem}]({rel.as_posix()})", ""]
        elif kind == "table":
            header, rows = content
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            lines.append("")
    return "\n".join(lines)


def _inline_md(text: str) -> str:
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"\[(.+?)\]\((.+?)\)", r'<a href="\2">\1</a>', text)


def _to_html(blocks: list[tuple[str, Any]], title: str) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>stridelab report: {html.escape(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}"
             "th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}</style></head><body>"]
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            parts.append(f"<p>{_inline_md(content)}</p>")
        elif kind == "img":
            path = Path(content)
            mime = "image/gif" if path.suffix == ".gif" else "image/png"
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(path.stem)}' src='data:{mime};base64,{data}'></p>")
        elif kind == "table":
            header, rows = content
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in rows]
            parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def inline_summary(out: Path, result: dict[str, Any]) -> str:
    """A short HTML view of a report for a notebook: final returns, the evaluation curves, the
    final-return figure and the side-by-side video, images embedded."""
    out = Path(out)
    rows = "".join(f"<tr><td>{html.escape(a.upper())}</td><td>{len(s['returns'])}</td><td>{_fmt(s['iqm'])} "
                   f"[{_fmt(s['iqm_ci'][0])}, {_fmt(s['iqm_ci'][1])}]</td><td>{_fmt(s['mean'])} +- {_fmt(s['std'])}</td>"
                   f"<td>{_fmt(s['worst'])}</td><td>{_fmt(s['best'] - s['worst'])}</td></tr>"
                   for a, s in result["algorithms"].items())
    parts = [f"<h3>stridelab report: {html.escape(str(out))}</h3>",
             "<table><tr><th>algorithm</th><th>runs</th><th>IQM [95% CI]</th><th>mean +- std</th>"
             "<th>worst seed</th><th>spread (best - worst)</th></tr>"
             f"{rows}</table>"]
    parts += [f"<p>{_inline_md(_pairs_text(result['pairs']))}</p>"] if result["pairs"] else []
    for path in (out / "figures" / "eval_return.png", out / "figures" / "final_return.png",
                 out / "media" / "side_by_side.gif"):
        if path.is_file():
            mime = "image/gif" if path.suffix == ".gif" else "image/png"
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<p><img alt='{html.escape(path.stem)}' style='max-width:100%' src='data:{mime};base64,{data}'></p>")
    parts.append(f"<p>Full report: <code>{html.escape(str(out / 'report.html'))}</code></p>")
    return "\n".join(parts)
