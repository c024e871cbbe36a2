"""stablernn analyze and stablernn reproduce: files written, every section, reuse, bad input."""

import json

import pytest

from stablernn.cli import main
from stablernn.experiments.reproduce import CLAIMS

TINY = ["--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "32", "--quiet"]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    assert main(["reproduce", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_reproduce_writes_every_section_with_tables_and_figures(quick_report):
    report = (quick_report / "report.md").read_text()
    written = json.loads((quick_report / "claims.json").read_text())
    claims = written["claims"]
    assert set(claims) == set(CLAIMS)
    assert written["provenance"]["source_hash"] and written["scale"] == "quick"
    for name in CLAIMS:
        if name == "headline":
            assert claims[name]["verdict"] == "informs (no verdict)"
            continue
        assert claims[name]["checks"], f"claim {name} has no check"
        assert claims[name]["verdict"] == "not tested (quick mode)"
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert len(sections) == len(CLAIMS) + 1  # + the summary
    assert "no claim is tested" in report and "| claim | verdict |" in report
    assert "Welch t-test" in report and written["provenance"]["source_hash"] in report
    for figure in ("noise", "alpha", "beta", "modules", "modularity", "sparsity", "magnitude"):
        assert (quick_report / "report-figures" / f"{figure}.png").stat().st_size > 1000
        assert f"report-figures/{figure}.png" in report
    analysis = json.loads(next((quick_report / "runs" / "section7").glob("lipschitz-*"))
                          .joinpath("analysis.json").read_text())
    assert analysis["hessian"]["top_eigenvalues"] and analysis["attacks"]["pgd"]["samples"] > 0
    # the paper's control: a full unconstrained B, and the cascade as its own arm
    control = json.loads((quick_report / "runs" / "feedback" / "unconstrained-full-seed0" /
                          "config.json").read_text())["model_options"]
    assert control["unconstrained"] is True and control["mask"] == "full"


@pytest.mark.slow
def test_rerunning_reuses_runs_of_the_same_code_only(quick_report):
    results = sorted((quick_report / "runs" / "alpha").rglob("results.json"))
    stamps = [path.stat().st_mtime_ns for path in results]
    other = results[0]
    stored = json.loads(other.read_text())
    stored["provenance"]["source_hash"] = "made-by-other-code"
    other.write_text(json.dumps(stored))
    assert main(["reproduce", "--quick", "--out", str(quick_report),
                 "--claims", "alpha"]) == 0
    after = [path.stat().st_mtime_ns for path in results]
    assert after[1:] == stamps[1:]  # reused
    assert after[0] != stamps[0]  # trained again: another code made it
    assert json.loads(other.read_text())["provenance"]["source_hash"] != "made-by-other-code"
    report = (quick_report / "report.md").read_text()
    assert "alpha" in report and "Hessian" not in report


def test_bad_claims_and_scales_are_refused(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path), "--claims", "hessian,flatness"]) == 2
    assert "unknown claim(s) 'flatness'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--out", str(tmp_path), "--scale", "huge"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "lipschitz"
    assert main(["train", *TINY, "--hidden-size", "8", "--run-dir", str(run)]) == 0
    return run


@pytest.mark.slow
def test_analyze_writes_json_and_plot(trained_run, capsys):
    assert main(["analyze", str(trained_run), "--samples", "32", "--hessian-samples", "16",
                 "--trace-samples", "4", "--attack-steps", "2"]) == 0
    result = json.loads((trained_run / "analysis.json").read_text())
    assert result["model"] == "lipschitz" and result["samples"] == 32
    hessian = result["hessian"]
    assert hessian["top_eigenvalues"][0] >= hessian["min_eigenvalue"]
    assert all(name.startswith("rnn.") for name in hessian["parameters"])
    assert result["noise"]["white"][0]["level"] == 0.0
    assert result["noise"]["white"][0]["accuracy"] == pytest.approx(result["clean_accuracy"])
    assert set(result["attacks"]) == {"pgd", "deepfool-l2", "deepfool-linf"}
    assert result["attacks"]["pgd"]["max_perturbation"] <= 0.05 + 1e-6
    assert (trained_run / "analysis_noise.png").stat().st_size > 1000
    assert "analysis.json" in capsys.readouterr().out


def test_analyze_refuses_bad_input(trained_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty)]) == 2
    assert "not a stablernn run directory" in capsys.readouterr().err
    (trained_run / "best.pt").rename(tmp_path / "best.pt")
    try:
        assert main(["analyze", str(trained_run)]) == 2
        assert "has no best.pt" in capsys.readouterr().err
    finally:
        (tmp_path / "best.pt").rename(trained_run / "best.pt")
    assert main(["analyze", str(trained_run), "--pgd-epsilon", "3"]) == 2
    assert "pgd_epsilon must be a number in (0, 1]" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "nowhere")]) == 2
