"""Repeats and grids on Ray Tune (extra ``sweep``): ``stablernn sweep``.

Each trial is an ordinary run (its own run directory under the sweep directory), so every trial
can be inspected, evaluated, certified or resumed like any run. The summary groups trials by
setting (everything but the seed) and gives mean, min and max of the test figures over seeds,
the form of paper 000 table 1 ("Repeats Mean (n) [Min]").

A sweep survives its trials: a trial that fails (a diverging loss, a bad value) is recorded as
failed in ``trials.csv`` and ``summary.md`` while the others are summarised, and rerunning the
same command keeps finished trials, continues interrupted ones from their checkpoint and retries
failed ones. Nothing finished is overwritten: a trial directory holding a run of another config
is refused unless ``force``. Everything that can be checked (the sweep directory, every trial's
config, the data sets) is checked before Ray starts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import logging
import os
import statistics
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from stablernn.experiments.config import TrainConfig
from stablernn.experiments.output import check_writable_directory

SUMMARY_METRICS = ("test_accuracy", "test_loss", "test_bits_per_character", "test_perplexity")
SWEEP_FILE = "sweep.json"
# trials.csv ``status``: trained (or resumed) to the end in this sweep, found finished by an
# earlier run of the sweep (not run again), or failed (its error in the ``error`` column)
FINISHED, SKIPPED, FAILED = "finished", "skipped-finished", "failed"
# what a trial's training may raise for a reason the user can fix (the CLI's exit-2 errors)
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError, ImportError)


class SweepError(ValueError):
    """A sweep that cannot run as asked (its directory holds another sweep or another run)."""


class SweepTrialsFailed(SweepError):
    """Some trials failed; the others are summarised. Rerunning the sweep retries the failed."""

    def __init__(self, message: str, failed: list[dict[str, Any]]):
        super().__init__(message)
        self.failed = failed


def parse_grid(entries: list[str]) -> dict[str, list[Any]]:
    """``["hidden_size=64,128", "model_options.density=0.01,0.033"]`` -> {key: [values]}."""
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, sep, values = entry.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,... (e.g. hidden_size=64,128), got {entry!r}")
        grid[key] = [_value(text) for text in values.split(",")]
    return grid


def parse_overrides(entries: list[str]) -> dict[str, Any]:
    """``["model_options.step_size=0.1", "learning_rate=0.01"]`` -> {key: value}; values are
    read as JSON where they parse (numbers, true, lists), as ``--grid`` values are."""
    overrides: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. model_options.step_size=0.1), "
                             f"got {entry!r}")
        overrides[key] = _value(value)
    return overrides


def load_sweep_file(path: str | Path) -> tuple[TrainConfig, dict[str, list[Any]]]:
    """A sweep definition: a TOML file with ``config`` (a config file, relative to this file)
    and a ``[grid]`` table of ``"KEY" = [values]`` (dotted keys as ``--grid`` takes them)."""
    import tomllib

    path = Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"sweep file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"sweep file {path} is not valid TOML: {error}") from None
    unknown = set(values) - {"config", "grid", "description"}
    if unknown:
        raise ValueError(f"sweep file {path}: unknown key(s) {sorted(unknown)}; expected config, "
                         "grid and description")
    grid = values.get("grid")
    if not isinstance(grid, dict) or not grid or not all(
            isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"sweep file {path} needs a [grid] table of KEY = [V1, V2, ...], got "
                         f"{grid!r}")
    config = TrainConfig.load(path.parent / values["config"]) if "config" in values \
        else TrainConfig()
    return config, grid


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _single_settings(setting: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Tied keys (``"KEY1,KEY2" = [V1, V2]``, for values that must change together, such as
    ``hidden_size`` with ``model_options.num_subnetworks``) as single (key, value) pairs."""
    for key, value in setting.items():
        keys = key.split(",")
        if len(keys) == 1:
            yield key, value
        elif not isinstance(value, list) or len(value) != len(keys):
            raise ValueError(f"grid key {key!r} ties {len(keys)} keys: each of its values must be "
                             f"a list of {len(keys)} values, got {value!r}")
        else:
            yield from zip(keys, value)


def apply_setting(config: TrainConfig, setting: dict[str, Any],
                  source: str = "grid key") -> TrainConfig:
    """A copy of ``config`` with dotted keys (``model_options.density``) set; validated."""
    values = config.to_dict()
    for key, value in _single_settings(setting):
        head, _, tail = key.partition(".")
        if tail:
            if head not in ("model_options", "task_options"):
                raise ValueError(f"{source} {key!r}: only model_options.X and task_options.X nest")
            values[head] = {**values[head], tail: value}
        else:
            values[head] = value
    return TrainConfig.from_dict(values, source="sweep setting")


def plan(config: TrainConfig, grid: dict[str, list[Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Every (setting, seed) trial, checked before anything runs."""
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[key] for key in keys)):
        setting = dict(zip(keys, values))
        for seed in seeds:
            apply_setting(config, {**setting, "seed": seed}).resolved()  # fail early
            trials.append({"setting": setting, "seed": seed})
    return trials


def _trial_name(setting: dict[str, Any], seed: int) -> str:
    parts = [f"{key.split('.')[-1]}={value}" for key, value in _single_settings(setting)]
    return "-".join([*parts, f"seed{seed}"]).replace("/", "_")


def _absolute_data_dir(config: TrainConfig) -> TrainConfig:
    """``task_options.data_dir`` as an absolute path (trials run in Ray's working directories,
    and a run directory must keep working when started from elsewhere)."""
    data_dir = config.task_options.get("data_dir")
    if not isinstance(data_dir, (str, os.PathLike)):
        return config
    absolute = str(Path(data_dir).expanduser().absolute())
    return dataclasses.replace(config, task_options={**config.task_options, "data_dir": absolute})


def _comparable(values: dict[str, Any]) -> dict[str, Any]:
    """A config (a dict as stored) in the form two configs are compared in: validated,
    resolved, data directory absolute, through JSON (tuples as lists)."""
    config = _absolute_data_dir(TrainConfig.from_dict(dict(values)).resolved())
    return json.loads(json.dumps(config.to_dict()))


def _differences(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = []
    for key in dict.fromkeys([*wanted, *found]):
        if found.get(key) == wanted.get(key):
            continue
        if isinstance(found.get(key), dict) and isinstance(wanted.get(key), dict):
            keys += [f"{key}.{name}" for name in _differences(found[key], wanted[key])]
        else:
            keys.append(key)
    return keys


@dataclasses.dataclass
class Trial:
    """One (setting, seed) of a sweep and what this sweep does with its run directory:
    ``train`` (new), ``retry`` (a run of the same config that stopped before its first
    checkpoint, or failed before it), ``resume`` (interrupted: continue from its checkpoint),
    ``retrain`` (a run of another config, replaced because of ``force``) or ``skip`` (finished
    by an earlier run of the sweep)."""

    setting: dict[str, Any]
    seed: int
    name: str
    run_dir: Path
    config: dict[str, Any]  # resolved, as the run's config.json holds it
    action: str = "train"

    def spec(self) -> dict[str, Any]:
        """What a Ray worker needs to run the trial (plain values)."""
        return {"name": self.name, "run_dir": str(self.run_dir), "config": self.config,
                "action": self.action}


def plan_trials(config: TrainConfig, grid: dict[str, list[Any]], seeds: list[int],
                sweep_dir: str | Path, force: bool = False) -> list[Trial]:
    """Every trial of the sweep with what to do with it, from what its run directory holds.

    A directory holding a run of another config (or an unreadable one) is refused with a
    :class:`SweepError` naming it, unless ``force`` (then it is trained again from scratch).
    """
    sweep_dir = Path(sweep_dir).resolve()
    trials, conflicts = [], []
    for entry in plan(config, grid, seeds):
        setting, seed = entry["setting"], entry["seed"]
        resolved = _absolute_data_dir(apply_setting(config, {**setting, "seed": seed}).resolved())
        name = _trial_name(setting, seed)
        trial = Trial(setting, seed, name, sweep_dir / name,
                      json.loads(json.dumps(resolved.to_dict())))
        trial.action, conflict = _trial_action(trial)
        if conflict:
            if not force:
                conflicts.append((trial, conflict))
            trial.action = "retrain"
        trials.append(trial)
    if conflicts:
        trial, conflict = conflicts[0]
        more = f" (and {len(conflicts) - 1} other trial directories)" if len(conflicts) > 1 else ""
        raise SweepError(
            f"sweep trial directory {trial.run_dir} {conflict}{more}; refusing to overwrite it: "
            "use another --sweep-dir, or --force to train such trials again")
    return trials


def _trial_action(trial: Trial) -> tuple[str, str | None]:
    """(action, conflict): what to do with ``trial``'s directory; a conflict says why its run
    may not be touched without ``force``."""
    from stablernn.experiments import runs

    config_file = trial.run_dir / runs.CONFIG_FILE
    if trial.run_dir.exists() and not trial.run_dir.is_dir():
        return "train", "is a file, not a run directory"
    if not config_file.exists():
        return "train", None
    try:
        found = _comparable(json.loads(config_file.read_text()))
    except (OSError, ValueError, TypeError) as error:
        return "retrain", f"holds an unreadable {runs.CONFIG_FILE} ({_first_line(error)})"
    wanted = _comparable(trial.config)
    if found != wanted:
        differing = ", ".join(_differences(found, wanted)) or "?"
        return "retrain", f"holds a run of another config (differs in {differing})"
    if _read_results(trial.run_dir) is not None:
        return "skip", None
    if (trial.run_dir / runs.LAST_CHECKPOINT).exists():
        return "resume", None
    return "retry", None


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    from stablernn.experiments import runs

    try:
        results = json.loads((run_dir / runs.RESULTS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def check_data(trials: list[Trial]) -> None:
    """Load each distinct (task, task options) of ``trials`` once, as their runs will: a
    missing or broken data set fails here, once, with the message ``stablernn train`` gives,
    not in every trial."""
    from stablernn.experiments import runs
    from stablernn.tasks import load_task

    seen = set()
    for trial in trials:
        config = TrainConfig.from_dict(trial.config)
        # where a run reads its data (STABLERNN_DATA_DIR overrides a stored data_dir)
        options = runs.task_options(config) if hasattr(runs, "task_options") \
            else config.task_options
        key = json.dumps([config.task, options], sort_keys=True)
        if key not in seen:
            seen.add(key)
            load_task(config.task, **options)


def _check_sweep_file(sweep_dir: Path, description: dict[str, Any], force: bool) -> None:
    """Refuse a sweep directory that holds another sweep (another base config or grid)."""
    path = sweep_dir / SWEEP_FILE
    if force or not path.exists():
        return
    try:
        found = json.loads(path.read_text())
        same_config = _comparable(found["config"]) == description["config"]
        same_grid = json.loads(json.dumps(found["grid"])) == description["grid"]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise SweepError(f"--sweep-dir {sweep_dir}: {path} is unreadable ({_first_line(error)}); "
                         "use another --sweep-dir, or --force to run this sweep there") from None
    if not (same_config and same_grid):
        differing = [] if same_grid else ["grid"]
        if not same_config:
            keys = _differences(_comparable(found["config"]), description["config"])
            differing.insert(0, f"config ({', '.join(keys)})")
        raise SweepError(
            f"--sweep-dir {sweep_dir} holds another sweep ({SWEEP_FILE} differs in "
            f"{' and '.join(differing)}); use another --sweep-dir, or --force to run this sweep "
            "there (its trials whose config differs are then trained again)")


def _first_line(error: BaseException | str) -> str:
    """The first line of an error's message; file-system errors name their file first."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, BaseException):
        text = str(error) or type(error).__name__
    else:
        text = error
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())


def _train_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one trial (train, retry, retrain or resume); its status, never an expected error."""
    from stablernn.experiments.training import resume, train

    def quiet(message: str) -> None:
        pass

    try:
        if spec["action"] == "resume":
            resume(spec["run_dir"], progress=False, log=quiet)
        else:
            train(TrainConfig.from_dict(spec["config"]), run_dir=spec["run_dir"], progress=False,
                  log=quiet, force=spec["action"] != "train")
    except EXPECTED_ERRORS as error:
        return {"status": FAILED, "error": _first_line(error)}
    return {"status": FINISHED, "error": ""}


def _run_trial(config: dict[str, Any]) -> None:
    """Ray Tune trainable: one ordinary run; reports its status (the driver reads the figures
    from the run's results.json)."""
    from ray import tune

    tune.report(_train_trial(config["trial"]))


# Tune's classic reporter (silent at verbose 0) instead of its tables; Ctrl-C as a plain
# KeyboardInterrupt (Tune's own handler would wait for trials to report and then return)
RAY_ENVIRONMENT = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_SIGINT_HANDLER": "1"}


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """No Ray log lines, warnings or experiment tables on the normal path: Ray's loggers show
    errors only (an unexpected error in a trial keeps its traceback)."""
    logger = logging.getLogger("ray")
    level = logger.level
    saved = {name: os.environ.get(name) for name in RAY_ENVIRONMENT}
    logger.setLevel(logging.ERROR)
    os.environ.update(RAY_ENVIRONMENT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            yield
    finally:
        logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_on_ray(pending: list[Trial], sweep_dir: Path, address: str | None,
                cpus_per_trial: float, gpus_per_trial: float) -> dict[str, dict[str, Any]]:
    """Run ``pending`` on Ray Tune; {trial name: {"status", "error"}}."""
    import ray
    from ray import tune

    outcomes: dict[str, dict[str, Any]] = {}
    with _quiet_ray():
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        try:
            trainable = tune.with_resources(_run_trial,
                                            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([trial.spec() for trial in pending])},
                tune_config=tune.TuneConfig(trial_name_creator=_ray_trial_name,
                                            trial_dirname_creator=_ray_trial_dirname),
                run_config=tune.RunConfig(
                    storage_path=str(sweep_dir / "ray"),
                    name=f"tune-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}", verbose=0),
            )
            for result in tuner.fit():
                spec = (result.config or {}).get("trial") or {}
                if "name" not in spec:
                    continue
                if result.error is not None:
                    error = getattr(result.error, "cause", None) or result.error
                    outcomes[spec["name"]] = {
                        "status": FAILED, "error": f"{type(error).__name__}: {_first_line(error)}"}
                elif result.metrics and "status" in result.metrics:
                    outcomes[spec["name"]] = {"status": result.metrics["status"],
                                              "error": result.metrics.get("error") or ""}
        finally:
            if started:
                ray.shutdown()
    return outcomes


def _ray_trial_name(trial) -> str:
    return trial.config["trial"]["name"][:100]


def _ray_trial_dirname(trial) -> str:
    """Ray's own folder of a trial (under SWEEP_DIR/ray): the trial's name, plain characters."""
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in _ray_trial_name(trial))
    return f"{name}-{trial.trial_id}"


def run_sweep(config: TrainConfig, sweep_dir: str | Path, seeds: list[int],
              grid: dict[str, list[Any]] | None = None, address: str | None = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
              log=print, force: bool = False) -> list[dict[str, Any]]:
    """Run every trial on Ray Tune (a local Ray by default, a cluster at ``address``) and
    write ``trials.csv``, ``summary.csv`` and ``summary.md`` into ``sweep_dir``.

    Before Ray starts: the sweep directory is checked writable, every trial's config is
    validated, trial directories are matched with what they hold (finished trials are skipped,
    interrupted ones resumed, runs of another config refused unless ``force``) and, on a local
    Ray, the data sets of the trials to run are loaded once. If any trial fails, the tables
    are written and :class:`SweepTrialsFailed` (a ValueError) is raised after the summary is
    logged."""
    check_writable_directory(sweep_dir, "--sweep-dir")
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise ImportError("stablernn sweep needs Ray Tune: pip install 'stablernn[sweep]'") from None
    grid = grid or {}
    sweep_dir = Path(sweep_dir).resolve()
    config = _absolute_data_dir(config)
    description = {"config": _comparable(config.to_dict()),
                   "grid": json.loads(json.dumps(grid)), "seeds": list(seeds)}
    _check_sweep_file(sweep_dir, description, force)
    trials = plan_trials(config, grid, seeds, sweep_dir, force)
    pending = [trial for trial in trials if trial.action != "skip"]
    if address is None:  # on a cluster the data is where the workers are, not necessarily here
        check_data(pending)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(description, indent=2) + "\n")
    counts = {action: sum(trial.action == action for trial in trials)
              for action in ("train", "retry", "retrain", "resume", "skip")}
    shown = ", ".join(f"{count} to {action}" for action, count in counts.items()
                      if count and action != "skip")
    if counts["skip"]:
        shown = ", ".join(filter(None, [shown, f"{counts['skip']} finished earlier (kept)"]))
    log(f"{len(trials)} trial(s): {shown}; sweep directory {sweep_dir}")
    outcomes = {}
    if pending:
        log(f"running {len(pending)} trial(s) on Ray ({address or 'local'})")
        try:
            outcomes = _run_on_ray(pending, sweep_dir, address, cpus_per_trial, gpus_per_trial)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                "interrupted; finished trials are kept and interrupted ones continue from their "
                "last finished epoch: run the same command again") from None
    rows = [_row(trial, outcomes) for trial in trials]
    summary = summarize(rows, list(grid))
    write_tables(sweep_dir, rows, summary, list(grid))
    log((sweep_dir / "summary.md").read_text().rstrip("\n"))
    failed = [row for row in rows if row["status"] == FAILED]
    if failed:
        first = failed[0]
        others = "the other trials are summarised" if len(failed) < len(rows) \
            else "the trials are listed"
        raise SweepTrialsFailed(
            f"{len(failed)} of {len(rows)} sweep trial(s) failed; first {first['run_dir']}: "
            f"{first['error']}\n{others} in {sweep_dir / 'summary.md'}; rerunning the same "
            "command retries the failed trials and keeps the finished ones", failed)
    return summary


def _row(trial: Trial, outcomes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trials.csv row: setting, seed, run directory, status, error, test figures."""
    row = {**trial.setting, "seed": trial.seed, "run_dir": str(trial.run_dir)}
    if trial.action == "skip":
        outcome = {"status": SKIPPED, "error": ""}
    else:
        outcome = outcomes.get(trial.name) or {
            "status": FAILED, "error": "the trial stopped before it reported (interrupted?)"}
    results = _read_results(trial.run_dir) if outcome["status"] != FAILED else None
    if outcome["status"] != FAILED and results is None:
        outcome = {"status": FAILED, "error": f"no readable results.json in {trial.run_dir}"}
    row.update(outcome)
    if results is not None:
        row.update({key: results[key] for key in SUMMARY_METRICS if key in results})
    return row


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Mean, min, max and n of each test figure per setting, over the trials that did not fail
    (``failed``: how many did, when any)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(json.dumps([row[key] for key in keys]), []).append(row)
    summary = []
    for members in groups.values():
        finished = [member for member in members if member.get("status") != FAILED]
        entry = {key: members[0][key] for key in keys}
        entry["n"] = len(finished)
        if len(finished) < len(members):
            entry["failed"] = len(members) - len(finished)
        for metric in SUMMARY_METRICS:
            values = [member[metric] for member in finished if metric in member]
            if values:
                entry[f"{metric}_mean"] = statistics.fmean(values)
                entry[f"{metric}_min"] = min(values)
                entry[f"{metric}_max"] = max(values)
        summary.append(entry)
    return summary


def write_tables(sweep_dir: Path, rows, summary, keys: list[str]) -> None:
    """``trials.csv`` (every trial with its status), ``summary.csv`` and ``summary.md`` (the
    table of settings, then the failed trials with their errors)."""
    for name, table in (("trials.csv", rows), ("summary.csv", summary)):
        fields = list(dict.fromkeys(key for row in table for key in row))
        with open(sweep_dir / name, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    metric = next((m for m in SUMMARY_METRICS
                   if any(f"{m}_mean" in entry for entry in summary)), None)
    lines = [f"| {' | '.join(keys or ['setting'])} | {metric or 'test figure'} mean (n) [min] "
             "| max |",
             f"|{'---|' * (max(len(keys), 1) + 2)}"]
    for entry in summary:
        setting = " | ".join(str(entry[key]) for key in keys) or "config"
        failed = f", {entry['failed']} failed" if entry.get("failed") else ""
        if metric is None or f"{metric}_mean" not in entry:
            lines.append(f"| {setting} | - ({entry['n']}{failed}) | - |")
            continue
        lines.append(f"| {setting} | {entry[f'{metric}_mean']:.4f} ({entry['n']}{failed}) "
                     f"[{entry[f'{metric}_min']:.4f}] | {entry[f'{metric}_max']:.4f} |")
    failed_rows = [row for row in rows if row.get("status") == FAILED]
    if failed_rows:
        lines += ["", f"Failed trials ({len(failed_rows)} of {len(rows)}; not in the table above; "
                      "rerunning the sweep retries them):", ""]
        lines += [f"- `{Path(row['run_dir']).name}/`: {row['error']}" for row in failed_rows]
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
