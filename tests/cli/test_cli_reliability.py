"""The command line's error contract, run as a user runs it (a subprocess per failure class).

Every expected failure exits 2, prints no traceback, and names the culprit on the first line of
stderr; nothing finished is lost; Ctrl-C exits 130 with the command that continues the run.
"""

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest
from mnist_files import write_mnist

from stablernn.experiments import load_checkpoint

pytestmark = pytest.mark.slow  # subprocesses, Ray, torchrun or benchmarks

TINY = ["--epochs", "1", "--max-train-samples", "32", "--max-eval-samples", "16",
        "--hidden-size", "8", "--quiet"]


def stablernn(*args, env=None, cwd=None, timeout=300):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    environment.pop("STABLERNN_DATA_DIR", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "stablernn", *map(str, args)],
                          capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=timeout)


def assert_clean_failure(result, *culprits, status=2):
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    for culprit in culprits:
        assert culprit in first, first


@contextlib.contextmanager
def read_only(directory):
    """A directory nobody can write, root included (``chattr +i``; mode bits do not stop root)."""
    if os.geteuid() != 0:
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield directory
        finally:
            directory.chmod(stat.S_IRWXU)
        return
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: cannot make a "
                    "directory read-only")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished Lipschitz run (the runs below copy it instead of training again)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = stablernn("train", *TINY, "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def copy_of(run_dir, tmp_path, name="run"):
    return shutil.copytree(run_dir, tmp_path / name)


def test_read_only_output_locations_fail_before_any_work(tmp_path, finished_run):
    locked = tmp_path / "locked"
    locked.mkdir()
    run = copy_of(finished_run, tmp_path)
    with read_only(locked):
        train = stablernn("train", *TINY, "--run-dir", locked / "run")
        assert_clean_failure(train, "--run-dir", str(locked / "run"), "expected a directory")
        with read_only(run):
            before = (run / "certificate.json").read_bytes()
            certify = stablernn("certify", run)
            assert_clean_failure(certify, str(run))
            analyze = stablernn("analyze", run, "--no-hessian", "--no-attacks")
            assert_clean_failure(analyze, "RUN_DIR", str(run))
            assert (run / "certificate.json").read_bytes() == before
            assert not (run / "analysis.json").exists()


def test_run_dir_that_is_a_file(tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert_clean_failure(stablernn("train", *TINY, "--run-dir", file), "--run-dir", "is a file")
    assert_clean_failure(stablernn("train", *TINY, "--run-dir", file / "run"), "--run-dir",
                         "is a file")
    assert file.read_text() == "mine"


@pytest.mark.parametrize("config, culprit", [
    ("grad_clip = nan\n", "grad_clip"),
    ("learning_rate = inf\n", "learning_rate"),
    ('task_options = {split_seed = "x"}\n', "split_seed"),
    ("epochs = true\n", "epochs"),
    ('seed = "1"\n', "seed"),
])
def test_non_finite_and_wrongly_typed_config_values(tmp_path, config, culprit):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    result = stablernn("train", "--config", path, "--run-dir", tmp_path / "run")
    assert_clean_failure(result, str(path), culprit)
    assert not (tmp_path / "run").exists()


def test_infinite_learning_rate_flag_leaves_no_run_directory(tmp_path):
    result = stablernn("train", *TINY, "--lr", "inf", "--run-dir", tmp_path / "run")
    assert_clean_failure(result, "learning_rate", "inf")
    assert not (tmp_path / "run").exists()


def test_divergence_in_the_first_epoch_removes_the_unstarted_run(tmp_path):
    path = tmp_path / "diverge.toml"
    path.write_text('model_options = {parametrization = "paper", step_size = 1e6}\n'
                    "learning_rate = 1e6\n")
    result = stablernn("train", *TINY, "--config", path, "--run-dir", tmp_path / "run")
    assert_clean_failure(result, "training loss became")
    assert not (tmp_path / "run").exists()


def test_foreign_checkpoint_is_refused_and_the_certificate_kept(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    other = tmp_path / "other"
    trained = stablernn("train", *TINY, "--model", "sparse-combo", "--hidden-size", "16",
                        "--option", "num_subnetworks=4", "--run-dir", other)
    assert trained.returncode == 0, trained.stderr
    shutil.copy(other / "best.pt", run / "best.pt")
    before = (run / "certificate.json").read_bytes()
    for verb in (["certify", run], ["certify", run / "best.pt"], ["eval", run],
                 ["analyze", run, "--no-hessian", "--no-attacks"]):
        assert_clean_failure(stablernn(*verb), str(run / "best.pt"), "does not belong to this run")
    assert (run / "certificate.json").read_bytes() == before


def test_empty_and_damaged_checkpoints_are_refused(tmp_path, finished_run):
    from stablernn.experiments.checkpoint import save_checkpoint

    run = copy_of(finished_run, tmp_path)
    save_checkpoint(run / "checkpoint.pt", {})
    assert_clean_failure(stablernn("train", "--resume", run), str(run / "checkpoint.pt"), "lacks")
    payload = load_checkpoint(finished_run / "best.pt")
    payload["config"]["hidden_size"] = 9  # edited: no longer what the identity records
    save_checkpoint(run / "best.pt", payload)
    assert_clean_failure(stablernn("eval", run), str(run / "best.pt"))


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    for flags in (["--seed", "0"], ["--force"], ["--epochs", "3"], ["--dry-run"]):
        result = stablernn("train", "--resume", run, *flags)
        assert_clean_failure(result, "--resume", flags[0])


def test_force_removes_every_file_of_the_previous_run(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    (run / "analysis.json").write_text("{}")
    (run / "analysis_noise.png").write_bytes(b"png")
    (run / "notes.txt").write_text("the user's own file")
    result = stablernn("train", *TINY, "--model", "gru", "--run-dir", run, "--force")
    assert result.returncode == 0, result.stderr
    assert not (run / "analysis.json").exists() and not (run / "analysis_noise.png").exists()
    assert (run / "notes.txt").read_text() == "the user's own file"
    assert json.loads((run / "config.json").read_text())["model"] == "gru"
    assert load_checkpoint(run / "best.pt")["config"]["model"] == "gru"


def test_runs_keep_working_when_their_data_moves(tmp_path):
    data = tmp_path / "data"
    write_mnist(data, gz=False)
    config = tmp_path / "smnist.toml"
    config.write_text('task = "smnist"\ntask_options = {validation = 10}\n')
    relative = os.path.relpath(data, tmp_path)
    trained = stablernn("train", *TINY, "--config", config, "--data-dir", relative,
                        "--run-dir", "run", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["task_options"]
    assert stored["data_dir"] == str(data)  # stored absolute
    moved = tmp_path / "moved"
    data.rename(moved)
    failed = stablernn("eval", tmp_path / "run")
    assert_clean_failure(failed, "smnist", str(data))
    assert "--data-dir" in failed.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for result in (stablernn("eval", tmp_path / "run", "--data-dir", moved),
                   stablernn("eval", tmp_path / "run", env={"STABLERNN_DATA_DIR": str(moved)})):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["test_loss"] == pytest.approx(results["test_loss"])
    analyzed = stablernn("analyze", tmp_path / "run", "--data-dir", moved, "--no-hessian",
                         "--no-attacks", "--samples", "8", "--no-plots")
    assert analyzed.returncode == 0, analyzed.stderr


def test_output_to_a_file_has_no_progress_bar_redraws(tmp_path):
    result = stablernn("train", "--epochs", "3", "--max-train-samples", "256",
                       "--max-eval-samples", "16", "--hidden-size", "8", "--batch-size", "16",
                       "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and len(result.stderr) < 200, result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 3


def test_ctrl_c_keeps_the_finished_epochs_and_says_how_to_continue(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "stablernn", "train", "--epochs", "200", "--hidden-size", "8",
         "--max-train-samples", "128", "--max-eval-samples", "16", "--run-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    saved = load_checkpoint(run / "checkpoint.pt")["epoch"]
    assert saved >= 1
    assert stderr.strip().splitlines()[0] == (
        f"stablernn train: interrupted after epoch {saved} (saved in {run / 'checkpoint.pt'}); "
        f"continue with: stablernn train --resume {run}")


def test_dry_run_checks_everything_and_writes_nothing(tmp_path):
    result = stablernn("train", "--dry-run", "--hidden-size", "8", "--run-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert "trained parameters" in result.stdout and "Certified as it runs" in result.stdout
    assert not (tmp_path / "run").exists()
    missing = stablernn("train", "--dry-run", "--task", "smnist", "--data-dir", tmp_path / "none")
    assert_clean_failure(missing, "smnist", str(tmp_path / "none"))


def test_analyze_without_matplotlib_keeps_its_results(tmp_path, finished_run):
    run = copy_of(finished_run, tmp_path)
    blocker = tmp_path / "no-matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is blocked here')\n")
    result = stablernn("analyze", run, "--no-hessian", "--no-attacks", "--samples", "8",
                       env={"PYTHONPATH": str(blocker.parent)})
    assert result.returncode == 0, result.stderr
    assert "matplotlib not installed" in result.stdout
    assert "clean_accuracy" in json.loads((run / "analysis.json").read_text())
    assert not (run / "analysis_noise.png").exists()


def test_run_files_are_world_readable_like_any_other_file(finished_run):
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in finished_run.iterdir()}
    assert modes["checkpoint.pt"] == modes["config.json"] == modes["best.pt"]
