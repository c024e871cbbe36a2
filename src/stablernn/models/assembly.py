"""Networks of networks: parts combined by negative feedback and hierarchy, recursively.

Paper 000 eq. 5 (Corollaries 1 and 2; appendix A.2.1):
``x' = F(x) + L x + H(x) + u`` where F stacks the parts' own dynamics, L is the
stability-preserving feedback (:class:`NegativeFeedback`) and H holds hierarchical connections,
each feeding a later part from an earlier one through a map with a bounded Jacobian.

An :class:`Assembly` is itself a part (it has a size and a metric), so assemblies nest to any
depth. For running, the whole tree is flattened into one state vector and one step
(:meth:`Assembly.flatten`): nesting costs nothing per time step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stablernn._checks import check_non_negative, check_positive
from stablernn.contraction.combination import hierarchy_weights
from stablernn.models.feedback import NegativeFeedback
from stablernn.models.part import PART_MEMBERS, Part, check_part


def part_rate(part: nn.Module) -> float:
    """A part's certified rate in its own metric (0 when it has none)."""
    if isinstance(part, Assembly):
        return min(part_rate(inner) for inner in part.parts)
    check = check_part(part)
    return check.rate if check.contracting else 0.0


def coupling_gain(connection: HierarchicalConnection, target: nn.Module, source: nn.Module) -> float:
    """Bound on ``||M_t^{1/2} G M_s^{-1/2}||`` for the map's Jacobian G (``||G|| <= gain``)."""
    with torch.no_grad():
        target_metric = target.metric().double()
        source_metric = source.metric().double()
    largest = torch.linalg.eigvalsh(target_metric).max().item()
    smallest = torch.linalg.eigvalsh(source_metric).min().item()
    return connection.gain * (largest / smallest) ** 0.5


def hierarchy_weights_for(parts: list[nn.Module], connections: list) -> np.ndarray:
    """Metric weights k (Corollary 1) that let the hierarchy's couplings be dominated."""
    rates = np.array([part_rate(part) for part in parts])
    gains = np.zeros((len(parts), len(parts)))
    for connection in connections:
        gains[connection.target, connection.source] += coupling_gain(
            connection, parts[connection.target], parts[connection.source])
    return hierarchy_weights(rates, gains)


def metric_root(part: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, S^{-1})`` with ``S^2`` the part's metric: its own closed form where it has one
    (diagonal metrics: square roots of the diagonal), else an eigendecomposition."""
    if hasattr(part, "metric_root"):
        return part.metric_root()
    metric = part.metric()
    diagonal = metric.diagonal()
    if torch.equal(metric, torch.diag(diagonal)):
        root = diagonal.sqrt()
        return torch.diag(root), torch.diag(root.reciprocal())
    values, vectors = torch.linalg.eigh(0.5 * (metric + metric.transpose(0, 1)))
    root = values.sqrt()
    return (vectors * root) @ vectors.transpose(0, 1), (vectors / root) @ vectors.transpose(0, 1)


def metric_inverse(part: nn.Module) -> torch.Tensor:
    """A part's ``M^{-1}``: its own closed form where it has one, else a solve."""
    if hasattr(part, "metric_inverse"):
        return part.metric_inverse()
    return torch.linalg.inv(part.metric())


class HierarchicalConnection(nn.Module):
    """A bounded nonlinear map from one part to a later one (paper 000, appendix A.2.1).

    ``h(x_source) = gain * tanh(V x_source) / max(1, ||V||_2)``: its Jacobian has spectral norm
    at most ``gain`` for every state, so the certificate can account for it. ``||V||_2`` is
    computed exactly once per forward pass.
    """

    def __init__(self, source: int, target: int, source_size: int, target_size: int,
                 gain: float = 0.5) -> None:
        super().__init__()
        if not isinstance(source, int) or not isinstance(target, int) or source >= target:
            raise ValueError(
                f"a hierarchical connection must feed a later part: source index {source!r} "
                f"must be an integer smaller than target index {target!r}"
            )
        self.source, self.target = source, target
        self.gain = check_positive("gain", gain)
        self.linear = nn.Linear(source_size, target_size, bias=False)

    def prepare(self) -> torch.Tensor:
        norm = torch.linalg.matrix_norm(self.linear.weight, ord=2)
        return self.linear.weight.transpose(0, 1) * (self.gain / torch.clamp(norm, min=1.0))

    def forward(self, x_source: torch.Tensor, prepared: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x_source @ prepared)


@dataclass
class FlatConnection:
    source: slice
    target: slice
    module: HierarchicalConnection


class Assembly(nn.Module):
    """Contracting parts combined into one contracting system (paper 000, Corollaries 1-2).

    ``parts``: subnetworks (see ``stablernn.models.subnetworks``), other assemblies, or any module
    with the part interface. ``weights``: the k_i of Corollary 1 (metric
    ``blockdiag(k_i M_i)``), ones by default. ``mask``: which blocks of B are trained
    (``"lower"`` as in the paper, ``"off-diagonal"``, ``"full"``). ``damping``: learn
    ``-M^{-1} C`` with ``C = F F^T`` (Corollary 2). ``unconstrained``: the paper's control
    ``L = B``, with no guarantee. ``connections``: :class:`HierarchicalConnection` modules between
    parts of this assembly (by index, earlier to later); with connections and no weights,
    the weights are chosen so the couplings are dominated
    (:func:`stablernn.contraction.combination.hierarchy_weights`). ``feedback_density``: the
    fraction of B's masked entries trained (a fixed pattern drawn from ``feedback_seed``).
    """

    condition = "paper 000, Corollary 1"

    def __init__(self, parts: list[nn.Module], weights: list[float] | None = None,
                 mask: str = "lower", damping: bool = False, unconstrained: bool = False,
                 connections: list[HierarchicalConnection] = (), feedback_init_std: float = 0.0,
                 feedback_density: float = 1.0, feedback_seed: int | None = None,
                 require_contracting: bool = True):
        super().__init__()
        if len(parts) < 1:
            raise ValueError("parts must hold at least one part, got none")
        for index, part in enumerate(parts):
            if not isinstance(part, (Assembly, Part)):
                missing = [name for name in PART_MEMBERS if not hasattr(part, name)]
                raise ValueError(
                    f"part {index} ({type(part).__name__}) has no {', '.join(missing)}: expected "
                    "a subnetwork, an Assembly, or a module with the interface of "
                    "stablernn.models.part.Part")
            if require_contracting and not isinstance(part, Assembly):
                check = check_part(part)
                if not check.contracting:
                    raise ValueError(
                        f"part {index} ({type(part).__name__}) is not contracting: its metric "
                        f"does not verify (rate bound {check.rate:.4g}, {check.method}); pass "
                        "require_contracting=False to build the assembly anyway (its "
                        "certificate will then say not contracting)")
        self.parts = nn.ModuleList(parts)
        self.sizes = [int(part.size) for part in parts]
        self.size = sum(self.sizes)
        if weights is None and connections:
            weights = hierarchy_weights_for(list(parts), list(connections)).tolist()
        weights = [1.0] * len(parts) if weights is None else list(weights)
        if len(weights) != len(parts):
            raise ValueError(f"weights must have one entry per part ({len(parts)}), got {len(weights)}")
        for weight in weights:
            check_positive("weights", weight)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.feedback = NegativeFeedback(self.sizes, mask=mask, damping=damping,
                                         unconstrained=unconstrained,
                                         init_std=check_non_negative("feedback_init_std",
                                                                     feedback_init_std),
                                         density=feedback_density, seed=feedback_seed)
        self.connections = nn.ModuleList(connections)
        for connection in connections:
            if connection.target >= len(parts):
                raise ValueError(f"connection target {connection.target} is not a part index "
                                 f"(this assembly has {len(parts)} parts)")
            expected = (self.sizes[connection.target], self.sizes[connection.source])
            if tuple(connection.linear.weight.shape) != expected:
                raise ValueError(f"connection {connection.source}->{connection.target} has "
                                 f"shape {tuple(connection.linear.weight.shape)}, expected {expected}")

    @property
    def slope_bound(self) -> float:
        return max(part.slope_bound for part in self.parts)

    @property
    def unconstrained(self) -> bool:
        return self.feedback.unconstrained or any(
            getattr(part, "unconstrained", False) for part in self.parts)

    @property
    def starts(self) -> list[int]:
        return [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    def metric(self) -> torch.Tensor:
        """``blockdiag(k_i M_i)`` (Corollary 1)."""
        # weights as 0-dim tensors, not a Python list: torch.compile keeps this in its graph
        return torch.block_diag(*[k * part.metric() for part, k in zip(self.parts, self.weights)])

    def metric_inverse(self) -> torch.Tensor:
        return torch.block_diag(*[metric_inverse(part) / k
                                  for part, k in zip(self.parts, self.weights)])

    def metric_root(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S, S^{-1})`` with ``S^2 = blockdiag(k_i M_i)``."""
        roots = [metric_root(part) for part in self.parts]
        scales = self.weights.sqrt()
        return (torch.block_diag(*[s * root for s, (root, _) in zip(scales, roots)]),
                torch.block_diag(*[inverse / s for s, (_, inverse) in zip(scales, roots)]))

    def feedback_in_metric(self) -> torch.Tensor:
        """The flat ``S L S^{-1}`` (skew to the last bit for constrained feedback): this
        assembly's own feedback and its nested assemblies' blocks, each built in its metric."""
        root, root_inverse = self.metric_root()
        feedback = self.feedback.in_metric(root, root_inverse)
        inner = [part.feedback_in_metric() if isinstance(part, Assembly)
                 else feedback.new_zeros(part.size, part.size) for part in self.parts]
        return feedback + torch.block_diag(*inner)

    def feedback_matrix(self) -> torch.Tensor:
        """The flat L of this assembly: its own feedback plus its nested assemblies' L blocks."""
        feedback = self.feedback(self.metric(), self.metric_inverse())
        inner = [part.feedback_matrix() if isinstance(part, Assembly)
                 else feedback.new_zeros(part.size, part.size) for part in self.parts]
        return feedback + torch.block_diag(*inner)

    def leaves(self) -> list[nn.Module]:
        """The leaf parts in state order."""
        found = []
        for part in self.parts:
            found.extend(part.leaves() if isinstance(part, Assembly) else [part])
        return found

    def flat_connections(self, offset: int = 0) -> list[FlatConnection]:
        """Hierarchical connections of the whole tree with slices into the flat state."""
        starts = [offset + start for start in self.starts]
        flat = [FlatConnection(slice(starts[c.source], starts[c.source] + self.sizes[c.source]),
                               slice(starts[c.target], starts[c.target] + self.sizes[c.target]), c)
                for c in self.connections]
        for part, start in zip(self.parts, starts):
            if isinstance(part, Assembly):
                flat.extend(part.flat_connections(start))
        return flat

