"""Contracting subnetworks ("parts") for networks of networks (paper 000).

A part is a small recurrent system on its own slice ``x_i`` of the full state. Every part has:

- ``size``: the number of units; ``slope_bound``: g, the largest slope of its activation;
- ``prepare()``: what its step needs, built once per forward pass;
- ``vector_field(x, u, prepared)``: ``dx/dt`` in the time of the model's equation (tau = 1);
- ``metric()``: a constant symmetric positive definite M in which it contracts;

The rate subnetworks follow paper 000 eq. 1: ``x' = -x + W phi(x) + u``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import torch
from torch import nn
from torch.nn.utils import parametrizations

from stablernn._checks import check_in_range, check_number, check_positive, check_positive_int
from stablernn.contraction import (
    JacobianFamily,
    lipschitz_family,
    relaxed_absolute,
    rnn_family,
)
from stablernn.contraction.as_run import scaled_diagonal_metric
from stablernn.contraction.conditioning import well_conditioned_diagonal_metric
from stablernn.contraction.metrics import normalized_lyapunov_value
from stablernn.models.activations import activation
from stablernn.models.lipschitz import LipschitzDynamics
from stablernn.parametrizations import SymmetricSkew


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def theorem1_metric(weight: np.ndarray, slope_bound: float) -> tuple[np.ndarray, float]:
    """A well-conditioned verified diagonal metric for paper 000, Theorem 1, and its rate.

    The comparison matrix ``g |W|' - I`` (diagonal relaxation) must be Hurwitz; the metric is
    :func:`~stablernn.contraction.conditioning.well_conditioned_diagonal_metric`, whose
    condition number matters for the feedback ``M^{-1} B^T M`` and the Euler step bound.
    """
    comparison = slope_bound * relaxed_absolute(weight) - np.eye(len(weight))
    metric = well_conditioned_diagonal_metric(comparison)
    return metric, -normalized_lyapunov_value(metric, comparison)


class RateSubnetwork(nn.Module):
    """Base of paper 000 eq. 1 subnetworks, ``x' = -x + W phi(x) + u``; subclasses build W."""

    condition = "paper 000, eq. 1"

    def __init__(self, size: int, activation_name: str = "relu") -> None:
        super().__init__()
        self.size = check_positive_int("size", size)
        self.activation_name = activation_name
        self.phi, self.slope_bound = activation(activation_name)

    def weight(self) -> torch.Tensor:
        raise NotImplementedError

    def metric(self) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self) -> torch.Tensor:
        return self.weight()

    def vector_field(self, x: torch.Tensor, u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.addmm(u - x, self.phi(x), weight.transpose(0, 1))

    def jacobian_family(self) -> JacobianFamily:
        """``J = -I + W D`` (eq. 1), slopes rescaled to [0, 1] (W's columns times g)."""
        g = self.slope_bound
        family = rnn_family(_numpy(self.weight()), g)
        return JacobianFamily(family.base, family.left * g, family.right, 0.0, 1.0,
                              family.description)


class TrainedSubnetwork(RateSubnetwork):
    """A trained subnetwork whose theorem holds with a ``margin`` in (0, 1) for every
    parameter value (the rate or the distance to the condition's boundary)."""

    def __init__(self, size: int, activation_name: str = "relu", margin: float = 0.05) -> None:
        super().__init__(size, activation_name)
        self.margin = check_number("margin", margin, 0, 1, open_low=True, open_high=True)


class SparseSubnetwork(RateSubnetwork):
    """A fixed random sparse subnetwork certified by paper 000, Theorem 1 (Sparse Combo Net).

    ``W`` is drawn with ``scipy.sparse.random`` at the given ``density``, entries uniform in
    ``[-magnitude, magnitude]``, zero diagonal (paper 000, D.1.1), and accepted only when
    ``g|W| - I`` is Hurwitz; otherwise it is redrawn, at most ``max_tries`` times. Once accepted
    W is never rescaled (the reference code rescaled after the check, voiding the guarantee).
    W and its metric are buffers: they are not trained. The metric is a verified diagonal metric
    of the Hurwitz Metzler matrix ``g|W| - I``, the best-conditioned of the identity and the
    closed forms (:func:`theorem1_metric`).

    With ``step_size`` h (the splitting step of :class:`~stablernn.models.network.AssemblyCell`,
    ``0 < h <= 1``) the metric is chosen for the part's own Euler step instead: a diagonal P
    with ``||(1 - h) I + h g |W| ||_P`` at most ``1 - 0.75 h (1 - rho(g |W|))`` where it can
    (:func:`~stablernn.contraction.as_run.scaled_diagonal_metric`); by the comparison argument
    this bounds ``||I + h (-I + W D)||_P`` for every slope, and it also certifies Theorem 1 in
    continuous time. A draw whose step factor is not below 1 is redrawn.
    """

    condition = "paper 000, Theorem 1"

    def __init__(self, size: int, density: float = 0.033, magnitude: float = 1.0,
                 activation_name: str = "relu", seed: int | None = None,
                 max_tries: int = 1000, step_size: float | None = None) -> None:
        super().__init__(size, activation_name)
        if step_size is not None:
            step_size = check_in_range("step_size", step_size, 0.0, 1.0)
            if step_size == 0:
                raise ValueError("step_size must be in (0, 1], got 0")
        self.step_size = step_size
        self.density = check_in_range("density", density, 0.0, 1.0)
        if self.density == 0.0:
            raise ValueError("density must be a number in (0, 1], got 0.0")
        self.magnitude = check_positive("magnitude", magnitude)
        self.max_tries = check_positive_int("max_tries", max_tries)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # follows torch.manual_seed
        self.seed = seed
        weight, self.tries, metric = self._draw(np.random.default_rng(seed))
        self.register_buffer("weight_matrix", torch.as_tensor(weight, dtype=torch.float32))
        self.register_buffer("metric_matrix", torch.as_tensor(metric, dtype=torch.float32))

    def _metric(self, weight: np.ndarray) -> np.ndarray | None:
        """The metric of a drawn W, or None when its step does not contract."""
        if self.step_size is None:
            return theorem1_metric(weight, self.slope_bound)[0]
        h, g = self.step_size, self.slope_bound
        absolute = g * np.abs(weight)
        radius = float(np.abs(np.linalg.eigvals(absolute)).max())
        step_matrix = (1.0 - h) * np.eye(self.size) + h * absolute
        metric, norm = scaled_diagonal_metric(step_matrix, 1.0 - 0.75 * h * (1.0 - radius))
        return metric if norm < 1.0 - 1e-6 else None

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        size, g = self.size, self.slope_bound
        for attempt in range(1, self.max_tries + 1):
            weight = scipy.sparse.random(
                size, size, density=self.density, random_state=rng,
                data_rvs=lambda n: rng.uniform(-self.magnitude, self.magnitude, n),
            ).toarray()
            np.fill_diagonal(weight, 0.0)
            comparison = g * np.abs(weight) - np.eye(size)
            if np.linalg.eigvals(comparison).real.max() < 0:
                metric = self._metric(weight)
                if metric is not None:
                    return weight, attempt, metric
        expected_row_sum = (size - 1) * self.density * self.magnitude / 2
        raise ValueError(
            f"no sparse subnetwork of size {size} with density={self.density} and "
            f"magnitude={self.magnitude} met paper 000 Theorem 1 (g|W| - I Hurwitz) in "
            f"{self.max_tries} draws; the expected row sum of g|W| is {g * expected_row_sum:.2f} "
            "(acceptance needs it well below 1): lower density or magnitude"
        )

    def weight(self) -> torch.Tensor:
        return self.weight_matrix

    def metric(self) -> torch.Tensor:
        return self.metric_matrix

    def metric_inverse(self) -> torch.Tensor:
        return torch.diag(self.metric_matrix.diagonal().reciprocal())  # the metric is diagonal

    def extra_repr(self) -> str:
        step = "" if self.step_size is None else f", step_size={self.step_size}"
        return (f"size={self.size}, density={self.density}, magnitude={self.magnitude}, "
                f"seed={self.seed}{step}")


class SVDSubnetwork(TrainedSubnetwork):
    """A trained subnetwork certified by paper 000, Theorem 5 (SVD Combo Net).

    ``W = Theta^{-1} U Sigma V^T Theta`` with U, V orthogonal (``torch.nn.utils.parametrizations
    .orthogonal``), ``Sigma = diag(sigma_max * sigmoid(s))`` with ``sigma_max = (1 - margin) / g``
    so every singular value stays strictly below ``1/g`` by the margin, and
    ``Theta = diag(exp(theta))`` positive. Metric ``P = Theta^2``; then
    ``g^2 W^T P W - P = Theta (g^2 V Sigma^2 V^T - I) Theta < 0``.

    Rate: in the metric, ``Theta J Theta^{-1} = -I + U Sigma V^T D`` (D diagonal commutes with
    Theta) has norm-bounded perturbation ``||U Sigma V^T D|| <= 1 - margin``, so distances shrink
    at least at ``rate = margin`` for every parameter value.
    """

    condition = "paper 000, Theorem 5"

    def __init__(self, size: int, activation_name: str = "relu", margin: float = 0.05,
                 max_log_scale: float | None = None) -> None:
        super().__init__(size, activation_name, margin)
        self.max_log_scale = None if max_log_scale is None else check_positive(
            "max_log_scale", max_log_scale)
        self.left = parametrizations.orthogonal(nn.Linear(size, size, bias=False))
        self.right = parametrizations.orthogonal(nn.Linear(size, size, bias=False))
        self.singular_logits = nn.Parameter(torch.zeros(size))
        self.log_scale = nn.Parameter(torch.zeros(size))

    @property
    def sigma_max(self) -> float:
        return (1.0 - self.margin) / self.slope_bound

    def scale_exponent(self) -> torch.Tensor:
        """theta of ``Theta = diag(exp(theta))``: ``log_scale``, or
        ``c tanh(log_scale / c)`` with ``c = max_log_scale`` (the metric's condition number is
        then at most ``exp(4 c)`` for every parameter value)."""
        if self.max_log_scale is None:
            return self.log_scale
        return self.max_log_scale * torch.tanh(self.log_scale / self.max_log_scale)

    def weight(self) -> torch.Tensor:
        sigma = self.sigma_max * torch.sigmoid(self.singular_logits)
        scale = torch.exp(self.scale_exponent())
        core = (self.left.weight * sigma) @ self.right.weight.transpose(0, 1)
        return core * (scale.reciprocal().unsqueeze(1) * scale.unsqueeze(0))

    def metric(self) -> torch.Tensor:
        return torch.diag(torch.exp(2.0 * self.scale_exponent()))

    def metric_inverse(self) -> torch.Tensor:
        return torch.diag(torch.exp(-2.0 * self.scale_exponent()))

    def metric_root(self) -> tuple[torch.Tensor, torch.Tensor]:
        exponent = self.scale_exponent()
        return torch.diag(torch.exp(exponent)), torch.diag(torch.exp(-exponent))

    def extra_repr(self) -> str:
        return f"size={self.size}, margin={self.margin}, slope_bound={self.slope_bound}"


def _positive(free: torch.Tensor, floor: float) -> torch.Tensor:
    """Entries ``free^2 + floor`` (paper 000, after Theorem 3: ``P_ii = d_i^2 + epsilon``)."""
    return free * free + floor


class ProductSubnetwork(RateSubnetwork):
    """A trained subnetwork certified by paper 000, Theorem 3: ``W = -P1 Q P2``.

    ``P1 = diag(d1^2 + eps)``, ``P2 = diag(d2^2 + eps)``, ``Q = E^T E + eps I`` (the paper's
    parameterization). Metric ``M = (P1 Q P1)^{-1}``: then ``M W D = -P1^{-1} P2 D`` is diagonal
    and <= 0 for every slope matrix D, so ``M J + J^T M <= -2 M``: rate 1 for any parameters.
    """

    condition = "paper 000, Theorem 3"

    def __init__(self, size: int, activation_name: str = "relu", floor: float = 1e-3,
                 init_std: float = 0.1) -> None:
        super().__init__(size, activation_name)
        self.floor = check_positive("floor", floor)
        self.left_scale = nn.Parameter(torch.ones(size))
        self.right_scale = nn.Parameter(torch.ones(size))
        # Q starts near I (not near floor * I): a well-conditioned metric
        self.factor = nn.Parameter(torch.eye(size) + torch.randn(size, size) * init_std / size**0.5)
        self.register_buffer("identity", torch.eye(size), persistent=False)

    def _parts(self):
        left = _positive(self.left_scale, self.floor)
        right = _positive(self.right_scale, self.floor)
        core = self.factor.transpose(0, 1) @ self.factor + self.floor * self.identity
        return left, core, right

    def weight(self) -> torch.Tensor:
        left, core, right = self._parts()
        return -(left.unsqueeze(1) * core * right.unsqueeze(0))

    def metric_inverse(self) -> torch.Tensor:
        left, core, _ = self._parts()
        return left.unsqueeze(1) * core * left.unsqueeze(0)

    def metric(self) -> torch.Tensor:
        metric = torch.linalg.inv(self.metric_inverse())
        return 0.5 * (metric + metric.transpose(0, 1))  # symmetric to the last bit


class SymmetricSubnetwork(TrainedSubnetwork):
    r"""A trained subnetwork certified by paper 000, Theorem 2: W symmetric with ``g W < I``.

    ``W = ((1 - margin) / g) I - E^T E``, so ``g lambda_max(W) <= 1 - margin``. Metric (derived
    from the proof in C.3, which works with the y-system Jacobian ``-I + D W``; for eq. 1's
    ``J = -I + W D = (-I + D W)^T`` the metric is the inverse): with a rate
    ``lambda = min(1 - g lambda_max(W), 1/2)``, ``gamma^2 = g / (4 (1 - lambda))``,
    ``S = (I / (4 gamma^2) - W)^{1/2}``, ``R = S / gamma + I / (2 gamma^2)``,
    ``M = (gamma^2 R R)^{-1}``; then ``M J + J^T M <= -2 lambda M``. The metric is computed by
    an eigendecomposition once per forward pass and treated as a constant for gradients.
    """

    condition = "paper 000, Theorem 2"

    def __init__(self, size: int, activation_name: str = "relu", margin: float = 0.05,
                 init_std: float = 0.1) -> None:
        super().__init__(size, activation_name, margin)
        self.factor = nn.Parameter(torch.randn(size, size) * init_std / size**0.5)
        self.register_buffer("identity", torch.eye(size), persistent=False)

    def weight(self) -> torch.Tensor:
        shift = (1.0 - self.margin) / self.slope_bound
        return shift * self.identity - self.factor.transpose(0, 1) @ self.factor

    def rate_and_metric_inverse(self) -> tuple[float, torch.Tensor]:
        with torch.no_grad():
            weight = self.weight().double()
            eigenvalues, vectors = torch.linalg.eigh(weight)
            g = self.slope_bound
            rate = min(1.0 - g * eigenvalues.max().item(), 0.5)
            gamma_squared = g / (4.0 * (1.0 - rate))
            root = torch.sqrt(torch.clamp(1.0 / (4.0 * gamma_squared) - eigenvalues, min=0.0))
            r_eigenvalues = root / gamma_squared**0.5 + 1.0 / (2.0 * gamma_squared)
            inverse = (vectors * (gamma_squared * r_eigenvalues**2)) @ vectors.T
        return rate, inverse.to(self.factor.dtype)

    def metric_inverse(self) -> torch.Tensor:
        return self.rate_and_metric_inverse()[1]

    def metric(self) -> torch.Tensor:
        metric = torch.linalg.inv(self.metric_inverse())
        return 0.5 * (metric + metric.transpose(0, 1))  # symmetric to the last bit


class TriangularSubnetwork(TrainedSubnetwork):
    """A trained subnetwork certified by paper 000, Theorem 4: lower-triangular W with every
    diagonal entry ``W_ii <= (1 - margin) / g`` (so ``g W - I`` is triangular and Hurwitz).

    The proof's metric ``diag(eps^{2i})`` is badly conditioned for more than a few units; the
    comparison matrix ``g |W| - I`` (diagonal entries ``g W_ii - 1`` kept only where positive,
    paper 000 Theorem 1's relaxation) is triangular with a negative diagonal, hence Hurwitz
    Metzler, so a diagonal metric of Theorem 1 (:func:`theorem1_metric`) applies and is used
    instead. It is recomputed once per forward pass and treated as a constant for gradients.
    """

    condition = "paper 000, Theorem 4"

    def __init__(self, size: int, activation_name: str = "relu", margin: float = 0.05,
                 init_std: float = 0.1) -> None:
        super().__init__(size, activation_name, margin)
        self.lower = nn.Parameter(torch.randn(size, size) * init_std / size**0.5)
        self.diagonal_free = nn.Parameter(torch.zeros(size))
        self.register_buffer("strict_lower", torch.tril(torch.ones(size, size), -1),
                             persistent=False)

    def weight(self) -> torch.Tensor:
        ceiling = (1.0 - self.margin) / self.slope_bound
        diagonal = ceiling - torch.nn.functional.softplus(self.diagonal_free)
        return self.lower * self.strict_lower + torch.diag(diagonal)

    def metric(self) -> torch.Tensor:
        metric, _ = theorem1_metric(_numpy(self.weight()), self.slope_bound)
        return torch.as_tensor(metric, dtype=self.lower.dtype, device=self.lower.device)


class LipschitzPart(LipschitzDynamics):
    """A Lipschitz RNN unit (paper 002, eq. 1) as a part of a network of networks::

        h' = alpha A h + tanh(W h + u)

    with A and W by the symmetric-skew decomposition (eq. 6); ``u`` comes from the assembly's
    input layer. Its metric is the identity: the part contracts when
    ``lambda_max(sym(alpha A)) + ||W||_2 < 0`` (tanh has slopes in [0, 1]), which the
    certificate checks on the current matrices; nothing guarantees it for every parameter value.
    """

    condition = "identity metric, checked for every slope (paper 002, eq. 1)"
    slope_bound = 1.0

    def __init__(self, size: int, beta_a: float = 0.75, gamma_a: float = 0.5,
                 beta_w: float = 0.75, gamma_w: float = 0.001, alpha: float = 1.0,
                 init_std: float = 0.1) -> None:
        super().__init__()
        self.size = check_positive_int("size", size)
        self.alpha = check_in_range("alpha", alpha, 0.0, float("inf"))
        self.param_a = SymmetricSkew(size, beta_a, gamma_a, init_std)
        self.param_w = SymmetricSkew(size, beta_w, gamma_w, init_std)

    def metric(self) -> torch.Tensor:
        return self.param_a.identity

    def metric_inverse(self) -> torch.Tensor:
        return self.param_a.identity

    def prepare(self):
        return self.slopes()

    def jacobian_family(self) -> JacobianFamily:
        """``J = alpha A + D W`` (paper 002, eq. 1), tanh slopes in [0, 1]."""
        return lipschitz_family(_numpy(self.A), _numpy(self.W), 1.0, self.alpha)
