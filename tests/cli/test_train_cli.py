"""The main job end to end on a tiny budget, through the command line."""

import csv
import json

import pytest

from stablernn.cli import main
from stablernn.experiments import load_checkpoint


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    status = main(["train", "--epochs", "2", "--max-train-samples", "128",
                   "--max-eval-samples", "64", "--hidden-size", "16", "--run-dir", str(run_dir)])
    assert status == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "lipschitz" and config["model_options"]["step_size"] == 0.3
    rows = list(csv.DictReader(open(run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"]) * 1.5
    results = json.loads((run_dir / "results.json").read_text())
    assert f"test accuracy {results['test_accuracy']:.4f}" in printed
    assert results["test_samples"] == 64 and results["provenance"]["source_hash"]
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["epoch"] == 2 and "cell.param_a.free" in "".join(checkpoint["model_state"])


@pytest.mark.slow
def test_training_learns_on_digits(tmp_path):
    """A short real run must beat chance by a wide margin (10 classes: chance is 0.1)."""
    status = main(["train", "--epochs", "8", "--hidden-size", "32", "--lr", "0.01",
                   "--quiet", "--run-dir", str(tmp_path)])
    assert status == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_accuracy"] > 0.5


@pytest.mark.parametrize("model", ["antisymmetric", "ode-rnn", "lstm", "gru"])
def test_baselines_train_through_the_same_job(model, tmp_path):
    status = main(["train", "--model", model, "--epochs", "1", "--max-train-samples", "64",
                   "--max-eval-samples", "32", "--hidden-size", "8", "--quiet",
                   "--run-dir", str(tmp_path)])
    assert status == 0
    assert json.loads((tmp_path / "config.json").read_text())["model"] == model


def test_seed_changes_initialization_and_repeats_exactly(tmp_path):
    def final_state(seed, name):
        main(["train", "--epochs", "1", "--max-train-samples", "32", "--max-eval-samples", "16",
              "--hidden-size", "8", "--seed", str(seed), "--quiet", "--run-dir", str(tmp_path / name)])
        return load_checkpoint(tmp_path / name / "checkpoint.pt")["model_state"]

    first, again, other = final_state(1, "a"), final_state(1, "b"), final_state(2, "c")
    key = "rnn.cell.param_w.inner.free"
    assert (first[key] == again[key]).all()
    assert not (first[key] == other[key]).all()


def test_cli_errors_exit_2_with_message(tmp_path, capsys):
    assert main(["train", "--epochs", "0", "--run-dir", str(tmp_path)]) == 2
    assert "epochs must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["train", "--option", "beta_a=2", "--run-dir", str(tmp_path)]) == 2
    assert "beta must be a number in [0, 1], got 2" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--option", "nokey"]) == 2
    assert "--option expects KEY=VALUE" in capsys.readouterr().err
