"""The 1998 LeNet-5 (`classic`): structure, the paper's numbers, the MAP loss, distortions, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

import lenet
from lenet import checkpoint
from lenet.augment import get_augmentation
from lenet.cli import main
from lenet.inference import to_input
from lenet.losses import get_loss
from lenet.models import get_model, layer_table
from lenet.models.classic import C3_TABLE, load_rbf_bitmaps, rbf_prototypes
from lenet.models.layers import INIT_RULES, INIT_SCALE, ScaledTanh
from lenet.optim import build_optimizer
from lenet.trainer import make_config

# The paper's per-layer counts (section II.B).
PAPER_PARAMS = {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164, "rbf": 0}
PAPER_CONNECTIONS = {"c1": 122304, "s2": 5880, "c3": 151600, "s4": 2000, "c5": 48120, "f6": 10164, "rbf": 840}
PAPER_SHAPES = {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5), "c5": (120, 1, 1),
                "f6": (84,), "rbf": (10,)}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return get_model("classic")


def test_exactly_60000_trainable_parameters_with_the_papers_per_layer_counts(model):
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 60_000
    rows = {r.name: r for r in layer_table(model)}
    assert list(rows) == list(PAPER_PARAMS)
    assert {name: r.params for name, r in rows.items()} == PAPER_PARAMS
    assert {name: r.connections for name, r in rows.items()} == PAPER_CONNECTIONS
    assert {name: r.output_shape for name, r in rows.items()} == PAPER_SHAPES


def test_c3_connectivity_is_table_one(model):
    """An S2 map outside a C3 map's set gets exactly zero gradient from that map, one inside gets some."""
    assert len(C3_TABLE) == 16 and sum(map(len, C3_TABLE)) == 60
    s2_out = torch.randn(2, 6, 14, 14, requires_grad=True)
    c3 = model.c3(s2_out)
    for k, inputs in enumerate(C3_TABLE):
        (grad,) = torch.autograd.grad(c3[:, k].sum(), s2_out, retain_graph=True)
        per_s2_map = grad.abs().sum(dim=(0, 2, 3))
        for m in range(6):
            if m in inputs:
                assert per_s2_map[m] > 0, f"C3 map {k} should see S2 map {m}"
            else:
                assert per_s2_map[m] == 0, f"C3 map {k} must not see S2 map {m}"


def test_rbf_prototypes_are_the_shipped_bitmaps_and_never_learn(model):
    bitmaps = load_rbf_bitmaps()
    assert len(bitmaps) == 10 and all(len(rows) == 12 and {len(r) for r in rows} == {7} for rows in bitmaps)
    expected = torch.tensor([[1.0 if c == "#" else -1.0 for c in "".join(rows)] for rows in bitmaps])
    assert torch.equal(model.rbf.prototypes, expected)
    assert not any(p is model.rbf.prototypes for p in model.parameters())  # a buffer: no gradient, no optimizer
    before = model.rbf.prototypes.clone()
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 10
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    opt.prepare_epoch(model, get_loss("map"), x, y)
    get_loss("map")(model(x), y).backward()
    opt.step()
    assert model.rbf.prototypes.grad is None
    assert torch.equal(model.rbf.prototypes, before)
    # the ten codes are far apart (> 10 of 84 bits differ), so nearest-prototype decoding is unambiguous
    hamming = (expected[:, None] != expected[None]).sum(-1)
    assert hamming[~torch.eye(10, dtype=torch.bool)].min() > 10


def test_predicted_class_is_the_nearest_prototype(model):
    protos = rbf_prototypes()
    distances = model.rbf(protos)  # F6 output exactly on each prototype
    assert torch.equal(distances.diagonal(), torch.zeros(10))
    assert torch.equal((-distances).argmax(1), torch.arange(10))
    scores = model(torch.rand(3, 1, 28, 28))
    assert scores.shape == (3, 10) and (scores <= 0).all()  # negated squared distances


def test_squashing_function():
    f = ScaledTanh()
    assert f(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-3)
    assert f(torch.tensor(-1.0)).item() == pytest.approx(-1.0, abs=1e-3)
    a = torch.linspace(-3, 3, 13, requires_grad=True)
    (grad,) = torch.autograd.grad(f(a).sum(), a)
    assert torch.allclose(ScaledTanh.derivative(a.detach()), grad)


def test_input_is_padded_to_32_with_the_papers_pixel_values(model):
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0
    prepared = model.prepare(x)
    assert prepared.shape == (1, 1, 32, 32)
    assert prepared[0, 0, 12, 12].item() == pytest.approx(1.175)  # ink
    assert prepared[0, 0, 0, 0].item() == pytest.approx(-0.1)  # padding = background
    assert prepared[0, 0, 5, 20].item() == pytest.approx(-0.1)  # background


def test_initialisation_is_uniform_in_2_4_over_fan_in(model):
    fan_in = {"c1": 25, "s2": 4, "s4": 4, "c5": 400, "f6": 120}
    for name, f in fan_in.items():
        layer = getattr(model, name)
        for p in layer.parameters():
            assert p.abs().max() <= INIT_SCALE / f
            assert p.abs().max() > 0.5 * INIT_SCALE / f  # actually spread over the range
    for row, out_map in enumerate(model.c3.pair_out.tolist()):
        assert model.c3.weight[row].abs().max() <= INIT_SCALE / (25 * len(C3_TABLE[out_map]))


def test_lecun_uniform_initialisation_has_variance_one_over_fan_in():
    torch.manual_seed(0)
    model = get_model("classic", init="lecun-uniform")
    for name, fan_in in {"c1": 25, "s2": 4, "s4": 4, "c5": 400, "f6": 120}.items():
        for p in getattr(model, name).parameters():
            bound = math.sqrt(3 / fan_in)
            assert bound * 0.5 < p.abs().max() <= bound
    for row, out_map in enumerate(model.c3.pair_out.tolist()):
        assert model.c3.weight[row].abs().max() <= math.sqrt(3 / (25 * len(C3_TABLE[out_map])))
    assert model.c5.weight.var().item() == pytest.approx(1 / 400, rel=0.05)


def test_only_lecun_uniform_keeps_the_weighted_sums_in_the_sigmoids_range(mnist):
    """The measurement behind the recipe's choice (layers.INIT_RULES): on real digits, the literal +-2.4/F_i
    leaves C5 and F6 far inside the linear region of the squashing, variance 1/F_i does not."""
    x = to_input(mnist.train.images[:200])
    scale = {}
    for rule in INIT_RULES:
        torch.manual_seed(0)
        with torch.no_grad():
            maps = get_model("classic", init=rule).feature_maps(x)
        scale[rule] = {layer: maps[layer].abs().mean().item() for layer in ("c5", "f6")}
    assert scale["paper"]["c5"] < 0.1 and scale["paper"]["f6"] < 0.1
    assert scale["lecun-uniform"]["c5"] > 0.5 and scale["lecun-uniform"]["f6"] > 0.5


def test_init_is_checked(capsys):
    with pytest.raises(lenet.ConfigError, match="unknown initialisation 'xavier' for classic"):
        get_model("classic", init="xavier")
    assert main(["train", "--init", "paper", "--epochs", "1"]) == 2  # seed's initialisation is fixed
    assert "unknown init 'paper' for model 'seed'" in capsys.readouterr().err


def test_map_loss_equals_the_formula():
    torch.manual_seed(1)
    y = torch.rand(5, 10) * 80  # RBF distances
    labels = torch.tensor([0, 3, 9, 9, 4])
    for j in (0.1, 1.0, 10.0):
        direct = [y[p, labels[p]] + math.log(math.exp(-j) + sum(math.exp(-v) for v in y[p].tolist()))
                  for p in range(5)]
        loss = get_loss("map", map_j=j)(-y, labels)
        assert loss.item() == pytest.approx(sum(d.item() for d in direct) / 5, rel=1e-6)
    # numerically stable where exp(-y) underflows
    far = get_loss("map", map_j=0.1)(-torch.full((2, 10), 500.0), torch.tensor([1, 2]))
    assert far.item() == pytest.approx(500 - 0.1)


def test_map_j_must_be_positive():
    with pytest.raises(lenet.ConfigError, match="map-j must be positive"):
        get_loss("map", map_j=0)


def test_paper_recipe_and_classic_defaults():
    cfg = make_config("paper")
    assert (cfg.model, cfg.loss, cfg.optimizer, cfg.schedule, cfg.epochs) == ("classic", "map", "sdlm", "paper", 20)
    assert (cfg.init, cfg.lr, cfg.batch_size) == ("lecun-uniform", 1e-4, 8)
    assert make_config("paper", init="paper").init == "paper"  # the literal rule stays one flag away
    # naming the model alone already gives the paper's loss and optimizer
    cfg = make_config(model="classic")
    assert (cfg.loss, cfg.optimizer) == ("map", "sdlm")
    assert make_config(model="classic", optimizer="adam").optimizer == "adam"


def test_affine_distortion_is_one_transform_per_image_and_reproducible():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 8:20, 12:16] = 1.0  # the same bar in every image
    distort = get_augmentation("affine")
    a = distort(x, torch.Generator().manual_seed(3))
    b = distort(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    changed = [not torch.equal(a[i], x[i]) for i in range(64)]
    assert 40 <= sum(changed) < 64  # about 1 in 10 kept as the original, as in the paper's training set
    distinct = {tuple(a[i].flatten().round(decimals=3).tolist()) for i in range(64) if changed[i]}
    assert len(distinct) == sum(changed)  # a different transform for each image
    assert a.min() >= 0 and a.max() <= 1 and a[:, :, 0, :].abs().max() < 1e-6  # background stays background


def test_distort_flag(tmp_path, capsys):
    code = main(["train", "--model", "classic", "--distort", "--augment", "none", "--epochs", "1"])
    assert code == 2
    assert "--distort is --augment affine" in capsys.readouterr().err


def test_summary_prints_the_prototypes(capsys):
    assert main(["summary", "classic"]) == 0
    out = capsys.readouterr().out
    assert "60,000" in out and "340,908" in out and "RBF prototypes" in out
    art_rows = [line.split() for line in out.splitlines() if line and set(line) <= set("#. ")]
    assert len(art_rows) == 12 and all(len(row) == 10 and {len(b) for b in row} == {7} for row in art_rows)


def test_checkpoint_round_trip(model, tmp_path):
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        model.f6.weight.add_(0.01)  # not the init: the file must carry the weights
        expected = model(x)
    checkpoint.save_checkpoint(tmp_path, model, {"epoch": 1})
    loaded = lenet.load(tmp_path, model="classic")
    assert loaded.model_name == "classic"
    assert torch.equal(loaded.rbf.prototypes, model.rbf.prototypes)
    assert torch.equal(loaded(x), expected)
    with pytest.raises(lenet.CheckpointError, match="not 'seed'"):
        lenet.load(tmp_path, model="seed")


@pytest.mark.slow
def test_learns_real_mnist_in_a_fraction_of_a_pass(mnist):
    """10,000 real training digits (1/6 of a pass), the recipe's initialisation, batch, optimizer and eta: well
    above chance on real test digits."""
    torch.manual_seed(0)
    cfg = make_config("paper")
    model = get_model("classic", init=cfg.init)
    loss_fn = get_loss("map", map_j=cfg.map_j)
    opt = build_optimizer("sdlm", model.parameters(), cfg.lr)
    x, y = to_input(mnist.train.images[:10_000]), mnist.train.labels[:10_000]
    opt.prepare_epoch(model, loss_fn, x[:500], y[:500])
    for start in range(0, 10_000, cfg.batch_size):
        loss = loss_fn(model(x[start:start + cfg.batch_size]), y[start:start + cfg.batch_size])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model(to_input(mnist.test.images[:1000])).argmax(1) == mnist.test.labels[:1000]).float().mean()
    assert accuracy > 0.6


@pytest.mark.slow
def test_paper_recipe_trains_end_to_end_with_its_initialisation(tmp_path):
    """`lenet train --recipe paper` on 4,000 real training digits (the rest held out), two passes: the network
    is built with the recipe's initialisation, the checkpoint records it, and it learns; with the printed
    +-2.4/F_i instead and the same eta it stays at chance (docs/tutorial-vs-paper.md, "Initialisation and eta")."""
    result = lenet.train(recipe="paper", epochs=2, val_size=56_000, out=str(tmp_path), log_every=0)
    assert result.model.model_kwargs == {"init": "lecun-uniform"}
    assert lenet.read_record(tmp_path).model_kwargs == {"init": "lecun-uniform"}
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    assert result.history[-1]["val_accuracy"] > 85
    x = to_input(torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8))
    with torch.no_grad():  # the training copy is channels_last on CPU: the same sums in another order
        torch.testing.assert_close(lenet.load(tmp_path)(x), result.model.eval()(x), atol=1e-4, rtol=0)

    printed = lenet.train(recipe="paper", init="paper", epochs=2, val_size=56_000, log_every=0)
    assert printed.history[-1]["val_accuracy"] < 20
