"""The exponential step's matrix exponential: stablernn's gradient against torch's, side by side.

    python benchmarks/matrix_exp_benchmark.py [--hidden 128] [--rounds 41] [--threads 2]

On the default Lipschitz RNN's matrix ``X = eps alpha A^T`` (``LipschitzRNN(1, N)`` at
initialisation): the time of ``exp(X)`` forward and backward with torch's backward
(``torch.linalg.matrix_exp``) and with :func:`stablernn.parametrizations.matrix_exp` (same
forward), interleaved for ``--rounds`` rounds, as the median of the per-round ratios with their
range; then the float32 gradient of the whole model's ``A`` parameter (T = 784, B = 32, loss on
the last state) against float64, with either backward.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import stablernn.models.lipschitz as lipschitz
from stablernn.models.lipschitz import LipschitzRNN
from stablernn.parametrizations import matrix_exp

IMPLEMENTATIONS = {"torch": torch.linalg.matrix_exp, "stablernn": matrix_exp}


def timing(hidden: int, rounds: int) -> None:
    model = LipschitzRNN(1, hidden)
    linear_t, _ = model.cell.slopes()
    matrix = (model.step_size * linear_t).detach().requires_grad_()
    grad = torch.randn(hidden, hidden)
    norm = torch.linalg.matrix_norm(matrix.detach(), 1).item()
    calls = {name: (lambda f=f: f(matrix).backward(grad)) for name, f in IMPLEMENTATIONS.items()}
    times = {name: [] for name in calls}
    for call in calls.values():
        call()
    for round_ in range(rounds):
        for name in (calls if round_ % 2 else reversed(list(calls))):
            start = time.perf_counter()
            for _ in range(5):
                calls[name]()
            times[name].append((time.perf_counter() - start) / 5)
    ratios = sorted(a / b for a, b in zip(times["torch"], times["stablernn"]))
    print(f"exp(X) forward + backward, N = {hidden}, ||X||_1 = {norm:.3g}, {rounds} rounds:")
    for name, values in times.items():
        print(f"  {name:9s} {statistics.median(values) * 1e3:7.2f} ms "
              f"(range {min(values) * 1e3:.2f}-{max(values) * 1e3:.2f})")
    print(f"  torch / stablernn: {statistics.median(ratios):.2f}x "
          f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})")


def accuracy(hidden: int) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(784, 32, 1)
    base = LipschitzRNN(1, hidden)

    def gradient(dtype, implementation):
        lipschitz.matrix_exp = implementation
        model = copy.deepcopy(base).to(dtype)
        output, _ = model(inputs.to(dtype))
        (output[-1] ** 2).sum().backward()
        return model.cell.param_a.free.grad.double()

    try:
        reference = gradient(torch.float64, matrix_exp)
        print("float32 gradient of A, T = 784, relative error against float64:")
        for name, implementation in IMPLEMENTATIONS.items():
            error = (gradient(torch.float32, implementation) - reference).abs().max()
            print(f"  {name:9s} {(error / reference.abs().max()).item():.1e}")
    finally:
        lipschitz.matrix_exp = matrix_exp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    timing(args.hidden, args.rounds)
    accuracy(args.hidden)


if __name__ == "__main__":
    main()
