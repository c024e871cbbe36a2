"""Robustness analysis of trained models (paper 002, section 7): the Hessian of the loss over the
recurrent unit's parameters (table 3) and accuracy under input noise and adversarial attacks
(figure 2, table 3). See ``docs/analysis.md``."""

from stablernn.analysis.hessian import (
    HessianSpectrum,
    hessian_spectrum,
    hessian_vector_product,
    loss_closure,
    recurrent_parameters,
)
from stablernn.analysis.robustness import (
    accuracy,
    deepfool,
    noise_curve,
    pgd_linf,
    robust_accuracy,
    salt_and_pepper,
    white_noise,
)

__all__ = [
    "HessianSpectrum", "accuracy", "deepfool", "hessian_spectrum", "hessian_vector_product",
    "loss_closure", "noise_curve", "pgd_linf", "recurrent_parameters", "robust_accuracy",
    "salt_and_pepper", "white_noise",
]
