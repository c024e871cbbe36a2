"""``stablernn analyze RUN_DIR``: Hessian and robustness figures of a trained classifier.

Paper 002 section 7 (table 3, figure 2): the Hessian of the training loss over the recurrent
unit's parameters (top eigenvalue, trace, condition number), accuracy under white Gaussian and
salt-and-pepper noise over a range of levels, and accuracy under PGD (l_inf) and DeepFool (l_2,
l_inf) attacks. Writes ``analysis.json`` and ``analysis_noise.png`` into the run directory.
The estimators and attacks are :mod:`stablernn.analysis`'s (see ``docs/analysis.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stablernn._checks import check_number, check_positive_int
from stablernn.analysis import (
    hessian_spectrum,
    loss_closure,
    noise_curve,
    recurrent_parameters,
    robust_accuracy,
)
from stablernn.experiments.checkpoint import CheckpointError
from stablernn.experiments.evaluation import checkpoint_path, load_run_model
from stablernn.experiments.output import check_writable_directory, write_text_atomic
from stablernn.tasks import get_batch, take

ANALYSIS_FILE = "analysis.json"


@dataclass
class AnalysisSettings:
    """What ``analyze_run`` measures, and on how many samples.

    The PGD settings are the paper's (7 iterations, step 0.01); its attack radius is not given
    in the text, so ``pgd_epsilon`` is ours, on inputs scaled to [0, 1].
    """

    samples: int = 500  # test samples for noise and attacks
    hessian_samples: int = 500  # training samples the Hessian's loss averages over
    hessian_top_k: int = 1
    trace_samples: int = 50  # Hutchinson vectors
    hessian_tol: float = 1e-4  # Lanczos relative accuracy of the extreme eigenvalues
    white_noise_levels: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    salt_and_pepper_levels: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
    pgd_epsilon: float = 0.05
    pgd_step_size: float = 0.01
    attack_steps: int = 7
    hessian: bool = True
    attacks: bool = True
    seed: int = 0

    def validate(self) -> AnalysisSettings:
        for name in ("samples", "hessian_samples", "hessian_top_k", "trace_samples", "attack_steps"):
            check_positive_int(f"analysis setting {name}", getattr(self, name))
        for name in ("pgd_epsilon", "pgd_step_size", "hessian_tol"):
            check_number(f"analysis setting {name}", getattr(self, name), 0, 1, open_low=True)
        for name, upper in (("white_noise_levels", math.inf), ("salt_and_pepper_levels", 1.0)):
            levels = list(getattr(self, name))
            if not levels or any(not 0 <= level <= upper for level in levels):
                raise ValueError(f"analysis setting {name} must be a non-empty list of numbers "
                                 f"in [0, {upper}], got {levels!r}")
        return self


def _tensors(dataset, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    subset = take(dataset, count)
    batch = get_batch(subset, torch.arange(len(subset)), torch.Generator().manual_seed(0))
    return batch.inputs, batch.targets


def analyze_model(model: nn.Module, train_data, test_data,
                  settings: AnalysisSettings | None = None) -> dict[str, Any]:
    """Hessian, noise and attack figures of a classifier (``model(inputs) -> logits``)."""
    settings = (settings or AnalysisSettings()).validate()
    model.eval()
    inputs, targets = _tensors(test_data, settings.samples)
    result: dict[str, Any] = {"settings": asdict(settings), "samples": len(inputs)}
    with torch.no_grad():
        result["clean_accuracy"] = (model(inputs).argmax(-1) == targets).float().mean().item()
    if settings.hessian:
        train_inputs, train_targets = _tensors(train_data, settings.hessian_samples)
        named = recurrent_parameters(model)
        closure = loss_closure(model, train_inputs, train_targets)
        spectrum = hessian_spectrum(  # the closure runs the plain loop: twice differentiable
            closure, [p for _, p in named],
            top_k=settings.hessian_top_k, trace_samples=settings.trace_samples,
            tol=settings.hessian_tol, seed=settings.seed)
        with torch.no_grad():
            loss = closure().item()  # where the curvature is measured
        result["hessian"] = {**spectrum.to_dict(), "loss": loss,
                             "parameters": [name for name, _ in named]}
    result["noise"] = {
        "white": noise_curve(model, inputs, targets, "white", settings.white_noise_levels,
                             seed=settings.seed),
        "salt-and-pepper": noise_curve(model, inputs, targets, "salt-and-pepper",
                                       settings.salt_and_pepper_levels, seed=settings.seed),
    }
    if settings.attacks:
        result["attacks"] = {
            "pgd": robust_accuracy(model, inputs, targets, "pgd", epsilon=settings.pgd_epsilon,
                                   step_size=settings.pgd_step_size, steps=settings.attack_steps),
            "deepfool-l2": robust_accuracy(model, inputs, targets, "deepfool-l2",
                                           steps=settings.attack_steps),
            "deepfool-linf": robust_accuracy(model, inputs, targets, "deepfool-linf",
                                             steps=settings.attack_steps),
        }
    return result


def analyze_run(run_dir: str | Path, checkpoint: str = "best",
                settings: AnalysisSettings | None = None, plots: bool = True,
                data_dir: str | None = None, log=print) -> dict[str, Any]:
    """:func:`analyze_model` on a run's model; writes ``analysis.json`` (and a noise plot).

    The run directory is checked writable before anything is computed; the figures are written
    before the plot, which is skipped with a note when matplotlib is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {run_dir} is not a directory")
    (settings or AnalysisSettings()).validate()
    file = checkpoint_path(run_dir, checkpoint)
    if not file.is_file():
        raise CheckpointError(f"run directory {run_dir} has no {file.name}: train it first "
                              "(stablernn train) or resume it (stablernn train --resume)")
    check_writable_directory(run_dir, "RUN_DIR")
    config, task, model = load_run_model(run_dir, checkpoint, data_dir=data_dir)
    if task.kind != "classification":
        raise ValueError(f"stablernn analyze needs a classification task, got {config.task!r} "
                         f"(kind {task.kind!r})")
    result = {"run_dir": str(run_dir), "checkpoint": checkpoint, "model": config.model,
              **analyze_model(model, task.train, task.test, settings)}
    write_text_atomic(run_dir / ANALYSIS_FILE, json.dumps(result, indent=2) + "\n")
    if plots:
        from stablernn.experiments.plots import plot_noise_curves

        try:
            plot_noise_curves({config.model: result["noise"]}, run_dir / "analysis_noise.png")
        except ImportError:
            log("(matplotlib not installed: no analysis_noise.png; pip install 'stablernn[plot]')")
    return result


__all__ = ["ANALYSIS_FILE", "AnalysisSettings", "analyze_model", "analyze_run"]
