"""Two-process DDP (gloo, CPU) under torchrun equals one process on the same global batch."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from stablernn.cli import main
from stablernn.experiments import load_checkpoint

pytestmark = pytest.mark.slow  # subprocesses, Ray, torchrun or benchmarks

ARGS = ["--epochs", "2", "--hidden-size", "16", "--max-train-samples", "128",
        "--max-eval-samples", "64", "--batch-size", "32", "--quiet"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_training_equals_single_process(tmp_path):
    single = tmp_path / "single"
    assert main(["train", *ARGS, "--run-dir", str(single)]) == 0

    parallel = tmp_path / "parallel"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "stablernn", "train", *ARGS, "--run-dir", str(parallel)],
        capture_output=True, text=True, env=environment, timeout=300)
    assert launched.returncode == 0, launched.stderr[-3000:]
    # only rank 0 speaks, and DDP has nothing to warn about (gradient strides)
    assert launched.stdout.count("model lipschitz (hidden 16") == 1, launched.stdout
    assert "Warning" not in launched.stderr, launched.stderr[-3000:]

    one = load_checkpoint(single / "checkpoint.pt")["model_state"]
    two = load_checkpoint(parallel / "checkpoint.pt")["model_state"]
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    results = [json.loads((run / "results.json").read_text()) for run in (single, parallel)]
    assert abs(results[0]["test_loss"] - results[1]["test_loss"]) < 1e-4
