"""Evaluating a finished (or interrupted) run: ``stablernn eval``."""

from __future__ import annotations

from pathlib import Path

import torch

from stablernn.experiments import runs
from stablernn.experiments.checkpoint import CheckpointError, load_checkpoint
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
    weights (and buffers, such as fixed sparse subnetworks) loaded from it. A checkpoint that
    sits in a run directory must belong to that run (same config), else
    :class:`~stablernn.experiments.checkpoint.CheckpointError`.
    """
    file = checkpoint_path(path, checkpoint)
    payload = load_checkpoint(file, map_location=device)
    # a checkpoint inside a run directory must be that run's (never certify a stranger's model)
    run_config = runs.read_run_config(file.parent) if (
        file.parent / runs.CONFIG_FILE).is_file() else None
    config = runs.check_checkpoint(payload, file, run_config)
    try:
        signature = TaskSignature(**payload["task"])
    except TypeError as error:
        raise CheckpointError(f"checkpoint {file}: its task record is damaged ({error})") from None
    torch.manual_seed(config.seed)  # same draws as training (e.g. fixed sparse subnetworks)
    model = build_model(config, signature)
    runs.check_parameter_shapes(payload, model.state_dict(), file)
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


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu",
                   data_dir: str | None = None):
    """``(config, task, model)`` of a run, with the weights of its best or last checkpoint.

    The task's files are read from ``data_dir``, else ``STABLERNN_DATA_DIR``, else where the
    run found them.
    """
    config, model = load_model(run_dir, checkpoint, device)
    task = load_task(config.task, **runs.task_options(config, data_dir))
    return config, task, model


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test",
                 device: str = "auto", data_dir: str | None = None) -> dict:
    """Loss (and accuracy) of a run's model on a split of its task, named as ``results.json``
    names them (``test_loss``, ``validation_accuracy``)."""
    torch_device = select_device(device)
    config, task, model = load_run_model(run_dir, checkpoint, str(torch_device), data_dir)
    dataset = take(getattr(task, split), config.max_eval_samples)
    result = evaluate(model, dataset, task.kind, config.batch_size * 4, torch_device)
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "split": split,
            "samples": len(dataset), **{f"{split}_{key}": value for key, value in result.items()}}
