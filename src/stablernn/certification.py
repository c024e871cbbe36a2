"""``stablernn.certify``: a :class:`~stablernn.contraction.Certificate` for whatever it is given.

Sits above the mathematics (:mod:`stablernn.contraction`, which knows nothing of modules) and
the modules (:mod:`stablernn.models`): it reads the matrices out of a model and hands them to
the checks. Dispatch:

- a square weight matrix (tensor or array): paper 000, eq. 1, Theorems 1-5 or a checked metric;
- a Lipschitz RNN (cell or layer): paper 002, Theorem 1 and checked metrics;
- an :class:`~stablernn.models.Assembly` or a network of networks: paper 000, Corollaries 1-2
  (each part's metric checked against its Jacobians, the built feedback L checked to satisfy
  ``M L + L^T M <= 0``, hierarchical couplings by a small-gain bound), with the Euler step bound;
- a part (subnetwork) on its own; a readout model (the recurrent layer inside is certified);
- anything else: ``contracting=False`` with the reason.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stablernn.contraction import (
    Certificate,
    JacobianFamily,
    certify_lipschitz,
    certify_matrix,
    family_norm_bound,
)
from stablernn.contraction.combination import feedback_defect, hierarchy_rate
from stablernn.models.assembly import Assembly, coupling_gain
from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN
from stablernn.models.network import NetworkOfNetworks
from stablernn.models.readouts import PerStepReadout, SequenceClassifier
from stablernn.models.subnetworks import LipschitzPart, RateSubnetwork, certify_part

# |M L + L^T M| relative to |M| |L| above which the feedback is not skew in the metric
FEEDBACK_TOLERANCE = 1e-5


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def certify(obj, slope_bound: float = 1.0) -> Certificate:
    """The certificate of ``obj`` (see the module docstring); ``slope_bound`` is g for a bare
    weight matrix. Never says ``contracting=True`` without a verified inequality."""
    with torch.no_grad():
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            matrix = _array(obj) if isinstance(obj, torch.Tensor) else obj
            return certify_matrix(matrix, slope_bound)
        if isinstance(obj, (LipschitzCell, LipschitzRNN)):
            return certify_lipschitz(_array(obj.A), _array(obj.W), alpha=obj.alpha)
        if isinstance(obj, NetworkOfNetworks):
            return certify_assembly(obj.assembly, step_size=obj.step_size)
        if isinstance(obj, Assembly):
            return certify_assembly(obj)
        if isinstance(obj, (RateSubnetwork, LipschitzPart)) or _is_part(obj):
            return certify_part(obj)
        if isinstance(obj, (SequenceClassifier, PerStepReadout)):
            return certify(obj.rnn)
        if isinstance(obj, nn.Sequential) and len(obj):
            return certify(obj[-1])
        cell = getattr(obj, "cell", obj)
        if hasattr(cell, "W") and not hasattr(cell, "A") and isinstance(cell.W, torch.Tensor):
            # neural-ODE / antisymmetric RNN: h' = tanh(W h + u), paper 002 eq. 1 with A = 0
            weight = _array(cell.W)
            return certify_lipschitz(np.zeros_like(weight), weight)
    return Certificate(False, "none", None, None, None,
                       f"stablernn has no contraction analysis for {type(obj).__name__}")


def _is_part(obj) -> bool:
    return all(hasattr(obj, name) for name in ("size", "metric", "vector_field"))


def part_family(part) -> JacobianFamily:
    """The Jacobians of a part on its own, slopes scaled to [0, 1]."""
    if not hasattr(part, "jacobian_family"):
        raise ValueError(f"part {type(part).__name__} has no Jacobian family stablernn knows; "
                         "expected a RateSubnetwork, a LipschitzPart or an Assembly")
    return part.jacobian_family()


def assembly_family(assembly: Assembly) -> JacobianFamily:
    """Every Jacobian of the flat system ``x' = F(x) + L x + H(x) + u``, slopes in [0, 1].

    Rate subnetworks contribute ``-I`` and ``W_i D_i``, Lipschitz parts ``alpha A + D W``, the
    feedback its constant L, each hierarchical map ``c tanh(V x_s)`` the columns
    ``c E_t diag(d) V E_s^T`` with d in [0, 1].
    """
    size = assembly.size
    base = _array(assembly.feedback_matrix())
    lefts, rights = [], []
    offset = 0
    for leaf in assembly.leaves():
        family = part_family(leaf)
        block = slice(offset, offset + leaf.size)
        base[block, block] += family.base
        left = np.zeros((size, family.slopes))
        left[block] = family.left
        right = np.zeros((family.slopes, size))
        right[:, block] = family.right
        lefts.append(left)
        rights.append(right)
        offset += leaf.size
    for connection in assembly.flat_connections():
        matrix = _array(connection.module.prepare()).T  # (target, source), norm <= gain
        left = np.zeros((size, matrix.shape[0]))
        left[connection.target] = np.eye(matrix.shape[0])
        right = np.zeros((matrix.shape[0], size))
        right[:, connection.source] = matrix
        lefts.append(left)
        rights.append(right)
    return JacobianFamily(base, np.hstack(lefts), np.vstack(rights), 0.0, 1.0,
                          "paper 000, eq. 5: J = -I + W D + L (+ hierarchical maps)")


def certify_assembly(assembly: Assembly, step_size: float | None = None) -> Certificate:
    """Paper 000, Corollaries 1-2 (and appendix A.2.1 for hierarchy), checked numerically."""
    condition = assembly.condition
    if assembly.feedback.unconstrained:
        return Certificate(False, condition, None, None, None,
                           "unconstrained feedback L = B (the paper's control experiment): no "
                           "metric makes it skew, so nothing is guaranteed")
    parts = [certify_assembly(part) if isinstance(part, Assembly) else certify_part(part)
             for part in assembly.parts]
    for index, (part, certificate) in enumerate(zip(assembly.parts, parts)):
        if not certificate.contracting:
            return Certificate(False, condition, None, None, None,
                               f"part {index} ({type(part).__name__}) is not certified: "
                               f"{certificate.reason}")
    metric = _array(assembly.metric())
    cross_feedback = _array(assembly.feedback(assembly.metric(), assembly.metric_inverse()))
    defect = feedback_defect(metric, cross_feedback)
    if defect > FEEDBACK_TOLERANCE:
        return Certificate(False, condition, None, None, None,
                           f"the feedback is not negative in the metric: lambda_max(sym(M L)) is "
                           f"{defect:.3g} of |M| |L| (Corollary 1 needs <= 0)")
    rates = np.array([certificate.rate for certificate in parts])
    weights = _array(assembly.weights)
    if assembly.connections:
        gains = np.zeros((len(parts), len(parts)))
        for connection in assembly.connections:
            target, source = connection.target, connection.source
            gains[target, source] += coupling_gain(connection, assembly.parts[target],
                                                   assembly.parts[source])
        rate = hierarchy_rate(rates, gains, weights)
        how = f"small-gain bound over {len(assembly.connections)} hierarchical connection(s)"
        if rate <= 0:
            return Certificate(False, condition, None, None, None,
                               f"hierarchical couplings too strong for the weights k: {how} "
                               f"gives rate {rate:.4g} <= 0")
    else:
        rate = float(rates.min())
        how = "the slowest part's rate (feedback is skew in the metric)"
    details = {"part_rates": rates.tolist(), "feedback_defect": defect,
               "parts": [certificate.condition for certificate in parts]}
    family = assembly_family(assembly)
    norm, exact = family_norm_bound(family, metric)
    max_step = 2.0 * rate / norm**2  # ||I + h F||^2 <= 1 - 2 h rate + h^2 norm^2
    details["euler_step_bound"] = "2 rate / K^2 with K >= sup ||J||_M" + ("" if exact else " (bound)")
    if step_size is not None:
        factor = float(np.sqrt(max(0.0, 1.0 - 2.0 * step_size * rate + step_size**2 * norm**2)))
        details["step_size"] = step_size
        details["euler_factor_bound_at_step_size"] = factor
    reason = (f"every part certified ({', '.join(sorted(set(details['parts'])))}); feedback skew "
              f"in the metric; rate {rate:.4g} = {how}")
    return Certificate(True, condition, metric, float(rate), float(max_step), reason, details)
