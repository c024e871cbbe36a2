"""Repeats and grids on Ray Tune (extra ``sweep``): ``stablernn sweep``.

Each trial is an ordinary run (its own run directory under the sweep directory), so every trial
can be inspected, evaluated, certified or resumed like any run. The summary groups trials by
setting (everything but the seed) and gives mean, min and max of the test figures over seeds,
the form of paper 000 table 1 ("Repeats Mean (n) [Min]").
"""

from __future__ import annotations

import csv
import itertools
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stablernn.experiments.config import TrainConfig

SUMMARY_METRICS = ("test_accuracy", "test_loss", "test_bits_per_character", "test_perplexity")


def parse_grid(entries: list[str]) -> dict[str, list[Any]]:
    """``["hidden_size=64,128", "model_options.density=0.01,0.033"]`` -> {key: [values]}."""
    grid: dict[str, list[Any]] = {}
    for entry in entries:
        key, sep, values = entry.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid expects KEY=V1,V2,... (e.g. hidden_size=64,128), got {entry!r}")
        grid[key] = [_value(text) for text in values.split(",")]
    return grid


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


def apply_setting(config: TrainConfig, setting: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted keys (``model_options.density``) set; validated."""
    values = config.to_dict()
    for key, value in _single_settings(setting):
        head, _, tail = key.partition(".")
        if tail:
            if head not in ("model_options", "task_options"):
                raise ValueError(f"grid key {key!r}: only model_options.X and task_options.X nest")
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


def _run_trial(spec: dict[str, Any]) -> None:
    """Ray Tune trainable: one ordinary training run, reporting its test figures."""
    from ray import tune

    from stablernn.experiments.training import train

    config = apply_setting(TrainConfig.from_dict(spec["config"]),
                           {**spec["setting"], "seed": spec["seed"]})
    run_dir = Path(spec["sweep_dir"]) / _trial_name(spec["setting"], spec["seed"])
    result = train(config, run_dir=run_dir, progress=False, log=lambda message: None, force=True)
    tune.report({f"test_{key}": value for key, value in result.test.items()}
                | {"run_dir": str(run_dir)})


def run_sweep(config: TrainConfig, sweep_dir: str | Path, seeds: list[int],
              grid: dict[str, list[Any]] | None = None, address: str | None = None,
              cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
              log=print) -> list[dict[str, Any]]:
    """Run every trial on Ray Tune (a local Ray by default, a cluster at ``address``) and
    write ``trials.csv``, ``summary.csv`` and ``summary.md`` into ``sweep_dir``."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ImportError("stablernn sweep needs Ray Tune: pip install 'stablernn[sweep]'") from None
    grid = grid or {}
    trials = plan(config, grid, seeds)
    sweep_dir = Path(sweep_dir).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"config": config.to_dict(), "grid": grid, "seeds": seeds}, indent=2) + "\n")
    log(f"{len(trials)} trial(s) on Ray ({address or 'local'}); sweep directory {sweep_dir}")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    trainable = tune.with_resources(_run_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space={"config": config.to_dict(), "sweep_dir": str(sweep_dir),
                     "setting": tune.grid_search([trial["setting"] for trial in
                                                  _unique_settings(trials)]),
                     "seed": tune.grid_search(seeds)},
        run_config=tune.RunConfig(storage_path=str(sweep_dir / "ray"), name="tune", verbose=0),
    )
    results = tuner.fit()
    rows = []
    for result in results:
        if result.error is not None:
            raise RuntimeError(f"a sweep trial failed: {result.error}")
        spec = result.config
        rows.append({**{key: value for key, value in spec["setting"].items()},
                     "seed": spec["seed"], "run_dir": result.metrics["run_dir"],
                     **{key: result.metrics[key] for key in SUMMARY_METRICS
                        if key in result.metrics}})
    summary = summarize(rows, list(grid))
    write_tables(sweep_dir, rows, summary, list(grid))
    log((sweep_dir / "summary.md").read_text())
    return summary


def _unique_settings(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, unique = [], []
    for trial in trials:
        if trial["setting"] not in seen:
            seen.append(trial["setting"])
            unique.append(trial)
    return unique


def summarize(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Mean, min, max and n of each test figure per setting."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in keys), []).append(row)
    summary = []
    for setting, members in groups.items():
        entry = dict(zip(keys, setting), n=len(members))
        for metric in SUMMARY_METRICS:
            values = [member[metric] for member in members if metric in member]
            if values:
                entry[f"{metric}_mean"] = statistics.fmean(values)
                entry[f"{metric}_min"] = min(values)
                entry[f"{metric}_max"] = max(values)
        summary.append(entry)
    return summary


def write_tables(sweep_dir: Path, rows, summary, keys: list[str]) -> None:
    for name, table in (("trials.csv", rows), ("summary.csv", summary)):
        fields = list(dict.fromkeys(key for row in table for key in row))
        with open(sweep_dir / name, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=fields)
            writer.writeheader()
            writer.writerows(table)
    metric = next((m for m in SUMMARY_METRICS if f"{m}_mean" in (summary[0] if summary else {})),
                  None)
    lines = [f"| {' | '.join(keys or ['setting'])} | {metric} mean (n) [min] | max |",
             f"|{'---|' * (max(len(keys), 1) + 2)}"]
    for entry in summary:
        setting = " | ".join(str(entry[key]) for key in keys) or "config"
        if metric is None:
            lines.append(f"| {setting} | - | - |")
            continue
        lines.append(f"| {setting} | {entry[f'{metric}_mean']:.4f} ({entry['n']}) "
                     f"[{entry[f'{metric}_min']:.4f}] | {entry[f'{metric}_max']:.4f} |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
