"""The :class:`Certificate`: what was proven about a model, in one object.

Convention used everywhere (docs/design.md, "Certificates"): ``rate`` is a lower bound on lambda with

    M J + J^T M <= -2 lambda M          for every Jacobian J the activation allows,

in the continuous time of the model's equation (tau = 1), so that distances measured in the
metric, ``|dx|_M = sqrt(dx^T M dx)``, shrink at least like ``exp(-rate t)``.
``max_euler_step`` is a step h such that every Euler step of size in ``(0, h)`` is a
contraction of the discrete map in the same metric (see :mod:`stablernn.contraction.discrete`).

The map a model actually runs is certified separately (:mod:`stablernn.contraction.as_run`):
``step_factor`` bounds ``||J_step||_M`` over every Jacobian of one step of that map, at the
model's own ``step_size`` and ``method``, and ``contracting_as_run`` is True only when
``step_factor < 1`` was verified. Distances then shrink at least like ``step_factor^k`` after k
steps, whatever the states and inputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Certificate:
    """A contraction certificate.

    ``contracting`` is True only when an inequality was checked numerically on the actual
    matrices (the metric, the weights and the slope range); otherwise it is False and
    ``reason`` says why. It is never "maybe".

    Attributes:
        contracting: whether contraction was proven.
        condition: which condition proved it (e.g. ``"paper 000, Theorem 1"``), or the best one
            tried when none did.
        metric: the N x N metric M (numpy array), or None.
        rate: lower bound on the contraction rate (continuous time, tau = 1), or None.
        max_euler_step: Euler steps h in ``(0, max_euler_step)`` keep the discrete map
            contracting in the same metric; None when unknown.
        reason: one line in plain words.
        details: extra numbers (JSON-serialisable), e.g. which bound gave the step factor
            or whether the rate is exact.
        step_size: the model's own step (None for a bare matrix or a continuous-time system).
        method: the model's discretization (``"euler"``, ``"rk2"``, ``"exponential"``,
            ``"splitting"``), or None.
        step_factor: a sound upper bound rho on ``||J_step||_M`` for every Jacobian of one step
            of the map as it runs (``J_step^T M J_step <= rho^2 M``), float32 rounding paid
            for; None when not computed.
        contracting_as_run: True only when ``step_factor < 1`` was verified.
    """

    contracting: bool
    condition: str
    metric: np.ndarray | None
    rate: float | None
    max_euler_step: float | None
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)
    step_size: float | None = None
    method: str | None = None
    step_factor: float | None = None
    contracting_as_run: bool = False

    @classmethod
    def refuse(cls, condition: str, reason: str, details: Mapping[str, Any] | None = None,
               **as_run: Any) -> Certificate:
        """A certificate that proves nothing, with the reason."""
        return cls(False, condition, None, None, None, reason, dict(details or {}), **as_run)

    @property
    def rate_per_step(self) -> float | None:
        """``-log(step_factor)`` when the map as it runs contracts, else None."""
        if not self.contracting_as_run or self.step_factor is None:
            return None
        return math.inf if self.step_factor <= 0 else -math.log(self.step_factor)

    def to_dict(self, metric: str = "full") -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite numbers as None).

        ``metric="full"`` (the default) gives the metric as nested lists; ``metric="compact"``
        gives :func:`metric_summary` instead: the kind, size, extreme eigenvalues and condition
        number, with the diagonal itself when the metric is diagonal (a full matrix is left to
        the caller, e.g. ``certificate_metric.npy`` beside ``certificate.json``)."""
        if metric not in ("full", "compact"):
            raise ValueError(f"metric must be 'full' or 'compact', got {metric!r}")
        if self.metric is None:
            stored = None
        elif metric == "full":
            stored = np.asarray(self.metric, float).tolist()
        else:
            stored = metric_summary(self.metric)
        return {
            "contracting": bool(self.contracting),
            "condition": self.condition,
            "metric": stored,
            "rate": _json_number(self.rate),
            "max_euler_step": _json_number(self.max_euler_step),
            "reason": self.reason,
            "details": _jsonable(dict(self.details)),
            "step_size": _json_number(self.step_size),
            "method": self.method,
            "step_factor": _json_number(self.step_factor),
            "contracting_as_run": bool(self.contracting_as_run),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def describe(self) -> str:
        """The certificate in plain words (a few lines)."""
        lines = [] if self.step_size is None else [self.as_run_verdict()]
        prefix = "" if self.step_size is None else "Continuous time: "
        if self.contracting:
            lines.append(f"{prefix}Contracting, by {self.condition}.")
            lines.append(
                f"Distances between any two trajectories, measured in the metric, shrink at "
                f"least like exp(-{self.rate:.4g} t) (continuous time, tau = 1)."
            )
            if self.max_euler_step is not None:
                lines.append(
                    f"Euler steps smaller than {self.max_euler_step:.4g} keep the discrete map "
                    "contracting in the same metric."
                )
        else:
            lines.append(f"{prefix}Not certified as contracting (best condition tried: "
                         f"{self.condition}).")
        if self.metric is not None:
            metric = np.asarray(self.metric)
            kind = metric_kind(metric)
            if kind == "diagonal" and np.allclose(metric, metric[0, 0] * np.eye(len(metric))):
                kind = "identity (up to scale)"
            lines.append(f"Metric: {kind}, {metric.shape[0]} x {metric.shape[1]}.")
        lines.append(f"Reason: {self.reason}")
        return "\n".join(lines)

    def as_run_verdict(self) -> str:
        """One line: is the map the model runs certified, and why not."""
        if self.step_size is None:
            return "No step: only the continuous-time system is certified (no map as it runs)."
        where = f"step {self.step_size:g}, {self.method}"
        if self.contracting_as_run:
            return (f"Certified as it runs ({where}): every step contracts distances in the metric "
                    f"by at least the factor {self.step_factor:.6g}.")
        why = self.details.get("as_run_reason") or "no step factor below 1 was verified"
        return f"Not certified as it runs ({where}): {why}."

    def __str__(self) -> str:
        return self.describe()


def metric_kind(metric: np.ndarray) -> str:
    """``"diagonal"`` when every off-diagonal entry is exactly zero, else ``"full"``."""
    metric = np.asarray(metric)
    return "diagonal" if np.count_nonzero(metric - np.diag(np.diag(metric))) == 0 else "full"


def metric_summary(metric: np.ndarray) -> dict[str, Any]:
    """A compact, JSON-serialisable description of a metric: ``kind`` (``"diagonal"`` or
    ``"full"``), ``size``, ``min_eigenvalue``, ``max_eigenvalue``, ``condition_number``, and
    ``diagonal`` (its entries, exactly) when the metric is diagonal. :func:`metric_from_summary`
    rebuilds a diagonal metric from it."""
    metric = np.asarray(metric, dtype=float)
    kind = metric_kind(metric)
    if kind == "diagonal":
        eigenvalues = np.diag(metric)
    else:
        eigenvalues = np.linalg.eigvalsh((metric + metric.T) / 2)
    low, high = float(np.min(eigenvalues)), float(np.max(eigenvalues))
    summary = {"kind": kind, "size": int(metric.shape[0]), "min_eigenvalue": _json_number(low),
               "max_eigenvalue": _json_number(high),
               "condition_number": _json_number(high / low) if low > 0 else None}
    if kind == "diagonal":
        summary["diagonal"] = np.diag(metric).tolist()
    return summary


def metric_from_summary(summary: Mapping[str, Any] | list | None) -> np.ndarray | None:
    """The metric of a ``to_dict()`` entry: nested lists (``metric="full"``) or a diagonal
    summary (``metric="compact"``); None for None. A compact full metric is not in the summary
    (read it from where it was stored): that raises ValueError."""
    if summary is None:
        return None
    if isinstance(summary, list):
        return np.asarray(summary, dtype=float)
    if summary.get("kind") == "diagonal":
        return np.diag(np.asarray(summary["diagonal"], dtype=float))
    raise ValueError(f"this metric summary holds no matrix (kind {summary.get('kind')!r}); "
                     "the full matrix is stored beside it")


def _json_number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_number(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)
