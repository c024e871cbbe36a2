"""Run directories: what a run writes, and the refusals that keep runs from being lost."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from stablernn.experiments.config import TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
RESULTS_FILE = "results.json"


class RunDirectoryError(ValueError):
    """A run directory that is not one, or that would be overwritten."""


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.model}-{config.task}-seed{config.seed}"


def create_run_dir(path: Path, config: TrainConfig, force: bool) -> Path:
    """Make ``path`` for a new run and write the resolved config; refuse to overwrite a run."""
    if (path / CONFIG_FILE).exists() and not force:
        raise RunDirectoryError(
            f"run directory {path} already holds a run; use --resume to continue it or "
            "--force to overwrite it")
    path.mkdir(parents=True, exist_ok=True)
    for name in (METRICS_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT, RESULTS_FILE):
        (path / name).unlink(missing_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return path


def read_run_config(path: str | Path) -> TrainConfig:
    """The resolved config of the run in ``path``."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise RunDirectoryError(f"{path} is not a stablernn run directory (no {CONFIG_FILE})")
    return TrainConfig.load(path / CONFIG_FILE)


class MetricsLog:
    """``metrics.csv``: one row per epoch, rewritten from the checkpoint's history on resume."""

    def __init__(self, path: Path, fields: list[str], history: list[dict[str, Any]]):
        self.path, self.fields = path, fields
        with open(path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=self.fields, extrasaction="ignore").writerow(row)
