"""A fast recurrence engine: whole sequences as one torch operator with hand-written BPTT.

The layers use it by default (``engine="auto"``) where it supports the configuration and run
their plain loop otherwise (``engine="loop"`` forces the loop). A cell hands the engine a typed
plan (:mod:`stablernn.engine.plans`): the engine never looks inside a model. Two paths compute
the same maths:

- ``native``: C++ kernels, JIT-compiled on first use and cached (:mod:`stablernn.engine.native`),
  for float32 / float64 on the CPU;
- ``python``: the same recurrences in PyTorch ops (any device; the automatic fallback when no
  compiler is available, and the only path of the steps without a kernel yet).

Each recurrence is one torch custom operator (:mod:`stablernn.engine.operators`), whichever path
runs it.

See ``docs/performance.md`` for what is supported, what falls back, memory, and measurements.
"""

from stablernn.engine.dispatch import ENGINES, run_cell, run_plan
from stablernn.engine.lipschitz import lipschitz_euler, lipschitz_rk2
from stablernn.engine.native import (
    BACKENDS,
    backend_for,
    cache_info,
    empty_cache,
    fallback_reason,
    set_backend,
    use_backend,
)
from stablernn.engine.network import network_euler, network_rk2
from stablernn.engine.plans import ACTIVATIONS, Activation, LipschitzPlan, NetworkPlan, Plan
from stablernn.engine.splitting import network_splitting

__all__ = [
    "ACTIVATIONS", "Activation", "BACKENDS", "ENGINES", "LipschitzPlan", "NetworkPlan", "Plan",
    "backend_for", "cache_info", "empty_cache", "fallback_reason", "lipschitz_euler", "lipschitz_rk2",
    "network_euler", "network_rk2", "network_splitting", "run_cell", "run_plan", "set_backend", "use_backend",
]
