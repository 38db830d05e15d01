"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for the weight matrices and filters; Adam for
the rest (Jordan et al. 2024, github.com/KellerJordan/Muon; torch.optim.Muon since torch 2.9).

    weights of ndim >= 2    Muon: the momentum of the gradient, replaced by the nearest semi-orthogonal matrix
    (a conv filter bank       (about U V^T of its SVD, found by `newton_schulz`), times the learning rate
     is a matrix of its       scaled by `adjust_lr`; each update moves every direction of the matrix by the
     flattened filters)       same amount instead of following the few largest ones
    biases, batch norm,     AdamW (the fused kernel of builders.py), with the same learning rate
    the output layer          and decoupled weight decay: Muon's authors keep the output layer on Adam

The update is torch.optim.Muon's with nesterov=True and adjust_lr_fn="match_rms_adamw", step for step
(tests/test_muon.py checks it against torch's on matrices). Three
differences, all for this package: conv filters are taken as (out_channels, in_channels x kh x kw) matrices,
as Keller Jordan's Muon does (torch's refuses non-2-D parameters); on CPU the iteration runs in fp32, which
is faster than bf16 for matrices this small (5 steps for `seed`'s four: 0.97 against 1.63 ms, Intel Xeon);
and it is no `torch.optim.Optimizer`, whose construction imports torch._dynamo (1.1 s, see FusedAdam).

What it buys here: `seed` at batch 512 reaches 99.08 % on the validation split in 2 epochs, where Adam reaches
98.65 % and needs 3 for 99.0 % (`--recipe speedrun` uses it; benchmarks/README.md, "Muon: the speedrun in 2
epochs"). An optimizer step costs 0.75 ms there against Adam's 0.05 ms, most of it fc1's Newton-Schulz steps.
`--recipe modern` uses it too, for its three filter banks: 99.676 % mean test accuracy over 5 seeds against
AdamW's 99.642 % (docs/modern.md, "Fourth round").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ..errors import ConfigError
from .builders import adamw, clear_grads

# The quintic iteration's coefficients (Jordan et al.; torch.optim.Muon's defaults): a steep slope at 0, so
# 5 steps bring singular values down to a 1/100 of the largest into about [0.7, 1.2] (tests/test_muon.py),
# which trains as well as exactly 1.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7
# Newton-Schulz steps per update: 3 train `seed` as well as torch's 5 on the validation split (99.20 against
# 99.18 %, 2 epochs, seeds 0-2) and cost 0.6 against 1.0 ms a step on 2 cores (benchmarks/README.md, "Muon").
NS_STEPS = 3


def newton_schulz(matrix: torch.Tensor, steps: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """The orthogonalised `matrix` (2-D): about U V^T where U S V^T is its SVD, in `dtype`.

    The same iteration as torch.optim.Muon's: scaled to spectral norm <= 1 by its Frobenius norm, then
    `steps` times X <- aX + (bXX^T + c(XX^T)^2)X on the wide orientation (the Gram matrix is the small one)."""
    a, b, c = NS_COEFFICIENTS
    tall = matrix.size(0) > matrix.size(1)
    x = matrix.to(dtype)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=EPS)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def adjust_lr(lr: float, shape: torch.Size) -> float:
    """Muon's learning rate for a weight of `shape`: torch's "match_rms_adamw", 0.2 sqrt(max(rows, cols)),
    gives its update the root-mean-square AdamW's updates have, so one --lr serves both halves."""
    rows, cols = shape[0], math.prod(shape[1:])
    return lr * 0.2 * math.sqrt(max(rows, cols))


def split_parameters(params: Iterable[torch.nn.Parameter]) -> tuple[list[torch.nn.Parameter],
                                                                     list[torch.nn.Parameter]]:
    """(Muon's, Adam's): the weights of ndim >= 2 but the last one, which is the output layer's (lenet's
    networks declare their stages in order; in `classic`, whose RBF output units are fixed, F6's), go to
    Muon; biases, norms, the paper's subsampling coefficients and that last layer to Adam."""
    params = list(params)
    matrices = [p for p in params if p.ndim >= 2]
    muon = matrices[:-1]
    taken = {id(p) for p in muon}
    return muon, [p for p in params if id(p) not in taken]


class Muon:
    """Muon for the hidden weights, AdamW for the rest (module docstring), with torch.optim's interface:
    `param_groups` (Muon's group, then Adam's; the trainer sets "lr" on each), `zero_grad`, `step`,
    `state_dict` and `load_state_dict` in torch.optim's format."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3, momentum: float = 0.95,
                 weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), ns_steps: int = NS_STEPS,
                 device: torch.device | None = None, ns_dtype: torch.dtype | None = None) -> None:
        muon, rest = split_parameters(params)
        if not muon:
            raise ConfigError("muon needs a network with at least two weight matrices or filter banks "
                              "(its output layer stays with Adam); use --optimizer adam")
        self.adam = adamw(rest, lr, betas=betas, weight_decay=weight_decay, device=device)
        group = {"params": muon, "lr": lr, "momentum": momentum, "nesterov": True, "weight_decay": weight_decay,
                 "ns_steps": ns_steps}
        self.ns_dtype = ns_dtype  # None: fp32 on CPU (faster there for small matrices), bf16 elsewhere as torch
        self.param_groups = [group, *self.adam.param_groups]  # the same dicts: setting "lr" reaches Adam
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none)
        clear_grads(self.param_groups[0]["params"], set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.adam.step()
        group = self.param_groups[0]
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            buffer = self.state.setdefault(p, {"momentum_buffer": torch.zeros_like(p)})["momentum_buffer"]
            buffer.lerp_(p.grad, 1 - momentum)
            update = p.grad.lerp(buffer, momentum)  # Nesterov: the gradient, pulled toward the momentum
            dtype = self.ns_dtype or (torch.float32 if p.device.type == "cpu" else torch.bfloat16)
            update = newton_schulz(update.reshape(len(update), -1), group["ns_steps"], dtype)
            if decay:
                p.mul_(1 - lr * decay)
            p.add_(update.view_as(p).to(p.dtype), alpha=-adjust_lr(lr, p.shape))

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's format: parameters numbered across the groups, Muon's first."""
        muon = self.param_groups[0]["params"]
        adam = self.adam.state_dict()
        state = {i: dict(self.state[p]) for i, p in enumerate(muon) if p in self.state}
        state.update({len(muon) + i: s for i, s in adam["state"].items()})
        groups = [{k: v for k, v in self.param_groups[0].items() if k != "params"}, *adam["param_groups"]]
        groups[0]["params"] = list(range(len(muon)))
        groups[1]["params"] = [len(muon) + i for i in groups[1]["params"]]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        muon = self.param_groups[0]["params"]
        groups = state_dict["param_groups"]
        if len(groups) != 2 or len(groups[0]["params"]) != len(muon):
            raise ConfigError(f"optimizer state for {sum(len(g['params']) for g in groups)} parameters in "
                              f"{len(groups)} group(s) is no muon state for this network ({len(muon)} matrices "
                              "for muon, then adam's group)")
        state = {int(i): s for i, s in state_dict["state"].items()}
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        self.state = {p: {"momentum_buffer": torch.empty_like(p).copy_(state[i]["momentum_buffer"])}
                      for i, p in enumerate(muon) if i in state}
        adam_groups = [{**groups[1], "params": [i - len(muon) for i in groups[1]["params"]]}]
        self.adam.load_state_dict({"state": {i - len(muon): s for i, s in state.items() if i >= len(muon)},
                                   "param_groups": adam_groups})
        self.param_groups[1:] = self.adam.param_groups


def muon(params: Iterable[torch.nn.Parameter], lr: float, *, momentum: float = 0.95, weight_decay: float = 0.0,
         betas: tuple[float, float] = (0.9, 0.999), device: torch.device | None = None, **_) -> Muon:
    """The registry's builder (lenet.registry.OPTIMIZERS): --momentum is Muon's, --betas and --lr Adam's too."""
    return Muon(params, lr, momentum=momentum, weight_decay=weight_decay, betas=betas, ns_steps=NS_STEPS,
                device=device)
