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

from stablernn.certification._common import array, non_finite
from stablernn.certification.lipschitz import certify_lipschitz_model
from stablernn.certification.networks import (
    FEEDBACK_TOLERANCE,
    assembly_family,
    certify_assembly,
    certify_network,
    splitting_factor,
)
from stablernn.certification.parts import certify_part, part_family
from stablernn.contraction import Certificate, certify_lipschitz, certify_matrix
from stablernn.models.assembly import Assembly
from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN
from stablernn.models.network import NetworkOfNetworks
from stablernn.models.part import Part
from stablernn.models.readouts import PerStepReadout, SequenceClassifier

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
            matrix = array(obj) if isinstance(obj, torch.Tensor) else obj
            return certify_matrix(matrix, slope_bound)
        if isinstance(obj, (SequenceClassifier, PerStepReadout)):
            return certify(obj.rnn)
        if isinstance(obj, nn.Sequential) and len(obj):
            return certify(obj[-1])
        bad = non_finite(obj)
        if bad:
            return Certificate.refuse(
                "none", f"the model has NaN or infinite values in {', '.join(bad[:5])}"
                + (" ..." if len(bad) > 5 else "") + ": no contraction can be certified",
                step_size=getattr(obj, "step_size", None), method=getattr(obj, "method", None))
        if isinstance(obj, (LipschitzCell, LipschitzRNN)):
            return certify_lipschitz_model(obj)
        if isinstance(obj, NetworkOfNetworks):
            return certify_network(obj)
        if isinstance(obj, Assembly):
            return certify_assembly(obj)
        if isinstance(obj, Part):
            return certify_part(obj)
        cell = getattr(obj, "cell", obj)
        if hasattr(cell, "W") and not hasattr(cell, "A") and isinstance(cell.W, torch.Tensor):
            # neural-ODE / antisymmetric RNN: h' = tanh(W h + u), paper 002 eq. 1 with A = 0
            weight = array(cell.W)
            return certify_lipschitz(np.zeros_like(weight), weight)
    return Certificate.refuse("none", f"stablernn has no contraction analysis for "
                                      f"{type(obj).__name__}")


__all__ = ["ACCEPTS", "FEEDBACK_TOLERANCE", "assembly_family", "certify", "certify_assembly",
           "certify_lipschitz_model", "certify_network", "certify_part", "part_family",
           "splitting_factor"]
