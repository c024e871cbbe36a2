"""Free parameters -> structured matrices (and, where known, their metric)."""

from stablernn.parametrizations.matrix_exp import matrix_exp
from stablernn.parametrizations.norm_bounded import NormBounded
from stablernn.parametrizations.symmetric_skew import SymmetricSkew

__all__ = ["NormBounded", "SymmetricSkew", "matrix_exp"]
