import pytest
import torch

from lenet.errors import ConfigError
from lenet.models import format_table, get_model, layer_table, list_models, model_info


def test_seed_has_the_tutorials_44426_parameters():
    model = get_model("seed")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 44_426


def test_seed_layer_table_matches_the_tutorial_network():
    rows = {r.name: r for r in layer_table(get_model("seed"))}
    assert list(rows) == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]
    assert rows["conv1"].output_shape == (6, 24, 24) and rows["conv1"].params == 156
    assert rows["pool1"].output_shape == (6, 12, 12) and rows["pool1"].params == 0
    assert rows["conv2"].output_shape == (16, 8, 8) and rows["conv2"].params == 2_416
    assert rows["pool2"].output_shape == (16, 4, 4)
    assert [rows[n].params for n in ("fc1", "fc2", "fc3")] == [30_840, 10_164, 850]
    # connections as the paper counts them: every input and bias into every output unit
    assert rows["conv1"].connections == 6 * 24 * 24 * (25 + 1)
    assert rows["fc1"].connections == 120 * (256 + 1)
    text = format_table(get_model("seed"))
    assert "44,426" in text and "6x24x24" in text


def test_seed_state_dict_uses_the_tutorials_names():
    keys = set(get_model("seed").state_dict())
    assert {"conv1.weight", "conv2.bias", "fc1.weight", "fc3.bias"} <= keys


@pytest.mark.parametrize("name", list_models())
def test_every_network_honours_the_io_contract(name):
    model = get_model(name)
    x = torch.rand(3, 1, 28, 28)
    scores = model(x)
    assert scores.shape == (3, 10)
    scores.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'lenet7'; available: .*seed"):
        model_info("lenet7")
