"""stablernn: recurrent neural networks with checkable stability certificates."""

from stablernn.models import (
    GRU,
    LSTM,
    ODERNN,
    AntisymmetricRNN,
    LipschitzCell,
    LipschitzRNN,
    PerStepReadout,
    SequenceClassifier,
)

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "ODERNN", "AntisymmetricRNN", "LipschitzCell", "LipschitzRNN",
    "PerStepReadout", "SequenceClassifier", "__version__",
]
