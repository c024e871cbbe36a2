"""Which layer configurations the engine runs, and running them from a layer's cell.

The layers (:class:`~stablernn.models.lipschitz.LipschitzRNN`,
:class:`~stablernn.models.network.NetworkOfNetworks` and its Sparse / SVD Combo Nets) call
:func:`run_lipschitz` / :func:`run_network` from ``run`` when their ``engine`` is ``"auto"``;
``None`` back means "not supported here: use the plain loop". Which path ran is logged once per
process and path (``stablernn.engine`` logger, INFO).

Supported (everything else runs the plain loop of ``RecurrentLayer.run``):

- Lipschitz RNN: ``method="euler"`` and ``"exponential"`` (the same kernel with
  ``T = exp(eps alpha A)``). (RK2 runs the loop.)
- Networks of networks: ``method="euler"`` (native kernels) and ``"splitting"`` (the PyTorch
  path of :mod:`stablernn.engine.splitting`), every leaf a rate subnetwork (paper 000, eq. 1) of
  one size and one activation (relu, tanh, sigmoid, softplus), so that all run as one batched
  group, and no hierarchical connections. (RK2, mixed sizes or activations, Lipschitz parts and
  hierarchical connections run the loop.)
- Tensors: one floating dtype and one device for inputs, state and parameters. The native C++
  kernels take float32 / float64 on the CPU; the pure-PyTorch path takes the rest (CUDA
  included) and is also the fallback when the kernels cannot be compiled.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from stablernn.engine import native
from stablernn.engine.lipschitz import lipschitz_euler
from stablernn.engine.network import ACTIVATIONS, network_euler
from stablernn.engine.splitting import network_splitting

log = logging.getLogger("stablernn.engine")
ENGINES = ("auto", "loop")
# Input sizes up to this run the cell's input layer inside the native loop (F multiply-adds per
# unit and step); larger inputs are projected with one matmul before the loop.
MAX_FUSED_INPUT = 32
_logged: set[tuple[str, str]] = set()


def _log_path(model: str, path: str) -> None:
    if (model, path) not in _logged:
        _logged.add((model, path))
        reason = native.fallback_reason()
        suffix = f" ({reason})" if path == "python" and reason else ""
        log.info("stablernn engine: %s runs on the %s engine path%s", model, path, suffix)


def _uniform(tensors: list[torch.Tensor]) -> bool:
    first = tensors[0]
    return first.is_floating_point() and all(
        t.dtype == first.dtype and t.device == first.device for t in tensors)


def _fusable_input_layer(cell: Any, inputs: torch.Tensor) -> bool:
    """The cell's input layer is a plain ``nn.Linear`` used by the base ``project_input``, and
    the input is small: the native loop can apply it itself."""
    if inputs.shape[-1] > MAX_FUSED_INPUT or type(cell.input_projection) is not nn.Linear:
        return False
    owner = next(k for k in type(cell).__mro__ if "project_input" in vars(k))
    return owner.__name__ == "RecurrentCell"


def _input_layer(cell: Any, inputs: torch.Tensor, backend: str):
    """(inputs for the engine, input weight or None, input bias or None)."""
    if backend == "native" and _fusable_input_layer(cell, inputs):
        layer = cell.input_projection
        return inputs, layer.weight, layer.bias
    return cell.project_input(inputs), None, None


def lipschitz_unsupported(cell: Any) -> str | None:
    """Why the engine does not run this Lipschitz cell (``None``: it does)."""
    if getattr(cell, "method", None) not in ("euler", "exponential"):
        return (f"method={getattr(cell, 'method', None)!r} (the engine runs the Euler and "
                "exponential steps)")
    return None


def run_lipschitz(cell: Any, inputs: torch.Tensor,
                  hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(states, last)`` of a ``LipschitzCell`` over time-major ``inputs`` (states
    ``(T, B, N)``, last state ``(B, N)``), or ``None`` when the engine does not support the
    configuration."""
    if lipschitz_unsupported(cell) is not None:
        _log_path("LipschitzRNN", "loop")
        return None
    transition_t, recurrent_t = cell.prepare()
    tensors = [inputs, hidden, transition_t, recurrent_t, *cell.input_projection.parameters()]
    if not _uniform(tensors):
        _log_path("LipschitzRNN", "loop")
        return None
    backend = native.backend_for(*tensors)
    _log_path("LipschitzRNN", backend)
    inputs, weight, bias = _input_layer(cell, inputs, backend)
    return lipschitz_euler(inputs, hidden, transition_t, recurrent_t, cell.step_size,
                           input_weight=weight, input_bias=bias, backend=backend)


def network_unsupported(cell: Any, prepared: dict[str, Any] | None = None) -> str | None:
    """Why the engine does not run this ``AssemblyCell`` (``None``: it does)."""
    if getattr(cell, "method", None) not in ("euler", "splitting"):
        return (f"method={getattr(cell, 'method', None)!r} (the engine runs the Euler and "
                "splitting steps)")
    prepared = cell.prepare() if prepared is None else prepared
    if prepared["connections"]:
        return "hierarchical connections"
    groups = prepared["groups"]
    if len(groups) != 1 or not groups[0][0].batched:
        return "parts that are not all rate subnetworks of one size and activation"
    activation = groups[0][0].leaves[0].activation_name
    if activation not in ACTIVATIONS:
        return f"activation {activation!r}"
    return None


def run_network(cell: Any, inputs: torch.Tensor,
                hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(states, last)`` of an ``AssemblyCell`` over time-major ``inputs``, or ``None`` when
    the engine does not support the configuration."""
    prepared = cell.prepare()
    if network_unsupported(cell, prepared) is not None:
        _log_path("NetworkOfNetworks", "loop")
        return None
    group, blocks_t = prepared["groups"][0]
    if cell.method == "splitting":
        tensors = [inputs, hidden, prepared["flow_t"], blocks_t]
        if not _uniform(tensors + list(cell.input_projection.parameters())):
            _log_path("NetworkOfNetworks (splitting)", "loop")
            return None
        _log_path("NetworkOfNetworks (splitting)", "python")
        return network_splitting(cell.project_input(inputs), hidden, prepared["flow_t"],
                                 blocks_t, cell.step_size, group.leaves[0].activation_name)
    feedback_t = prepared["feedback_t"]
    tensors = [inputs, hidden, feedback_t, blocks_t, *cell.input_projection.parameters()]
    if not _uniform(tensors):
        _log_path("NetworkOfNetworks", "loop")
        return None
    backend = native.backend_for(*tensors)
    _log_path("NetworkOfNetworks", backend)
    inputs, weight, bias = _input_layer(cell, inputs, backend)
    return network_euler(inputs, hidden, feedback_t, blocks_t, cell.step_size,
                         group.leaves[0].activation_name, input_weight=weight, input_bias=bias,
                         backend=backend)
