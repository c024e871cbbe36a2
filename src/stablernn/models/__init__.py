"""Recurrent modules: cells (one step), layers (a sequence), readouts."""

from stablernn.models.assembly import Assembly, HierarchicalConnection
from stablernn.models.baselines import (
    GRU,
    LSTM,
    ODERNN,
    AntisymmetricCell,
    AntisymmetricRNN,
    ODERNNCell,
)
from stablernn.models.counting import count_trained_parameters
from stablernn.models.feedback import NegativeFeedback
from stablernn.models.lipschitz import LipschitzCell, LipschitzRNN
from stablernn.models.network import AssemblyCell, NetworkOfNetworks, SparseComboNet, SVDComboNet
from stablernn.models.part import Part
from stablernn.models.readouts import PerStepReadout, SequenceClassifier
from stablernn.models.recurrent import CellLayer, RecurrentCell, RecurrentLayer
from stablernn.models.registry import MODELS, build_layer
from stablernn.models.subnetworks import RateSubnetwork, SparseSubnetwork, SVDSubnetwork

__all__ = [
    "Assembly", "AssemblyCell", "CellLayer", "HierarchicalConnection", "Part", "NegativeFeedback",
    "NetworkOfNetworks",
    "RateSubnetwork", "SVDComboNet", "SVDSubnetwork", "SparseComboNet", "SparseSubnetwork",
    "GRU", "LSTM", "MODELS", "ODERNN", "AntisymmetricCell", "AntisymmetricRNN", "LipschitzCell",
    "LipschitzRNN", "ODERNNCell", "PerStepReadout", "RecurrentCell", "RecurrentLayer",
    "SequenceClassifier", "build_layer", "count_trained_parameters",
]
