"""Run directories: what a run writes, and the refusals that keep runs from being lost."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from stablernn.experiments.checkpoint import CheckpointError
from stablernn.experiments.config import TrainConfig
from stablernn.experiments.output import check_writable_directory, write_text_atomic
from stablernn.tasks.files import DATA_DIR_VARIABLE
from stablernn.tasks.registry import task_options as available_task_options

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
LAST_CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "best.pt"
RESULTS_FILE = "results.json"


# Everything a run directory can hold that stablernn wrote (train, certify, analyze):
# ``--force`` removes exactly these before a new run starts, and nothing else.
RUN_FILES = (CONFIG_FILE, METRICS_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT, RESULTS_FILE,
             "training.png", "certificate.json", "certificate_metric.npy", "connectivity.png",
             "jacobian_spectrum.png", "analysis.json", "analysis_noise.png")
RUN_FOLDERS = ("tensorboard",)


class RunDirectoryError(ValueError):
    """A run directory that is not one, or that would be overwritten."""


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{stamp}-{config.model}-{config.task}-seed{config.seed}"


def check_new_run_dir(path: Path, force: bool) -> None:
    """Refuse a run directory that cannot be written, or that holds a run (unless ``force``)."""
    check_writable_directory(path, "--run-dir")
    if (path / CONFIG_FILE).exists() and not force:
        raise RunDirectoryError(
            f"run directory {path} already holds a run; use --resume to continue it or "
            "--force to overwrite it")


def create_run_dir(path: Path, config: TrainConfig, force: bool) -> Path:
    """Make ``path`` for a new run and write the resolved config; refuse to overwrite a run.

    With ``force`` every file of a previous run (checkpoints, metrics, results, certificate,
    analysis, plots) is removed first, so nothing of the old run sits beside the new one.
    """
    check_new_run_dir(path, force)
    path.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for leftover in path.glob(".*.tmp"):  # half-written files of an interrupted atomic write
        leftover.unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(path / name, ignore_errors=True)
    write_text_atomic(path / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")
    return path


def config_hash(config: dict[str, Any]) -> str:
    """A short fingerprint of a resolved config (canonical JSON, SHA-256)."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_identity(config: TrainConfig, state: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint belongs to: model name, config fingerprint, parameter shapes."""
    return {"model": config.model, "config_hash": config_hash(config.to_dict()),
            "parameter_shapes": {name: list(value.shape) for name, value in state.items()}}


CHECKPOINT_KEYS = ("config", "task", "model_state")


def check_checkpoint(payload: dict[str, Any], file: Path,
                     run_config: TrainConfig | None = None,
                     required: tuple[str, ...] = CHECKPOINT_KEYS) -> TrainConfig:
    """The config of a checkpoint, after checking that it is complete, consistent with its own
    identity record and (``run_config``) that it belongs to the run it sits in."""
    missing = [key for key in required if key not in payload]
    if missing:
        raise CheckpointError(
            f"checkpoint {file} lacks {', '.join(missing)}; expected a checkpoint written by "
            "stablernn train at the end of an epoch")
    if not isinstance(payload["config"], dict):
        raise CheckpointError(f"checkpoint {file}: its config is a "
                              f"{type(payload['config']).__name__}, expected a mapping")
    config = TrainConfig.from_dict(payload["config"], source=f"checkpoint {file}")
    identity = payload.get("identity")
    if identity is not None and (
            identity.get("config_hash") != config_hash(payload["config"])
            or identity.get("model") != config.model):
        raise CheckpointError(f"checkpoint {file}: its identity record does not match the config "
                              "it holds (edited or damaged); expected a file as training wrote it")
    if run_config is not None and payload["config"] != run_config.to_dict():
        differing = sorted(key for key in payload["config"]
                           if payload["config"][key] != run_config.to_dict().get(key))
        raise CheckpointError(
            f"checkpoint {file} does not belong to this run: it holds model {config.model!r} on "
            f"{config.task!r}, {file.parent / CONFIG_FILE} describes model {run_config.model!r} "
            f"on {run_config.task!r}, differing in {', '.join(differing)} (another run's "
            "checkpoint, or a config changed since); expected the run's own checkpoint and config")
    return config


def check_parameter_shapes(payload: dict[str, Any], expected: dict[str, Any], file: Path) -> None:
    """Refuse a checkpoint whose recorded parameter shapes differ from the model's."""
    identity = payload.get("identity")
    if identity is None:
        return
    shapes = {name: list(value.shape) for name, value in expected.items()}
    if identity.get("parameter_shapes") != shapes:
        names = sorted(set(shapes) ^ set(identity.get("parameter_shapes", {}))) or sorted(
            name for name in shapes if shapes[name] != identity["parameter_shapes"].get(name))
        raise CheckpointError(
            f"checkpoint {file} does not fit the model its config describes (parameters "
            f"{', '.join(names[:4])}{' ...' if len(names) > 4 else ''} differ)")


def remove_unstarted_run(path: Path) -> None:
    """Remove what a new run wrote before its first epoch ended (nothing finished is in it);
    the directory too when nothing else is left in it."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(path / name, ignore_errors=True)
    try:
        path.rmdir()
    except OSError:
        pass  # other files of the user's are in it


def task_options(config: TrainConfig, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The task options of a run, with its data location overridden where the files are now.

    ``data_dir`` (``--data-dir``), else ``STABLERNN_DATA_DIR``, replaces the stored
    ``data_dir`` of tasks that read files, so a run keeps working when its data moves.
    """
    options = dict(config.task_options)
    location = data_dir or os.environ.get(DATA_DIR_VARIABLE) or None
    if location is not None and "data_dir" in available_task_options(config.task):
        options["data_dir"] = str(Path(location).expanduser().absolute())
    return options


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
