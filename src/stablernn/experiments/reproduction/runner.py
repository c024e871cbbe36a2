"""The runs of a reproduction: trained once, reused only when the same code made them.

Every run is an ordinary run directory under ``OUT/runs``. A finished run is reused when its
config matches and its ``results.json`` records the same source hash as the running code
(:mod:`stablernn.experiments.provenance`); a run made by other code is trained again. A run
whose loss diverges is an outcome, not a crash: ``diverged.json`` records it and the run counts
at chance accuracy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stablernn.experiments import runs
from stablernn.experiments.analyze import analyze_model
from stablernn.experiments.checkpoint import load_checkpoint
from stablernn.experiments.config import TrainConfig
from stablernn.experiments.evaluation import load_model
from stablernn.experiments.output import write_text_atomic
from stablernn.experiments.provenance import provenance
from stablernn.experiments.reproduction.scales import Scale, Schedule
from stablernn.experiments.training import resume, train
from stablernn.tasks import load_task

DIVERGED_FILE = "diverged.json"
SELECTION_SEED_OFFSET = 1000  # selection seeds 1000, 1001, ...: never a test seed


class Runner:
    """Trains (or reuses, or resumes) the run directories of a reproduction."""

    def __init__(self, out: Path, scale: Scale, data_dir: str | None, log: Callable[[str], None]):
        self.out, self.scale, self.data_dir, self.log = out, scale, data_dir, log
        self._tasks: dict[str, Any] = {}
        self.used: set[Path] = set()  # run directories the report draws on
        self.source = provenance()["source_hash"]

    # -------------------------------------------------------------- seeds
    def test_seeds(self) -> list[int]:
        return list(range(self.scale.seeds))

    def selection_seeds(self) -> list[int]:
        return [SELECTION_SEED_OFFSET + i for i in range(self.scale.selection_seeds)]

    # -------------------------------------------------------------- configs
    def config(self, model: str, task: str, task_options: dict, hidden_size: int, seed: int,
               schedule: Schedule, permuted: bool = False, **overrides: Any) -> TrainConfig:
        task_options = dict(task_options)
        if self.data_dir is not None and task in ("smnist", "psmnist"):
            task_options["data_dir"] = self.data_dir
        combo = model.endswith("combo")
        # the papers' claims are about their own models: the paper's parametrization and step
        paper = {"method": "euler"} if combo else {
            "parametrization": "paper", "step_size": self.scale.lipschitz_step} \
            if model == "lipschitz" else {}
        overrides["model_options"] = {**paper, **overrides.get("model_options", {})}
        return TrainConfig(
            model=model, task=task, task_options=task_options, hidden_size=hidden_size,
            epochs=schedule.epochs,
            lr_decay_epochs=list(schedule.lr_decay_epochs) or [schedule.epochs + 1],
            learning_rate=schedule.permuted_learning_rate if permuted else schedule.learning_rate,
            optimizer=schedule.optimizer, seed=seed,
            max_train_samples=self.scale.max_train_samples,
            max_eval_samples=self.scale.max_eval_samples, **overrides)

    # -------------------------------------------------------------- runs
    def _reusable(self, run_dir: Path, config: TrainConfig) -> str | None:
        """``"finished"``, ``"diverged"`` or ``"interrupted"`` when ``run_dir`` holds this config's
        run made by this code; None when it must be trained (afresh)."""
        if not (run_dir / runs.CONFIG_FILE).is_file():
            return None
        if runs.read_run_config(run_dir).to_dict() != config.resolved().to_dict():
            return None
        for name, state in ((runs.RESULTS_FILE, "finished"), (DIVERGED_FILE, "diverged")):
            if (run_dir / name).is_file():
                stored = json.loads((run_dir / name).read_text())
                source = stored.get("provenance", {}).get("source_hash")
                return state if source == self.source else None
        checkpoint = run_dir / runs.LAST_CHECKPOINT
        if not checkpoint.is_file():
            return None
        made_by = load_checkpoint(checkpoint).get("provenance", {}).get("source_hash")
        return "interrupted" if made_by == self.source else None

    def run(self, name: str, config: TrainConfig) -> dict[str, Any]:
        """Test figures of the run ``OUT/runs/name`` (training it if needed), with
        ``validation_score`` (for picking settings) and ``diverged``."""
        run_dir = self.out / "runs" / name
        self.used.add(run_dir)
        state = self._reusable(run_dir, config)
        if state == "finished":
            return self._figures(json.loads((run_dir / runs.RESULTS_FILE).read_text()))
        if state == "diverged":
            return self._diverged_figures(config)
        try:
            if state == "interrupted":
                self.log(f"resuming {run_dir}")
                resume(run_dir, progress=False, log=lambda _: None)
            else:
                self.log(f"training {run_dir}")
                train(config, run_dir, progress=False, log=lambda _: None, force=True)
        except FloatingPointError as error:  # the loss diverged: an outcome of this setting
            run_dir.mkdir(parents=True, exist_ok=True)
            if not (run_dir / runs.CONFIG_FILE).is_file():
                write_text_atomic(run_dir / runs.CONFIG_FILE,
                                  json.dumps(config.resolved().to_dict(), indent=2) + "\n")
            write_text_atomic(run_dir / DIVERGED_FILE, json.dumps(
                {"error": str(error), "provenance": provenance()}, indent=2) + "\n")
            self.log(f"{run_dir} diverged: {error}")
            return self._diverged_figures(config)
        return self._figures(json.loads((run_dir / runs.RESULTS_FILE).read_text()))

    @staticmethod
    def _figures(results: dict[str, Any]) -> dict[str, Any]:
        figures = {key[len("test_"):]: value for key, value in results.items()
                   if key.startswith("test_") and key != "test_samples"}
        figures.update(validation_score=results.get("validation_score"), diverged=False)
        return figures

    def _diverged_figures(self, config: TrainConfig) -> dict[str, Any]:
        chance = 1.0 / self.task(config).output_size
        return {"accuracy": chance, "loss": float("nan"), "validation_score": chance,
                "diverged": True}

    def sweep(self, claim: str, values: Sequence, make_config: Callable[[Any, int], TrainConfig],
              label: Callable[[Any], str], seeds: Sequence[int]) -> dict[Any, list[dict]]:
        """The figures of one run per (value, seed)."""
        return {value: [self.run(f"{claim}/{label(value)}-seed{seed}", make_config(value, seed))
                        for seed in seeds] for value in values}

    def pick_best(self, claim: str, values: Sequence,
                  make_config: Callable[[Any, int], TrainConfig],
                  label: Callable[[Any], str]) -> tuple[Any, dict[Any, float]]:
        """The value with the best mean validation score on the selection seeds (never the
        seeds that then test it), and every value's mean score."""
        figures = self.sweep(f"{claim}/selection", values, make_config, label,
                             self.selection_seeds())
        scores = {value: sum(f["validation_score"] for f in runs_) / len(runs_)
                  for value, runs_ in figures.items()}
        return max(values, key=lambda value: scores[value]), scores

    # -------------------------------------------------------------- analyses
    def analysis(self, name: str) -> dict[str, Any]:
        """:func:`analyze_model` figures of a trained run (cached as ``analysis.json``)."""
        run_dir = self.out / "runs" / name
        cached = run_dir / "analysis.json"
        settings = json.loads(json.dumps(asdict(self.scale.analysis)))  # as stored
        if cached.is_file():
            stored = json.loads(cached.read_text())
            if stored.get("settings") == settings and \
                    stored.get("provenance", {}).get("source_hash") == self.source:
                return stored
        config, model = load_model(run_dir)
        task = self.task(config)
        self.log(f"analysing {run_dir}")
        started = time.perf_counter()
        result = analyze_model(model, task.train, task.test, self.scale.analysis)
        result.update(seconds=time.perf_counter() - started, provenance=provenance())
        write_text_atomic(cached, json.dumps(result, indent=2) + "\n")
        return result

    def task(self, config: TrainConfig):
        key = json.dumps([config.task, config.task_options], sort_keys=True)
        if key not in self._tasks:
            self._tasks[key] = load_task(config.task, **runs.task_options(config))
        return self._tasks[key]

    # -------------------------------------------------------------- accounting
    def compute_seconds(self) -> tuple[float, float]:
        """Training and analysis seconds of the runs used (however many invocations ran them)."""
        training = analysis = 0.0
        for run_dir in self.used:
            if not (run_dir / runs.RESULTS_FILE).is_file():  # diverged
                continue
            training += json.loads((run_dir / runs.RESULTS_FILE).read_text())["train_seconds"]
            if (run_dir / "analysis.json").is_file():
                analysis += json.loads((run_dir / "analysis.json").read_text()).get("seconds", 0.0)
        return training, analysis

    def used_runs(self) -> int:
        return len(self.used)
