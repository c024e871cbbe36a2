"""Running a cell's plan (:mod:`stablernn.engine.plans`) over a whole sequence.

A layer with ``engine="auto"`` calls :func:`run_cell` from ``run``: the cell's ``engine_plan()``
says what to run (or why the engine does not run it), and ``None`` back means "use the plain
loop". Which path ran is logged once per process and path (``stablernn.engine`` logger, INFO).

Supported (everything else runs the plain loop of ``RecurrentLayer.run``):

- Lipschitz RNN: ``method="euler"`` and ``"exponential"`` (the same kernel with
  ``T = exp(eps alpha A)``), and ``"rk2"`` (the midpoint kernel).
- Networks of networks: ``method="euler"``, ``"rk2"`` and ``"splitting"``, every leaf a rate
  subnetwork (paper 000, eq. 1) of one size and one activation (relu, tanh, sigmoid, softplus),
  so that all run as one batched group, and no hierarchical connections. (Mixed sizes or
  activations, Lipschitz parts and hierarchical connections run the loop.)
- Tensors: one floating dtype and one device for inputs, state and parameters. The native C++
  kernels take float32 / float64 on the CPU; the pure-PyTorch path takes the rest (CUDA
  included) and is also the fallback when the kernels cannot be compiled.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from stablernn.engine import native
from stablernn.engine.lipschitz import lipschitz_euler, lipschitz_rk2
from stablernn.engine.network import network_euler, network_rk2
from stablernn.engine.plans import LipschitzPlan, NetworkPlan, Plan
from stablernn.engine.splitting import network_splitting

log = logging.getLogger("stablernn.engine")
ENGINES = ("auto", "loop")
# Input sizes up to this run the cell's input layer inside the native loop (F multiply-adds per
# unit and step); larger inputs are projected with one matmul before the loop.
MAX_FUSED_INPUT = 32
_logged: set[tuple[str, str]] = set()
NETWORK_RECURRENCES = {"euler": network_euler, "rk2": network_rk2, "splitting": network_splitting}


def _log_path(model: str, path: str, why: str | None = None) -> None:
    if torch.compiler.is_compiling():  # logged by the eager runs; a log call would break graphs
        return
    if (model, path) not in _logged:
        _logged.add((model, path))
        reason = why or (native.fallback_reason() if path == "python" else None)
        suffix = f" ({reason})" if reason else ""
        log.info("stablernn engine: %s runs on the %s engine path%s", model, path, suffix)


def _uniform(tensors: list[torch.Tensor]) -> bool:
    first = tensors[0]
    return first.is_floating_point() and all(
        t.dtype == first.dtype and t.device == first.device for t in tensors)


def run_plan(plan: Plan, inputs: torch.Tensor, hidden: torch.Tensor,
             project: Callable[[torch.Tensor], torch.Tensor],
             input_layer: nn.Linear | None = None,
             name: str = "model") -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(states, last)`` of ``plan`` over time-major ``inputs`` ``(T, B, F)`` from ``hidden``
    ``(B, N)`` (states ``(T, B, N)``, the last state ``(B, N)``), or ``None`` when the tensors
    are not of one floating dtype and device (the caller then runs its loop). ``project`` maps
    raw inputs to ``U x + b``; ``input_layer``, when given, is that plain linear layer, which
    the native kernels may apply inside the loop instead (small inputs)."""
    layer = [] if input_layer is None else list(input_layer.parameters())
    if isinstance(plan, LipschitzPlan):
        run = lipschitz_rk2 if plan.method == "rk2" else lipschitz_euler
        matrices, settings = [plan.matrix_t, plan.recurrent_t], (plan.step_size,)
    elif isinstance(plan, NetworkPlan):
        run = NETWORK_RECURRENCES[plan.method]
        matrices = [plan.coupling_t, plan.blocks_t]
        settings = (plan.step_size, plan.activation)
        name = f"{name} ({plan.method})"
    else:
        raise TypeError(f"plan must be a LipschitzPlan or a NetworkPlan, got {type(plan).__name__}")
    tensors = [inputs, hidden, *matrices, *layer]
    if not _uniform(tensors):
        _log_path(name, "loop", "tensors of more than one dtype or device")
        return None
    if not torch.compiler.is_compiling():  # the operator picks the same path when it runs
        _log_path(name, native.backend_for(*tensors))
    fused = input_layer is not None and inputs.shape[-1] <= MAX_FUSED_INPUT
    return run(inputs if fused else project(inputs), hidden, *matrices, *settings,
               input_weight=input_layer.weight if fused else None,
               input_bias=input_layer.bias if fused else None)


def run_cell(cell: Any, inputs: torch.Tensor, hidden: torch.Tensor,
             name: str | None = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run a cell's ``engine_plan()`` (a plan, or a string saying why the engine does not run
    it) with its ``project_input`` and ``fused_input_layer()``; ``None``: use the loop.
    ``name``: the model named in the log (the cell's class by default)."""
    name = name or type(cell).__name__
    plan = cell.engine_plan()
    if isinstance(plan, str):
        _log_path(name, "loop", plan)
        return None
    return run_plan(plan, inputs, hidden, cell.project_input, cell.fused_input_layer(), name)
