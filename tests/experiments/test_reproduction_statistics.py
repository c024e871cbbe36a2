"""The decision rule of the reproduction and the runner's provenance and divergence handling."""

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from stablernn.experiments.config import TrainConfig
from stablernn.experiments.provenance import provenance, source_hash
from stablernn.experiments.reproduction.paper002 import std_confidence_interval
from stablernn.experiments.reproduction.runner import DIVERGED_FILE, Runner
from stablernn.experiments.reproduction.scales import SCALES
from stablernn.experiments.reproduction.statistics import (
    AGREES,
    DISAGREES,
    NO_EFFECT,
    compare,
    hedges_g,
    overall,
)


def test_a_clear_effect_agrees_with_the_papers_sign_and_disagrees_against_it():
    better, worse = [0.90, 0.91, 0.92, 0.90, 0.93], [0.80, 0.82, 0.81, 0.79, 0.80]
    assert compare(better, worse).verdict == AGREES
    assert compare(better, worse, expected=-1).verdict == DISAGREES
    assert compare(worse, better).verdict == DISAGREES


def test_ties_and_noise_are_never_agreements():
    assert compare([0.5] * 5, [0.5] * 5).verdict == NO_EFFECT
    noisy = [0.5, 0.7, 0.6, 0.4, 0.65]
    assert compare([0.55, 0.6, 0.62, 0.5, 0.58], noisy).verdict == NO_EFFECT
    assert compare([0.9], [0.1]).verdict == NO_EFFECT  # one seed: no test


@given(st.lists(st.floats(0, 1), min_size=2, max_size=8),
       st.lists(st.floats(0, 1), min_size=2, max_size=8))
def test_welch_p_value_and_verdict_follow_the_rule(first, second):
    result = compare(first, second)
    if statistics.variance(first) > 0 or statistics.variance(second) > 0:
        expected = scipy_stats.ttest_ind(first, second, equal_var=False).pvalue
        assert result.p_value == pytest.approx(expected, nan_ok=True)
    if result.verdict == AGREES:
        assert result.p_value < 0.05 and result.difference > 0
    if result.verdict == DISAGREES:
        assert result.p_value < 0.05 and result.difference < 0
    if not result.p_value < 0.05:
        assert result.verdict == NO_EFFECT


def test_hedges_g_is_the_corrected_standardized_difference():
    first, second = [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0]
    pooled = math.sqrt((3 * np.var(first, ddof=1) + 3 * np.var(second, ddof=1)) / 6)
    assert hedges_g(first, second) == pytest.approx((1 - 3 / (4 * 8 - 9)) / pooled)


def test_overall_names_mixed_results_part_by_part():
    assert overall([AGREES, AGREES]) == AGREES
    assert overall([DISAGREES, DISAGREES]) == DISAGREES
    assert overall([AGREES, NO_EFFECT]) == "mixed: 1 agrees, 1 no detectable effect"
    assert overall([str(compare([1, 1.1, 1.2], [0, 0.1, 0.2]))]) == AGREES


def test_std_interval_covers_the_true_spread():
    rng = np.random.default_rng(0)
    covered = sum(low <= 0.02 <= high for low, high in (
        std_confidence_interval(list(rng.normal(0.9, 0.02, 10))) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.98  # a 95% interval


def test_source_hash_changes_with_the_code(tmp_path, monkeypatch):
    import stablernn.experiments.provenance as module

    first = source_hash()
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(module, "PACKAGE", package)
    source_hash.cache_clear()
    try:
        one = source_hash()
        (package / "a.py").write_text("x = 2\n")
        source_hash.cache_clear()
        assert source_hash() != one != first
    finally:
        source_hash.cache_clear()
    assert provenance()["version"]


def test_a_diverging_run_is_an_outcome_recorded_once(tmp_path):
    runner = Runner(tmp_path, SCALES["quick"], None, log=lambda _: None)
    config = TrainConfig(task="digits", hidden_size=8, epochs=1, learning_rate=1e30,
                         batch_size=16, max_train_samples=32, max_eval_samples=16,
                         model_options={"parametrization": "paper", "step_size": 1.0})
    figures = runner.run("diverges", config)
    assert figures["diverged"] is True and figures["accuracy"] == pytest.approx(0.1)
    record = json.loads((tmp_path / "runs" / "diverges" / DIVERGED_FILE).read_text())
    assert "training loss became" in record["error"]
    assert record["provenance"]["source_hash"] == source_hash()
    stamp = (tmp_path / "runs" / "diverges" / DIVERGED_FILE).stat().st_mtime_ns
    assert runner.run("diverges", config)["diverged"] is True  # reused, not retrained
    assert (tmp_path / "runs" / "diverges" / DIVERGED_FILE).stat().st_mtime_ns == stamp


def test_full_scale_reads_its_grids_from_the_ablation_files():
    from pathlib import Path

    from stablernn.experiments.sweeps import load_sweep_file

    ablations = Path(__file__).resolve().parents[2] / "configs" / "ablations"
    full = SCALES["full"]
    _, alpha = load_sweep_file(ablations / "lipschitz-alpha-psmnist.toml")
    assert full.alphas == tuple(alpha["model_options.alpha"])
    _, modules = load_sweep_file(ablations / "sparse-combo-modules.toml")
    assert full.module_counts == tuple(
        count for count, _ in modules["model_options.num_subnetworks,hidden_size"])
    _, sparsity = load_sweep_file(ablations / "sparse-combo-sparsity.toml")
    densities = [d for d, _ in sparsity["model_options.density,model_options.magnitude"]]
    assert full.densities == tuple(densities) and 0.265 in densities and 0.1 in densities
