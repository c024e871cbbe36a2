"""stablernn certify on trained runs and on bad files; the main job ends with a certificate."""

import json

import pytest

from stablernn.cli import main

TINY = ["--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "32", "--quiet"]


@pytest.fixture(scope="module")
def lipschitz_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lipschitz"
    assert main(["train", *TINY, "--hidden-size", "16", "--run-dir", str(run)]) == 0
    return run


@pytest.mark.slow
def test_main_job_prints_and_writes_the_as_run_certificate(tmp_path, capsys):
    run = tmp_path / "main"
    assert main(["train", *TINY[:-1], "--hidden-size", "16", "--run-dir", str(run)]) == 0
    assert "Certified as it runs (step 0.3, exponential)" in capsys.readouterr().out
    certificate = json.loads((run / "certificate.json").read_text())
    assert certificate["contracting"] is True and certificate["contracting_as_run"] is True
    assert certificate["method"] == "exponential" and certificate["step_size"] == 0.3
    assert 0 < certificate["step_factor"] < 1 and certificate["metric"]["size"] == 16


def test_paper_setting_exits_1_with_the_reason(tmp_path, capsys):
    run = tmp_path / "paper"
    assert main(["train", *TINY, "--hidden-size", "16", "--option", "parametrization=paper",
                 "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["certify", str(run), "--no-plots"]) == 1
    assert "Not certified as it runs (step 0.3, euler)" in capsys.readouterr().out


def test_certify_a_trained_run(lipschitz_run, capsys):
    (lipschitz_run / "certificate.json").unlink()
    assert main(["certify", str(lipschitz_run)]) == 0
    printed = capsys.readouterr().out
    assert "Certified as it runs" in printed and "Contracting" in printed
    certificate = json.loads((lipschitz_run / "certificate.json").read_text())
    assert certificate["contracting_as_run"] and "paper 002" in certificate["condition"]


@pytest.mark.slow
def test_certify_a_checkpoint_file_of_a_network_of_networks(tmp_path, capsys):
    run = tmp_path / "svd"
    assert main(["train", "--model", "svd-combo", "--hidden-size", "16", "--option",
                 "num_subnetworks=4", *TINY, "--run-dir", str(run)]) == 0
    assert main(["certify", str(run / "checkpoint.pt")]) == 0
    printed = capsys.readouterr().out
    assert "Corollary 1" in printed and "Certified as it runs (step 0.3, splitting)" in printed
    assert (run / "connectivity.png").exists() and (run / "jacobian_spectrum.png").exists()


def test_not_contracting_exits_1(tmp_path, capsys):
    run = tmp_path / "control"
    assert main(["train", "--model", "sparse-combo", "--hidden-size", "16", "--option",
                 "num_subnetworks=2", "--option", "unconstrained=true", "--option", "density=0.2",
                 *TINY, "--run-dir", str(run)]) == 0
    assert main(["certify", str(run), "--no-plots"]) == 1
    assert "unconstrained" in capsys.readouterr().out


def test_bad_files_exit_2_with_a_clear_message(lipschitz_run, tmp_path, capsys):
    assert main(["certify", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((lipschitz_run / "best.pt").read_bytes()[:500])
    assert main(["certify", str(truncated)]) == 2
    assert "truncated.pt could not be read" in capsys.readouterr().err
    assert main(["certify", str(tmp_path)]) == 2
    assert "not a stablernn run directory" in capsys.readouterr().err


def test_load_run_returns_the_trained_model(lipschitz_run):
    import torch

    import stablernn
    from stablernn.experiments.checkpoint import load_checkpoint

    model = stablernn.load_run(lipschitz_run)
    assert not model.training
    stored = load_checkpoint(lipschitz_run / "best.pt")["model_state"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, stored[name]), name
    assert stablernn.certify(model.rnn).contracting_as_run
    last = stablernn.load_run(lipschitz_run / "checkpoint.pt")
    assert isinstance(last.rnn, stablernn.LipschitzRNN)
    with pytest.raises(ValueError, match="checkpoint must be 'best' or 'last'"):
        stablernn.load_run(lipschitz_run, checkpoint="first")
