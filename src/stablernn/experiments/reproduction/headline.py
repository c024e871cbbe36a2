"""The papers' headline accuracies: which configs reproduce them, and what they cost here.

The headline rows need the papers' data files and hundreds of epochs on 784- to 1,024-step
sequences, beyond a CPU session; this section says so plainly and measures the time per epoch
of each config on this machine (timed training steps on inputs of the task's shape, times the
steps of one epoch), so a user can budget a run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from stablernn.experiments.config import TrainConfig
from stablernn.experiments.modeling import TaskSignature, build_model
from stablernn.experiments.reproduction.report import Section, table
from stablernn.experiments.reproduction.runner import Runner
from stablernn.experiments.training import build_optimizer

CONFIGS = Path(__file__).resolve().parents[4] / "configs"

# (paper, model, task, headline, config file): paper 002 tables 1, 5; paper 000 table 1, 4.2.3
HEADLINES = (
    ("002", "Lipschitz RNN N=128, Euler", "sMNIST", "99.4% (mean 99.2%, 10 seeds)",
     "paper002/smnist-lipschitz-euler-n128.toml"),
    ("002", "Lipschitz RNN N=128, Euler", "psMNIST", "96.3% (mean 95.9%)",
     "paper002/psmnist-lipschitz-euler-n128.toml"),
    ("002", "Lipschitz RNN N=256, Euler", "sCIFAR-10", "64.2%",
     "paper002/scifar10-lipschitz-euler-n256.toml"),
    ("002", "Lipschitz RNN N=256, Euler", "noise-padded CIFAR-10", "59.0%",
     "paper002/noise-cifar10-lipschitz-euler-n256.toml"),
    ("000", "Sparse Combo Net 16x32", "sMNIST", "99.04%",
     "paper000/smnist-sparse-combo-16x32.toml"),
    ("000", "Sparse Combo Net 16x32", "psMNIST", "96.94% (mean 96.85%, 4 seeds)",
     "paper000/psmnist-sparse-combo-16x32.toml"),
    ("000", "Sparse Combo Net 16x32", "sCIFAR-10", "65.72% (mean 64.72%, 10 seeds)",
     "paper000/scifar10-sparse-combo-16x32.toml"),
    ("000", "Sparse Combo Net 24x32, L = B", "psMNIST", "47.0% (96.7% constrained)",
     "paper000/psmnist-sparse-combo-24x32-unconstrained.toml"),
)

# input size, steps, training samples (after the validation split) of the image tasks
SHAPES = {"smnist": (1, 784, 58000), "psmnist": (1, 784, 58000), "scifar10": (3, 1024, 45000),
          "noise-cifar10": (96, 1000, 45000)}


def time_per_epoch(config: TrainConfig, steps: int) -> float:
    """Seconds of one training epoch of ``config`` on this machine: the median of ``steps``
    timed training steps (after one untimed) on random inputs of the task's shape, times the
    steps of an epoch."""
    config = config.resolved()
    input_size, length, samples = SHAPES[config.task]
    if "length" in config.task_options:
        length = config.task_options["length"]
    torch.manual_seed(0)
    model = build_model(config, TaskSignature(input_size, 10, "classification", False))
    optimizer = build_optimizer(config, model.parameters())
    inputs = torch.rand(config.batch_size, length, input_size)
    targets = torch.randint(0, 10, (config.batch_size,))
    timings = []
    for step in range(steps + 1):
        started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step > 0:
            timings.append(time.perf_counter() - started)
    timings.sort()
    return timings[len(timings) // 2] * -(-samples // config.batch_size)


def headline_numbers(runner: Runner, figures: Path) -> Section:
    section = Section("headline", "Headline numbers", "The papers' best test accuracies "
                      "(paper 002 tables 1 and 5, paper 000 table 1 and section 4.2.3).",
                      tested=False)
    steps = 3
    rows = []
    for paper, model, task, headline, file in HEADLINES:
        path = CONFIGS / file
        if not path.is_file() or runner.scale.name == "quick":
            reason = "not timed in quick mode" if path.is_file() else \
                "config not found (needs a source checkout)"
            rows.append([paper, model, task, headline, f"`configs/{file}`", "no", reason, "-"])
            continue
        config = TrainConfig.load(path)
        seconds = time_per_epoch(config, steps)
        hours = seconds * config.epochs / 3600
        rows.append([paper, model, task, headline, f"`configs/{file}`",
                     "no: needs the data files and the full budget",
                     f"{seconds / 60:.1f} min", f"{hours:.0f} h ({config.epochs} epochs)"])
        section.data[file] = {"seconds_per_epoch": seconds, "epochs": config.epochs}
    section.table = table(["paper", "model", "task", "headline", "config", "reproduced here",
                           "time per epoch (this CPU)", "whole run (this CPU)"], rows)
    section.notes.append(
        f"Time per epoch: the median of {steps} timed training steps (forward, backward, "
        "optimizer) on random inputs of the task's shape, after one untimed step, times the "
        "steps of one epoch, on this machine's CPU threads; validation and test passes are "
        "extra. A GPU run is the way to reproduce these numbers.")
    section.notes.append("Paper 002 also reports TIMIT (test MSE 2.82 Euler, 2.76 RK2, N = 256) "
                         "and Penn Treebank (1.43 / 1.46 bits per character, perplexity "
                         "115.36); their configs are in `configs/paper002/` and are not timed "
                         "here.")
    return section
