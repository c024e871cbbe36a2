"""stablernn: recurrent neural networks with checkable stability certificates."""

from stablernn.certification import certify
from stablernn.contraction import Certificate
from stablernn.experiments.evaluation import load_run
from stablernn.models import (
    GRU,
    LSTM,
    ODERNN,
    AntisymmetricRNN,
    Assembly,
    HierarchicalConnection,
    LipschitzCell,
    LipschitzRNN,
    NetworkOfNetworks,
    PerStepReadout,
    SequenceClassifier,
    SparseComboNet,
    SparseSubnetwork,
    SVDComboNet,
    SVDSubnetwork,
)

__version__ = "0.1.0"

__all__ = [
    "Certificate", "certify", "GRU", "LSTM", "ODERNN", "AntisymmetricRNN", "Assembly", "HierarchicalConnection",
    "LipschitzCell", "LipschitzRNN", "NetworkOfNetworks", "PerStepReadout", "SVDComboNet",
    "SVDSubnetwork", "SequenceClassifier", "SparseComboNet", "SparseSubnetwork", "__version__",
    "load_run",
]
