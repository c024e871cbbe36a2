"""Side-by-side benchmark of stablernn's recurrence engine: FLOP bound, LSTM, plain loops.

    python benchmarks/engine_benchmark.py                  # T=784, B=128, 2 threads, 5 repeats
    python benchmarks/engine_benchmark.py --json bench.json --repeats 7
    python benchmarks/engine_benchmark.py --steps 98 --models lipschitz   # a quick look

One section per model and method (``--models``, ``--methods``): the Lipschitz RNN (N = --hidden)
with Euler, the exponential step (the certified default) and RK2; the Sparse Combo Net
(--density) and the SVD Combo Net (--subnetworks x --subnetwork-size) with Euler, the splitting
step (certified as it runs) and RK2. In each, in one process, on the same inputs and starting
weights:

- the GEMM throughput at the step's shapes and the FLOP-bound time derived from it;
- ``torch.nn.LSTM(1, N)`` (Lipschitz Euler section);
- a plain eager loop written from the paper's equations (``benchmarks/reference_loops.py``);
- stablernn's own loop (``engine="loop"``), the engine's pure-PyTorch path and the engine's
  native path (the default where it builds);

each timed on a training step (forward + backward + Adam step, a linear readout of the last
state, cross-entropy) and on a forward-only pass (``torch.no_grad``), round-robin over
implementations for ``--repeats`` rounds after a warm-up, with the peak resident memory of one
training step (each measured in a fresh process). Ratios come first (median of the per-round
ratios, with their range), absolute times second (median and range). ``--json`` writes every
number. A busy machine (other processes using more than 10% of the CPUs, or a GEMM rate that
varies more than 1.25x between its measurements) is reported with a warning: such figures are
noise.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_loops import ComboLoop, LipschitzLoop  # noqa: E402

from stablernn import engine as stablernn_engine  # noqa: E402
from stablernn.engine import native  # noqa: E402
from stablernn.experiments.benchmark import add_arguments  # noqa: E402
from stablernn.experiments.output import check_writable_file, write_text_atomic  # noqa: E402
from stablernn.models.lipschitz import LipschitzRNN  # noqa: E402
from stablernn.models.network import SparseComboNet, SVDComboNet  # noqa: E402


# ---------------------------------------------------------------------------- measurement
def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory(function: Callable[[], object]) -> int | None:
    """Peak resident memory above the starting point while ``function`` runs (bytes), from
    ``/proc/self/status`` VmHWM after resetting it; ``None`` where that is not possible."""
    gc.collect()
    stablernn_engine.empty_cache()
    before = _proc_status("VmRSS")
    if before is None or not _reset_peak():
        function()
        return None
    function()
    peak = _proc_status("VmHWM")
    return None if peak is None else max(0, peak - before)


def memory_in_subprocess(args: argparse.Namespace, section: str, index: int) -> int | None:
    """Peak memory of one training step of implementation ``index``, measured in a fresh
    process that builds only the benchmark's models: after a warm-up step, with the engine's
    block cache emptied, and with glibc returning every block above 64 KiB to the system
    (``MALLOC_MMAP_THRESHOLD_``), so that memory freed by earlier steps or implementations
    cannot hide the step's own peak."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", f"{section}:{index}",
               "--steps", str(args.steps), "--batch", str(args.batch), "--hidden", str(args.hidden),
               "--subnetworks", str(args.subnetworks), "--subnetwork-size",
               str(args.subnetwork_size), "--density", str(args.density),
               "--threads", str(args.threads)]
    environment = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or lines[-1] == "None":
        return None
    return int(lines[-1])


def memory_probe(args: argparse.Namespace) -> int:
    """``--memory-probe MODEL:INDEX``: print the peak memory of one training step (bytes)."""
    section, index = args.memory_probe.split(":")
    torch.set_num_threads(args.threads)
    native.load()
    impl = build_section(args, section)[0][int(index)]
    torch.manual_seed(1)
    x = torch.randn(args.steps, args.batch, 1)
    y = torch.randint(0, 10, (args.batch,))
    impl.train_step(x, y)  # warm-up: optimizer state, first-use work
    print(peak_memory(lambda: impl.train_step(x, y)))
    return 0


def _rate(function: Callable[[], object], flops: float, seconds: float = 0.3,
          rounds: int = 5) -> float:
    """GFLOP/s of ``function`` (``flops`` per call): the median over ``rounds`` timed batches."""
    for _ in range(5):
        function()
    start = time.perf_counter()
    function()
    one = max(time.perf_counter() - start, 1e-7)
    calls = max(1, int(seconds / rounds / one))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        rates.append(flops * calls / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


# The two ways of measuring the machine's GEMM rate at a product's shape:
BOUNDS = {
    "one product": "one product of the step's shape on all threads (torch.mm), the rate a "
                   "user measures; this is the FLOP bound the targets use (the step's FLOPs at "
                   "the measured GEMM peak)",
    "best": "the better of that and a batch of independent products on blocks of B / threads "
            "rows, one block per thread (torch.bmm: how the engine splits its products, without "
            "Python's per-call cost); a recurrence cannot batch its steps, so this bound is "
            "stricter",
}


def gemm_rates(m: int, k: int, n: int, batch: int = 1) -> dict[str, float]:
    """Float32 GEMM throughput at ``(m, k) @ (k, n)``, GFLOP/s, measured both ways of
    :data:`BOUNDS`. ``batch`` > 1: that many products of this shape at once (block-diagonal
    weights), which are one batched call either way."""
    threads = torch.get_num_threads()
    if batch > 1:
        a, b, out = torch.randn(batch, m, k), torch.randn(batch, k, n), torch.empty(batch, m, n)
        rate = _rate(lambda: torch.bmm(a, b, out=out), 2.0 * batch * m * k * n)
        return {"one product": rate, "best": rate}
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    one = _rate(lambda: torch.mm(a, b, out=out), 2.0 * m * k * n)
    best = one
    rows = m // threads
    if threads > 1 and rows > 0:
        count = 4 * threads
        blocks_a, blocks_b = torch.randn(count, rows, k), torch.randn(count, k, n)
        blocks_out = torch.empty(count, rows, n)
        best = max(one, _rate(lambda: torch.bmm(blocks_a, blocks_b, out=blocks_out),
                              2.0 * count * rows * k * n))
    return {"one product": one, "best": best}


def flop_bounds(products: list[dict]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Seconds the step's products need at the GEMM rates measured now, for each way of
    :data:`BOUNDS` (sum of each product's GFLOP over its rate), and the rates (``products``:
    name, shape (m, k, n), batch, GFLOP per training step)."""
    rates = [gemm_rates(*product["mkn"], batch=product.get("batch", 1)) for product in products]
    seconds = {way: sum(product["gflop"] / rate[way] for product, rate in zip(products, rates))
               for way in BOUNDS}
    return seconds, rates


@dataclass
class Implementation:
    name: str
    forward: Callable[[torch.Tensor], tuple]  # (T, B, F) -> (states (T, B, N), last (B, N))
    module: nn.Module
    hidden_size: int
    backend: str | None = None  # forced engine backend while it runs
    same_model: bool = True  # False for the LSTM: its states are not comparable
    train_times: list[float] = field(default_factory=list)
    eval_times: list[float] = field(default_factory=list)
    memory: int | None = None
    deviation: float | None = None

    def __post_init__(self):
        torch.manual_seed(2)  # the same readout for every implementation
        self.readout = nn.Linear(self.hidden_size, 10)
        self.optimizer = torch.optim.Adam(
            list(self.module.parameters()) + list(self.readout.parameters()), lr=1e-3)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend is None:
            return self.forward(x)
        with stablernn_engine.use_backend(self.backend):
            return self.forward(x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        _, last = self._run(x)  # each model's own last state, as a user reads it out
        loss = nn.functional.cross_entropy(self.readout(last), y)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def eval_step(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._run(x)[0]


def timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_rounds(impls: list[Implementation], x, y, repeats: int, bound: dict, log) -> None:
    """Warm-up, then ``repeats`` rounds. A round times each implementation once (training step,
    then forward only), the plain eager loop's training step right before the engine's, and
    measures the GEMM rates at the step's shapes right before and right after the engine's
    training step: the round's FLOP bound is the mean of the two. A host whose speed drifts
    over seconds then moves the bound and the engine time together, which a bound measured at
    the start of the round, before the other implementations, does not."""
    for impl in impls:  # warm-up (and the native build, on first use)
        impl.train_step(x, y)
        impl.eval_step(x)
    engine = next(impl for impl in impls if impl.name == "engine")
    order = [impls[0], engine, *(impl for impl in impls[1:] if impl is not engine)]
    bound["bound_s_rounds"], bound["gemm_gflops_probes"] = [], []
    for round_index in range(repeats):
        for impl in order:
            if impl is not engine:
                impl.train_times.append(timed(lambda: impl.train_step(x, y)))
                continue
            before, rates_before = flop_bounds(bound["products"])
            impl.train_times.append(timed(lambda: impl.train_step(x, y)))
            after, rates_after = flop_bounds(bound["products"])
            seconds = {way: (before[way] + after[way]) / 2 for way in BOUNDS}
            bound["bound_s_rounds"].append(seconds)
            bound["gemm_gflops_probes"] += [rates_before, rates_after]
        for impl in order:
            impl.eval_times.append(timed(lambda: impl.eval_step(x)))
        log(f"  round {round_index + 1}/{repeats}: "
            f"FLOP bound {seconds['one product'] * 1e3:.0f} ms, "
            + ", ".join(f"{impl.name} {impl.train_times[-1]:.3f}s" for impl in impls))


def _output_and_last(result) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output, h_n)`` of a ``torch.nn.RNN``-style layer (``(h_n, c_n)`` for the LSTM) ->
    ``(output, last state (B, N))``."""
    output, last = result
    if isinstance(last, tuple):
        last = last[0]
    return output, last[-1]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratio(slow: list[float], fast: list[float]) -> dict[str, float]:
    """Median and range of the per-round ratios slow / fast (rounds are interleaved, so each
    ratio compares runs taken seconds apart)."""
    return summary([s / f for s, f in zip(slow, fast)])


def agreement(impls: list[Implementation], x: torch.Tensor) -> None:
    """Largest deviation of each implementation's states from the first one's (relative to the
    largest state), on the benchmark's own input, from the same starting weights."""
    reference = impls[0].eval_step(x)
    scale = reference.abs().max().item() or 1.0
    for impl in impls:
        if impl.same_model:
            impl.deviation = (impl.eval_step(x) - reference).abs().max().item() / scale


# ---------------------------------------------------------------------------- models x methods
LIPSCHITZ_METHODS = ("euler", "exponential", "rk2")
COMBO_METHODS = ("euler", "splitting", "rk2")
SECTIONS = [*(f"lipschitz-{m}" for m in LIPSCHITZ_METHODS),
            *(f"{kind}-{m}" for kind in ("sparse", "svd") for m in COMBO_METHODS)]


def _add(impls: list, hidden: int):
    def add(name, module, forward=None, backend=None, same_model=True):
        forward = forward or (lambda x, m=module: _output_and_last(m(x)))
        impls.append(Implementation(name, forward, module, hidden, backend, same_model))
    return add


def _stablernn_rows(add, model, plain_name: str, plain) -> None:
    """The plain eager loop, stablernn's own loop, the engine's PyTorch path and the engine."""
    add(plain_name, plain, plain)
    loop = copy.deepcopy(model)
    loop.engine = "loop"
    add("stablernn loop", loop)
    add("engine, PyTorch path", copy.deepcopy(model), backend="python")
    add("engine", copy.deepcopy(model))


def lipschitz_implementations(args, method: str) -> tuple[list[Implementation], dict]:
    """The paper's Euler and RK2 steps (paper 002, eqs. 9, 10; step 0.03) and the certified
    default of ``stablernn train`` (contracting parametrization, exponential step 0.3)."""
    torch.manual_seed(0)
    N, T, B = args.hidden, args.steps, args.batch
    if method == "exponential":
        model = LipschitzRNN(1, N, step_size=0.3, parametrization="contracting",
                             method="exponential", gamma_a=0.03, nonlinear_share=0.9)
    else:
        model = LipschitzRNN(1, N, step_size=0.03, method=method, parametrization="paper")
    impls: list[Implementation] = []
    add = _add(impls, N)
    _stablernn_rows(add, model, "plain eager loop", LipschitzLoop.like(model))
    if method == "euler":
        lstm = nn.LSTM(1, N)
        add("torch.nn.LSTM", lstm, same_model=False)
    stages = 2 if method == "rk2" else 1  # products per step, forward and backward
    each = stages * 4 * T * B * N * N / 1e9
    matrix = "L" if method == "rk2" else "P"
    times = f"{stages} x " if stages > 1 else ""
    products = [
        {"name": f"forward {times}h [{matrix} | W^T]", "mkn": (B, N, 2 * N), "gflop": each},
        {"name": f"backward {times}[g | dz] [{matrix}^T ; W]", "mkn": (B, 2 * N, N),
         "gflop": each},
        # the engine takes the weight gradients per 32-step chunk
        {"name": f"weight gradients {times}H^T [G | DZ]", "mkn": (N, min(T, 32) * B, 2 * N),
         "gflop": each},
    ]
    bound = {"products": products, "step_gflop": 3 * each,
             "flops_formula": f"{12 * stages} T B N^2: per step, {stages} forward product(s) "
                              f"h [{matrix} | W^T], {stages} backward [g | dz] "
                              f"[{matrix}^T ; W] and the weight gradients, 4 B N^2 each"}
    return impls, bound


def combo_implementations(args, kind: str, method: str) -> tuple[list[Implementation], dict]:
    """Sparse Combo Net (fixed sparse blocks, --density) or SVD Combo Net (trained blocks),
    --subnetworks x --subnetwork-size, with the paper's Euler step, the certified splitting step
    or RK2."""
    torch.manual_seed(0)
    K, n, T, B = args.subnetworks, args.subnetwork_size, args.steps, args.batch
    N = K * n
    if kind == "sparse":
        model = SparseComboNet(1, num_subnetworks=K, subnetwork_size=n, density=args.density,
                               seed=0, feedback_init_std=0.01, method=method)
    else:
        model = SVDComboNet(1, num_subnetworks=K, subnetwork_size=n, feedback_init_std=0.01,
                            method=method)
    impls: list[Implementation] = []
    add = _add(impls, N)
    _stablernn_rows(add, model, "plain eager loop (dense block-diagonal)", ComboLoop.like(model))
    stages = 2 if method == "rk2" else 1
    coupling = "Q" if method == "splitting" else "L"
    products = [
        {"name": f"forward x {coupling}^T, backward g {coupling}"
                 + (" (2 each per step)" if stages > 1 else ""),
         "mkn": (B, N, N), "gflop": stages * 4 * T * B * N * N / 1e9},
        {"name": f"feedback gradient X^T G{' (2)' if stages > 1 else ''}",
         "mkn": (N, min(T, 32) * B, N), "gflop": stages * 2 * T * B * N * N / 1e9},
        {"name": "blocks, forward and backward", "mkn": (B, n, n), "batch": K,
         "gflop": stages * 4 * T * B * N * n / 1e9},
    ]
    formula = f"{stages} x T (6 B N^2 + 4 B N n): forward x {coupling}^T and blocks, backward"
    if kind == "svd":  # trained blocks: their weight gradient too
        products.append({"name": "block weight gradients phi(X)^T G", "mkn": (n, min(T, 32) * B, n),
                         "batch": K, "gflop": stages * 2 * T * B * N * n / 1e9})
        formula = (f"{stages} x T (6 B N^2 + 6 B N n): forward, backward and weight gradients "
                   "of the feedback and the trained blocks")
    else:
        formula += f" and d{coupling} (the sparse blocks are fixed)"
    bound = {"products": products, "step_gflop": sum(p["gflop"] for p in products),
             "flops_formula": formula}
    return impls, bound


def build_section(args, section: str) -> tuple[list[Implementation], dict]:
    model, method = section.split("-")
    if model == "lipschitz":
        return lipschitz_implementations(args, method)
    return combo_implementations(args, model, method)


def section_title(args, section: str) -> str:
    model, method = section.split("-")
    step = {"euler": "Euler (the paper's step)", "rk2": "RK2 (explicit midpoint)",
            "exponential": "exponential step, contracting parametrization (certified default)",
            "splitting": "splitting step (certified as it runs)"}[method]
    if model == "lipschitz":
        return f"Lipschitz RNN, N={args.hidden}, {step}"
    name = "Sparse Combo Net" if model == "sparse" else "SVD Combo Net"
    detail = f", density {args.density}" if model == "sparse" else ""
    return f"{name} {args.subnetworks}x{args.subnetwork_size}{detail}, {step}"


# ---------------------------------------------------------------------------- report
# The targets of the engine issue (T = 784, B = 128, 2 threads, float32, training step)
BOUND_TARGETS = {"euler": 0.80, "exponential": 0.80, "rk2": 0.70}


def targets_for(section: str, data: dict) -> list[tuple[str, float, float | None]]:
    """(description, measured, target or None) for the benchmark's targets."""
    model, method = section.split("-")
    ratios = data["ratios"]
    out = []
    if model == "lipschitz":
        out.append(("engine at % of the FLOP-bound time",
                    data["engine_vs_bound"]["one product"]["median"], BOUND_TARGETS[method]))
        out.append(("engine at % of the stricter FLOP bound (no target)",
                    data["engine_vs_bound"]["best"]["median"], None))
        if "torch.nn.LSTM" in ratios["train"]:
            out.append(("torch.nn.LSTM / engine, training step (no target)",
                        ratios["train"]["torch.nn.LSTM"]["median"], None))
    plain = data["names"][0]
    needs_loop_ratio = model != "lipschitz" or method == "rk2"
    out.append(("plain eager loop / engine, training step", ratios["train"][plain]["median"],
                2.0 if needs_loop_ratio else None))
    out.append(("plain eager loop / engine, forward only (no target)",
                ratios["eval"][plain]["median"], None))
    return out


def analyse(section: str, impls: list[Implementation], bound: dict) -> dict:
    engine = next(impl for impl in impls if impl.name == "engine")
    data = {"names": [impl.name for impl in impls], "bound": bound,
            "ratios": {"train": {}, "eval": {}}, "implementations": {}}
    for impl in impls:
        data["ratios"]["train"][impl.name] = paired_ratio(impl.train_times, engine.train_times)
        data["ratios"]["eval"][impl.name] = paired_ratio(impl.eval_times, engine.eval_times)
        data["implementations"][impl.name] = {
            "train_s": summary(impl.train_times), "eval_s": summary(impl.eval_times),
            "train_times": impl.train_times, "eval_times": impl.eval_times,
            "peak_memory_bytes": impl.memory, "max_state_deviation": impl.deviation}
    bound["bound_s"] = {way: statistics.median(seconds[way] for seconds in bound["bound_s_rounds"])
                        for way in BOUNDS}
    for index, product in enumerate(bound["products"]):
        product["gflops"] = {way: summary([rates[index][way]
                                           for rates in bound["gemm_gflops_probes"]])
                             for way in BOUNDS}
    # per round: that round's bound over that round's engine time
    data["engine_vs_bound"] = {
        way: summary([seconds[way] / t for seconds, t
                      in zip(bound["bound_s_rounds"], engine.train_times)])
        for way in BOUNDS}
    # how steady the host was during this section (the whole run's verdict takes the largest)
    data["gemm_rate_spread"] = max(product["gflops"]["one product"]["max"]
                                   / product["gflops"]["one product"]["min"]
                                   for product in bound["products"])
    data["targets"] = [{"target": name, "measured": value, "required": required,
                        "met": None if required is None else value >= required}
                       for name, value, required in targets_for(section, data)]
    return data


def fmt_range(values: dict, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return (f"{values['median'] * scale:.{digits}f}{unit} "
            f"({values['min'] * scale:.{digits}f}-{values['max'] * scale:.{digits}f})")


def _shown(item: dict) -> str:
    # one more digit than the target's: 79.96% must not read "80%, NOT met", nor 1.996x "2.00x"
    if "%" in item["target"]:
        return f"{item['measured'] * 100:.1f}%"
    return f"{item['measured']:.3f}x"


def _required(item: dict) -> str:
    if "%" in item["target"]:
        return f">= {item['required'] * 100:.0f}%"
    return f">= {item['required']:.0f}x"


def report(title: str, data: dict) -> str:
    lines = [f"## {title}", ""]
    bound = data["bound"]
    lines.append(f"FLOP bound: {bound['step_gflop']:.1f} GFLOP per training step "
                 f"({bound['flops_formula']}), each product at the GEMM rate measured at its shape "
                 "right before and right after the engine's training step in each round:")
    lines.append("")
    for way, meaning in BOUNDS.items():
        lines.append(f"- {way}: {bound['bound_s'][way] * 1e3:.0f} ms, rates from {meaning}")
    steady = "within" if data["gemm_rate_spread"] <= QUIET_RATE_SPREAD else "beyond"
    lines.append(f"- in this section a product's GEMM rate varied at most "
                 f"{data['gemm_rate_spread']:.2f}x between its measurements ({steady} the "
                 f"{QUIET_RATE_SPREAD}x of a quiet machine)")
    lines.append("")
    lines.append("| product | GFLOP | shape | GFLOP/s, one product | GFLOP/s, best |")
    lines.append("|---|---|---|---|---|")
    for product in bound["products"]:
        m, k, n = product["mkn"]
        shape = f"({m}x{k}) @ ({k}x{n})"
        if product.get("batch", 1) > 1:
            shape += f", {product['batch']} at once"
        name = product["name"].replace("|", "\\|")  # a table cell
        lines.append(f"| {name} | {product['gflop']:.1f} | {shape} | "
                     f"{fmt_range(product['gflops']['one product'], digits=0)} | "
                     f"{fmt_range(product['gflops']['best'], digits=0)} |")
    lines.append("")
    lines.append("| target | measured | required | |")
    lines.append("|---|---|---|---|")
    for item in data["targets"]:
        if item["required"] is None:
            lines.append(f"| {item['target']} | {_shown(item)} | | |")
            continue
        lines.append(f"| {item['target']} | {_shown(item)} | {_required(item)} | "
                     f"{'met' if item['met'] else 'NOT met'} |")
    lines.append("")
    lines.append("| implementation | train step: time / engine | forward only: time / engine "
                 "| train step (s) | forward only (s) | peak memory, train step "
                 "| state deviation |")
    lines.append("|---|---|---|---|---|---|---|")
    for name in data["names"]:
        impl = data["implementations"][name]
        memory = impl["peak_memory_bytes"]
        memory_text = "n/a" if memory is None else f"{memory / 2**20:.0f} MiB"
        deviation = impl["max_state_deviation"]
        lines.append(
            f"| {name} | {fmt_range(data['ratios']['train'][name], unit='x')} "
            f"| {fmt_range(data['ratios']['eval'][name], unit='x')} "
            f"| {fmt_range(impl['train_s'], digits=3)} | {fmt_range(impl['eval_s'], digits=3)} "
            f"| {memory_text} | {'n/a' if deviation is None else f'{deviation:.1e}'} |")
    lines.append("")
    return "\n".join(lines)


def selected_sections(args: argparse.Namespace) -> list[str]:
    """The model x method sections that ``--models`` and ``--methods`` select."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    models = ["sparse" if m == "combo" else m for m in models]  # the old name
    for model in models:
        if model not in ("lipschitz", "sparse", "svd"):
            raise ValueError(f"--models takes lipschitz, sparse and/or svd, got {model!r}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    for method in methods or []:
        if method not in (*LIPSCHITZ_METHODS, *COMBO_METHODS):
            raise ValueError(f"--methods takes euler, exponential, rk2 and/or splitting, "
                             f"got {method!r}")
    sections = [section for section in SECTIONS if section.split("-")[0] in models
                and (methods is None or section.split("-")[1] in methods)]
    if not sections:
        raise ValueError(f"no benchmark section has a model of --models {args.models!r} and a "
                         f"method of --methods {args.methods!r}")
    return sections


# ---------------------------------------------------------------------------- a quiet machine
# Other processes may use at most this share of the CPUs while the benchmark runs, and one
# product's GEMM rate may vary at most this much between its measurements (two per round), for
# the figures to be published.
QUIET_OTHERS = 0.10
QUIET_RATE_SPREAD = 1.25


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU time of the whole machine from /proc/stat, in clock ticks."""
    try:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class MachineLoad:
    """How much of the machine other processes used while the benchmark ran: the machine's busy
    CPU time (/proc/stat) minus this process's own (and its children's), over the CPUs' time."""

    def __init__(self) -> None:
        self.start = _cpu_jiffies()
        self.own = self._own()

    @staticmethod
    def _own() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def others_share(self) -> float | None:
        end = _cpu_jiffies()
        if self.start is None or end is None or end[1] <= self.start[1]:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (end[0] - self.start[0]) / ticks
        total = (end[1] - self.start[1]) / ticks
        return max(0.0, busy - (self._own() - self.own)) / total


def quiet_verdict(results: dict, load: MachineLoad) -> dict:
    """Whether the figures may be published: other processes' CPU share and the spread of
    each product's GEMM rate between its measurements (a busy machine shows as a low or
    unsteady rate)."""
    spreads = [results[section]["gemm_rate_spread"] for section in results["sections"]]
    others = load.others_share()
    problems = []
    if others is not None and others > QUIET_OTHERS:
        problems.append(f"other processes used {others:.0%} of the CPUs while it ran "
                        f"(at most {QUIET_OTHERS:.0%} for a quiet figure)")
    if spreads and max(spreads) > QUIET_RATE_SPREAD:
        problems.append(f"a product's GEMM rate varied {max(spreads):.2f}x between its "
                        f"measurements (at most {QUIET_RATE_SPREAD}x)")
    return {"quiet": not problems, "others_cpu_share": others,
            "max_gemm_rate_spread": max(spreads) if spreads else None, "problems": problems}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed options (see ``stablernn.experiments.benchmark``)."""
    sections = selected_sections(args)
    if min(args.steps, args.batch, args.hidden, args.threads, args.repeats,
           args.subnetworks, args.subnetwork_size) < 1:
        raise ValueError("--steps, --batch, --hidden, --subnetworks, --subnetwork-size, "
                         "--threads and --repeats must be >= 1")
    if args.json:  # before any timing (or the native build): not minutes later, at the end
        check_writable_file(args.json, "--json")

    torch.set_num_threads(args.threads)
    log = ((lambda text: None) if args.quiet
           else (lambda text: print(text, file=sys.stderr, flush=True)))
    native.load()
    load = MachineLoad()
    path = ("native C++ kernels" if native.load() is not None
            else f"pure PyTorch ({native.fallback_reason()})")
    header = (f"# stablernn engine benchmark\n\nT={args.steps}, B={args.batch}, float32, "
              f"{args.threads} threads, {args.repeats} rounds (median, range in brackets); "
              f"engine path: {path}; torch {torch.__version__}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs\n")
    config = {key: value for key, value in vars(args).items() if key != "command"}
    results = {"config": config, "engine_path": path, "torch": torch.__version__,
               "machine": platform.machine(), "cpus": os.cpu_count(), "sections": sections}
    parts = []
    torch.manual_seed(1)
    x = torch.randn(args.steps, args.batch, 1)
    y = torch.randint(0, 10, (args.batch,))
    for section in sections:
        title = section_title(args, section)
        log(f"{title}:")
        impls, bound = build_section(args, section)
        agreement(impls, x)
        run_rounds(impls, x, y, args.repeats, bound, log)
        if not args.no_memory:
            for index, impl in enumerate(impls):
                impl.memory = memory_in_subprocess(args, section, index)
        results[section] = analyse(section, impls, bound)
        parts.append(report(title, results[section]))
    results["machine_load"] = verdict = quiet_verdict(results, load)
    if verdict["quiet"]:
        share = verdict["others_cpu_share"]
        header += ("\nThe machine was quiet: " + ("" if share is None else
                   f"other processes used {share:.1%} of the CPUs, ")
                   + f"GEMM rates varied at most {verdict['max_gemm_rate_spread']:.2f}x "
                   "between their measurements.\n")
    else:
        header += ("\n**WARNING: the machine was busy; these figures are not for publication "
                   "(rerun on a quiet machine)**: " + "; ".join(verdict["problems"]) + ".\n")
        print("stablernn bench: WARNING: the machine was busy: " + "; ".join(verdict["problems"]),
              file=sys.stderr)
    summary_rows = ["| section | target | measured | required | |", "|---|---|---|---|---|"]
    for section in sections:
        for item in results[section]["targets"]:
            if item["required"] is not None:
                summary_rows.append(f"| {section} | {item['target']} | {_shown(item)} | "
                                    f"{_required(item)} | "
                                    f"{'met' if item['met'] else 'NOT met'} |")
    text = "\n".join([header, "## Targets\n", *summary_rows, "", *parts])
    print(text)
    if args.json:
        Path(args.json).absolute().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.json, json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)  # MODEL:INDEX, internal
    args = parser.parse_args(argv)
    try:
        return memory_probe(args) if args.memory_probe else run(args)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
