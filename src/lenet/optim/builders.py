"""Optimizer builders by name (declared in `lenet.registry.OPTIMIZERS`), and `FusedAdam`.

Every builder takes `(params, lr, *, momentum, nesterov, weight_decay, betas, device)` and returns an
object with torch.optim's interface: `param_groups`, `zero_grad`, `step`, `state_dict`, `load_state_dict`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch

from ..errors import ConfigError


def _fused(device: torch.device | None) -> bool:
    # The fused kernels are the fastest path for a model this small (one kernel per step instead of one
    # per tensor); torch has them for CPU and CUDA.
    return device is not None and device.type in ("cpu", "cuda")


def adam(params: Iterable[torch.nn.Parameter], lr: float, *, betas: tuple[float, float] = (0.9, 0.999),
         weight_decay: float = 0.0, device: torch.device | None = None, **_) -> torch.optim.Optimizer | FusedAdam:
    return _adam(params, lr, betas, weight_decay, device, decoupled=False)


def adamw(params: Iterable[torch.nn.Parameter], lr: float, *, betas: tuple[float, float] = (0.9, 0.999),
          weight_decay: float = 0.0, device: torch.device | None = None, **_) -> torch.optim.Optimizer | FusedAdam:
    return _adam(params, lr, betas, weight_decay, device, decoupled=True)


def sgd(params: Iterable[torch.nn.Parameter], lr: float, *, momentum: float = 0.9, nesterov: bool = False,
        weight_decay: float = 0.0, device: torch.device | None = None, **_) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           weight_decay=weight_decay, fused=_fused(device))


def _adam(params, lr, betas, weight_decay, device, decoupled: bool) -> torch.optim.Optimizer | FusedAdam:
    params = list(params)
    if _fused(device) and FusedAdam.available():
        return FusedAdam(params, lr=lr, betas=betas, weight_decay=weight_decay, decoupled=decoupled)
    optimizer = torch.optim.AdamW if decoupled else torch.optim.Adam
    return optimizer(params, lr=lr, betas=betas, weight_decay=weight_decay)


def clear_grads(params: Iterable[torch.nn.Parameter], set_to_none: bool = True) -> None:
    """torch.optim's zero_grad for `params`: drop the gradients, or zero them in place."""
    for p in params:
        if set_to_none:
            p.grad = None
        elif p.grad is not None:
            p.grad.zero_()


class FusedAdam:
    """Adam (or AdamW) computed by torch's fused kernel, the one `torch.optim.Adam(fused=True)` runs, without
    the `torch.optim.Optimizer` machinery around it.

    Why: constructing any `torch.optim.Optimizer` imports `torch._dynamo` (its `add_param_group` is wrapped
    to disable dynamo), 1.1 s of a 35 s `lenet train` here, and its `step()` wrapper costs ~80 us of Python
    per step, 2.5% of a batch-64 step (benchmarks/README.md). The update is the same kernel with the same
    arguments, so the weights are bit-identical to torch.optim's (tests/test_optim.py), and `state_dict()`
    has torch.optim's format, so checkpoints move between the two."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False) -> None:
        group = {"params": list(params), "lr": lr, "betas": tuple(betas), "eps": eps,
                 "weight_decay": weight_decay, "amsgrad": False, "maximize": False, "foreach": None,
                 "capturable": False, "differentiable": False, "fused": True}
        if decoupled:
            group["decoupled_weight_decay"] = True
        self.decoupled = decoupled
        self.param_groups = [group]
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}
        self._fallback: torch.optim.Optimizer | None = None

    @staticmethod
    def available() -> bool:
        """torch's private fused kernels exist (they are not a public API, so check before relying on them)."""
        return hasattr(torch, "_fused_adam_") and hasattr(torch, "_fused_adamw_")

    def zero_grad(self, set_to_none: bool = True) -> None:
        clear_grads(self.param_groups[0]["params"], set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        if self._fallback is not None:
            self._fallback.param_groups[0]["lr"] = self.param_groups[0]["lr"]
            self._fallback.step()
            return
        try:
            self._fused_step()
        except (RuntimeError, TypeError) as e:  # a torch whose private kernel changed its signature or refuses
            warnings.warn(f"torch's fused Adam kernel failed ({e}); continuing with torch.optim", stacklevel=2)
            self._start_fallback()
            self._fallback.step()

    def _start_fallback(self) -> None:
        """Hand the parameters and the moments so far to torch.optim, which runs every later step."""
        group = self.param_groups[0]
        cls = torch.optim.AdamW if self.decoupled else torch.optim.Adam
        self._fallback = cls(group["params"], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                             weight_decay=group["weight_decay"])
        self._fallback.state.update(self.state)
        self.state = self._fallback.state  # one state, shared: state_dict and load_state_dict keep working

    def _fused_step(self) -> None:
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if p not in self.state:  # torch.optim's lazy state, in the parameter's layout and device
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        kernel = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        beta1, beta2 = group["betas"]
        try:
            kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                   [s["exp_avg_sq"] for s in states], [], steps, lr=group["lr"], beta1=beta1, beta2=beta2,
                   weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False)
        except (RuntimeError, TypeError):
            torch._foreach_sub_(steps, 1)  # the failed step never happened: torch.optim will count it
            raise

    def state_dict(self) -> dict:
        params = self.param_groups[0]["params"]
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(params)))
        return {"state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
                "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ConfigError(f"optimizer state for {sum(len(g['params']) for g in groups)} parameters in "
                              f"{len(groups)} group(s) does not fit this network's {len(params)} parameters")
        for key in ("lr", "betas", "eps", "weight_decay"):
            if key in groups[0]:
                self.param_groups[0][key] = tuple(groups[0][key]) if key == "betas" else groups[0][key]
        self.state = {}
        for index, entry in state_dict["state"].items():
            p = params[int(index)]
            self.state[p] = {
                "step": torch.tensor(float(entry["step"]), dtype=torch.float32, device=p.device),  # a copy
                # the parameter's layout: the fused kernel walks parameter and state storage in lockstep
                "exp_avg": torch.empty_like(p).copy_(entry["exp_avg"]),
                "exp_avg_sq": torch.empty_like(p).copy_(entry["exp_avg_sq"]),
            }
        if self._fallback is not None:
            self._fallback.state.clear()
            self._fallback.state.update(self.state)
            self.state = self._fallback.state
