"""Evaluating a finished (or interrupted) run: ``stablernn eval``."""

from __future__ import annotations

from pathlib import Path

import torch

from stablernn.experiments import runs
from stablernn.experiments.checkpoint import load_checkpoint
from stablernn.experiments.training import build_model, evaluate, select_device
from stablernn.tasks import load_task, take


def load_run_model(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu"):
    """``(config, task, model)`` of a run, with the weights of its best or last checkpoint."""
    run_dir = Path(run_dir)
    config = runs.read_run_config(run_dir)
    name = runs.BEST_CHECKPOINT if checkpoint == "best" else runs.LAST_CHECKPOINT
    payload = load_checkpoint(run_dir / name, map_location=device)
    task = load_task(config.task, **config.task_options)
    torch.manual_seed(config.seed)  # same draws as training (e.g. fixed sparse subnetworks)
    model = build_model(config, task)
    try:
        model.load_state_dict(payload["model_state"])
    except (KeyError, RuntimeError) as error:
        raise runs.RunDirectoryError(
            f"{run_dir / name} does not fit the model of {run_dir / runs.CONFIG_FILE}: "
            f"{str(error).splitlines()[0]}") from None
    return config, task, model.to(device)


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test",
                 device: str = "auto") -> dict:
    """Loss (and accuracy) of a run's model on a split of its task."""
    torch_device = select_device(device)
    config, task, model = load_run_model(run_dir, checkpoint, device=str(torch_device))
    dataset = take(getattr(task, split), config.max_eval_samples)
    result = evaluate(model, dataset, task.kind, config.batch_size * 4, torch_device)
    return {"run_dir": str(run_dir), "checkpoint": checkpoint, "split": split, **result}
