"""stablernn bench: runs side by side, writes every number, and its implementations agree."""

import json

import pytest

from stablernn.cli import main

pytestmark = pytest.mark.slow  # subprocesses, Ray, torchrun or benchmarks


def test_bench_runs_small_and_reports_ratios_and_agreement(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert main(["bench", "--steps", "6", "--batch", "3", "--hidden", "8", "--subnetworks", "2",
                 "--subnetwork-size", "4", "--density", "0.3", "--repeats", "2", "--no-memory",
                 "--quiet", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "FLOP bound" in printed and "| target | measured | required |" in printed
    result = json.loads(path.read_text())
    assert result["sections"] == [f"{model}-{method}" for model, methods in (
        ("lipschitz", ("euler", "exponential", "rk2")), ("sparse", ("euler", "splitting", "rk2")),
        ("svd", ("euler", "splitting", "rk2"))) for method in methods]
    load = result["machine_load"]  # whether the figures may be published, and why
    assert load["quiet"] == (not load["problems"]) and load["max_gemm_rate_spread"] >= 1
    # each section says how steady the host was while it ran; the verdict takes the worst
    spreads = [result[section]["gemm_rate_spread"] for section in result["sections"]]
    assert min(spreads) >= 1 and load["max_gemm_rate_spread"] == max(spreads)
    assert printed.count("in this section a product's GEMM rate varied") == len(spreads)
    for model in result["sections"]:
        implementations = result[model]["implementations"]
        assert "engine" in implementations
        assert any(name.startswith("plain eager loop") for name in implementations)
        for name, figures in implementations.items():
            assert len(figures["train_times"]) == 2 and min(figures["train_times"]) > 0
            if figures["max_state_deviation"] is not None:  # same model, same weights
                assert figures["max_state_deviation"] < 1e-5, name
        assert all(target["measured"] > 0 for target in result[model]["targets"])
        # the GEMM rates right before and right after the engine's step, in each round
        probes = result[model]["bound"]["gemm_gflops_probes"]
        assert len(probes) == 2 * len(result[model]["bound"]["bound_s_rounds"]) == 4
        # the stricter bound takes the better rate of each product, so it is never longer
        bound = result[model]["bound"]["bound_s"]
        assert 0 < bound["best"] <= bound["one product"]
        for product in result[model]["bound"]["products"]:
            assert product["gflops"]["best"]["median"] >= product["gflops"]["one product"]["median"]
    assert result["engine_path"]


def test_peak_memory_is_measured_in_a_fresh_process():
    """A training step of the engine at T=200, B=64, N=64 stores at least its states and
    tanh(z) (2 x 3.1 MiB); the probe sees that much."""
    import argparse
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_benchmark.py"
    benchmark = runpy.run_path(str(script), run_name="bench_test")
    args = argparse.Namespace(steps=200, batch=64, hidden=64, subnetworks=2, subnetwork_size=4,
                              density=0.3, threads=1)
    engine_index = 3  # plain loop, stablernn loop, engine python path, engine
    peak = benchmark["memory_in_subprocess"](args, "lipschitz-euler", engine_index)
    assert peak is not None and peak >= 2 * 200 * 64 * 64 * 4


def test_bench_refuses_unknown_models_and_methods(capsys):
    for argument in (["--models", "lstm"], ["--methods", "rk4"],
                     ["--models", "lipschitz", "--methods", "splitting"]):
        assert main(["bench", *argument, "--steps", "2", "--no-memory", "--quiet"]) == 2
        assert argument[-1] in capsys.readouterr().err
