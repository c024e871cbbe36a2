"""Certificates of trained runs: ``stablernn certify`` and the end of ``stablernn train``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stablernn.certification import assembly_family, certify
from stablernn.contraction import Certificate
from stablernn.contraction.certificate import metric_from_summary
from stablernn.experiments.evaluation import checkpoint_path, load_model
from stablernn.experiments.modeling import recurrent_layer
from stablernn.experiments.output import (
    check_writable_directory,
    write_atomic,
    write_text_atomic,
)
from stablernn.models.network import NetworkOfNetworks

CERTIFICATE_FILE = "certificate.json"
METRIC_FILE = "certificate_metric.npy"  # a full (non-diagonal) metric, beside CERTIFICATE_FILE
PLOTS_SKIPPED = "(matplotlib not installed: no plots; pip install 'stablernn[plot]')"


def write_certificate(certificate: Certificate, directory: Path) -> Path:
    """Write ``certificate.json`` (atomically) into ``directory``, with the metric in compact
    form: a diagonal metric as its diagonal, a full one as a summary (size, extreme eigenvalues,
    condition number) naming ``certificate_metric.npy``, written beside it (float64).
    :func:`read_certificate_metric` reads the metric back."""
    directory = Path(directory)
    data = certificate.to_dict(metric="compact")
    sidecar = directory / METRIC_FILE
    if data["metric"] is not None and data["metric"]["kind"] == "full":
        metric = np.asarray(certificate.metric, dtype=np.float64)
        write_atomic(sidecar, lambda stream: np.save(stream, metric))
        data["metric"]["file"] = METRIC_FILE
    path = write_text_atomic(directory / CERTIFICATE_FILE, json.dumps(data, indent=2) + "\n")
    if "file" not in (data["metric"] or {}):
        sidecar.unlink(missing_ok=True)  # a previous certificate's matrix is not this one's
    return path


def read_certificate_metric(directory: str | Path) -> np.ndarray | None:
    """The metric of ``directory/certificate.json`` as an N x N array (None when the certificate
    has none), from its diagonal, its sidecar ``.npy`` file, or (older files) its nested lists."""
    directory = Path(directory)
    data = json.loads((directory / CERTIFICATE_FILE).read_text())
    entry = data.get("metric")
    if isinstance(entry, dict) and "file" in entry:
        metric = np.load(directory / entry["file"], allow_pickle=False)
        if metric.shape != (entry["size"], entry["size"]):
            raise ValueError(f"{directory / entry['file']} holds a {metric.shape} array; "
                             f"{directory / CERTIFICATE_FILE} expects "
                             f"{entry['size']} x {entry['size']}")
        return metric
    return metric_from_summary(entry)


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


def certify_run(path: str | Path, checkpoint: str = "best", plots: bool = True,
                log: Callable[[str], None] = print) -> tuple[Certificate, Path, list[Path]]:
    """Certificate of a run directory's (or checkpoint file's) model; writes
    ``certificate.json`` (and plots for networks of networks) beside it.

    The directory is checked for writing before the (possibly slow) certification; plots are
    skipped with a note through ``log`` when matplotlib is missing."""
    file = checkpoint_path(path, checkpoint)
    directory = Path(path) if Path(path).is_dir() else file.parent
    check_writable_directory(directory, "PATH")
    _, model = load_model(file)
    layer = recurrent_layer(model)
    certificate = certify(layer)
    written = [write_certificate(certificate, directory)]
    if (directory / METRIC_FILE).is_file():  # written with it (a stale one is removed)
        written.append(directory / METRIC_FILE)
    if plots:
        try:
            written += write_certificate_plots(layer, certificate, directory)
        except ImportError:
            log(PLOTS_SKIPPED)
    return certificate, directory, written
