"""Learning-rate schedules: a multiplier of the base learning rate as a function of the global step.

The whole schedule state is one integer, so resuming needs nothing else, and the trainer sets every
parameter group's `lr` before each step. Every schedule has the signature
`(step, total_steps, steps_per_epoch, warmup_steps) -> float`; they are declared by name in
`lenet.registry.SCHEDULES`. Plain Python: this module imports no torch.
"""

from __future__ import annotations

import math

from ..registry import SCHEDULES


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0


def constant(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """The tutorial's: the base rate throughout (after an optional linear warm-up)."""
    return _warmup(step, warmup)


def step(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """x0.1 at half and at three quarters of training."""
    return _warmup(step, warmup) * (0.1 ** ((step >= total // 2) + (step >= 3 * total // 4)))


def cosine(step: int, total: int, per_epoch: int, warmup: int) -> float:
    if step < warmup:
        return _warmup(step, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def onecycle(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """Linear ramp from 1/25 of the peak to the peak over the warm-up (default: the first 25% of the
    steps), then linear decay to zero: the shape that makes large batches train in few epochs."""
    warmup = warmup or max(1, total // 4)
    if step < warmup:
        return 0.04 + 0.96 * step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# The paper's eta by pass (section III.C): 5e-4 for passes 1-2, 2e-4 for 3-5, 1e-4 for 6-8, 5e-5 for 9-12,
# 1e-5 afterwards. As multipliers of the base rate, by 0-based pass: (passes before which it holds, multiplier).
PAPER_ETA_PASSES = ((2, 1.0), (5, 0.4), (8, 0.2), (12, 0.1))
PAPER_ETA_FINAL = 0.02


def paper(step: int, total: int, per_epoch: int, warmup: int) -> float:
    """The paper's eta schedule as a multiplier of the base eta, stepped by pass (epoch)."""
    epoch = step // max(1, per_epoch)
    for last_pass, multiplier in PAPER_ETA_PASSES:
        if epoch < last_pass:
            return multiplier
    return PAPER_ETA_FINAL


def lr_multiplier(schedule: str, step: int, total: int, per_epoch: int, warmup: int = 0) -> float:
    """The multiplier of the schedule named `schedule` at global step `step`."""
    return SCHEDULES.get(schedule)(step, total, per_epoch, warmup)
