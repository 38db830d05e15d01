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
                    device: torch.device | None = None) -> torch.optim.Optimizer:
    # The fused kernels are the fastest path for a model this small (one kernel per step instead of one
    # per tensor), and they exist for CPU and CUDA in torch >= 2.4.
    fused = device is not None and device.type in ("cpu", "cuda")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay, fused=fused)
    if name in _EXTRA_OPTIMIZERS:
        return _EXTRA_OPTIMIZERS[name](params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")


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
