"""Figures a person would rather look at than read (matplotlib, extra ``plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'stablernn[plot]'") from None
    return plt


def _save(plt, figure, path: str | Path) -> Path:
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_connectivity(assembly, path: str | Path) -> Path:
    """The assembled connectivity (paper 000, figure 3): block-diagonal W and feedback L."""
    plt = _pyplot()
    with torch.no_grad():
        recurrent = torch.block_diag(*[leaf.weight() if hasattr(leaf, "weight") else
                                       torch.zeros(leaf.size, leaf.size)
                                       for leaf in assembly.leaves()]).cpu().numpy()
        feedback = assembly.feedback_matrix().cpu().numpy()
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for axis, matrix, title in ((axes[0], recurrent, "subnetworks W (block-diagonal)"),
                                (axes[1], feedback, "feedback L = B - M^-1 B^T M")):
        bound = float(np.abs(matrix).max()) or 1.0
        image = axis.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound)
        edges = np.cumsum([leaf.size for leaf in assembly.leaves()])[:-1] - 0.5
        for edge in edges:
            axis.axhline(edge, color="0.7", linewidth=0.4)
            axis.axvline(edge, color="0.7", linewidth=0.4)
        axis.set_title(title)
        figure.colorbar(image, ax=axis, fraction=0.046)
    return _save(plt, figure, path)


def plot_jacobian_spectrum(jacobians: dict[str, np.ndarray], rate: float | None,
                           path: str | Path) -> Path:
    """Eigenvalues of the Jacobian at several activation slopes, with the certified rate."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4.6))
    for label, jacobian in jacobians.items():
        eigenvalues = np.linalg.eigvals(jacobian)
        axis.scatter(eigenvalues.real, eigenvalues.imag, s=8, label=label, alpha=0.7)
    if rate is not None:
        axis.axvline(-rate, color="k", linestyle="--", linewidth=1,
                     label=f"certified rate: Re = -{rate:.3g}")
    axis.axvline(0.0, color="0.6", linewidth=0.8)
    axis.set_xlabel("Re(lambda)")
    axis.set_ylabel("Im(lambda)")
    axis.set_title("Jacobian eigenvalues (continuous time)")
    axis.legend(fontsize=8)
    return _save(plt, figure, path)


def plot_training(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch; for a Lipschitz RNN also the largest eigenvalue of the
    symmetric parts of A and W over training (paper 002, figure 5)."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    spectral = [key for key in ("max_eig_sym_A", "max_eig_sym_W") if key in history[0]]
    panels = 2 + bool(spectral)
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6))
    for key, style in (("train_loss", "-"), ("validation_loss", "--")):
        axes[0].plot(epochs, [row.get(key) for row in history], style, label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("loss")
    for key, style in (("train_accuracy", "-"), ("validation_accuracy", "--")):
        if key in history[0]:
            axes[1].plot(epochs, [row[key] for row in history], style, label=key)
    axes[1].set_title("accuracy")
    if spectral:
        for key in spectral:
            axes[2].plot(epochs, [row[key] for row in history], label=key.replace("max_eig_", "max eig "))
        axes[2].axhline(0.0, color="0.6", linewidth=0.8)
        axes[2].set_title("largest eigenvalue of sym(A), sym(W)")
    for axis in axes:
        axis.set_xlabel("epoch")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    return _save(plt, figure, path)


def plot_curves(panels: dict[str, dict[str, tuple]], xlabel: dict[str, str] | str, ylabel: str,
                path: str | Path, log_x: bool = False,
                tick_labels: list[str] | None = None) -> Path:
    """One panel per entry of ``panels``: ``{title: {label: (x, mean, spread or None)}}``, each
    curve with a band of +- spread (e.g. the standard deviation over seeds); ``tick_labels``
    name categorical x positions 0, 1, ..."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for axis, (title, curves) in zip(axes[0], panels.items()):
        for label, (x, mean, spread) in curves.items():
            x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
            axis.plot(x, mean, "o-", label=label, markersize=4)
            if spread is not None:
                spread = np.asarray(spread, dtype=float)
                axis.fill_between(x, mean - spread, mean + spread, alpha=0.2)
        if log_x:
            axis.set_xscale("log")
        if tick_labels is not None:
            axis.set_xticks(range(len(tick_labels)), tick_labels)
        axis.set_title(title)
        axis.set_xlabel(xlabel if isinstance(xlabel, str) else xlabel[title])
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=8)
    return _save(plt, figure, path)


def plot_noise_curves(noise: dict[str, dict[str, list[dict]]], path: str | Path) -> Path:
    """Accuracy against noise level (paper 002, figure 2): ``{model: {kind: [{level,
    accuracy}]}}`` as :func:`stablernn.analysis.noise_curve` returns them."""
    kinds = list(next(iter(noise.values())))
    panels = {kind: {model: ([row["level"] for row in curves[kind]],
                             [row["accuracy"] for row in curves[kind]], None)
                     for model, curves in noise.items()} for kind in kinds}
    labels = {"white": "noise standard deviation", "salt-and-pepper": "fraction of inputs flipped"}
    return plot_curves(panels, {kind: labels.get(kind, "level") for kind in kinds},
                       "test accuracy", path)
