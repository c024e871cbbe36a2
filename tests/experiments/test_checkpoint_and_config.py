"""Checkpoints are atomic and safe to load; configs validate and name the bad key."""

import json
import os
import signal

import pytest
import torch

from stablernn.experiments import CheckpointError, TrainConfig, load_checkpoint, save_checkpoint
from stablernn.experiments.output import interrupts_deferred


def test_checkpoint_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"model_state": {"w": torch.ones(2)}, "epoch": 3})
    payload = load_checkpoint(path)
    assert payload["epoch"] == 3 and torch.equal(payload["model_state"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})  # not serialisable
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write(tmp_path, monkeypatch):
    """Ctrl-C inside ``torch.save`` used to surface as a RuntimeError from its zip writer (seen
    in CI: exit status 1 and a traceback instead of 130 and "interrupted after epoch N"). The
    write now completes, then the KeyboardInterrupt is raised."""
    real_save = torch.save

    def interrupted_save(obj, stream, **kwargs):
        stream.write(b"")  # the write has begun
        os.kill(os.getpid(), signal.SIGINT)
        real_save(obj, stream, **kwargs)

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1})
    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2, "weights": torch.randn(300, 300)})
    monkeypatch.undo()
    saved = load_checkpoint(path)
    assert saved["epoch"] == 2 and saved["weights"].shape == (300, 300)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_deferred_interrupts_nest_and_arrive_once_at_the_outer_end():
    order = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            with interrupts_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                order.append("inner")
            order.append("outer")  # the inner block's end passed the signal to the outer block
    assert order == ["inner", "outer"]
    with interrupts_deferred():  # no signal: nothing raised
        order.append("quiet")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    path = save_checkpoint(tmp_path / "c.pt", {"model_state": {"w": torch.randn(100, 100)}})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt could not be read"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state": 1}, foreign)
    with pytest.raises(CheckpointError, match="not a stablernn checkpoint"):
        load_checkpoint(foreign)


def test_loading_never_runs_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "stablernn.checkpoint", "version": 1, "x": Payload()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_config_validation_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="config epochs must be an integer >= 1, got 0"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(ValueError, match="config model must be one of"):
        TrainConfig(model="nope").validate()
    with pytest.raises(ValueError, match="config learning_rate must be a finite number > 0"):
        TrainConfig(learning_rate=-1).validate()
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"epochs": 2, "learnin_rate": 0.1}))
    with pytest.raises(ValueError, match="c.json: unknown key.*learnin_rate"):
        TrainConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        TrainConfig.load(path)
    with pytest.raises(ValueError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.json")


def test_resolved_config_fills_model_defaults_and_keeps_overrides():
    config = TrainConfig(model_options={"step_size": 0.05}).resolved()
    assert config.model_options["step_size"] == 0.05
    assert config.model_options["parametrization"] == "contracting"
    assert config.model_options["method"] == "exponential" and "beta_a" not in config.model_options
    paper = TrainConfig(model_options={"parametrization": "paper"}).resolved()
    assert paper.model_options["beta_a"] == 0.75 and paper.model_options["method"] == "euler"
    assert TrainConfig(model="svd-combo").resolved().model_options["method"] == "splitting"
    assert TrainConfig(model="lstm").resolved().model_options == {}
