"""The model registry (lenet.models) and the staged networks (models/staged.py): every network is written down
once, as its stages, and forward, feature maps, SDLM's layers and the summary table all follow from that."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fresh_python import assert_runs_without_importing
from torch import nn

from lenet.errors import ConfigError
from lenet.inference import evaluate, to_input
from lenet.models import MODELS, feature_maps, format_table, get_model, layer_table, list_models
from lenet.models._api import matmul_form, model_entry, register_model
from lenet.models.layers import INIT_RULES, ScaledTanh
from lenet.models.seed_matmul import SeedAsMatmuls
from lenet.models.staged import Stage, StagedNetwork

# (trainable parameters, connections) of `lenet summary`: the tutorial's network and Table/figure 2's.
SUMMARY_TOTALS = {"seed": (44_426, 290_814), "classic": (60_000, 340_908), "modern": (56_714, 5_074_730)}


def _composed(model: StagedNetwork, x: torch.Tensor) -> torch.Tensor:
    """The network's stages applied by hand, one after the other, from its declaration alone."""
    x = model.prepare(x)
    for stage in model.stages:
        x = x.flatten(1) if stage.flatten else x
        x = getattr(model, stage.name)(x)
        x = stage.activation(x) if stage.activation is not None else x
    return x


@pytest.mark.parametrize("name", list_models())
def test_forward_is_the_composition_of_the_declared_stages(name):
    torch.manual_seed(0)
    model = get_model(name).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        scores, maps = model(x), feature_maps(model, x)
        assert torch.equal(scores, _composed(model, x))
    assert list(maps) == ["input", *(stage.name for stage in model.stages)]
    assert torch.equal(maps[model.stages[-1].name], scores)  # the last map is the scores
    assert {name: tuple(value.shape[1:]) for name, value in maps.items() if name != "input"} == {
        stage.name: stage.output for stage in model.stages}
    # every parameter belongs to a stage: nothing is computed outside the declaration
    stage_params = {id(p) for stage in model.stages for p in getattr(model, stage.name).parameters()}
    assert stage_params == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", list_models())
def test_summary_totals_are_unchanged(name):
    params, connections = SUMMARY_TOTALS[name]
    model = get_model(name)
    rows = layer_table(model)
    assert [r.name for r in rows] == [stage.name for stage in model.stages]
    assert sum(r.params for r in rows) == params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(r.connections for r in rows) == connections
    assert f"{params:,}" in format_table(model) and f"{connections:,}" in format_table(model)


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
    assert "6x24x24" in format_table(get_model("seed"))


def test_a_tutorial_state_dict_loads_one_to_one_and_computes_the_tutorials_function():
    shapes = {"conv1.weight": (6, 1, 5, 5), "conv1.bias": (6,), "conv2.weight": (16, 6, 5, 5), "conv2.bias": (16,),
              "fc1.weight": (120, 256), "fc1.bias": (120,), "fc2.weight": (84, 120), "fc2.bias": (84,),
              "fc3.weight": (10, 84), "fc3.bias": (10,)}
    model = get_model("seed")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    torch.manual_seed(1)
    weights = {k: torch.randn(shape) * 0.1 for k, shape in shapes.items()}
    model.load_state_dict(weights, strict=True)
    x = torch.rand(4, 1, 28, 28)
    w = weights.__getitem__
    # the tutorial's forward pass, in its own order
    y = F.avg_pool2d(torch.relu(F.conv2d(x, w("conv1.weight"), w("conv1.bias"))), 2, 2)
    y = F.avg_pool2d(torch.relu(F.conv2d(y, w("conv2.weight"), w("conv2.bias"))), 2, 2).view(-1, 256)
    y = torch.relu(F.linear(y, w("fc1.weight"), w("fc1.bias")))
    y = F.linear(torch.relu(F.linear(y, w("fc2.weight"), w("fc2.bias"))), w("fc3.weight"), w("fc3.bias"))
    with torch.no_grad():
        assert torch.equal(model(x), y)


@pytest.mark.parametrize("name", list_models())
def test_shipped_weights_reproduce_their_recorded_test_accuracy(name, mnist):
    """The stage lists compute what the hand-written networks computed when the shipped weights were made."""
    from lenet.weights import load_network, read_record

    recorded = read_record(name).test_accuracy
    assert recorded is not None and recorded > 99
    assert round(evaluate(load_network(name), mnist.test).accuracy, 2) == recorded


@pytest.mark.parametrize("name", list_models())
def test_every_network_honours_the_io_contract(name):
    model = get_model(name)
    scores = model(torch.rand(3, 1, 28, 28))
    assert scores.shape == (3, 10)
    scores.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_classic_sdlm_layers_are_its_stages_before_the_rbf_output():
    model = get_model("classic")
    layers = model.sdlm_layers()
    expected = [model.c1, model.s2, model.c3, model.s4, model.c5]
    assert [layer for layer in layers if not isinstance(layer, (ScaledTanh, nn.Flatten))] == [*expected, model.f6]
    assert [type(layer).__name__ for layer in layers] == (
        ["Conv2d", "ScaledTanh", "Subsampling", "ScaledTanh", "PartialConv2d", "ScaledTanh", "Subsampling",
         "ScaledTanh", "FullConv2d", "ScaledTanh", "Flatten", "Linear", "ScaledTanh"])


def test_the_registry_declares_what_each_network_offers():
    assert list_models() == ["seed", "classic", "modern"]
    assert model_entry("modern").init_choices == () and model_entry("modern").matmul_form is None
    assert model_entry("classic").init_choices == tuple(INIT_RULES)  # declared torch-free, so checked here
    assert model_entry("seed").init_choices == ()
    assert model_entry("classic").train_defaults["loss"] == "map"
    seed = get_model("seed")
    form = matmul_form(seed)
    assert isinstance(form, SeedAsMatmuls) and form.net is seed
    assert matmul_form(get_model("classic")) is None
    with pytest.raises(ConfigError, match="not built by lenet.models.get_model"):
        matmul_form(nn.Linear(2, 2))


def test_get_model_records_how_to_rebuild_the_network():
    model = get_model("classic", init="lecun-uniform")
    assert (model.model_name, model.model_kwargs) == ("classic", {"init": "lecun-uniform"})


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'lenet7'; available: seed, classic"):
        model_entry("lenet7")
    with pytest.raises(ConfigError, match=r"unknown model 'lenet7'"):
        get_model("lenet7")


def test_a_plug_in_network_registers_and_an_unstaged_one_is_refused_clearly(monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # the plug-in leaves with this test

    @register_model("tiny", "a plug-in: one linear layer")
    def tiny() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    assert "tiny" in list_models() and model_entry("tiny").description == "a plug-in: one linear layer"
    model = get_model("tiny")
    assert model.model_name == "tiny" and matmul_form(model) is None
    for tool in (layer_table, format_table, lambda m: feature_maps(m, torch.rand(1, 1, 28, 28))):
        with pytest.raises(ConfigError, match="does not declare its stages.*StagedNetwork"):
            tool(model)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("tiny", "again")(tiny)


def test_a_wrong_declared_shape_is_caught_by_the_summary():
    class Wrong(StagedNetwork):
        stages = (Stage("fc", lambda: nn.Linear(784, 10), (11,), flatten=True),)

    with pytest.raises(ConfigError, match="stage 'fc' declares output \\(11,\\) but computes \\(10,\\)"):
        layer_table(Wrong())


def test_the_registry_and_the_summary_and_viz_parsers_import_no_torch():
    assert_runs_without_importing("import lenet.models, lenet.cli.summary_cmd, lenet.cli.viz_cmd\n"
                                  "lenet.models.model_entry('classic')")


def test_feature_maps_run_without_autograd():
    model = get_model("classic")
    maps = feature_maps(model, to_input(torch.zeros(2, 28, 28, dtype=torch.uint8)))
    assert maps["input"].shape == (2, 1, 32, 32) and not any(m.requires_grad for m in maps.values())


@pytest.mark.parametrize("name", ["seed", "classic", "modern"])
def test_every_network_says_what_input_it_takes(name):
    net = get_model(name).eval()
    for bad in (torch.zeros(1, 28, 28), torch.zeros(2, 1, 32, 32), torch.zeros(28, 28)):
        with pytest.raises(ValueError, match=r"takes images of shape \(N, 1, 28, 28\), got \(.*\); lenet.inference"
                                             r".to_input turns uint8 images \(N, 28, 28\) into that"):
            net(bad)
    with pytest.raises(TypeError, match=r"takes float pixels in \[0, 1\] \(pixels / 255\), got torch.uint8"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(TypeError, match="takes a tensor of shape"):
        net([[0.0] * 28] * 28)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert next(iter(net.feature_maps(torch.zeros(1, 1, 28, 28)).values())).shape[0] == 1
