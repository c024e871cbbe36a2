"""Certificates of networks of networks (paper 000): assemblies by Corollaries 1-2 and
appendix A.2.1, and the map a :class:`~stablernn.models.network.NetworkOfNetworks` runs."""

from __future__ import annotations

import math

import numpy as np

from stablernn.certification._common import array as _array
from stablernn.certification._common import with_as_run as _with_as_run
from stablernn.certification.parts import certify_part, part_family
from stablernn.contraction import Certificate, JacobianFamily, family_norm_bound
from stablernn.contraction.as_run import (
    absolute_norm,
    float32_allowance,
    is_diagonal,
    metric_norm,
    metric_root,
    step_factor,
)
from stablernn.contraction.combination import feedback_defect, hierarchy_rate
from stablernn.contraction.discrete import (
    euler_contraction_factor,
    midpoint_euler_step,
    rk2_contraction_factor,
)
from stablernn.models.assembly import Assembly, coupling_gain
from stablernn.models.subnetworks import RateSubnetwork

# |M L + L^T M| relative to |M| |L| above which the feedback is not skew in the metric
FEEDBACK_TOLERANCE = 1e-5


def certify_network(network) -> Certificate:
    """A network of networks: Corollaries 1-2 in continuous time, and the map it runs."""
    assembly, step, method = network.assembly, float(network.step_size), network.method
    continuous = certify_assembly(assembly)
    metric = _array(assembly.metric())
    if assembly.unconstrained:
        return _with_as_run(continuous, step_size=step, method=method, factor=None,
                            how="unconstrained feedback L = B (the paper's control): nothing "
                                "bounds its flow or its steps for the values B is trained to")
    if method == "splitting":
        factor, how = splitting_factor(network.cell, metric)
        return _with_as_run(continuous, step_size=step, method=method, factor=factor, how=how,
                            metric=continuous.metric if continuous.contracting else metric)
    if not continuous.contracting:
        return _with_as_run(continuous, step_size=step, method=method, factor=None,
                            how="no metric certifies the flow, so no bound on its steps applies")
    family = assembly_family(assembly)
    if method == "rk2":
        check = rk2_contraction_factor(family, metric, step)
    else:
        check = euler_contraction_factor(family, metric, step)
    factor = check.factor + float32_allowance(len(metric), max(1.0, check.factor), metric)
    why = None
    if factor >= 1 and continuous.max_euler_step is not None and step >= continuous.max_euler_step:
        why = (f"the model's step {step:g} is above the certified {method} step "
               f"{continuous.max_euler_step:.4g} (factor bound {factor:.6g})")
    extra = {} if why is None else {"as_run_reason": why}
    how = f"RK2 {check.method}" if method == "rk2" else f"Euler {check.method}"
    return _with_as_run(continuous, step_size=step, method=method, factor=factor, how=how, **extra)


def splitting_factor(cell, metric: np.ndarray) -> tuple[float, str]:
    """Bound on one splitting step ``x -> P(Q x)`` in the assembly's metric M.

    ``||J||_M <= ||Q||_M (max_i f_i + dt ||H'||_M)``: the feedback step's norm measured on the
    float32 matrix the model runs (1 in exact arithmetic: L is skew in M), f_i each part's
    Euler factor in its own metric (block-diagonal), and the hierarchical maps' Jacobians H'
    (strictly block-lower) bounded by their gains in the metric.
    """
    assembly, step = cell.assembly, float(cell.step_size)
    flow = _array(cell.feedback_flow())
    if not np.isfinite(flow).all():
        return math.inf, "the feedback's step Q is not finite"
    flow_norm = metric_norm(flow, metric)
    factors, methods, offset = [], set(), 0
    for leaf in assembly.leaves():
        block = slice(offset, offset + leaf.size)
        part_metric = metric[block, block]
        if isinstance(leaf, RateSubnetwork) and is_diagonal(part_metric):
            identity = np.eye(leaf.size)
            bound = step_factor((1.0 - step) * identity, _array(leaf.weight()), step,
                                leaf.slope_bound, side="right", metric=part_metric)
            factors.append(bound.factor)
            methods.add(bound.method.split(" ")[0])
        else:
            check = euler_contraction_factor(leaf.jacobian_family(), part_metric, step)
            factors.append(check.factor + float32_allowance(leaf.size, max(1.0, check.factor),
                                                            part_metric))
            methods.add("Euler factor of the part's Jacobian family")
        offset += leaf.size
    coupling = 0.0
    for connection in assembly.flat_connections():
        target = metric[connection.target, connection.target]
        source = metric[connection.source, connection.source]
        largest = np.linalg.eigvalsh(target).max()
        smallest = np.linalg.eigvalsh(source).min()
        coupling += connection.module.gain * math.sqrt(largest / smallest)
    allowance = float32_allowance(len(metric), absolute_norm(flow, metric) * max(1.0, max(factors)),
                                  metric)
    factor = flow_norm * (max(factors) + step * coupling) + allowance
    how = (f"||Q||_M = {flow_norm:.7g} (the feedback's Cayley step) times the worst part's Euler factor "
           f"{max(factors):.6g} ({', '.join(sorted(methods))} bounds)")
    if coupling:
        how += f", plus dt x {coupling:.4g} for the hierarchical maps"
    return factor, how


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


def certify_assembly(assembly: Assembly) -> Certificate:
    """Paper 000, Corollaries 1-2 (and appendix A.2.1 for hierarchy), checked numerically.

    The feedback L is built in float32, so ``M L + L^T M`` is not exactly ``<= 0``: its defect
    in the metric, ``delta = lambda_max(M^{-1/2} sym(M L) M^{-1/2})``, is subtracted from the
    rate (``M (J + L) + (.)^T M <= -2 (rate - delta) M``), and a defect above a relative 1e-5 of
    ``|M| |L|`` is refused outright (the construction is then wrong, not rounded).
    """
    condition = "paper 000, Corollary 2" if assembly.feedback.damping_factor is not None \
        else "paper 000, Corollary 1"
    if assembly.connections:
        condition += " with hierarchy (appendix A.2.1)"
    if assembly.feedback.unconstrained:
        return Certificate.refuse(condition, "unconstrained feedback L = B (the paper's control "
                                             "experiment): no metric makes it skew, so nothing "
                                             "is guaranteed")
    parts = [certify_assembly(part) if isinstance(part, Assembly) else certify_part(part)
             for part in assembly.parts]
    for index, (part, certificate) in enumerate(zip(assembly.parts, parts)):
        if not certificate.contracting:
            return Certificate.refuse(condition, f"part {index} ({type(part).__name__}) is not "
                                                 f"certified: {certificate.reason}")
    metric = _array(assembly.metric())
    cross_feedback = _array(assembly.feedback(assembly.metric(), assembly.metric_inverse()))
    defect = feedback_defect(metric, cross_feedback)
    if defect > FEEDBACK_TOLERANCE:
        return Certificate.refuse(condition, f"the feedback is not negative in the metric: "
                                             f"lambda_max(sym(M L)) is {defect:.3g} of |M| |L| "
                                             "(Corollary 1 needs <= 0)")
    _, inverse_root = metric_root(metric)
    product = metric @ cross_feedback
    defect_in_metric = max(0.0, float(np.linalg.eigvalsh(
        inverse_root @ (0.5 * (product + product.T)) @ inverse_root).max()))
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
    else:
        rate = float(rates.min())
        how = "the slowest part's rate (feedback is skew in the metric)"
    rate -= defect_in_metric
    if rate <= 0:
        return Certificate.refuse(condition, f"{how}, less the feedback's rounding defect "
                                             f"{defect_in_metric:.3g}, gives rate {rate:.4g} <= 0")
    details = {"part_rates": rates.tolist(), "feedback_defect": defect,
               "feedback_defect_in_metric": defect_in_metric,
               "parts": [certificate.condition for certificate in parts]}
    family = assembly_family(assembly)
    norm, exact = family_norm_bound(family, metric)
    max_step = 2.0 * rate / norm**2  # ||I + h F||^2 <= 1 - 2 h rate + h^2 norm^2
    details["euler_step_bound"] = "2 rate / K^2 with K >= sup ||J||_M" + ("" if exact else " (bound)")
    midpoint = midpoint_euler_step(family, metric)
    if midpoint > max_step:
        max_step = midpoint
        details["euler_step_bound"] = "||I + h F(c)||_M + h r P < 1 (slope midpoint c, radius r)"
    reason = (f"every part certified ({', '.join(sorted(set(details['parts'])))}); feedback skew "
              f"in the metric; rate {rate:.4g} = {how}"
              + (f", less the feedback's rounding defect {defect_in_metric:.2g}"
                 if defect_in_metric else ""))
    return Certificate(True, condition, metric, float(rate), float(max_step), reason, details)
