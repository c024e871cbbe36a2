"""The training loop of ``stablernn train``: one run, one run directory."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from stablernn.experiments.checkpoint import load_checkpoint, save_checkpoint
from stablernn.experiments.config import TrainConfig
from stablernn.models.readouts import SequenceClassifier
from stablernn.models.registry import build_layer
from stablernn.tasks.base import SequenceTask
from stablernn.tasks.registry import load_task

METRIC_FIELDS = ("epoch", "train_loss", "train_accuracy", "validation_loss",
                 "validation_accuracy", "learning_rate", "seconds")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    test_accuracy: float
    test_loss: float
    best_validation_accuracy: float
    best_epoch: int
    seconds: float


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available here")
    return torch.device(name)


def build_model(config: TrainConfig, task: SequenceTask) -> nn.Module:
    """The classifier a config describes: its recurrent layer and a linear readout."""
    layer = build_layer(config.model, task.input_size, config.hidden_size, batch_first=True,
                        **config.model_options)
    return SequenceClassifier(layer, task.output_size)


def _limit(dataset: TensorDataset, count: int | None) -> TensorDataset:
    if count is None or count >= len(dataset):
        return dataset
    return TensorDataset(*(tensor[:count] for tensor in dataset.tensors))


def evaluate(model: nn.Module, dataset: TensorDataset, batch_size: int,
             device: torch.device) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``dataset``, without building a graph."""
    was_training = model.training
    model.eval()
    inputs, targets = dataset.tensors
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start:start + batch_size].to(device)
            labels = targets[start:start + batch_size].to(device)
            logits = model(batch)
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(dim=1) == labels).sum().item()
    model.train(was_training)
    return total_loss / len(inputs), correct / len(inputs)


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.model}-{config.task}-seed{config.seed}"


def train(config: TrainConfig, run_dir: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train the model a config describes; write the run directory; return test figures.

    The run directory holds ``config.json`` (resolved), ``metrics.csv`` (one row per epoch),
    ``checkpoint.pt`` (the last epoch), ``best.pt`` (best validation accuracy) and
    ``results.json``. Test figures are those of the best-validation model.
    """
    config = config.resolved()
    device = select_device(config.device)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    task = load_task(config.task, **config.task_options)
    train_set = _limit(task.train, config.max_train_samples)
    validation_set = _limit(task.validation, config.max_eval_samples)
    test_set = _limit(task.test, config.max_eval_samples)
    log(task.summary())

    torch.manual_seed(config.seed)  # after task loading, so the seed fixes the initialization
    model = build_model(config, task).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                                 weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=config.lr_decay_epochs, gamma=config.lr_decay_factor)
    shuffle = torch.Generator().manual_seed(config.seed)
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"model {config.model} (hidden {config.hidden_size}, {parameters:,} trained parameters) "
        f"on {device}; run directory {run_dir}")

    inputs, targets = train_set.tensors
    best_accuracy, best_epoch = -1.0, 0
    started = time.perf_counter()
    with open(run_dir / "metrics.csv", "w", newline="") as metrics_file:
        writer = csv.DictWriter(metrics_file, fieldnames=METRIC_FIELDS)
        writer.writeheader()
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            order = torch.randperm(len(inputs), generator=shuffle)
            batches = range(0, len(inputs), config.batch_size)
            bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress,
                       leave=False, unit="batch")
            loss_sum, correct, seen = 0.0, 0, 0
            model.train()
            for start in bar:
                index = order[start:start + config.batch_size]
                batch, labels = inputs[index].to(device), targets[index].to(device)
                logits = model(batch)
                loss = nn.functional.cross_entropy(logits, labels)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(
                        f"training loss became {loss.item()} at epoch {epoch}; lower "
                        "learning_rate or step_size, or set grad_clip")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                loss_sum += loss.item() * len(index)
                correct += (logits.argmax(dim=1) == labels).sum().item()
                seen += len(index)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            bar.close()
            learning_rate = optimizer.param_groups[0]["lr"]
            scheduler.step()
            validation_loss, validation_accuracy = evaluate(
                model, validation_set, config.batch_size * 4, device)
            row = {
                "epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                "validation_loss": validation_loss, "validation_accuracy": validation_accuracy,
                "learning_rate": learning_rate, "seconds": time.perf_counter() - epoch_started,
            }
            writer.writerow(row)
            metrics_file.flush()
            state = {"config": config.to_dict(), "epoch": epoch,
                     "model_state": model.state_dict(),
                     "optimizer_state": optimizer.state_dict(),
                     "scheduler_state": scheduler.state_dict(),
                     "validation_accuracy": validation_accuracy}
            save_checkpoint(run_dir / "checkpoint.pt", state)
            if validation_accuracy > best_accuracy:
                best_accuracy, best_epoch = validation_accuracy, epoch
                save_checkpoint(run_dir / "best.pt", state)
            if progress:
                log(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  "
                    f"train acc {row['train_accuracy']:.4f}  val acc {validation_accuracy:.4f}  "
                    f"({row['seconds']:.1f} s)")

    seconds = time.perf_counter() - started

    model.load_state_dict(load_checkpoint(run_dir / "best.pt", map_location=device)["model_state"])
    test_loss, test_accuracy = evaluate(model, test_set, config.batch_size * 4, device)
    result = TrainResult(run_dir, test_accuracy, test_loss, best_accuracy, best_epoch, seconds)
    (run_dir / "results.json").write_text(json.dumps({
        "test_accuracy": test_accuracy, "test_loss": test_loss,
        "best_validation_accuracy": best_accuracy, "best_epoch": best_epoch,
        "train_seconds": seconds, "test_samples": len(test_set),
    }, indent=2) + "\n")
    log(f"test accuracy {test_accuracy:.4f} (model of epoch {best_epoch}, best validation "
        f"accuracy {best_accuracy:.4f}); trained in {seconds:.0f} s")
    return result
