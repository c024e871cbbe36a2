"""What a network of networks needs of a part (paper 000, eq. 5): the :class:`Part` protocol.

A leaf part is a module with its own dynamics ``x_i' = f_i(x_i) + u_i``, a metric it contracts
in, and the family of its Jacobians; :class:`~stablernn.models.assembly.Assembly` combines parts
(and other assemblies) and :func:`stablernn.certify` certifies them. The rate subnetworks and
:class:`~stablernn.models.subnetworks.LipschitzPart` implement it; so can a user's own part.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from stablernn.contraction import JacobianFamily, MetricCheck, check_family_metric


@runtime_checkable
class Part(Protocol):
    """A contracting part of a network of networks.

    - ``size``: its number of units; ``slope_bound``: g, the largest slope of its activation;
    - ``condition``: the theorem or check its metric comes from (shown in certificates);
    - ``metric()``: M, symmetric positive definite ``(size, size)``, the metric it contracts in;
    - ``jacobian_family()``: every Jacobian of ``f_i`` its activation allows;
    - ``prepare()`` and ``vector_field(x, u, prepared)``: ``f_i(x) + u`` for row-vector states,
      with what does not change over time built once by ``prepare``.
    """

    size: int
    slope_bound: float
    condition: str

    def metric(self) -> torch.Tensor: ...

    def jacobian_family(self) -> JacobianFamily: ...

    def prepare(self) -> Any: ...

    def vector_field(self, x: torch.Tensor, u: torch.Tensor, prepared: Any) -> torch.Tensor: ...


PART_MEMBERS = ("size", "slope_bound", "condition", "metric", "jacobian_family", "prepare",
                "vector_field")


def check_part(part: Part) -> MetricCheck:
    """The part's Jacobian family checked in its own metric (``M J + J^T M <= -2 rate M``
    for every slope): what an assembly is built and weighted with."""
    with torch.no_grad():
        family = part.jacobian_family()
        metric = part.metric().detach().to("cpu", torch.float64).numpy()
    return check_family_metric(family, metric)
