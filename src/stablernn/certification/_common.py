"""What every certificate of a module needs: matrices as float64 arrays, the as-run fields."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from stablernn.contraction import Certificate


def array(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a tensor (what the checks of :mod:`stablernn.contraction` take)."""
    return tensor.detach().to("cpu", torch.float64).numpy()


def non_finite(module: nn.Module) -> list[str]:
    """Names of the module's parameters and buffers holding NaN or Inf."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, tensor in tensors
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def with_as_run(certificate: Certificate, *, step_size: float, method: str,
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
