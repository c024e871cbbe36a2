"""Recurrent modules: cells (one step), layers (a sequence), readouts."""

from stablernn.models.baselines import GRU, LSTM, ODERNN, AntisymmetricCell, AntisymmetricRNN, ODERNNCell
from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN
from stablernn.models.readouts import PerStepReadout, SequenceClassifier
from stablernn.models.recurrent import RecurrentCell, RecurrentLayer
from stablernn.models.registry import MODELS, build_layer

__all__ = [
    "GRU", "LSTM", "MODELS", "ODERNN", "AntisymmetricCell", "AntisymmetricRNN", "LipschitzCell",
    "LipschitzRNN", "ODERNNCell", "PerStepReadout", "RecurrentCell", "RecurrentLayer",
    "SequenceClassifier", "build_layer",
]
