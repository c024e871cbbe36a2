"""Sweeps: grids parse and validate early; a real local Ray run of two tiny trials; a sweep
survives a diverging trial and a rerun keeps what finished; data and directories are checked
before Ray starts."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stablernn.cli import main
from stablernn.experiments import TrainConfig
from stablernn.experiments.sweeps import (
    FAILED,
    SweepError,
    apply_setting,
    parse_grid,
    parse_overrides,
    plan,
    plan_trials,
    summarize,
    write_tables,
)

# a tiny trial: 2 batches of 16 (so a diverging step shows in the second batch's loss), 1 epoch
TINY = ["--epochs", "1", "--set", "hidden_size=8", "--set", "max_train_samples=32",
        "--set", "max_eval_samples=16", "--set", "batch_size=16"]


def _sweep_command(*args):
    """``stablernn sweep`` in a fresh process, without a data directory in the environment."""
    env = {key: value for key, value in os.environ.items() if key != "STABLERNN_DATA_DIR"}
    return subprocess.run([sys.executable, "-m", "stablernn", "sweep", *args], env=env,
                          capture_output=True, text=True, timeout=600)


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


@pytest.mark.slow
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
    assert [t["status"] for t in trials] == ["finished", "finished"]
    # rerun: both trials are finished, so nothing is trained again (Ray is not even started)
    results_file = Path(trials[0]["run_dir"]) / "results.json"
    written = results_file.stat().st_mtime_ns
    assert main(["sweep", "--config", str(config), "--seeds", "2", "--sweep-dir",
                 str(sweep_dir)]) == 0
    assert results_file.stat().st_mtime_ns == written
    rerun = list(csv.DictReader(open(sweep_dir / "trials.csv")))
    assert [t["status"] for t in rerun] == ["skipped-finished", "skipped-finished"]
    assert [t["test_accuracy"] for t in rerun] == [t["test_accuracy"] for t in trials]


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


def test_overrides_parse_and_failed_trials_are_listed_apart(tmp_path):
    assert parse_overrides(["model_options.step_size=0.1", "learning_rate=1e-2", "task=smnist",
                            "lr_decay_epochs=[10,20]"]) == {
        "model_options.step_size": 0.1, "learning_rate": 0.01, "task": "smnist",
        "lr_decay_epochs": [10, 20]}
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        parse_overrides(["epochs"])
    tied = "model_options.beta_a,model_options.beta_w"
    rows = [{tied: [0.5, 0.5], "seed": 0, "run_dir": "/s/a0", "status": "finished",
             "error": "", "test_accuracy": 0.5},
            {tied: [0.5, 0.5], "seed": 1, "run_dir": "/s/a1", "status": FAILED,
             "error": "training loss became nan in epoch 1", },
            {tied: [0.9, 0.9], "seed": 0, "run_dir": "/s/b0", "status": FAILED,
             "error": "boom"}]
    summary = summarize(rows, [tied])  # tied values (lists) group too
    assert summary[0]["n"] == 1 and summary[0]["failed"] == 1
    assert summary[0]["test_accuracy_mean"] == 0.5
    assert summary[1] == {tied: [0.9, 0.9], "n": 0, "failed": 1}
    write_tables(tmp_path, rows, summary, [tied])
    text = (tmp_path / "summary.md").read_text()
    assert "| [0.5, 0.5] | 0.5000 (1, 1 failed) [0.5000] | 0.5000 |" in text
    assert "| [0.9, 0.9] | - (0, 1 failed) | - |" in text
    assert "- `a1/`: training loss became nan in epoch 1" in text and "- `b0/`: boom" in text


def test_rerun_plan_skips_finished_resumes_interrupted_and_refuses_other_runs(tmp_path):
    """What a rerun does with each trial directory, decided before Ray starts."""
    from stablernn.experiments.training import train

    config = TrainConfig(epochs=1, hidden_size=8, max_train_samples=32, max_eval_samples=16,
                         batch_size=16)
    grid, sweep_dir = {"learning_rate": [0.001]}, tmp_path / "sweep"
    [trial] = plan_trials(config, grid, [0], sweep_dir)
    assert trial.action == "train"
    assert trial.run_dir == sweep_dir.resolve() / "learning_rate=0.001-seed0"
    train(TrainConfig.from_dict(trial.config), run_dir=trial.run_dir, progress=False,
          log=lambda message: None)
    assert plan_trials(config, grid, [0], sweep_dir)[0].action == "skip"
    (trial.run_dir / "results.json").unlink()  # interrupted after its last checkpoint
    assert plan_trials(config, grid, [0], sweep_dir)[0].action == "resume"
    (trial.run_dir / "checkpoint.pt").unlink()  # failed or stopped before its first checkpoint
    assert plan_trials(config, grid, [0], sweep_dir)[0].action == "retry"
    other = apply_setting(config, {"hidden_size": 16})  # the same directory, another config
    with pytest.raises(SweepError, match=r"learning_rate=0\.001-seed0 holds a run of another "
                                         r"config \(differs in hidden_size\)"):
        plan_trials(other, grid, [0], sweep_dir)
    assert plan_trials(other, grid, [0], sweep_dir, force=True)[0].action == "retrain"


def test_sweep_dir_that_is_a_file_or_holds_another_run_exits_2(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    assert main(["sweep", "--sweep-dir", str(a_file)]) == 2
    assert capsys.readouterr().err.startswith(f"stablernn sweep: error: --sweep-dir {a_file} is")
    trial_dir = tmp_path / "sweep" / "seed0"  # the trial of a sweep without a grid
    trial_dir.mkdir(parents=True)
    (trial_dir / "config.json").write_text(json.dumps(
        TrainConfig(hidden_size=8).resolved().to_dict()))
    assert main(["sweep", *TINY, "--sweep-dir", str(tmp_path / "sweep")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"stablernn sweep: error: sweep trial directory {trial_dir.resolve()} "
                            "holds a run of another config")
    assert "--force" in error and not (tmp_path / "sweep" / "ray").exists()


@pytest.mark.slow
def test_missing_data_fails_once_before_ray_starts(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    sweep_dir = tmp_path / "sweep"
    done = _sweep_command("--set", "task=smnist", "--data-dir", str(empty), "--seeds", "3",
                          *TINY, "--sweep-dir", str(sweep_dir))
    assert done.returncode == 2, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith("stablernn sweep: error: MNIST files not found in")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert not sweep_dir.exists()  # nothing written, Ray never started (no SWEEP_DIR/ray)
    # the same message as stablernn train gives
    assert main(["train", "--task", "smnist", "--data-dir", str(empty), "--run-dir",
                 str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.split(": error: ")[1] == first.split(": error: ")[1] + "\n"


@pytest.mark.slow
def test_diverging_trial_is_recorded_and_rerun_keeps_the_finished_one(tmp_path):
    """One grid value diverges (Adam with learning rate 1e30: the second batch's loss is NaN);
    the other is summarised, the sweep exits 2 naming the failed trial, and a rerun retries
    only the failed trial."""
    pytest.importorskip("ray.tune")
    sweep_dir = tmp_path / "sweep"
    command = [*TINY, "--grid", "learning_rate=0.001,1e30", "--sweep-dir", str(sweep_dir)]
    done = _sweep_command(*command)
    assert done.returncode == 2, done.stderr
    failed_dir = sweep_dir / "learning_rate=1e+30-seed0"
    assert done.stderr.startswith(f"stablernn sweep: error: 1 of 2 sweep trial(s) failed; first "
                                  f"{failed_dir}: training loss became nan")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 2
    assert "Token" not in done.stdout + done.stderr  # no Ray chatter
    finished_dir = sweep_dir / "learning_rate=0.001-seed0"
    results = json.loads((finished_dir / "results.json").read_text())
    summary = (sweep_dir / "summary.md").read_text()
    assert f"| 0.001 | {results['test_accuracy']:.4f} (1) " in summary
    assert "| 1e+30 | - (0, 1 failed) | - |" in summary
    assert "- `learning_rate=1e+30-seed0/`: training loss became nan in epoch 1" in summary
    assert summary in done.stdout  # printed before the error
    trials = {row["run_dir"]: row for row in csv.DictReader(open(sweep_dir / "trials.csv"))}
    assert trials[str(finished_dir)]["status"] == "finished"
    assert trials[str(failed_dir)]["status"] == "failed"
    assert trials[str(failed_dir)]["error"].startswith("training loss became nan in epoch 1")
    config = json.loads((finished_dir / "config.json").read_text())  # --epochs and --set arrive
    assert (config["epochs"], config["hidden_size"], config["max_train_samples"],
            config["batch_size"], config["learning_rate"]) == (1, 8, 32, 16, 0.001)

    kept = {path.name: path.stat().st_mtime_ns for path in finished_dir.iterdir()}
    again = _sweep_command(*command)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.splitlines()[0] == done.stderr.splitlines()[0]
    assert "1 to train, 1 finished earlier (kept)" in again.stdout
    assert {path.name: path.stat().st_mtime_ns for path in finished_dir.iterdir()} == kept
    rerun = {row["run_dir"]: row for row in csv.DictReader(open(sweep_dir / "trials.csv"))}
    assert rerun[str(finished_dir)]["status"] == "skipped-finished"
    assert rerun[str(finished_dir)]["test_accuracy"] == trials[str(finished_dir)]["test_accuracy"]
    assert rerun[str(failed_dir)]["status"] == "failed"
