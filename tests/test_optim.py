"""lenet's fused Adam driver: the same update as torch.optim's fused Adam, bit for bit, interchangeable
state, none of torch.optim's start-up cost, and torch.optim's Adam whenever the private kernel is missing
or fails."""

import copy

import pytest
import torch
from fresh_python import assert_runs_without_importing

from lenet.errors import ConfigError
from lenet.models import get_model
from lenet.optim import build_optimizer
from lenet.optim.builders import FusedAdam


def _train(optimizer_factory, steps: int = 5, start=None):
    torch.manual_seed(0)
    net = get_model("seed").to(memory_format=torch.channels_last)  # the layout fit() trains in
    if start is not None:
        net.load_state_dict(start)
    optimizer = optimizer_factory(net.parameters())
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(16, 1, 28, 28, generator=data).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), generator=data)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net, optimizer


@pytest.mark.parametrize("name, reference", [
    ("adam", lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2, fused=True)),
    ("adamw", lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2, fused=True)),
])
def test_same_weights_as_torch_fused_adam(name, reference):
    ours, _ = _train(lambda ps: FusedAdam(ps, lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2,
                                          decoupled=name == "adamw"))
    theirs, _ = _train(reference)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_state_moves_between_torch_optim_and_ours():
    ours, ours_opt = _train(lambda ps: FusedAdam(ps, lr=1e-3), steps=3)
    weights = {k: v.clone() for k, v in ours.state_dict().items()}

    # from here, torch.optim loaded with our state and ours continuing must take the same steps
    def continued(make_optimizer):
        net = get_model("seed").to(memory_format=torch.channels_last)
        net.load_state_dict(weights)
        optimizer = make_optimizer(net.parameters())
        x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(7))
        for _ in range(2):
            optimizer.zero_grad()
            net(x.contiguous(memory_format=torch.channels_last)).square().mean().backward()
            optimizer.step()
        return net, optimizer

    def torch_from_ours(ps):
        optimizer = torch.optim.Adam(ps, lr=1e-3, fused=True)
        optimizer.load_state_dict(copy.deepcopy(ours_opt.state_dict()))  # torch.optim may alias the step
        return optimizer

    def ours_from_ours(ps):
        optimizer = FusedAdam(ps, lr=1e-3)
        optimizer.load_state_dict(ours_opt.state_dict())
        return optimizer

    a, torch_opt = continued(torch_from_ours)
    b, _ = continued(ours_from_ours)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key
    assert torch_opt.state_dict()["state"][0]["step"].item() == 5
    back = FusedAdam(a.parameters(), lr=1e-3)
    back.load_state_dict(torch_opt.state_dict())  # and back from torch.optim's format
    for p in a.parameters():
        assert torch.equal(back.state[p]["exp_avg"], torch_opt.state[p]["exp_avg"])
        assert back.state[p]["exp_avg"].stride() == p.stride()  # the parameter's layout, for the fused kernel
    with pytest.raises(ConfigError, match="does not fit"):
        FusedAdam(list(a.parameters())[:3]).load_state_dict(ours_opt.state_dict())


def test_cpu_adam_is_ours_and_other_optimizers_are_torchs():
    params = list(get_model("seed").parameters())
    assert isinstance(build_optimizer("adam", params, 1e-3, device=torch.device("cpu")), FusedAdam)
    assert isinstance(build_optimizer("adamw", params, 1e-3, device=torch.device("cpu")), FusedAdam)
    assert isinstance(build_optimizer("sgd", params, 1e-3, device=torch.device("cpu")), torch.optim.SGD)
    assert isinstance(build_optimizer("adam", params, 1e-3, device=torch.device("meta")), torch.optim.Adam)


def test_training_with_it_never_imports_torch_dynamo():
    assert_runs_without_importing("import io\nfrom lenet.trainer import fit, make_config\n"
                                  "fit(make_config(epochs=1, val_size=59000, log_every=0), stream=io.StringIO(), "
                                  "progress_bar=False)", ("torch._dynamo",), timeout=300)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), key


@pytest.mark.parametrize("decoupled", [False, True])
def test_without_the_private_kernel_adam_is_torch_optims(monkeypatch, decoupled):
    name, cls = ("adamw", torch.optim.AdamW) if decoupled else ("adam", torch.optim.Adam)
    monkeypatch.delattr(torch, "_fused_adamw_" if decoupled else "_fused_adam_")  # a torch without it
    assert not FusedAdam.available()
    cpu = torch.device("cpu")
    ours, optimizer = _train(lambda ps: build_optimizer(name, ps, 3e-3, betas=(0.8, 0.99), weight_decay=1e-2,
                                                        device=cpu))
    assert type(optimizer) is cls
    theirs, _ = _train(lambda ps: cls(ps, lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-2))
    _same_weights(ours, theirs)


def _handed_over(fail_at_step: int, steps: int = 5) -> torch.nn.Module:
    """The reference for a kernel that fails at `fail_at_step`: our fused steps before it, then torch.optim's
    default Adam continuing from the same moments (handed over by hand)."""
    torch.manual_seed(0)
    net = get_model("seed").to(memory_format=torch.channels_last)
    params = list(net.parameters())
    fused, fallback = FusedAdam(params, lr=3e-3, betas=(0.8, 0.99)), None
    data = torch.Generator().manual_seed(1)
    for step in range(1, steps + 1):
        x = torch.rand(16, 1, 28, 28, generator=data).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), generator=data)
        for p in params:
            p.grad = None
        torch.nn.functional.cross_entropy(net(x), y).backward()
        if step < fail_at_step:
            fused.step()
            continue
        if fallback is None:
            fallback = torch.optim.Adam(params, lr=3e-3, betas=(0.8, 0.99))
            fallback.state.update({p: {k: v.clone() for k, v in fused.state[p].items()} for p in fused.state})
        fallback.step()
    return net


@pytest.mark.parametrize("fail_at_step", [1, 3])
def test_a_failing_kernel_hands_over_to_torch_optim(monkeypatch, fail_at_step):
    """The kernel works for the first steps, then raises (a torch whose private signature changed): one
    warning, and from then on torch.optim's Adam continues from the same moments and step count."""
    real_kernel, calls = torch._fused_adam_, []

    def kernel(*args, **kwargs):
        calls.append(1)
        if len(calls) >= fail_at_step:
            raise RuntimeError("unexpected keyword argument")
        return real_kernel(*args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adam_", kernel)
    with pytest.warns(UserWarning, match="fused Adam kernel failed"):
        ours, optimizer = _train(lambda ps: FusedAdam(ps, lr=3e-3, betas=(0.8, 0.99)))
    assert len(calls) == fail_at_step  # after the failure the kernel is not tried again
    assert {int(state["step"]) for state in optimizer.state.values()} == {5}  # every step counted once
    monkeypatch.setattr(torch, "_fused_adam_", real_kernel)
    _same_weights(ours, _handed_over(fail_at_step))
