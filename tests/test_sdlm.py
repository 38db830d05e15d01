"""SDLM: the Hessian-diagonal estimate, the step rule, the paper's eta schedule, resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lenet
from lenet import checkpoint
from lenet.losses import get_loss
from lenet.models import get_model
from lenet.models.layers import ScaledTanh
from lenet.optim import build_optimizer, lr_multiplier
from lenet.optim.sdlm import DEFAULT_MU, SDLM, diag_gauss_newton


def _tiny_network() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Linear(3, 4), ScaledTanh(), nn.Linear(4, 2), ScaledTanh()]


def test_hessian_estimate_matches_finite_differences_on_a_tiny_network():
    """On a network where every weight reaches the output through one unit, the backpropagated second
    derivatives equal the Gauss-Newton diagonal 2 * mean_p sum_j (dr_pj / dw)^2 of E = sum_j r_j^2,
    r = output - target, with the Jacobian taken by central finite differences."""
    layers = _tiny_network()
    net = nn.Sequential(*layers).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    target = torch.randn(5, 2, dtype=torch.float64)
    estimate = diag_gauss_newton(layers, x, 2.0)

    eps = 1e-6
    for p in net.parameters():
        fd = torch.zeros_like(p)
        flat = p.data.view(-1)
        for k in range(flat.numel()):
            old = flat[k].item()
            with torch.no_grad():
                flat[k] = old + eps
                r_plus = net(x) - target
                flat[k] = old - eps
                r_minus = net(x) - target
                flat[k] = old
            jac = (r_plus - r_minus) / (2 * eps)  # (samples, outputs)
            fd.view(-1)[k] = 2 * jac.pow(2).sum(1).mean()
        assert torch.allclose(estimate[p], fd, rtol=1e-5, atol=1e-10), (estimate[p], fd)


def test_hessian_estimate_of_classic_is_positive_and_covers_every_parameter():
    torch.manual_seed(0)
    model = get_model("classic")
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    x, y = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    opt.prepare_epoch(model, get_loss("map"), x, y)
    for name, p in model.named_parameters():
        h = opt.state[p]["hessian"]
        assert h.shape == p.shape and (h >= 0).all() and h.sum() > 0, name
    # F6's biases see the criterion directly: h = 2 f'(a)^2, f'(0) = 1.7159 * 2/3
    assert opt.state[model.f6.bias]["hessian"].max() <= 2 * (1.7159 * 2 / 3) ** 2 + 1e-6


def test_step_is_lr_times_batch_over_mu_plus_h():
    """A mini-batch of B with the mean loss moves like B per-sample steps at the same weights."""
    torch.manual_seed(0)
    model = get_model("classic")
    opt = SDLM(model.parameters(), lr=1e-4)
    loss_fn = get_loss("map")
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8)
    opt.prepare_epoch(model, loss_fn, x, y)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    opt.step()
    assert opt.samples_per_step == 8
    for n, p in model.named_parameters():
        expected = before[n] - 1e-4 * 8 * grads[n] / (DEFAULT_MU + opt.state[p]["hessian"])
        assert torch.allclose(p.detach(), expected, rtol=1e-6, atol=1e-9), n


def test_paper_eta_schedule_by_pass():
    per_epoch = 7
    etas = [5e-4 * lr_multiplier("paper", e * per_epoch + 3, 20 * per_epoch, per_epoch) for e in range(20)]
    expected = [5e-4] * 2 + [2e-4] * 3 + [1e-4] * 3 + [5e-5] * 4 + [1e-5] * 8
    assert etas == pytest.approx(expected)


def test_sdlm_refuses_a_network_it_cannot_carry_second_derivatives_through():
    # a network that does not list its layers
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    with pytest.raises(lenet.ConfigError, match="use --model classic"):
        opt.prepare_epoch(model, get_loss("cross_entropy"), torch.rand(4, 1, 28, 28), torch.arange(4))
    # seed lists its stages, but its ReLUs state no derivative for the pass (only a squashing does)
    model = get_model("seed")
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    with pytest.raises(lenet.ConfigError, match="sdlm cannot carry second derivatives through ReLU"):
        opt.prepare_epoch(model, get_loss("cross_entropy"), torch.rand(4, 1, 28, 28), torch.arange(4))


def test_step_before_hessian_estimate_is_an_error():
    model = get_model("classic")
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    get_loss("map")(model(torch.rand(2, 1, 28, 28)), torch.tensor([0, 1])).backward()
    with pytest.raises(lenet.ConfigError, match="no Hessian estimate"):
        opt.step()


def test_resume_state_round_trips(tmp_path):
    torch.manual_seed(0)
    model = get_model("classic")
    opt = build_optimizer("sdlm", model.parameters(), 5e-4)
    opt.prepare_epoch(model, get_loss("map"), torch.rand(10, 1, 28, 28), torch.arange(10))
    checkpoint.save_training_state(tmp_path, model, opt, {"epoch": 1, "history": []})
    model2 = get_model("classic")
    opt2 = build_optimizer("sdlm", model2.parameters(), 5e-4)
    assert checkpoint.load_training_state(tmp_path, model2, opt2)["epoch"] == 1
    for p, p2 in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, p2)
        assert torch.equal(opt.state[p]["hessian"], opt2.state[p2]["hessian"])
