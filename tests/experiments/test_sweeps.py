"""Sweeps: grids parse and validate early; a real local Ray run of two tiny trials."""

import csv
import json

import pytest

from stablernn.cli import main
from stablernn.experiments import TrainConfig
from stablernn.experiments.sweeps import apply_setting, parse_grid, plan, summarize


def test_grid_parsing_and_dotted_keys():
    grid = parse_grid(["hidden_size=8,16", "model_options.beta_a=0.7,0.8", "task=digits"])
    assert grid == {"hidden_size": [8, 16], "model_options.beta_a": [0.7, 0.8], "task": ["digits"]}
    config = apply_setting(TrainConfig(), {"model_options.beta_a": 0.8, "seed": 3})
    assert config.model_options == {"beta_a": 0.8} and config.seed == 3
    assert len(plan(TrainConfig(), grid, [0, 1, 2])) == 12


def test_bad_grid_fails_before_anything_runs():
    with pytest.raises(ValueError, match="--grid expects KEY=V1,V2"):
        parse_grid(["hidden_size"])
    with pytest.raises(ValueError, match="config epochs must be an integer >= 1"):
        plan(TrainConfig(), {"epochs": [0]}, [0])
    with pytest.raises(ValueError, match="unknown key"):
        plan(TrainConfig(), {"epochz": [1]}, [0])


def test_summary_has_mean_min_max_per_setting():
    rows = [{"hidden_size": 8, "seed": s, "test_accuracy": a} for s, a in enumerate([0.5, 0.7])]
    rows.append({"hidden_size": 16, "seed": 0, "test_accuracy": 0.9})
    summary = summarize(rows, ["hidden_size"])
    assert summary[0] == {"hidden_size": 8, "n": 2, "test_accuracy_mean": pytest.approx(0.6),
                          "test_accuracy_min": 0.5, "test_accuracy_max": 0.7}
    assert summary[1]["n"] == 1


def test_two_trial_local_ray_sweep(tmp_path):
    pytest.importorskip("ray.tune")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"epochs": 1, "hidden_size": 8, "max_train_samples": 64,
                                  "max_eval_samples": 32, "batch_size": 32}))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "--config", str(config), "--seeds", "2", "--sweep-dir",
                 str(sweep_dir)]) == 0
    trials = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert sorted(int(t["seed"]) for t in trials) == [0, 1]
    for trial in trials:  # each trial is an ordinary run directory
        results = json.loads((tmp_path / "sweep" / trial["run_dir"].split("/")[-1] /
                              "results.json").read_text())
        assert float(trial["test_accuracy"]) == pytest.approx(results["test_accuracy"])
    summary = (sweep_dir / "summary.md").read_text()
    assert "(2)" in summary


def test_sweep_files_tie_keys_and_every_ablation_file_plans(tmp_path):
    from pathlib import Path

    from stablernn.experiments.sweeps import load_sweep_file

    ablations = Path(__file__).resolve().parents[2] / "configs" / "ablations"
    files = sorted(ablations.glob("*.toml"))
    assert len(files) >= 8
    for path in files:
        config, grid = load_sweep_file(path)
        trials = plan(config, grid, [0, 1])
        assert len(trials) == 2 * len(next(iter(grid.values())))
    config, grid = load_sweep_file(ablations / "sparse-combo-modules.toml")
    setting = apply_setting(config, plan(config, grid, [0])[2]["setting"])
    assert setting.hidden_size == 128 and setting.model_options["num_subnetworks"] == 4
    config, grid = load_sweep_file(ablations / "lipschitz-beta-smnist.toml")
    tied = apply_setting(config, plan(config, grid, [0])[0]["setting"]).model_options
    assert tied["beta_a"] == tied["beta_w"] == 0.5
    with pytest.raises(ValueError, match="ties 2 keys"):
        apply_setting(config, {"model_options.beta_a,model_options.beta_w": 0.5})
    bad = tmp_path / "bad.toml"
    bad.write_text('config = "x.toml"\nseeds = 3\n')
    with pytest.raises(ValueError, match="unknown key"):
        load_sweep_file(bad)
    bad.write_text("[grid]\n")
    with pytest.raises(ValueError, match=r"needs a \[grid\] table"):
        load_sweep_file(bad)
