"""How tight is the as-run certificate? Certified bounds against sampled Jacobians.

For each model (a run directory, or a default model built at initialisation):

- ``step_factor`` against the worst ``||J_step||_M`` over one-step Jacobians of the map as it
  runs, at random states (scales 0.3, 1, 3) and inputs in [0, 1], in the certificate's metric;
  the ratio ``log(step_factor) / log(worst sampled)`` is the share of the sampled per-step
  contraction that the certificate proves (1 = exact);
- for networks of networks, ``max_euler_step`` against the largest Euler step that the sampled
  continuous-time Jacobians allow (``min 1 / lambda_max(N^{-1/2} F^T F N^{-1/2})``, the exact
  largest step of each sampled Jacobian).

Usage::

    python benchmarks/as_run_tightness.py [RUN_DIR ...] [--samples 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.linalg import block_diag

import stablernn
from stablernn.certification import assembly_family
from stablernn.contraction.as_run import metric_root
from stablernn.contraction.verification import _Transformed


def _states(rng, size):
    return rng.normal(size=size) * rng.choice([0.3, 1.0, 3.0])


def lipschitz_jacobians(rnn, samples, rng):
    cell = rnn.cell
    with torch.no_grad():
        transition = cell.transition().double().numpy()
        weight = cell.W.double().numpy()
        layer = cell.input_projection
        u_weight, bias = layer.weight.double().numpy(), layer.bias.double().numpy()
    for _ in range(samples):
        state, inputs = _states(rng, len(weight)), rng.random(u_weight.shape[1])
        slopes = 1 - np.tanh(weight @ state + u_weight @ inputs + bias) ** 2
        yield transition + cell.step_size * slopes[:, None] * weight


def network_jacobians(net, samples, rng):
    cell = net.cell
    if cell.method != "splitting":
        raise ValueError("the sampler covers the splitting step of relu rate subnetworks")
    with torch.no_grad():
        flow = cell.feedback_flow().double().numpy()
        weight = block_diag(*[leaf.weight().double().numpy() for leaf in net.assembly.leaves()])
    step, size = cell.step_size, len(weight)
    for _ in range(samples):
        moved = flow @ _states(rng, size)
        slopes = (moved > 0).astype(float)
        yield ((1 - step) * np.eye(size) + step * weight * slopes[None, :]) @ flow


def largest_sampled_euler_step(net, metric, samples, rng) -> float:
    family = assembly_family(net.assembly)
    transformed = _Transformed(family, metric)
    best = np.inf
    for _ in range(samples):
        f = transformed.generalized(rng.integers(0, 2, family.slopes).astype(float))
        lower = np.linalg.cholesky(-(f + f.T))
        x = np.linalg.solve(lower, f.T)
        best = min(best, 1.0 / np.linalg.eigvalsh(x @ x.T)[-1])
    return float(best)


def measure(label, rnn, samples, rng) -> str:
    certificate = stablernn.certify(rnn)
    root, inverse = metric_root(np.asarray(certificate.metric, dtype=np.float64))
    network = isinstance(rnn, stablernn.NetworkOfNetworks)
    jacobians = (network_jacobians if network else lipschitz_jacobians)(rnn, samples, rng)
    worst = max(float(np.linalg.norm(root @ j @ inverse, 2)) for j in jacobians)
    ratio = np.log(certificate.step_factor) / np.log(worst)
    step = ""
    if network and certificate.max_euler_step:
        sampled = largest_sampled_euler_step(rnn, certificate.metric, samples, rng)
        step = f"{certificate.max_euler_step:.4g} / {sampled:.4g} = {certificate.max_euler_step / sampled:.2f}"
    return (f"| {label} | {certificate.step_factor:.5f} | {worst:.5f} | {ratio:.2f} | "
            f"{step or '-'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories (default: models at init)")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    print("| model | certified step factor | worst sampled | -log ratio | max_euler_step: "
          "certified / sampled |\n|---|---|---|---|---|")
    if args.runs:
        models = [(run, stablernn.load_run(run).rnn) for run in args.runs]
    else:
        models = [
            ("Lipschitz RNN 128, contracting, init", stablernn.LipschitzRNN(
                1, 128, parametrization="contracting", method="exponential", step_size=0.3,
                gamma_a=0.03, nonlinear_share=0.9)),
            ("Sparse Combo Net 16x32, splitting, init", stablernn.SparseComboNet(
                1, 16, 32, seed=0, step_size=0.3, method="splitting")),
            ("SVD Combo Net 16x32, splitting, init", stablernn.SVDComboNet(
                1, 16, 32, step_size=0.3, method="splitting")),
        ]
    for label, rnn in models:
        print(measure(label, rnn, args.samples, rng), flush=True)


if __name__ == "__main__":
    main()
