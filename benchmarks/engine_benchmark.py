"""Side-by-side benchmark of stablernn's recurrence engine: FLOP bound, LSTM, plain loops.

    python benchmarks/engine_benchmark.py                  # T=784, B=128, 2 threads, 5 repeats
    python benchmarks/engine_benchmark.py --json bench.json --repeats 7
    python benchmarks/engine_benchmark.py --steps 98 --models lipschitz   # a quick look

In one process, on the same inputs and starting weights, for the Lipschitz RNN (N = --hidden)
and the Sparse Combo Net (--subnetworks x --subnetwork-size at --density):

- the GEMM throughput at the step's shapes and the FLOP-bound time derived from it;
- ``torch.nn.LSTM(1, N)`` (Lipschitz table);
- a plain eager loop written from the paper's equations (``benchmarks/reference_loops.py``);
- stablernn's own loop (``engine="loop"``), the engine's pure-PyTorch path and the engine's
  native path (the default where it builds);

each timed on a training step (forward + backward + Adam step, a linear readout of the last
state, cross-entropy) and on a forward-only pass (``torch.no_grad``), round-robin over
implementations for ``--repeats`` rounds after a warm-up, with the peak resident memory of one
training step (each measured in a fresh process). Ratios come first (median of the per-round ratios, with their range), absolute
times second (median and range). ``--json`` writes every number.
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

from reference_loops import LipschitzLoop, SparseComboLoop  # noqa: E402

from stablernn import engine as stablernn_engine  # noqa: E402
from stablernn.engine import native  # noqa: E402
from stablernn.experiments.benchmark import add_arguments  # noqa: E402
from stablernn.experiments.output import check_writable_file, write_text_atomic  # noqa: E402
from stablernn.models.lipschitz import LipschitzRNN  # noqa: E402
from stablernn.models.network import SparseComboNet  # noqa: E402


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


def memory_in_subprocess(args: argparse.Namespace, model: str, index: int) -> int | None:
    """Peak memory of one training step of implementation ``index``, measured in a fresh
    process that builds only the benchmark's models: after a warm-up step, with the engine's
    block cache emptied, and with glibc returning every block above 64 KiB to the system
    (``MALLOC_MMAP_THRESHOLD_``), so that memory freed by earlier steps or implementations
    cannot hide the step's own peak."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", f"{model}:{index}",
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
    model, index = args.memory_probe.split(":")
    torch.set_num_threads(args.threads)
    native.load()
    build = lipschitz_implementations if model == "lipschitz" else combo_implementations
    impl = build(args)[0][int(index)]
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
    """Warm-up, then ``repeats`` rounds; each round measures the GEMM rates at the step's shapes
    once (and the FLOP bound from them) and times every implementation once (training step,
    then forward only)."""
    for impl in impls:  # warm-up (and the native build, on first use)
        impl.train_step(x, y)
        impl.eval_step(x)
    bound["bound_s_rounds"], bound["gemm_gflops_rounds"] = [], []
    for round_index in range(repeats):
        seconds, rates = flop_bounds(bound["products"])
        bound["bound_s_rounds"].append(seconds)
        bound["gemm_gflops_rounds"].append(rates)
        for impl in impls:
            impl.train_times.append(timed(lambda: impl.train_step(x, y)))
        for impl in impls:
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


# ---------------------------------------------------------------------------- the two models
CERTIFIED = "engine, contracting exponential step"


def lipschitz_implementations(args) -> tuple[list[Implementation], dict]:
    torch.manual_seed(0)
    N = args.hidden
    model = LipschitzRNN(1, N, step_size=0.03)
    impls = []

    def add(name, module, forward, backend=None, same_model=True):
        impls.append(Implementation(name, forward, module, N, backend, same_model))

    plain = LipschitzLoop.like(model)
    add("plain eager loop", plain, plain)
    loop = copy.deepcopy(model)
    loop.engine = "loop"
    add("stablernn loop", loop, lambda x, m=loop: _output_and_last(m(x)))
    python = copy.deepcopy(model)
    add("engine, PyTorch path", python, lambda x, m=python: _output_and_last(m(x)),
        backend="python")
    eng = copy.deepcopy(model)
    add("engine", eng, lambda x, m=eng: _output_and_last(m(x)))
    # the certified default of stablernn train: same kernel, transition exp(eps A)
    certified = LipschitzRNN(1, N, step_size=0.3, parametrization="contracting",
                             method="exponential", gamma_a=0.03, nonlinear_share=0.9)
    add(CERTIFIED, certified, lambda x, m=certified: _output_and_last(m(x)), same_model=False)
    lstm = nn.LSTM(1, N)
    add("torch.nn.LSTM", lstm, lambda x, m=lstm: _output_and_last(m(x)), same_model=False)
    T, B = args.steps, args.batch
    each = 4 * T * B * N * N / 1e9  # one of the three (B, N) x (N, 2N)-sized products, T steps
    products = [
        {"name": "forward h [P | W^T]", "mkn": (B, N, 2 * N), "gflop": each},
        {"name": "backward [g | dz] [P^T ; W]", "mkn": (B, 2 * N, N), "gflop": each},
        # the engine takes the weight gradients per 32-step chunk
        {"name": "weight gradients H^T [G | DZ]", "mkn": (N, min(T, 32) * B, 2 * N),
         "gflop": each},
    ]
    bound = {"products": products, "step_gflop": 3 * each,
             "flops_formula": "12 T B N^2: per step, forward h [P | W^T], backward "
                              "[g | dz] [P^T ; W] and the weight gradients, 4 B N^2 each"}
    return impls, bound


def combo_implementations(args) -> tuple[list[Implementation], dict]:
    torch.manual_seed(0)
    K, n = args.subnetworks, args.subnetwork_size
    N = K * n
    model = SparseComboNet(1, num_subnetworks=K, subnetwork_size=n, density=args.density,
                           seed=0, feedback_init_std=0.01)
    impls = []

    def add(name, module, forward, backend=None):
        impls.append(Implementation(name, forward, module, N, backend))

    plain = SparseComboLoop.like(model)
    add("plain eager loop (dense block-diagonal)", plain, plain)
    loop = copy.deepcopy(model)
    loop.engine = "loop"
    add("stablernn loop (batched blocks)", loop, lambda x, m=loop: _output_and_last(m(x)))
    python = copy.deepcopy(model)
    add("engine, PyTorch path", python, lambda x, m=python: _output_and_last(m(x)),
        backend="python")
    eng = copy.deepcopy(model)
    add("engine", eng, lambda x, m=eng: _output_and_last(m(x)))
    T, B = args.steps, args.batch
    products = [  # the sparse blocks are fixed: no block weight gradient
        {"name": "forward x P, backward g P^T", "mkn": (B, N, N),
         "gflop": 4 * T * B * N * N / 1e9},
        # one product over all T B rows in the engine, timed here at 32 B rows (memory)
        {"name": "feedback gradient X^T GU", "mkn": (N, min(T, 32) * B, N),
         "gflop": 2 * T * B * N * N / 1e9},
        {"name": "blocks, forward and backward", "mkn": (B, n, n), "batch": K,
         "gflop": 4 * T * B * N * n / 1e9},
    ]
    bound = {"products": products, "step_gflop": sum(p["gflop"] for p in products),
             "flops_formula": "T (6 B N^2 + 4 B N n): forward x P and blocks, backward g P^T, "
                              "blocks^T and dL (the sparse blocks are fixed)"}
    return impls, bound


# ---------------------------------------------------------------------------- report
def targets_for(model: str, data: dict) -> list[tuple[str, float, float | None]]:
    """(description, measured, target or None) for the benchmark's targets."""
    ratios = data["ratios"]
    out = []
    if model == "lipschitz":
        out.append(("engine at % of the FLOP-bound time",
                    data["engine_vs_bound"]["one product"]["median"], 0.60))
        out.append(("engine at % of the stricter FLOP bound (no target)",
                    data["engine_vs_bound"]["best"]["median"], None))
        out.append(("torch.nn.LSTM / engine, training step",
                    ratios["train"]["torch.nn.LSTM"]["median"], 3.0))
        out.append(("engine (paper Euler) / engine (certified exponential step), training step",
                    1.0 / ratios["train"][CERTIFIED]["median"], 1 / 1.2))
    plain = data["names"][0]
    out.append(("plain eager loop / engine, training step", ratios["train"][plain]["median"], 2.0))
    out.append(("plain eager loop / engine, forward only", ratios["eval"][plain]["median"], 2.0))
    return out


def analyse(model: str, impls: list[Implementation], bound: dict) -> dict:
    engine = next(impl for impl in impls if impl.name == "engine")
    data = {"names": [impl.name for impl in impls], "bound": bound, "ratios": {"train": {}, "eval": {}},
            "implementations": {}}
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
                                           for rates in bound["gemm_gflops_rounds"]])
                             for way in BOUNDS}
    # per round: that round's bound over that round's engine time
    data["engine_vs_bound"] = {
        way: summary([seconds[way] / t for seconds, t
                      in zip(bound["bound_s_rounds"], engine.train_times)])
        for way in BOUNDS}
    data["targets"] = [{"target": name, "measured": value, "required": required,
                        "met": None if required is None else value >= required}
                       for name, value, required in targets_for(model, data)]
    return data


def fmt_range(values: dict, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    return (f"{values['median'] * scale:.{digits}f}{unit} "
            f"({values['min'] * scale:.{digits}f}-{values['max'] * scale:.{digits}f})")


def report(model: str, title: str, data: dict) -> str:
    lines = [f"## {title}", ""]
    bound = data["bound"]
    lines.append(f"FLOP bound: {bound['step_gflop']:.1f} GFLOP per training step "
                 f"({bound['flops_formula']}), each product at the GEMM rate measured in each "
                 "round at its shape:")
    lines.append("")
    for way, meaning in BOUNDS.items():
        lines.append(f"- {way}: {bound['bound_s'][way] * 1e3:.0f} ms, rates from {meaning}")
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
        percent = "%" in item["target"]
        shown = f"{item['measured'] * 100:.0f}%" if percent else f"{item['measured']:.2f}x"
        if item["required"] is None:
            lines.append(f"| {item['target']} | {shown} | | |")
            continue
        need = f">= {item['required'] * 100:.0f}%" if percent else f">= {item['required']:.0f}x"
        lines.append(f"| {item['target']} | {shown} | {need} | "
                     f"{'met' if item['met'] else 'NOT met'} |")
    lines.append("")
    lines.append("| implementation | train step: time / engine | forward only: time / engine "
                 "| train step (s) | forward only (s) | peak memory, train step | state deviation |")
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


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed options (see ``stablernn.experiments.benchmark``)."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for model in models:
        if model not in ("lipschitz", "combo"):
            raise ValueError(f"--models takes lipschitz and/or combo, got {model!r}")
    if min(args.steps, args.batch, args.hidden, args.threads, args.repeats,
           args.subnetworks, args.subnetwork_size) < 1:
        raise ValueError("--steps, --batch, --hidden, --subnetworks, --subnetwork-size, "
                         "--threads and --repeats must be >= 1")
    if args.json:  # before any timing (or the native build): not minutes later, at the end
        check_writable_file(args.json, "--json")

    torch.set_num_threads(args.threads)
    log = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr, flush=True))
    native.load()
    path = ("native C++ kernels" if native.load() is not None
            else f"pure PyTorch ({native.fallback_reason()})")
    header = (f"# stablernn engine benchmark\n\nT={args.steps}, B={args.batch}, float32, "
              f"{args.threads} threads, {args.repeats} rounds (median, range in brackets); "
              f"engine path: {path}; torch {torch.__version__}, {platform.machine()}, "
              f"{os.cpu_count()} CPUs\n")
    config = {key: value for key, value in vars(args).items() if key != "command"}
    results = {"config": config, "engine_path": path, "torch": torch.__version__,
               "machine": platform.machine(), "cpus": os.cpu_count()}
    sections = [header]
    torch.manual_seed(1)
    x = torch.randn(args.steps, args.batch, 1)
    y = torch.randint(0, 10, (args.batch,))
    builders = {"lipschitz": (lipschitz_implementations, f"Lipschitz RNN, N={args.hidden}, Euler"),
                "combo": (combo_implementations,
                          f"Sparse Combo Net {args.subnetworks}x{args.subnetwork_size}, "
                          f"density {args.density}, Euler")}
    for model in models:
        build, title = builders[model]
        log(f"{title}:")
        impls, bound = build(args)
        agreement(impls, x)
        run_rounds(impls, x, y, args.repeats, bound, log)
        if not args.no_memory:
            for index, impl in enumerate(impls):
                impl.memory = memory_in_subprocess(args, model, index)
        results[model] = analyse(model, impls, bound)
        sections.append(report(model, title, results[model]))
    text = "\n".join(sections)
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
