"""Every shipped config parses, validates and builds its model (no training, no data files)."""

from pathlib import Path

import pytest
import torch

from stablernn.experiments import TrainConfig
from stablernn.models.registry import build_layer

# training configs (configs/ablations holds sweep definitions, checked in test_sweeps.py)
CONFIGS = sorted(path for path in (Path(__file__).parents[2] / "configs").rglob("*.toml")
                 if path.parent.name != "ablations")
# input features per step of each task (the language models embed tokens first)
INPUT_SIZES = {"smnist": 1, "psmnist": 1, "scifar10": 3, "noise-cifar10": 96, "timit": 129}


def test_there_is_a_config_for_every_paper_table_row():
    names = {path.stem for path in CONFIGS}
    for expected in ("smnist-lipschitz-euler-n128", "psmnist-lipschitz-euler-n128",
                     "scifar10-lipschitz-euler-n256", "noise-cifar10-lipschitz-euler-n256",
                     "timit-lipschitz-rk2-n256", "ptb-char-t150-lipschitz", "ptb-word-lipschitz",
                     "psmnist-sparse-combo-16x32", "scifar10-sparse-combo-16x32",
                     "psmnist-sparse-combo-24x32-unconstrained"):
        assert expected in names


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_config_parses_and_builds_its_model(path):
    config = TrainConfig.load(path).resolved()
    assert config.description
    input_size = INPUT_SIZES.get(config.task, config.embedding_size)
    layer = build_layer(config.model, input_size, config.hidden_size, batch_first=True,
                        **config.model_options)
    output, _ = layer(torch.zeros(2, 3, input_size))
    assert output.shape == (2, 3, config.hidden_size)


def test_bad_config_names_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('model = "lipschitz"\nepochs = "ten"\n')
    with pytest.raises(ValueError, match="config epochs must be an integer >= 1, got 'ten'"):
        TrainConfig.load(path)
    path.write_text('task = "digits"\n[task_options]\ndata_dir = "x"\n')
    with pytest.raises(ValueError, match="task_options: task 'digits' has no option"):
        TrainConfig.load(path)
    path.write_text('model = "lipschitz"\nepochs = \n')
    with pytest.raises(ValueError, match="bad.toml is not valid TOML"):
        TrainConfig.load(path)
