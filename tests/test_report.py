"""The report's statistics and files on synthetic runs with known curves and final returns."""

import itertools
import json

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from stridelab.report import band, bootstrap_ci, build_report, iqm, probability_of_improvement

PPO_FINAL = [100.0, 200.0, 300.0, 400.0, 10_000.0]
TRPO_FINAL = [20_000.0, 21_000.0, 22_000.0, 23_000.0, 24_000.0]
STEPS = [100_000 * i for i in range(1, 11)]


def make_run(root, algo, seed, final, slope):
    run = root / f"{algo}_s{seed}"
    (run / "tb").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"algo": algo, "seed": seed, "env": "ant", "total_steps": 1_000_000,
                                                 "num_envs": 2048, "max_kl": 0.01, "learning_rate": 3e-4}))
    (run / "summary.json").write_text(json.dumps({"eval/episodic_return": final, "charts/SPS": 1000.0 * seed,
                                                  "time/wall_clock_s": 600.0, "global_step": 1_000_000}))
    w = SummaryWriter(str(run / "tb"))
    for step in STEPS:
        w.add_scalar("eval/episodic_return", slope * step / 1e6 + seed, step)
        w.add_scalar("charts/episodic_return", slope * step / 2e6, step)
        w.add_scalar("charts/wall_clock", step / 1e6 * 600.0, step)
    w.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    for seed, (p, t) in enumerate(zip(PPO_FINAL, TRPO_FINAL), start=1):
        make_run(root, "ppo", seed, p, slope=1000.0)
        make_run(root, "trpo", seed, t, slope=2000.0)
    return root, build_report(root)


def test_iqm_and_mean_of_known_final_returns(report):
    _, stats = report
    stats = stats["algorithms"]
    assert stats["ppo"]["iqm"] == pytest.approx(300.0)  # middle 50% of 5 runs: 200, 300, 400
    assert stats["ppo"]["mean"] == pytest.approx(np.mean(PPO_FINAL))
    assert stats["trpo"]["iqm"] == pytest.approx(22_000.0)
    assert (stats["ppo"]["worst"], stats["ppo"]["best"]) == (100.0, 10_000.0)  # the worst seed beside the IQM
    for algo, finals in (("ppo", PPO_FINAL), ("trpo", TRPO_FINAL)):
        lo, hi = stats[algo]["iqm_ci"]
        assert min(finals) <= lo <= stats[algo]["iqm"] <= hi <= max(finals)
        lo, hi = stats[algo]["mean_ci"]
        assert lo <= stats[algo]["mean"] <= hi


def test_probability_of_improvement_when_every_trpo_run_beats_every_ppo_run(report):
    _, stats = report
    (pair,) = stats["pairs"]  # no compare.json: the registry's order, PPO first
    assert (pair["x"], pair["y"], pair["p"], tuple(pair["ci"])) == ("ppo", "trpo", 0.0, (0.0, 0.0))


def test_report_files_are_written_and_the_html_is_self_contained(report):
    root, _ = report
    md = (root / "report.md").read_text()
    page = (root / "report.html").read_text()
    for fig in ("eval_return", "train_return", "final_return"):
        assert (root / "figures" / f"{fig}.png").stat().st_size > 10_000
        assert f"figures/{fig}.png" in md
    assert page.count("data:image/png;base64,") == 3
    assert "figures/" not in page
    assert "IQM" in md and "22,000" in md and "Hyperparameters" in md


def test_probability_of_improvement_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 4).astype(float)
    naive = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y)])
    assert probability_of_improvement(x, y) == pytest.approx(naive)
    assert probability_of_improvement(y, x) == pytest.approx(1 - naive)


def test_confidence_band_and_intervals_behave():
    rng = np.random.default_rng(1)
    same = np.tile(np.linspace(0, 1, 20), (4, 1))
    mean, lo, hi = band(same)
    np.testing.assert_allclose(lo, mean)
    np.testing.assert_allclose(hi, mean)
    noisy = rng.normal(size=(10, 20)) + np.linspace(0, 5, 20)
    mean, lo, hi = band(noisy)
    assert (lo <= mean).all() and (mean <= hi).all() and (hi - lo > 0).all()
    wide, narrow = bootstrap_ci(rng.normal(size=5)), bootstrap_ci(rng.normal(size=500))
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert bootstrap_ci(np.array([3.0])) == (3.0, 3.0)
    assert iqm(np.array([1.0, 2.0, 3.0, 4.0, 100.0, -100.0, 2.5, 3.5])) == pytest.approx(np.mean([2.0, 2.5, 3.0, 3.5]))


def test_a_two_by_two_study_gets_its_factor_effects_and_a_pairwise_matrix(tmp_path):
    """PPO, PPO-M, TRPO, TRPO+ with known finals: the effects are the cell means' differences,
    written out here by hand, and the report shows the matrix, the factor plot and the table."""
    finals = {"ppo": [3000.0, 3100.0, 3200.0], "ppo-m": [2000.0, 2100.0, 2200.0],
              "trpo": [1500.0, 1600.0, 1700.0], "trpo+": [2900.0, 3000.0, 3100.0]}
    for algo, values in finals.items():
        for seed, final in enumerate(values, start=1):
            make_run(tmp_path, algo, seed, final, slope=final)
    result = build_report(tmp_path)
    m = {k: np.mean(v) for k, v in finals.items()}
    core = ((m["ppo"] - m["trpo+"]) + (m["ppo-m"] - m["trpo"])) / 2  # clip minus trust region
    optimizations = ((m["ppo"] - m["ppo-m"]) + (m["trpo+"] - m["trpo"])) / 2
    interaction = (m["ppo"] - m["ppo-m"]) - (m["trpo+"] - m["trpo"])
    effects = result["factors"]
    assert effects["core: clip - trust region"]["effect"] == pytest.approx(core)  # 300
    assert effects["optimizations: on - off"]["effect"] == pytest.approx(optimizations)  # 1,200
    assert effects["interaction"]["effect"] == pytest.approx(interaction)  # -400
    lo, hi = effects["optimizations: on - off"]["ci"]
    assert lo <= optimizations <= hi and lo > 0  # every "on" seed beats every "off" seed
    assert len(result["pairs"]) == 6
    assert (tmp_path / "figures" / "pairwise.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "factors.png").stat().st_size > 10_000
    md = (tmp_path / "report.md").read_text()
    assert "What each piece adds" in md and "| optimizations: on - off | 1,200 |" in md
    assert "| normalize_obs |" in md  # the switches in the hyperparameter table
