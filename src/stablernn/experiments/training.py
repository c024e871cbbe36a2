"""The training loop of ``stablernn train``: one run, one run directory, resumable."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from stablernn.experiments import distributed, runs
from stablernn.experiments.checkpoint import load_checkpoint, save_checkpoint
from stablernn.experiments.config import TrainConfig
from stablernn.experiments.evaluation import carried_state_outputs, evaluate
from stablernn.experiments.modeling import (
    TaskSignature,
    build_model,
    recurrent_layer,
    select_device,
)
from stablernn.experiments.output import (
    check_writable_directory,
    interrupts_deferred,
    write_text_atomic,
)
from stablernn.experiments.provenance import provenance
from stablernn.models.counting import count_trained_parameters
from stablernn.tasks import (
    correct,
    get_batch,
    load_task,
    loss_sum,
    take,
)
from stablernn.tasks.base import CLASSIFICATION_KINDS
from stablernn.tasks.text import bits_per_character, perplexity

METRIC_FIELDS = ["epoch", "train_loss", "train_accuracy", "validation_loss",
                 "validation_accuracy", "learning_rate", "seconds", "max_eig_sym_A",
                 "max_eig_sym_W"]


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    test: dict[str, float]
    best_epoch: int
    seconds: float

    @property
    def test_accuracy(self) -> float | None:
        return self.test.get("accuracy")


def stability_diagnostics(layer: nn.Module) -> dict[str, float]:
    """Largest eigenvalue of the symmetric parts of A and W (paper 002, figure 5)."""
    values = {}
    with torch.no_grad():
        for name in ("A", "W"):
            matrix = getattr(layer, name, None)
            if isinstance(matrix, torch.Tensor):
                symmetric = 0.5 * (matrix + matrix.T)
                values[f"max_eig_sym_{name}"] = torch.linalg.eigvalsh(symmetric.double()).max().item()
    return values


def build_optimizer(config: TrainConfig, parameters) -> torch.optim.Optimizer:
    options = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, alpha=0.9, **options)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, momentum=0.9, **options)
    return torch.optim.Adam(parameters, **options)


def _score(kind: str, validation: dict[str, float]) -> float:
    """Model selection: validation accuracy for classification kinds, else -loss."""
    return validation["accuracy"] if kind in CLASSIFICATION_KINDS else -validation["loss"]


class _Run:
    """Everything a run holds in memory; checkpointed at the end of every epoch."""

    def __init__(self, config: TrainConfig, run_dir: Path, log: Callable[[str], None],
                 data_dir: str | None = None):
        self.config, self.run_dir = config, run_dir
        self.device = select_device(config.device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.context = distributed.setup(self.device)
        self.log = log if self.context.main else (lambda message: None)
        task = load_task(config.task, **runs.task_options(config, data_dir))
        self.task = task
        self.train_set = take(task.train, config.max_train_samples)
        self.validation_set = take(task.validation, config.max_eval_samples)
        self.test_set = take(task.test, config.max_eval_samples)
        torch.manual_seed(config.seed)  # after task loading, so the seed fixes the initialization
        self.module = build_model(config, task).to(self.device)
        self.model = self.module
        if self.context.distributed:
            if config.batch_size < self.context.world_size:
                raise ValueError(f"batch_size ({config.batch_size}) must be at least the number "
                                 f"of processes ({self.context.world_size})")
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.module, device_ids=device_ids)
        self.optimizer = build_optimizer(config, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=config.lr_decay_epochs, gamma=config.lr_decay_factor)
        self.shuffle = torch.Generator().manual_seed(config.seed)
        self.noise = torch.Generator().manual_seed(config.seed + 1)
        self.epoch, self.best_score, self.best_epoch = 0, -math.inf, 0
        self.saved_epoch = 0  # the last epoch in checkpoint.pt (what an interruption keeps)
        self.history: list[dict[str, Any]] = []

    def state(self) -> dict[str, Any]:
        model_state = self.module.state_dict()
        return {"config": self.config.to_dict(), "epoch": self.epoch,
                "identity": runs.checkpoint_identity(self.config, model_state),
                "provenance": provenance(),
                "task": dataclasses.asdict(TaskSignature.of(self.task)),
                "model_state": model_state,
                "optimizer_state": self.optimizer.state_dict(),
                "scheduler_state": self.scheduler.state_dict(),
                "shuffle_state": self.shuffle.get_state(), "noise_state": self.noise.get_state(),
                "torch_rng_state": torch.get_rng_state(),
                "best_score": self.best_score, "best_epoch": self.best_epoch,
                "history": self.history}

    def restore(self, payload: dict[str, Any]) -> None:
        self.module.load_state_dict(payload["model_state"])
        self.optimizer.load_state_dict(payload["optimizer_state"])
        self.scheduler.load_state_dict(payload["scheduler_state"])
        self.shuffle.set_state(payload["shuffle_state"])
        self.noise.set_state(payload["noise_state"])
        torch.set_rng_state(payload["torch_rng_state"])
        self.epoch, self.best_epoch = payload["epoch"], payload["best_epoch"]
        self.saved_epoch = self.epoch
        self.best_score, self.history = payload["best_score"], payload["history"]

    def train_epoch(self, progress: bool) -> dict[str, float]:
        """One pass over the training set. Under DDP each rank runs its share of every global
        batch and the loss is scaled so that the averaged gradient is the global batch's."""
        config, kind, model, context = self.config, self.task.kind, self.model, self.context
        carried = getattr(self.train_set, "carries_state", False)
        if carried:  # task option carry_state: windows in order, the state carried (no shuffle)
            windows = carried_state_outputs(model, self.train_set, config.batch_size, self.device)
            starts = range(self.train_set.window_count(config.batch_size))
        else:
            order = torch.randperm(len(self.train_set), generator=self.shuffle)
            starts = range(0, len(order), config.batch_size)
        bar = tqdm(starts, disable=not (progress and context.main and _is_terminal(sys.stderr)),
                   leave=False,
                   desc=f"epoch {self.epoch + 1}/{config.epochs}", unit="batch")
        total, units, hits, predictions = 0.0, 0, 0, 0
        model.train()
        for start in bar:
            if carried:
                (outputs, targets), mask = next(windows), None
            else:
                indices = order[start:start + config.batch_size]
                if len(indices) < context.world_size:
                    continue  # too small to give every process a sample (distributed only)
                batch = get_batch(self.train_set, context.shard(indices), self.noise)
                inputs, targets = batch.inputs.to(self.device), batch.targets.to(self.device)
                mask = None if batch.mask is None else batch.mask.to(self.device)
                outputs = model(inputs)
            batch_total, batch_units = loss_sum(kind, outputs, targets, mask)
            global_units = context.sum(batch_units)
            loss = batch_total * (context.world_size / max(global_units, 1))
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"training loss became {loss.item()} in epoch {self.epoch + 1}; lower "
                    "learning_rate or step_size, or set grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            self.optimizer.step()
            total, units = total + batch_total.item(), units + batch_units
            postfix = {"loss": f"{total / units:.3f}"}
            if kind in CLASSIFICATION_KINDS:
                batch_hits, batch_predictions = correct(kind, outputs.detach(), targets, mask)
                hits, predictions = hits + batch_hits, predictions + batch_predictions
                postfix["acc"] = f"{hits / predictions:.3f}"
            bar.set_postfix(postfix)
        bar.close()
        total, units = context.sum(total), context.sum(units)
        row = {"train_loss": total / max(units, 1)}
        if kind in CLASSIFICATION_KINDS:
            row["train_accuracy"] = context.sum(hits) / max(context.sum(predictions), 1)
        return row

    def fit(self, progress: bool, writer=None) -> None:
        config = self.config
        if self.context.main:
            self.metrics = runs.MetricsLog(self.run_dir / runs.METRICS_FILE, METRIC_FIELDS,
                                           self.history)
        while self.epoch < config.epochs:
            started = time.perf_counter()
            row = self.train_epoch(progress)
            self.epoch += 1
            row["learning_rate"] = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            if self.context.main:
                self._end_epoch(row, started, progress, writer)
            self.context.barrier()

    def _end_epoch(self, row: dict[str, Any], started: float, progress: bool, writer) -> None:
        """Validation, metrics and checkpoints (the main process only)."""
        kind = self.task.kind
        validation = evaluate(self.module, self.validation_set, kind, self.config.batch_size * 4,
                              self.device)
        row.update({f"validation_{key}": value for key, value in validation.items()})
        row.update(stability_diagnostics(recurrent_layer(self.module)))
        row.update(epoch=self.epoch, seconds=time.perf_counter() - started)
        self.history.append(row)
        self.metrics.append(row)
        if writer is not None:
            for key, value in row.items():
                if key != "epoch":
                    writer.add_scalar(key, value, self.epoch)
            writer.flush()
        score = _score(kind, validation)
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_epoch = score, self.epoch
        state = self.state()
        with interrupts_deferred():  # both checkpoints, and the epoch the message reports
            if improved:
                save_checkpoint(self.run_dir / runs.BEST_CHECKPOINT, state)
            save_checkpoint(self.run_dir / runs.LAST_CHECKPOINT, state)
            self.saved_epoch = self.epoch
        if progress:
            shown = " ".join(f"{key} {row[key]:.4f}" for key in (
                "train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
                if key in row)
            self.log(f"epoch {self.epoch:3d}  {shown}  ({row['seconds']:.1f} s)")

    def finish(self) -> TrainResult:
        best = load_checkpoint(self.run_dir / runs.BEST_CHECKPOINT, map_location=self.device)
        self.module.load_state_dict(best["model_state"])
        test = evaluate(self.module, self.test_set, self.task.kind, self.config.batch_size * 4,
                        self.device)
        if self.task.kind == "language-model":
            level = self.task.info.get("level", "char")
            test["bits_per_character" if level == "char" else "perplexity"] = (
                bits_per_character(test["loss"]) if level == "char" else perplexity(test["loss"]))
        seconds = sum(row["seconds"] for row in self.history)
        results = {f"test_{key}": value for key, value in test.items()}
        results.update(best_epoch=self.best_epoch, train_seconds=seconds,
                       test_samples=len(self.test_set), epochs=self.epoch,
                       validation_score=self.best_score, provenance=provenance())
        write_text_atomic(self.run_dir / runs.RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        from stablernn.certification import certify
        from stablernn.experiments.certificates import write_certificate, write_certificate_plots
        from stablernn.experiments.plots import plot_training

        layer = recurrent_layer(self.module)
        certificate = certify(layer)
        write_certificate(certificate, self.run_dir)
        try:  # the figures above are written; plots are extras
            plot_training(self.history, self.run_dir / "training.png")
            write_certificate_plots(layer, certificate, self.run_dir)
        except ImportError:
            self.log("(matplotlib not installed: no training.png; pip install 'stablernn[plot]')")
        self.log(f"certificate of the trained model (certificate.json):\n{certificate}")
        shown = ", ".join(f"test {key} {value:.4f}" for key, value in sorted(test.items()))
        self.log(f"{shown} (model of epoch {self.best_epoch}); trained in {seconds:.0f} s")
        return TrainResult(self.run_dir, test, self.best_epoch, seconds)


def _is_terminal(stream) -> bool:
    """Progress bars redraw a line: only on a terminal (a log file gets one line per epoch)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tensorboard(config: TrainConfig, run_dir: Path):
    if not config.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError("tensorboard = true needs: pip install 'stablernn[tensorboard]'") from None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says what was saved and how to continue."""


def _run(run: _Run, progress: bool, fresh: bool = False) -> TrainResult | None:
    """Fit and finish; under DDP only the main process returns a result.

    Nothing finished is lost: every finished epoch is in ``checkpoint.pt``. A fresh run that
    stops before its first epoch ends (an error or Ctrl-C) removes the files it wrote, so the
    same command can simply be run again.
    """
    writer = _tensorboard(run.config, run.run_dir) if run.context.main else None
    try:
        run.fit(progress, writer)
        return run.finish() if run.context.main else None
    except KeyboardInterrupt:
        if run.saved_epoch == 0:
            if fresh and run.context.main:
                runs.remove_unstarted_run(run.run_dir)
            raise TrainingInterrupted(
                f"interrupted in epoch 1, before any epoch was saved: nothing to resume "
                f"(run directory {run.run_dir} {'removed' if fresh else 'left as it was'})"
            ) from None
        raise TrainingInterrupted(
            f"interrupted after epoch {run.saved_epoch} (saved in "
            f"{run.run_dir / runs.LAST_CHECKPOINT}); continue with: stablernn train --resume "
            f"{run.run_dir}") from None
    except (ValueError, FloatingPointError, OSError) as error:
        if run.saved_epoch == 0 and fresh and run.context.main:
            runs.remove_unstarted_run(run.run_dir)
        elif run.saved_epoch > 0:
            error.add_note(f"epochs 1-{run.saved_epoch} are saved in {run.run_dir}; after fixing the "
                           "cause, continue with: stablernn train --resume "
                           f"{run.run_dir}")
        raise
    finally:
        if writer is not None:
            writer.close()
        distributed.teardown(run.context)


def _prepared(config: TrainConfig, run_dir: Path, log: Callable[[str], None],
              force: bool) -> _Run:
    """Checks, then the task and the model: everything that can fail before a file is written."""
    if int(os.environ.get("RANK", "0")) == 0:
        runs.check_new_run_dir(run_dir, force)
    return _Run(config, run_dir, log)


def train(config: TrainConfig, run_dir: str | Path | None = None, progress: bool = True,
          log: Callable[[str], None] = print, force: bool = False) -> TrainResult:
    """Train the model a config describes; write the run directory; return test figures.

    The run directory holds ``config.json`` (resolved), ``metrics.csv`` (one row per epoch),
    ``checkpoint.pt`` (written atomically after every epoch, with optimizer and random states
    so :func:`resume` continues exactly), ``best.pt`` (best validation score) and
    ``results.json`` (test figures of the best-validation model). An existing run is never
    overwritten unless ``force`` (which first removes every file of the previous run).
    Ctrl-C raises :class:`TrainingInterrupted` naming the epoch saved.
    """
    config = config.resolved()
    run_dir = Path(run_dir) if run_dir is not None else runs.default_run_dir(config)
    run = _prepared(config, run_dir, log, force)
    if run.context.main:
        runs.create_run_dir(run_dir, config, force)
    run.context.barrier()
    run.log(run.task.summary())
    run.log(_model_line(run))
    return _run(run, progress, fresh=True)


def _model_line(run: _Run) -> str:
    parameters = count_trained_parameters(run.module)
    return (f"model {run.config.model} (hidden {run.config.hidden_size}, {parameters:,} trained "
            f"parameters) on {run.device}; run directory {run.run_dir}")


def dry_run(config: TrainConfig, run_dir: str | Path | None = None,
            log: Callable[[str], None] = print, force: bool = False) -> nn.Module:
    """Everything ``train`` checks, and nothing it writes: the config, the run directory, the
    data files, the model (printed, with its parameter count and its certificate at
    initialisation). Returns the recurrent layer."""
    from stablernn.certification import certify

    config = config.resolved()
    if run_dir is not None:
        runs.check_new_run_dir(Path(run_dir), force)
    task = load_task(config.task, **config.task_options)
    torch.manual_seed(config.seed)  # the initialization train() would draw
    model = build_model(config, task)
    select_device(config.device)
    parameters = count_trained_parameters(model)
    log(task.summary())
    log(f"{model}\nmodel {config.model} (hidden {config.hidden_size}): {parameters:,} trained "
        "parameters")
    layer = recurrent_layer(model)
    log(f"certificate at initialisation:\n{certify(layer)}")
    log("dry run: config, data and model are fine; nothing was trained or written")
    return layer


def resume(run_dir: str | Path, progress: bool = True,
           log: Callable[[str], None] = print, data_dir: str | None = None) -> TrainResult:
    """Continue an interrupted run from its last checkpoint, exactly where it stopped.

    ``data_dir`` (or ``STABLERNN_DATA_DIR``) says where the task's files are now, when they
    moved since the run started.
    """
    run_dir = Path(run_dir)
    config = runs.read_run_config(run_dir)
    checkpoint = run_dir / runs.LAST_CHECKPOINT
    if not checkpoint.exists():
        raise runs.RunDirectoryError(
            f"run directory {run_dir} has no {runs.LAST_CHECKPOINT} yet (it stopped before its "
            "first epoch ended): start it again with --force")
    check_writable_directory(run_dir, "--resume")
    payload = load_checkpoint(checkpoint)
    runs.check_checkpoint(payload, checkpoint, config, required=runs.CHECKPOINT_KEYS + (
        "epoch", "optimizer_state", "scheduler_state", "shuffle_state", "noise_state",
        "torch_rng_state", "best_score", "best_epoch", "history"))
    run = _Run(config, run_dir, log, data_dir)
    runs.check_parameter_shapes(payload, run.module.state_dict(), checkpoint)
    run.restore(payload)
    run.log(f"resuming {run_dir} after epoch {run.epoch} of {config.epochs}")
    return _run(run, progress)
