"""Certificates of the Lipschitz RNN (paper 002): the flow, and the map it runs."""

from __future__ import annotations

import dataclasses

import numpy as np

from stablernn.certification._common import array as _array
from stablernn.certification._common import with_as_run as _with_as_run
from stablernn.contraction import (
    Certificate,
    JacobianFamily,
    certify_lipschitz,
    check_family_metric,
    family_norm_bound,
    lipschitz_family,
)
from stablernn.contraction.as_run import absolute_norm, float32_allowance, step_factor
from stablernn.contraction.discrete import max_euler_step, rk2_contraction_factor


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
        base = Certificate.refuse(continuous.condition, continuous.reason, continuous.details)
    certificate = _with_as_run(base, step_size=step, method=method, factor=bound.factor,
                               how=bound.method, metric=identity)
    guaranteed = getattr(getattr(model, "cell", model), "guaranteed_step_factor", None)
    reason = (f"{certificate.reason}; the {method} map with step {step:g} contracts in the "
              f"identity metric by at least {bound.factor:.6g} per step ({bound.method})")
    if guaranteed is not None:
        reason += f"; the parametrization guarantees {guaranteed:.6g} for every parameter value"
    return dataclasses.replace(certificate, reason=reason)
