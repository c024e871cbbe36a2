"""Output locations of bench, reproduce and certify: checked before any work (exit 2 naming the
argument, no traceback), results written before optional plots, a compact certificate.json, and
the one-line notice before the native kernels compile."""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stablernn.cli import build_parser, main
from stablernn.contraction import Certificate
from stablernn.experiments import certificates
from stablernn.experiments.certificates import (
    CERTIFICATE_FILE,
    METRIC_FILE,
    read_certificate_metric,
    write_certificate,
)

pytestmark = pytest.mark.slow  # subprocesses, Ray, torchrun or benchmarks

TINY = ["--epochs", "1", "--max-train-samples", "64", "--max-eval-samples", "32", "--quiet"]


def stablernn(*args: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "stablernn", *args], capture_output=True,
                            text=True, timeout=timeout)
    return result, time.perf_counter() - started


def assert_clean_exit_2(result: subprocess.CompletedProcess, verb: str, culprit: str) -> None:
    assert result.returncode == 2, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"stablernn {verb}: error: {culprit}"), result.stderr
    assert "Traceback" not in result.stderr


@contextlib.contextmanager
def immutable(directory: Path):
    """``directory`` unwritable even for root (``chattr +i``); skips where chattr cannot."""
    try:
        subprocess.run(["chattr", "+i", str(directory)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"chattr +i is not available here: {error}")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=False)


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Plots fail as they do where matplotlib is not installed."""
    from stablernn.experiments import plots

    def missing():
        raise ImportError("plots need matplotlib: pip install 'stablernn[plot]'")

    monkeypatch.setattr(plots, "_pyplot", missing)


# ---------------------------------------------------------------------------- bench
def test_bench_json_below_a_file_exits_2_before_timing_anything(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # the default sizes: timing them takes minutes, so a late check would time out
    result, seconds = stablernn("bench", "--json", str(blocker / "bench.json"), timeout=240)
    assert_clean_exit_2(result, "bench", "--json")
    assert "a-file" in result.stderr
    assert "round" not in result.stderr and "Lipschitz RNN" not in result.stderr
    assert result.stdout == ""
    assert seconds < 60, seconds


def test_bench_wording_names_no_issue_numbers(capsys):
    from stablernn.experiments.benchmark import benchmark_script

    script = benchmark_script().read_text()
    assert "issue 6" not in script and "FLOP bound the targets use" in script
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert "--json" in help_text and "issue" not in help_text


# ---------------------------------------------------------------------------- reproduce
def test_reproduce_out_that_is_a_file_exits_2_naming_out(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    result, seconds = stablernn("reproduce", "--quick", "--out", str(out), timeout=120)
    assert_clean_exit_2(result, "reproduce", "--out")
    assert "is a file" in result.stderr and "training" not in result.stdout
    assert out.read_text() == "a file"


def test_reproduce_report_below_a_file_exits_2_before_training(tmp_path, monkeypatch, capsys):
    runner = importlib.import_module("stablernn.experiments.reproduction.runner")

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the output locations were checked")

    monkeypatch.setattr(runner, "train", no_training)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["reproduce", "--quick", "--claims", "modules", "--out", str(tmp_path / "out"),
                 "--report", str(blocker / "report.md")]) == 2
    assert capsys.readouterr().err.startswith("stablernn reproduce: error: --report")


def test_reproduce_out_has_a_default():
    args = build_parser().parse_args(["reproduce", "--quick"])
    assert args.out == "reproduction" and args.scale == "quick"


def test_reproduce_without_matplotlib_writes_results_and_skips_figures(tmp_path, no_matplotlib,
                                                                       capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "--quick", "--claims", "modules", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "matplotlib not installed" in printed
    assert json.loads((out / "claims.json").read_text())["claims"]["modules"]["checks"]
    report = (out / "report.md").read_text()
    assert "Figures were not drawn: matplotlib is not installed." in report
    assert "report-figures/" not in report and "| claim | verdict |" in report
    assert not list(out.glob("report-figures/*.png"))


# ---------------------------------------------------------------------------- certify
@pytest.fixture(scope="module")
def combo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "combo"
    assert main(["train", "--model", "svd-combo", "--hidden-size", "16", "--option",
                 "num_subnetworks=4", *TINY, "--run-dir", str(run)]) == 0
    return run


def test_certify_into_an_immutable_directory_exits_2(combo_run):
    (combo_run / CERTIFICATE_FILE).unlink(missing_ok=True)
    with immutable(combo_run):
        result, _ = stablernn("certify", str(combo_run), timeout=120)
    assert_clean_exit_2(result, "certify", "PATH")
    assert "cannot write" in result.stderr and str(combo_run) in result.stderr
    assert result.stdout == ""
    assert not (combo_run / CERTIFICATE_FILE).exists()


def test_certify_checks_the_directory_before_certifying(combo_run, monkeypatch, capsys):
    def no_certification(layer):
        raise AssertionError("certified before the output directory was checked")

    monkeypatch.setattr(certificates, "certify", no_certification)
    with immutable(combo_run):
        assert main(["certify", str(combo_run / "best.pt")]) == 2
    assert capsys.readouterr().err.startswith("stablernn certify: error: PATH")


def test_certify_without_matplotlib_writes_the_certificate_and_notes_the_plots(
        combo_run, no_matplotlib, capsys):
    for name in (CERTIFICATE_FILE, "connectivity.png", "jacobian_spectrum.png"):
        (combo_run / name).unlink(missing_ok=True)
    assert main(["certify", str(combo_run)]) == 0
    printed = capsys.readouterr().out
    assert "matplotlib not installed: no plots" in printed and "Certified as it runs" in printed
    assert (combo_run / CERTIFICATE_FILE).is_file()
    assert not (combo_run / "connectivity.png").exists()


def test_certify_run_writes_certificate_json_atomically(combo_run, monkeypatch):
    written = []
    original = certificates.write_text_atomic

    def spy(path, text):
        written.append(Path(path).name)
        return original(path, text)

    monkeypatch.setattr(certificates, "write_text_atomic", spy)
    certificates.certify_run(combo_run, plots=False)
    assert written == [CERTIFICATE_FILE]
    assert not list(combo_run.glob(f".{CERTIFICATE_FILE}.*"))  # no temporary file left


# ---------------------------------------------------------------------------- certificate.json
def test_sparse_combo_certificate_json_is_small_and_its_metric_round_trips(tmp_path):
    import stablernn
    from stablernn.models.registry import build_layer

    layer = build_layer("sparse-combo", 1, 256, batch_first=True, num_subnetworks=8,
                        density=0.033, magnitude=1.0, step_size=0.3, method="splitting")
    certificate = stablernn.certify(layer)
    assert certificate.contracting_as_run
    full = json.dumps(certificate.to_dict(), indent=2)  # the API keeps the full matrix
    assert len(json.loads(full)["metric"]) == 256 and len(full) > 500_000
    path = write_certificate(certificate, tmp_path)
    assert path.stat().st_size < 100_000, path.stat().st_size
    stored = json.loads(path.read_text())["metric"]
    assert stored["kind"] == "diagonal" and stored["size"] == 256
    diagonal = np.diag(certificate.metric)
    assert stored["min_eigenvalue"] == diagonal.min() and stored["max_eigenvalue"] == diagonal.max()
    assert stored["condition_number"] == pytest.approx(diagonal.max() / diagonal.min())
    np.testing.assert_array_equal(read_certificate_metric(tmp_path),
                                  np.asarray(certificate.metric, dtype=float))
    assert not (tmp_path / METRIC_FILE).exists()


def test_a_full_metric_goes_to_a_sidecar_npy_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    root = rng.standard_normal((6, 6))
    metric = root @ root.T + 6 * np.eye(6)
    certificate = Certificate(True, "test", metric, 0.5, 0.1, "a full metric")
    write_certificate(certificate, tmp_path)
    stored = json.loads((tmp_path / CERTIFICATE_FILE).read_text())["metric"]
    assert stored["kind"] == "full" and stored["file"] == METRIC_FILE and stored["size"] == 6
    eigenvalues = np.linalg.eigvalsh(metric)
    assert stored["min_eigenvalue"] == pytest.approx(eigenvalues[0])
    assert stored["condition_number"] == pytest.approx(eigenvalues[-1] / eigenvalues[0])
    assert "diagonal" not in stored
    np.testing.assert_array_equal(read_certificate_metric(tmp_path), metric)
    # a later certificate with a diagonal metric does not leave the old matrix beside it
    write_certificate(Certificate(True, "test", np.diag([1.0, 2.0]), 0.5, 0.1, "diag"), tmp_path)
    assert not (tmp_path / METRIC_FILE).exists()
    np.testing.assert_array_equal(read_certificate_metric(tmp_path), np.diag([1.0, 2.0]))
    write_certificate(Certificate.refuse("test", "nothing proven"), tmp_path)
    assert read_certificate_metric(tmp_path) is None


def test_older_certificates_with_nested_lists_still_read(tmp_path):
    certificate = Certificate(True, "test", np.array([[2.0, 0.5], [0.5, 1.0]]), 0.5, 0.1, "old")
    (tmp_path / CERTIFICATE_FILE).write_text(json.dumps(certificate.to_dict()))
    np.testing.assert_array_equal(read_certificate_metric(tmp_path), certificate.metric)


# ---------------------------------------------------------------------------- compile notice
@pytest.fixture
def empty_extension_cache(tmp_path, monkeypatch):
    from stablernn.engine import native

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setitem(native._state, "announced", False)
    return native


def test_compile_notice_is_one_line_once_and_only_before_a_build(empty_extension_cache):
    native = empty_extension_cache
    name = "stablernn_engine_notice_test"
    assert native.is_cached(name) is False
    stream = io.StringIO()
    assert native.announce_compile(name, stream) is True
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.startswith("stablernn: compiling native kernels")
    assert native.build_directory(name) in text
    assert native.announce_compile(name, stream) is False  # once per process
    assert stream.getvalue() == text


def test_no_compile_notice_when_the_build_is_cached(empty_extension_cache, monkeypatch, capsys):
    from torch.utils import cpp_extension

    native = empty_extension_cache
    monkeypatch.setattr(cpp_extension, "load_inline", lambda *args, **kwargs: object())
    name = native.extension_name(["-O3"])
    Path(native.build_directory(name)).mkdir(parents=True)
    Path(native.build_directory(name), f"{name}.so").write_bytes(b"")
    assert native.is_cached(name) is True
    native._compile(["-O3"])
    assert capsys.readouterr().err == ""
    os.remove(Path(native.build_directory(name), f"{name}.so"))
    native._compile(["-O3"])  # not cached: the notice comes before load_inline builds
    assert capsys.readouterr().err.startswith("stablernn: compiling native kernels")
