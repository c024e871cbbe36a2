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

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from stablernn.contraction import (
    Certificate,
    JacobianFamily,
    certify_lipschitz,
    certify_matrix,
    check_family_metric,
    family_norm_bound,
    lipschitz_family,
)
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
    max_euler_step,
    midpoint_euler_step,
    rk2_contraction_factor,
)
from stablernn.models.assembly import Assembly, coupling_gain
from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN
from stablernn.models.network import NetworkOfNetworks
from stablernn.models.readouts import PerStepReadout, SequenceClassifier
from stablernn.models.subnetworks import LipschitzPart, RateSubnetwork, certify_part

# |M L + L^T M| relative to |M| |L| above which the feedback is not skew in the metric
FEEDBACK_TOLERANCE = 1e-5


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


ACCEPTS = ("a square weight matrix (torch.Tensor or numpy array), a LipschitzCell or "
           "LipschitzRNN, a NetworkOfNetworks (SparseComboNet, SVDComboNet), an Assembly, a "
           "part (subnetwork), a readout model holding one of these (.rnn), or another "
           "torch.nn.Module")


def certify(obj, slope_bound: float = 1.0) -> Certificate:
    """The certificate of ``obj`` (see the module docstring); ``slope_bound`` is g for a bare
    weight matrix. Never says ``contracting=True`` (or ``contracting_as_run=True``) without a
    verified inequality. Raises ``TypeError`` for objects that are neither a matrix nor a
    ``torch.nn.Module``."""
    if not isinstance(obj, (torch.Tensor, np.ndarray, nn.Module)):
        raise TypeError(f"certify accepts {ACCEPTS}; got {type(obj).__name__}")
    with torch.no_grad():
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            matrix = _array(obj) if isinstance(obj, torch.Tensor) else obj
            return certify_matrix(matrix, slope_bound)
        if isinstance(obj, (SequenceClassifier, PerStepReadout)):
            return certify(obj.rnn)
        if isinstance(obj, nn.Sequential) and len(obj):
            return certify(obj[-1])
        bad = _non_finite(obj)
        if bad:
            return Certificate.failed(
                "none", f"the model has NaN or infinite values in {', '.join(bad[:5])}"
                + (" ..." if len(bad) > 5 else "") + ": no contraction can be certified",
                step_size=getattr(obj, "step_size", None), method=getattr(obj, "method", None))
        if isinstance(obj, (LipschitzCell, LipschitzRNN)):
            return certify_lipschitz_model(obj)
        if isinstance(obj, NetworkOfNetworks):
            return certify_network(obj)
        if isinstance(obj, Assembly):
            return certify_assembly(obj)
        if isinstance(obj, (RateSubnetwork, LipschitzPart)) or _is_part(obj):
            return certify_part(obj)
        cell = getattr(obj, "cell", obj)
        if hasattr(cell, "W") and not hasattr(cell, "A") and isinstance(cell.W, torch.Tensor):
            # neural-ODE / antisymmetric RNN: h' = tanh(W h + u), paper 002 eq. 1 with A = 0
            weight = _array(cell.W)
            return certify_lipschitz(np.zeros_like(weight), weight)
    return Certificate.failed("none", f"stablernn has no contraction analysis for "
                                      f"{type(obj).__name__}")


def _non_finite(module: nn.Module) -> list[str]:
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, tensor in tensors
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def _with_as_run(certificate: Certificate, *, step_size: float, method: str,
                 factor: float | None, how: str, metric: np.ndarray | None = None,
                 **extra) -> Certificate:
    """``certificate`` with the as-run fields; ``metric`` replaces its metric when given."""
    holds = bool(factor is not None and math.isfinite(factor) and factor < 1.0)
    details = dict(certificate.details, step_factor_method=how, **extra)
    if not holds:
        details.setdefault("as_run_reason", how if factor is None else
                           f"the bound on one step's factor is {factor:.6g} >= 1 ({how})")
    return dataclasses.replace(
        certificate, metric=certificate.metric if metric is None else metric,
        details=details, step_size=float(step_size), method=method,
        step_factor=None if factor is None else float(factor), contracting_as_run=holds)


def certify_lipschitz_model(model) -> Certificate:
    """A Lipschitz RNN cell or layer: paper 002 in continuous time, and the map it runs.

    The step Jacobian is ``T + eps D W`` (Euler: ``T = I + eps alpha A``; exponential:
    ``T = exp(eps alpha A)``), bounded in the identity metric by
    :func:`stablernn.contraction.as_run.step_factor`; RK2 by the bound of
    :func:`stablernn.contraction.discrete.rk2_contraction_factor` in the continuous
    certificate's metric. When the map is certified in the identity metric, the certificate's
    metric is the identity and its rate the identity metric's rate.
    """
    a, w = _array(model.A), _array(model.W)
    continuous = certify_lipschitz(a, w, alpha=model.alpha)
    step, method = float(model.step_size), model.method
    if method == "rk2":
        if not continuous.contracting:
            return _with_as_run(continuous, step_size=step, method=method, factor=None,
                                how="no metric certifies the flow, so no RK2 bound applies")
        family = lipschitz_family(a, w, 1.0, model.alpha)
        check = rk2_contraction_factor(family, continuous.metric, step)
        factor = check.factor + float32_allowance(len(a), 1.0 + step * (
            model.alpha * np.linalg.norm(a, 2) + np.linalg.norm(w, 2)) ** 2, continuous.metric)
        return _with_as_run(continuous, step_size=step, method=method, factor=factor,
                            how=f"RK2 {check.method}")
    transition = _array(model.transition())
    bound = step_factor(transition, w, step, 1.0, side="left")
    if not bound.contracting and continuous.contracting:
        # the continuous certificate's metric may serve the step where the identity does not
        metric = continuous.metric
        steps = JacobianFamily(transition, step * np.eye(len(a)), w, 0.0, 1.0,
                               "one step: T + eps D W")
        norm, _ = family_norm_bound(steps, metric)
        factor = norm + float32_allowance(len(a), absolute_norm(transition, metric)
                                          + step * absolute_norm(w, metric), metric)
        if factor < 1:
            return _with_as_run(continuous, step_size=step, method=method, factor=factor,
                                how="||T + eps D W||_M bound in the continuous certificate's "
                                    "metric")
    if not bound.contracting:
        why = (f"the bound on one step's factor in the identity metric is {bound.factor:.6g} "
               f">= 1 ({bound.method})")
        if method == "euler" and continuous.max_euler_step is not None \
                and step >= continuous.max_euler_step:
            why += (f"; the model's step {step:g} is above the certified Euler step "
                    f"{continuous.max_euler_step:.4g}")
        return _with_as_run(continuous, step_size=step, method=method, factor=bound.factor,
                            how=bound.method, as_run_reason=why, as_run_metric="identity")
    identity = np.eye(len(a))
    check = check_family_metric(lipschitz_family(a, w, 1.0, model.alpha), identity)
    if check.contracting:
        euler_step = max_euler_step(lipschitz_family(a, w, 1.0, model.alpha), identity)
        base = Certificate(True, "identity metric, checked for every slope (paper 002, eq. 1)",
                           identity, check.rate, euler_step.max_step,
                           f"mu(alpha A + D W) <= -{check.rate:.4g} for every slope "
                           f"({check.method})", {"check_method": check.method})
    else:
        base = Certificate.failed(continuous.condition, continuous.reason, continuous.details)
    certificate = _with_as_run(base, step_size=step, method=method, factor=bound.factor,
                               how=bound.method, metric=identity)
    guaranteed = getattr(getattr(model, "cell", model), "guaranteed_step_factor", None)
    reason = (f"{certificate.reason}; the {method} map with step {step:g} contracts in the "
              f"identity metric by at least {bound.factor:.6g} per step ({bound.method})")
    if guaranteed is not None:
        reason += f"; the parametrization guarantees {guaranteed:.6g} for every parameter value"
    return dataclasses.replace(certificate, reason=reason)


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
        return Certificate.failed(condition, "unconstrained feedback L = B (the paper's control "
                                             "experiment): no metric makes it skew, so nothing "
                                             "is guaranteed")
    parts = [certify_assembly(part) if isinstance(part, Assembly) else certify_part(part)
             for part in assembly.parts]
    for index, (part, certificate) in enumerate(zip(assembly.parts, parts)):
        if not certificate.contracting:
            return Certificate.failed(condition, f"part {index} ({type(part).__name__}) is not "
                                                 f"certified: {certificate.reason}")
    metric = _array(assembly.metric())
    cross_feedback = _array(assembly.feedback(assembly.metric(), assembly.metric_inverse()))
    defect = feedback_defect(metric, cross_feedback)
    if defect > FEEDBACK_TOLERANCE:
        return Certificate.failed(condition, f"the feedback is not negative in the metric: "
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
        return Certificate.failed(condition, f"{how}, less the feedback's rounding defect "
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
