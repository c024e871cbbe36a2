"""Runs survive interruption, never overwrite each other, and train every kind of task."""

import csv
import json
import subprocess
import sys
import textwrap

import pytest

from stablernn.cli import main

TINY = ["--hidden-size", "12", "--max-train-samples", "96", "--max-eval-samples", "48",
        "--batch-size", "16", "--quiet"]


def rows(run_dir):
    with open(run_dir / "metrics.csv") as stream:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(stream)]


@pytest.mark.slow
def test_killed_then_resumed_run_equals_uninterrupted_run(tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", "--epochs", "3", *TINY, "--run-dir", str(reference)]) == 0

    interrupted = tmp_path / "interrupted"
    # The process dies abruptly (os._exit, no cleanup) in the middle of epoch 2 (batch 9 of 12).
    script = textwrap.dedent(f"""
        import os, torch
        from stablernn.cli import main
        steps = {{"count": 0}}
        original = torch.optim.Adam.step
        def step(self, *args, **kwargs):
            steps["count"] += 1
            if steps["count"] == 9:
                os._exit(137)
            return original(self, *args, **kwargs)
        torch.optim.Adam.step = step
        main(["train", "--epochs", "3", *{TINY!r}, "--run-dir", {str(interrupted)!r}])
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 137, killed.stderr
    assert len(rows(interrupted)) == 1  # only epoch 1 was finished

    assert main(["train", "--resume", str(interrupted), "--quiet"]) == 0
    assert rows(interrupted) == rows(reference)
    expected = json.loads((reference / "results.json").read_text())
    resumed = json.loads((interrupted / "results.json").read_text())
    for key in ("test_accuracy", "test_loss", "best_epoch"):
        assert resumed[key] == expected[key]


def test_existing_run_is_not_overwritten_without_force(tmp_path, capsys):
    assert main(["train", "--epochs", "1", *TINY, "--run-dir", str(tmp_path)]) == 0
    assert main(["train", "--epochs", "1", *TINY, "--run-dir", str(tmp_path)]) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", *TINY, "--run-dir", str(tmp_path), "--force"]) == 0


def test_resume_refuses_changes_and_non_runs(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "is not a stablernn run directory" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--epochs", "5"]) == 2
    assert "remove --epochs" in capsys.readouterr().err
    assert main(["train", "--epochs", "1", *TINY, "--run-dir", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    config["learning_rate"] = 0.5
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert main(["train", "--resume", str(tmp_path), "--quiet"]) == 2
    assert "differing in learning_rate (another run's checkpoint, or a config changed" in \
        capsys.readouterr().err


def test_eval_reports_the_test_figures_of_the_run(tmp_path, capsys):
    assert main(["train", "--epochs", "2", *TINY, "--run-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path)]) == 0
    reported = json.loads(capsys.readouterr().out)
    results = json.loads((tmp_path / "results.json").read_text())
    assert reported["test_accuracy"] == pytest.approx(results["test_accuracy"])
    assert reported["test_loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    assert main(["eval", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("task,options", [
    ("adding", ["--option", "step_size=0.5"]),
    ("copy", []),
])
def test_generated_memory_tasks_train(task, options, tmp_path):
    args = ["train", "--task", task, "--epochs", "1", *TINY, *options, "--run-dir", str(tmp_path)]
    config = {"adding": {"length": 20}, "copy": {"delay": 5, "copy_length": 3}}[task]
    path = tmp_path.parent / f"{task}.json"
    path.write_text(json.dumps({"task": task, "task_options": config}))
    assert main([*args, "--config", str(path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test_loss"] > 0
    assert ("test_accuracy" in results) == (task == "copy")


def test_language_model_trains_and_reports_bits_per_character(tmp_path):
    data = tmp_path / "ptb"
    data.mkdir()
    text = "the cat sat on the mat\nthe dog sat on the log\n" * 40
    for split in ("train", "valid", "test"):
        (data / f"ptb.char.{split}.txt").write_text(
            " ".join("_" if c == " " else c for c in text.replace("\n", " ")) + "\n")
        (data / f"ptb.{split}.txt").write_text(text)
    path = tmp_path / "lm.toml"
    path.write_text('task = "ptb-char"\n[task_options]\nsequence_length = 20\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(path), "--data-dir", str(data), "--epochs", "1",
                 "--hidden-size", "12", "--quiet", "--run-dir", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["test_bits_per_character"] == pytest.approx(results["test_loss"] / 0.6931471805599453)


def test_missing_data_files_explain_themselves(tmp_path, capsys):
    assert main(["train", "--task", "psmnist", "--data-dir", str(tmp_path), "--quiet",
                 "--run-dir", str(tmp_path / "run")]) == 2
    message = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in message and str(tmp_path) in message
    assert not (tmp_path / "run").exists()  # nothing written before the data is there


def test_tensorboard_event_files_when_asked(tmp_path):
    pytest.importorskip("tensorboard")
    config = tmp_path / "tb.json"
    config.write_text(json.dumps({"tensorboard": True}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--epochs", "2", *TINY, "--run-dir", str(run)]) == 0
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
