"""Certificates of trained runs: ``stablernn certify`` and the end of ``stablernn train``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stablernn.certification import assembly_family, certify
from stablernn.contraction import Certificate
from stablernn.experiments.evaluation import checkpoint_path, load_model
from stablernn.models.network import NetworkOfNetworks

CERTIFICATE_FILE = "certificate.json"


def write_certificate(certificate: Certificate, directory: Path) -> Path:
    path = Path(directory) / CERTIFICATE_FILE
    path.write_text(json.dumps(certificate.to_dict(), indent=2) + "\n")
    return path


def write_certificate_plots(layer: nn.Module, certificate: Certificate, directory: Path) -> list[Path]:
    """Connectivity and Jacobian spectrum of a network of networks (needs matplotlib)."""
    if not isinstance(layer, NetworkOfNetworks):
        return []
    from stablernn.experiments.plots import plot_connectivity, plot_jacobian_spectrum

    assembly = layer.assembly
    with torch.no_grad():
        family = assembly_family(assembly)
    slopes = {"all slopes 0": np.zeros(family.slopes), "all slopes at g": np.ones(family.slopes),
              "random slopes": np.random.default_rng(0).random(family.slopes)}
    jacobians = {label: family.jacobian(d) for label, d in slopes.items()}
    return [plot_connectivity(assembly, Path(directory) / "connectivity.png"),
            plot_jacobian_spectrum(jacobians, certificate.rate if certificate.contracting else None,
                                   Path(directory) / "jacobian_spectrum.png")]


def recurrent_part(model: nn.Module) -> nn.Module:
    head = model[-1] if isinstance(model, nn.Sequential) else model
    return getattr(head, "rnn", head)


def certify_run(path: str | Path, checkpoint: str = "best",
                plots: bool = True) -> tuple[Certificate, Path, list[Path]]:
    """Certificate of a run directory's (or checkpoint file's) model; writes
    ``certificate.json`` (and plots for networks of networks) beside it."""
    file = checkpoint_path(path, checkpoint)
    _, model = load_model(file)
    layer = recurrent_part(model)
    certificate = certify(layer)
    directory = Path(path) if Path(path).is_dir() else file.parent
    written = [write_certificate(certificate, directory)]
    if plots:
        try:
            written += write_certificate_plots(layer, certificate, directory)
        except ImportError:
            pass
    return certificate, directory, written
