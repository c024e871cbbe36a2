"""``stablernn bench``: the recurrence engine's side-by-side benchmark.

The benchmark itself lives in the source checkout, ``benchmarks/engine_benchmark.py``, next to
the plain eager reference loops it compares against (``benchmarks/reference_loops.py``, code a
user would write, deliberately outside the library). This module holds its options, so the
command line and the script share them, and runs the script from a checkout.
"""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``stablernn bench`` and the script)."""
    parser.add_argument("--steps", type=int, default=784, help="sequence length T (784)")
    parser.add_argument("--batch", type=int, default=128, help="batch size B (128)")
    parser.add_argument("--hidden", type=int, default=128, help="Lipschitz RNN hidden size N (128)")
    parser.add_argument("--subnetworks", type=int, default=16, help="Combo Nets: K (16)")
    parser.add_argument("--subnetwork-size", type=int, default=32, help="Combo Nets: n (32)")
    parser.add_argument("--density", type=float, default=0.033,
                        help="Sparse Combo Net subnetwork density (0.033)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after a warm-up (5)")
    parser.add_argument("--models", default="lipschitz,sparse,svd",
                        help="comma-separated: lipschitz, sparse, svd (all)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated: euler, exponential, rk2, splitting (every method "
                             "of each model: Lipschitz euler, exponential, rk2; Combo Nets "
                             "euler, splitting, rk2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory step")
    parser.add_argument("--json", help="also write every number to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no per-round progress lines")


def benchmark_script() -> Path:
    """``benchmarks/engine_benchmark.py`` of the checkout this package is installed from."""
    return Path(__file__).resolve().parents[3] / "benchmarks" / "engine_benchmark.py"


def run_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed options; needs a source checkout (editable install)."""
    script = benchmark_script()
    if not script.is_file():
        raise FileNotFoundError(
            f"stablernn bench runs {script}, which is not here: install stablernn from a source "
            "checkout (pip install -e .) or run benchmarks/engine_benchmark.py from one")
    namespace = runpy.run_path(str(script), run_name="stablernn_bench")
    return namespace["run"](args)
