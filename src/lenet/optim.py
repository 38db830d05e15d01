"""Optimizers and learning-rate schedules by name.

A schedule is a multiplier of the base learning rate as a function of the global step, so the
whole schedule state is one integer: resuming needs nothing else, and the trainer sets every
parameter group's `lr` before each step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from .errors import ConfigError

OPTIMIZERS = ["adam", "adamw", "sgd"]


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, *, momentum: float = 0.9,
                    nesterov: bool = False, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    device: torch.device | None = None) -> torch.optim.Optimizer | FusedAdam:
    # The fused kernels are the fastest path for a model this small (one kernel per step instead of one
    # per tensor), and they exist for CPU and CUDA in torch >= 2.4.
    fused = device is not None and device.type in ("cpu", "cuda")
    if name in ("adam", "adamw") and fused and hasattr(torch, "_fused_adamw_"):  # private ops, torch >= 2.4
        return FusedAdam(params, lr=lr, betas=betas, weight_decay=weight_decay, decoupled=name == "adamw")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay, fused=fused)
    if name in _EXTRA_OPTIMIZERS:
        return _EXTRA_OPTIMIZERS[name](params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")


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

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
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
        kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
               [], steps, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
               eps=group["eps"], amsgrad=False, maximize=False)

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


_EXTRA_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {}


def register_optimizer(name: str):
    """Add an optimizer factory `fn(params, lr=..., momentum=..., weight_decay=...)`."""

    def wrap(factory):
        _EXTRA_OPTIMIZERS[name] = factory
        OPTIMIZERS.append(name)
        return factory

    return wrap


# --- learning-rate schedules: multiplier(step, total_steps, steps_per_epoch, warmup_steps) ---------------

Schedule = Callable[[int, int, int, int], float]
SCHEDULES: dict[str, Schedule] = {}


def register_schedule(name: str):
    def wrap(fn: Schedule) -> Schedule:
        SCHEDULES[name] = fn
        return fn

    return wrap


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


@register_schedule("constant")
def constant(step: int, total: int, per_epoch: int, warmup: int) -> float:
    return _warmup(step, warmup)


@register_schedule("step")
def step_decay(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """x0.1 at half and at three quarters of training."""
    return _warmup(step, warmup) * (0.1 ** ((step >= total // 2) + (step >= 3 * total // 4)))


@register_schedule("cosine")
def cosine(step: int, total: int, per_epoch: int, warmup: int) -> float:
    if step < warmup:
        return _warmup(step, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


@register_schedule("onecycle")
def onecycle(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """Linear ramp from 1/25 of the peak to the peak over the warm-up (default: the first 25% of the
    steps), then linear decay to zero: the shape that makes large batches train in few epochs."""
    warmup = warmup or max(1, total // 4)
    if step < warmup:
        return 0.04 + 0.96 * step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def lr_multiplier(schedule: str, step: int, total: int, per_epoch: int, warmup: int = 0) -> float:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; available: {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule](step, total, per_epoch, warmup)


# The paper's optimizer and eta schedule live in their own module; importing it registers "sdlm" and "paper".
from . import sdlm  # noqa: E402,F401
