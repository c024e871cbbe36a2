"""Evaluating a finished (or interrupted) run: ``stablernn eval``."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stablernn.experiments import runs
from stablernn.experiments.checkpoint import CheckpointError, load_checkpoint
from stablernn.experiments.modeling import TaskSignature, build_model, select_device
from stablernn.models.readouts import PerStepReadout
from stablernn.tasks import correct, iterate_batches, load_task, loss_sum, take
from stablernn.tasks.base import CLASSIFICATION_KINDS


def evaluate(model: nn.Module, dataset, kind: str, batch_size: int, device: torch.device,
             generator: torch.Generator | None = None) -> dict[str, float]:
    """Mean loss (and accuracy for classification kinds) on a split, without a graph.

    A split that carries the state (``carry_state``) is read as ``dataset.streams`` parallel
    streams (``batch_size`` when None) with the state carried across windows."""
    was_training = model.training
    model.eval()
    total, units, hits, predictions = 0.0, 0, 0, 0
    if getattr(dataset, "carries_state", False):
        forwards = ((output, targets, None) for output, targets in carried_state_outputs(
            model, dataset, dataset.streams or batch_size, device))
    else:
        forwards = ((model(batch.inputs.to(device)), batch.targets.to(device),
                     None if batch.mask is None else batch.mask.to(device))
                    for batch in iterate_batches(dataset, batch_size, generator))
    with torch.no_grad():  # the generators above run their forward passes inside
        for outputs, targets, mask in forwards:
            batch_total, batch_units = loss_sum(kind, outputs, targets, mask)
            total, units = total + batch_total.item(), units + batch_units
            if kind in CLASSIFICATION_KINDS:
                batch_hits, batch_predictions = correct(kind, outputs, targets, mask)
                hits, predictions = hits + batch_hits, predictions + batch_predictions
    model.train(was_training)
    result = {"loss": total / max(units, 1)}
    if kind in CLASSIFICATION_KINDS:
        result["accuracy"] = hits / max(predictions, 1)
    return result




def carried_state_outputs(model: nn.Module, dataset, streams: int, device: torch.device):
    """Truncated backpropagation through time over a split that carries the state (a
    :class:`stablernn.tasks.text.TokenStream`, task option ``carry_state``): yields
    ``(outputs, targets)`` for each window of ``dataset.windows(streams)`` in order, the
    recurrent layer started from the previous window's last state, detached (zeros for the
    first window). ``model`` is a language model of :func:`build_model` (embedding, then
    :class:`PerStepReadout`); the caller may backpropagate and step between windows."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise ValueError(  # noqa: TRY004 - a bad setting, reported as ValueError like the rest
            "task option carry_state runs in one process: its streams are not sharded under "
            "DistributedDataParallel")
    if not (isinstance(model, nn.Sequential) and isinstance(model[-1], PerStepReadout)):
        raise ValueError(  # noqa: TRY004 - a bad setting, reported as ValueError like the rest
            "carrying the state needs a language model of build_model "
            "(nn.Sequential(embedding, PerStepReadout))")
    head, state = model[-1], None
    for batch in dataset.windows(streams):
        inputs, targets = batch.inputs.to(device), batch.targets.to(device)
        features = model[:-1](inputs)
        states, last = head.rnn(features) if state is None else head.rnn(features, state)
        state = (tuple(part.detach() for part in last) if isinstance(last, tuple)
                 else last.detach())
        yield head.readout(states), targets


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
