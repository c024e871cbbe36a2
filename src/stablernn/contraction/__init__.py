"""Contraction toolkit: metrics, the conditions of papers 000 and 002, certificates.

Pure mathematics on tensors and arrays (no training code). Conventions (docs/design.md): a rate
lambda means ``M J + J^T M <= -2 lambda M`` for every Jacobian J the activation allows, in the
continuous time of the model's equation with tau = 1; a :class:`Certificate` says
``contracting=True`` only after such an inequality was checked numerically.

Entry points for a dispatcher: :func:`certify_matrix` (a weight matrix of paper 000, eq. 1) and
:func:`certify_lipschitz` (a Lipschitz RNN of paper 002, or its A and W). See docs/contraction.md.
"""

from stablernn.contraction.certificate import Certificate
from stablernn.contraction.certify import certify_matrix, direct_metric_check, non_hurwitz_member
from stablernn.contraction.conditions import (
    ConditionResult,
    relaxed_absolute,
    symmetrizing_scaling,
    theorem1,
    theorem1_diagonal_metric,
    theorem2,
    theorem3,
    theorem4,
    theorem5,
    theorem6_first_inequality,
)
from stablernn.contraction.counterexamples import (
    Counterexample,
    NoCommonMetric,
    no_common_metric,
    theorem1_remark_counterexample,
    theorem1b_counterexample,
    theorem7_counterexample,
)
from stablernn.contraction.discrete import (
    DiscreteCheck,
    StepBound,
    discrete_map_factor,
    euler_contraction_factor,
    max_euler_step,
    max_rk2_step,
    rk2_contraction_factor,
)
from stablernn.contraction.empirical import EmpiricalRate, empirical_rate
from stablernn.contraction.family import (
    JacobianFamily,
    discrete_rnn_family,
    lipschitz_family,
    rnn_family,
)
from stablernn.contraction.lipschitz import (
    LipschitzSystem,
    Proposition1Check,
    certify_lipschitz,
    check_proposition1,
    lipschitz_system,
    proposition1_interval,
    theorem1a,
    theorem1b,
)
from stablernn.contraction.metrics import (
    DiagonalNormMetric,
    MetricError,
    diagonal_norm_metric,
    lyapunov_metric,
    metzler_diagonal_metric,
    spectral_abscissa,
)
from stablernn.contraction.verification import (
    MetricCheck,
    check_family_metric,
    comparison_bound,
    family_norm_bound,
    verify_metric,
)

__all__ = [
    "Certificate",
    "ConditionResult",
    "Counterexample",
    "DiagonalNormMetric",
    "DiscreteCheck",
    "EmpiricalRate",
    "JacobianFamily",
    "LipschitzSystem",
    "MetricCheck",
    "MetricError",
    "NoCommonMetric",
    "Proposition1Check",
    "StepBound",
    "certify_lipschitz",
    "certify_matrix",
    "check_family_metric",
    "check_proposition1",
    "comparison_bound",
    "diagonal_norm_metric",
    "direct_metric_check",
    "discrete_map_factor",
    "discrete_rnn_family",
    "empirical_rate",
    "euler_contraction_factor",
    "family_norm_bound",
    "lipschitz_family",
    "lipschitz_system",
    "lyapunov_metric",
    "max_euler_step",
    "max_rk2_step",
    "metzler_diagonal_metric",
    "no_common_metric",
    "non_hurwitz_member",
    "proposition1_interval",
    "relaxed_absolute",
    "rk2_contraction_factor",
    "rnn_family",
    "spectral_abscissa",
    "symmetrizing_scaling",
    "theorem1",
    "theorem1_diagonal_metric",
    "theorem1_remark_counterexample",
    "theorem1a",
    "theorem1b",
    "theorem1b_counterexample",
    "theorem2",
    "theorem3",
    "theorem4",
    "theorem5",
    "theorem6_first_inequality",
    "theorem7_counterexample",
    "verify_metric",
]
