"""Evaluating a finished (or interrupted) run: ``stablernn eval``."""

from __future__ import annotations

from pathlib import Path

import torch

from stablernn.experiments import runs
from stablernn.experiments.checkpoint import CheckpointError, load_checkpoint
from stablernn.experiments.config import TrainConfig
from stablernn.experiments.training import TaskSignature, build_model, evaluate, select_device
from stablernn.tasks import load_task, take


def checkpoint_path(path: str | Path, checkpoint: str = "best") -> Path:
    """A checkpoint file itself, or the best/last checkpoint of a run directory."""
    path = Path(path)
    if path.is_dir():
        runs.read_run_config(path)  # refuses a directory that is not a run
        return path / (runs.BEST_CHECKPOINT if checkpoint == "best" else runs.LAST_CHECKPOINT)
    return path


def load_model(path: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """``(config, model)`` from a run directory or a checkpoint file, without loading data.

    The model is rebuilt from the config and task signature stored in the checkpoint, and its
    weights (and buffers, such as fixed sparse subnetworks) loaded from it.
    """
    file = checkpoint_path(path, checkpoint)
    payload = load_checkpoint(file, map_location=device)
    try:
        config = TrainConfig.from_dict(payload["config"], source=str(file))
        signature = TaskSignature(**payload["task"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{file} lacks the config or task of its run ({error})") from None
    torch.manual_seed(config.seed)  # same draws as training (e.g. fixed sparse subnetworks)
    model = build_model(config, signature)
    try:
        model.load_state_dict(payload["model_state"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{file} does not fit the model its config describes: "
            f"{str(error).splitlines()[0]}") from None
    return config, model.to(device)


def load_run(path: str | Path, checkpoint: str = "best", device: str = "cpu") -> torch.nn.Module:
    """The trained model of a run directory (or a checkpoint file), weights loaded, in eval mode.

    ``checkpoint``: ``"best"`` (best validation accuracy) or ``"last"``. The recurrent layer is
    ``model.rnn`` (``model[-1].rnn`` for language models, whose first module is the embedding),
    ready for :func:`stablernn.certify`. Raises
    :class:`~stablernn.experiments.checkpoint.CheckpointError` for a file that is not a
    stablernn checkpoint, ``ValueError`` for a directory that is not a run.
    """
    if checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    _, model = load_model(path, checkpoint, device)
    return model.eval()


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """``(config, task, model)`` of a run, with the weights of its best or last checkpoint."""
    config, model = load_model(run_dir, checkpoint, device)
    task = load_task(config.task, **config.task_options)
    return config, task, model


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test",
                 device: str = "auto") -> dict:
    """Loss (and accuracy) of a run's model on a split of its task."""
    torch_device = select_device(device)
    config, task, model = load_run_model(run_dir, checkpoint, device=str(torch_device))
    dataset = take(getattr(task, split), config.max_eval_samples)
    result = evaluate(model, dataset, task.kind, config.batch_size * 4, torch_device)
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "split": split, **result}
