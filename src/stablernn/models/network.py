"""A network of networks as one recurrent layer, and the named models of paper 000."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from stablernn._checks import check_choice, check_positive, check_positive_int
from stablernn.engine import NetworkPlan
from stablernn.models.assembly import Assembly
from stablernn.models.recurrent import RecurrentCell, RecurrentLayer, cell_attribute
from stablernn.models.subnetworks import RateSubnetwork, SparseSubnetwork, SVDSubnetwork

NETWORK_METHODS = ("euler", "rk2", "splitting")


@dataclass
class _Group:
    """Consecutive leaves run together: same-size rate subnetworks as one batched matmul."""

    start: int
    stop: int
    leaves: list[nn.Module]
    batched: bool


def _group_leaves(leaves: list[nn.Module]) -> list[_Group]:
    groups: list[_Group] = []
    offset = 0
    for leaf in leaves:
        last = groups[-1] if groups else None
        if (isinstance(leaf, RateSubnetwork) and last is not None and last.batched
                and last.leaves[0].size == leaf.size
                and last.leaves[0].activation_name == leaf.activation_name):
            last.leaves.append(leaf)
            last.stop += leaf.size
        else:
            groups.append(_Group(offset, offset + leaf.size, [leaf],
                                 isinstance(leaf, RateSubnetwork)))
        offset += leaf.size
    return groups


class AssemblyCell(RecurrentCell):
    r"""One step of a network of networks, paper 000 eq. 5 with tau = 1::

        x' = F(x) + L x + H(x) + u,    u = U s_t + b  (a trained linear input layer)

    F stacks the parts' dynamics (``-x_i + W_i phi(x_i)`` for rate subnetworks, eq. 1), L the
    feedback, H the hierarchical connections. ``step_size`` is dt / tau. Methods:

    - ``"euler"``: ``x_{t+1} = x_t + dt x'``;
    - ``"rk2"``: explicit midpoint with the input held over the step;
    - ``"splitting"`` (Lie-Trotter): the feedback by the trapezoidal (Cayley) step, then an
      Euler step of the parts, ``y = Q x_t`` with ``Q = (I - dt L/2)^{-1} (I + dt L/2)``,
      ``x_{t+1} = y + dt (F(y) + H(y) + u_t)``. L is skew in the metric
      (``M L + L^T M = 0``), so Q is an isometry of M whatever B is: the step contracts
      whenever every part's own Euler step does, for every trained feedback (forward Euler of
      ``x' = L x`` always expands: ``||I + dt L||_M > 1``). First order overall.

    W blocks, L (or Q) and H are built once per forward pass; same-size rate
    subnetworks run as one batched matmul over blocks.
    """

    def __init__(self, input_size: int, assembly: Assembly, step_size: float = 0.1,
                 method: str = "euler", bias: bool = True) -> None:
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.assembly = assembly
        self.hidden_size = assembly.size
        self.step_size = check_positive("step_size", step_size)
        self.method = check_choice("method", method, NETWORK_METHODS)
        self.input_projection = nn.Linear(input_size, assembly.size, bias=bias)

    def prepare(self) -> dict[str, Any]:
        groups = _group_leaves(self.assembly.leaves())
        prepared_groups = []
        for group in groups:
            if group.batched:
                stacked = torch.stack([leaf.weight() for leaf in group.leaves]).transpose(1, 2)
                prepared_groups.append((group, stacked))
            else:
                prepared_groups.append((group, group.leaves[0].prepare()))
        connections = [(c, c.module.prepare()) for c in self.assembly.flat_connections()]
        feedback_t = self.assembly.feedback_matrix().T
        prepared = {"groups": prepared_groups, "feedback_t": feedback_t, "connections": connections}
        if self.method == "splitting":
            prepared["flow_t"] = self.feedback_flow().transpose(0, 1)
        return prepared

    def engine_plan(self) -> NetworkPlan | str:
        if self.assembly.flat_connections():
            return "hierarchical connections"
        leaves = self.assembly.leaves()
        groups = _group_leaves(leaves)
        if len(groups) != 1 or not groups[0].batched:
            return "parts that are not all rate subnetworks of one size and activation"
        blocks_t = torch.stack([leaf.weight() for leaf in leaves]).transpose(1, 2)
        coupling = self.feedback_flow() if self.method == "splitting" \
            else self.assembly.feedback_matrix()
        return NetworkPlan(self.method, coupling.transpose(0, 1), blocks_t, self.step_size,
                           leaves[0].activation_name)

    def feedback_flow(self) -> torch.Tensor:
        """The feedback's step ``Q = S^{-1} cay(dt K) S`` (column convention), with
        ``K = S L S^{-1}`` built skew to the last bit (:meth:`Assembly.feedback_in_metric`) and
        the Cayley transform ``cay(X) = (I - X/2)^{-1} (I + X/2)``: the trapezoidal rule for
        ``x' = L x`` (second order), orthogonal for skew K, so Q is an isometry of the metric
        to rounding however ill-conditioned the metric (a contraction with damping). Solved in
        float64 and returned in the parameters' dtype."""
        root, root_inverse = self.assembly.metric_root()
        dtype = root.dtype
        half = (0.5 * self.step_size) * self.assembly.feedback_in_metric().to(torch.float64)
        identity = torch.eye(half.shape[0], dtype=torch.float64, device=half.device)
        rotation = torch.linalg.solve(identity - half, identity + half)
        flow = root_inverse.to(torch.float64) @ rotation @ root.to(torch.float64)
        return flow.to(dtype)

    def vector_field(self, x: torch.Tensor, u: torch.Tensor, prepared: dict[str, Any],
                     feedback: bool = True) -> torch.Tensor:
        parts = []
        for group, weights in prepared["groups"]:
            x_group, u_group = x[:, group.start:group.stop], u[:, group.start:group.stop]
            if group.batched:
                count, size = len(group.leaves), group.leaves[0].size
                blocks = x_group.reshape(-1, count, size).transpose(0, 1)
                recurrent = torch.bmm(group.leaves[0].phi(blocks), weights)
                parts.append(recurrent.transpose(0, 1).reshape(x_group.shape) - x_group + u_group)
            else:
                parts.append(group.leaves[0].vector_field(x_group, u_group, weights))
        field = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if feedback:
            field = torch.addmm(field, x, prepared["feedback_t"])
        if prepared["connections"]:
            extra = torch.zeros_like(field)
            for connection, matrix in prepared["connections"]:
                extra[:, connection.target] += connection.module(x[:, connection.source], matrix)
            field = field + extra
        return field

    def step(self, hidden, projected_input, prepared):
        if self.method == "splitting":
            moved = hidden @ prepared["flow_t"]
            return moved + self.step_size * self.vector_field(moved, projected_input, prepared,
                                                              feedback=False)
        slope = self.vector_field(hidden, projected_input, prepared)
        if self.method == "euler":
            return hidden + self.step_size * slope
        midpoint = hidden + 0.5 * self.step_size * slope
        return hidden + self.step_size * self.vector_field(midpoint, projected_input, prepared)


class NetworkOfNetworks(RecurrentLayer):
    """An :class:`Assembly` run as a recurrent layer with the ``torch.nn.RNN`` convention.

    The hidden state is the full state x of all parts, concatenated in order, so a run can be
    started from any state and continued.

    ``engine``: ``"auto"`` (default) runs the sequence on the recurrence engine
    (:mod:`stablernn.engine`) where it supports the configuration (Euler and splitting, all
    parts rate subnetworks of one size and activation, no hierarchical connections), else the
    plain loop; ``"loop"`` always runs the plain loop of :meth:`RecurrentLayer.run`.
    """

    assembly = cell_attribute("assembly")
    step_size = cell_attribute("step_size")
    method = cell_attribute("method")

    def __init__(self, input_size: int, assembly: Assembly, step_size: float = 0.1,
                 method: str = "euler", bias: bool = True, batch_first: bool = False,
                 check_finite: bool = True, engine: str = "auto") -> None:
        cell = AssemblyCell(input_size, assembly, step_size=step_size, method=method, bias=bias)
        super().__init__(cell, batch_first=batch_first, check_finite=check_finite, engine=engine)


class SparseComboNet(NetworkOfNetworks):
    """Sparse Combo Net (paper 000, section 4): fixed sparse Theorem 1 subnetworks joined by
    trained negative feedback (eq. 3) on lower-triangular off-diagonal blocks of B.

    ``16 x 32`` at 3.3% density is the paper's best psMNIST / sCIFAR-10 network. Only B, the
    input layer (and the readout) are trained; the subnetworks are buffers. Each subnetwork is
    drawn with seed ``seed + i`` (``seed=None``: drawn from torch's generator). With
    ``method="splitting"`` each subnetwork's metric is chosen for its own Euler step of size
    ``step_size`` (see :class:`SparseSubnetwork`), so the network is certified as it runs for
    every trained feedback. ``feedback_density < 1`` trains a fixed random fraction of B (the
    sparse-feedback pilot of paper 000, D.2.4; pattern drawn from ``seed``).
    """

    def __init__(self, input_size: int, num_subnetworks: int = 16, subnetwork_size: int = 32,
                 density: float = 0.033, magnitude: float = 1.0, step_size: float = 0.1,
                 activation: str = "relu", mask: str = "lower", unconstrained: bool = False,
                 damping: bool = False, seed: int | None = None, method: str = "euler",
                 feedback_init_std: float = 0.0, feedback_density: float = 1.0,
                 batch_first: bool = False, check_finite: bool = True,
                 engine: str = "auto") -> None:
        check_positive_int("num_subnetworks", num_subnetworks)
        check_positive_int("subnetwork_size", subnetwork_size)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1 - num_subnetworks, (1,)).item())
        check_choice("method", method, NETWORK_METHODS)
        split_step = step_size if method == "splitting" else None
        parts = [SparseSubnetwork(subnetwork_size, density, magnitude, activation, seed=seed + i,
                                  step_size=split_step)
                 for i in range(num_subnetworks)]
        assembly = Assembly(parts, mask=mask, damping=damping, unconstrained=unconstrained,
                            feedback_init_std=feedback_init_std,
                            feedback_density=feedback_density,
                            feedback_seed=seed + num_subnetworks)
        super().__init__(input_size, assembly, step_size=step_size, method=method,
                         batch_first=batch_first, check_finite=check_finite, engine=engine)


class SVDComboNet(NetworkOfNetworks):
    """SVD Combo Net (paper 000, section 4): trained Theorem 5 subnetworks
    (``W = Theta^{-1} U Sigma V^T Theta``) joined by trained negative feedback (eq. 3).

    With ``method="splitting"`` every part's Euler step contracts by ``1 - dt margin`` in its
    metric for every parameter value (``dt <= 1``), the feedback's flow is an isometry, and the
    log-scales of Theta are bounded (``4 tanh(. / 4)``) so that the metric stays representable:
    certified as it runs for every parameter value. ``feedback_density < 1`` trains a fixed
    random fraction of B (pattern from torch's generator)."""

    def __init__(self, input_size: int, num_subnetworks: int = 16, subnetwork_size: int = 32,
                 margin: float = 0.05, step_size: float = 0.1, activation: str = "relu",
                 mask: str = "lower", unconstrained: bool = False, damping: bool = False,
                 method: str = "euler", feedback_init_std: float = 0.0,
                 feedback_density: float = 1.0, batch_first: bool = False,
                 check_finite: bool = True, engine: str = "auto") -> None:
        check_positive_int("num_subnetworks", num_subnetworks)
        check_choice("method", method, NETWORK_METHODS)
        # the splitting step's guarantee covers every parameter value: keep the metric's
        # condition number finite in float32 (log-scales within +-4)
        bound = 4.0 if method == "splitting" else None
        parts = [SVDSubnetwork(subnetwork_size, activation, margin, max_log_scale=bound)
                 for _ in range(num_subnetworks)]
        assembly = Assembly(parts, mask=mask, damping=damping, unconstrained=unconstrained,
                            feedback_init_std=feedback_init_std,
                            feedback_density=feedback_density)
        super().__init__(input_size, assembly, step_size=step_size, method=method,
                         batch_first=batch_first, check_finite=check_finite, engine=engine)
