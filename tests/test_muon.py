"""The Muon optimizer (lenet/optim/muon.py): its orthogonalisation, its update against torch.optim.Muon's, which
parameters it takes, its state across a checkpoint, and that it trains on real MNIST."""

import pytest
import torch
from torch import nn

import lenet
from lenet.errors import ConfigError
from lenet.models import get_model
from lenet.optim import build_optimizer
from lenet.optim.muon import Muon, adjust_lr, newton_schulz, split_parameters

CPU = torch.device("cpu")


@pytest.mark.parametrize("shape", [(120, 256), (256, 120), (16, 150)])
def test_newton_schulz_brings_every_singular_value_near_one(shape):
    torch.manual_seed(0)
    matrix = torch.randn(shape) @ torch.diag(torch.logspace(-1, 1, shape[1]))  # columns scaled 0.1..10
    before = torch.linalg.svdvals(matrix)
    assert before.max() / before.min() > 3  # far from orthogonal (34x and 182x for the two fc1 shapes)
    singular = torch.linalg.svdvals(newton_schulz(matrix, 5, torch.float32))
    assert singular.max() < 1.25 and singular.min() > 0.6  # the quintic's band (its docstring), not exactly 1


def test_newton_schulz_in_bf16_is_torchs():
    zeropower = pytest.importorskip("torch.optim._muon")._zeropower_via_newtonschulz
    matrix = torch.randn(84, 120)
    ours = newton_schulz(matrix, 5, torch.bfloat16)
    assert torch.equal(ours, zeropower(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7))


def _mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))


def test_the_update_of_the_matrices_is_torch_optim_muons():
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    ours, theirs = _mlp(), _mlp()
    opt = Muon(ours.parameters(), 0.02, momentum=0.9, weight_decay=0.01, ns_steps=5, device=CPU,
               ns_dtype=torch.bfloat16)
    matrices = [theirs[0].weight, theirs[2].weight]
    ref = torch.optim.Muon(matrices, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.01, ns_steps=5,
                           adjust_lr_fn="match_rms_adamw")
    rest = [p for p in theirs.parameters() if not any(p is m for m in matrices)]
    ref_adam = torch.optim.AdamW(rest, lr=0.02, weight_decay=0.01, fused=True)
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))
    for _ in range(3):
        for net in (ours, theirs):
            net.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        ref.step()
        ref_adam.step()
    for a, b in zip(theirs.parameters(), ours.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    assert not torch.allclose(ours[0].weight, _mlp()[0].weight)  # it moved


def test_seeds_weights_go_to_muon_its_biases_and_output_layer_to_adam():
    net = get_model("seed")
    names = {id(p): n for n, p in net.named_parameters()}
    muon, adam = split_parameters(net.parameters())
    assert [names[id(p)] for p in muon] == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    assert [names[id(p)] for p in adam] == ["conv1.bias", "conv2.bias", "fc1.bias", "fc2.bias", "fc3.weight",
                                            "fc3.bias"]


def test_a_filter_bank_is_updated_as_the_matrix_of_its_flattened_filters():
    assert adjust_lr(1.0, torch.Size([16, 6, 5, 5])) == pytest.approx(0.2 * 150**0.5)
    conv, flat = nn.Conv2d(6, 16, 5, bias=False), nn.Linear(150, 16, bias=False)
    head, head2 = nn.Linear(16, 10), nn.Linear(16, 10)
    with torch.no_grad():
        flat.weight.copy_(conv.weight.reshape(16, 150))
        head2.load_state_dict(head.state_dict())
    grad = torch.randn(16, 6, 5, 5)
    conv.weight.grad, flat.weight.grad = grad.clone(), grad.reshape(16, 150).clone()
    for p in (*head.parameters(), *head2.parameters()):
        p.grad = torch.ones_like(p)
    Muon([conv.weight, *head.parameters()], 0.1, device=CPU).step()
    Muon([flat.weight, *head2.parameters()], 0.1, device=CPU).step()
    assert torch.allclose(conv.weight.reshape(16, 150), flat.weight, atol=1e-6)


def test_a_network_with_one_matrix_is_refused():
    with pytest.raises(ConfigError, match="muon needs a network with at least two weight matrices"):
        build_optimizer("muon", nn.Linear(4, 2).parameters(), 1e-3, device=CPU)


def test_the_state_dict_carries_the_run_on_exactly():
    x, y = torch.randn(64, 20), torch.randint(0, 10, (64,))

    def steps(net, opt, n):
        for _ in range(n):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    whole, cut = _mlp(), _mlp()
    opt_whole = build_optimizer("muon", whole.parameters(), 1e-2, momentum=0.9, device=CPU)
    steps(whole, opt_whole, 4)
    opt_cut = build_optimizer("muon", cut.parameters(), 1e-2, momentum=0.9, device=CPU)
    steps(cut, opt_cut, 2)
    saved = opt_cut.state_dict()
    assert sorted(saved["state"]) == [0, 1, 2, 3, 4, 5]  # 2 matrices (Muon) first, then 4 (Adam)
    opt_new = build_optimizer("muon", cut.parameters(), 1e-2, momentum=0.9, device=CPU)
    opt_new.load_state_dict(saved)
    steps(cut, opt_new, 2)
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), cut.parameters(), strict=True))
    with pytest.raises(ConfigError, match="is no muon state for this network"):
        opt_new.load_state_dict(opt_whole.adam.state_dict())


def test_muon_trains_seed_on_real_mnist_and_resumes_bit_identical(tmp_path):
    options = {"train_size": 3000, "batch_size": 100, "threads": 1, "deterministic": True, "log_every": 0,
               "optimizer": "muon", "lr": 2e-2, "momentum": 0.9, "schedule": "constant", "seed": 2}  # 1 epoch + 1 = 2
    whole = lenet.train(epochs=2, out=tmp_path / "whole", **options)
    first, second = (h["train_loss"] for h in whole.history)
    assert first < 2.0 and second < 0.5 * first  # from 2.30 (ln 10)
    assert whole.test.accuracy > 85.0  # 3,000 images, 2 epochs
    lenet.train(epochs=1, out=tmp_path / "cut", **options)
    resumed = lenet.train(resume=tmp_path / "cut", epochs=2)
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                 resumed.model.state_dict().values(), strict=True))
