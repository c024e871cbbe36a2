"""The training and experiment system: configs, runs, checkpoints."""

from stablernn.experiments.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stablernn.experiments.config import MODEL_DEFAULTS, TrainConfig
from stablernn.experiments.evaluation import evaluate
from stablernn.experiments.modeling import build_model
from stablernn.experiments.training import TrainResult, train

__all__ = ["MODEL_DEFAULTS", "CheckpointError", "TrainConfig", "TrainResult", "build_model",
           "evaluate", "load_checkpoint", "save_checkpoint", "train"]
