"""lenet's fused Adam driver: the same update as torch.optim's fused Adam, bit for bit, interchangeable
state, and none of torch.optim's start-up cost."""

import copy
import subprocess
import sys

import pytest
import torch

from lenet.errors import ConfigError
from lenet.models import get_model
from lenet.optim import FusedAdam, build_optimizer


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
    code = ("import io, sys\nfrom lenet.train import fit, make_config\n"
            "fit(make_config(epochs=1, val_size=59000, log_every=0), stream=io.StringIO(), progress_bar=False)\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
