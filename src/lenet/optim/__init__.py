"""Optimizers and learning-rate schedules, by the names declared in `lenet.registry`.

    builders.py   adam, adamw, sgd, and FusedAdam (torch's fused kernel without torch.optim's wrapper)
    muon.py       Muon: orthogonalised momentum for the weight matrices and filters, AdamW for the rest
    sdlm.py       the 1998 paper's stochastic diagonal Levenberg-Marquardt
    schedules.py  learning-rate multipliers by step, the paper's eta schedule among them

An optimizer that needs to see the data before a pass (SDLM re-estimates its Hessian diagonal) implements
`EpochHook`; the trainer calls it and knows no optimizer by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..registry import OPTIMIZERS
from .schedules import lr_multiplier

if TYPE_CHECKING:
    import torch


@runtime_checkable
class EpochHook(Protocol):
    """An optimizer that prepares itself on a sample of the training data before every pass."""

    def prepare_epoch(self, model: torch.nn.Module, loss_fn: Callable[..., Any], x: torch.Tensor,
                      y: torch.Tensor) -> None: ...


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float, *, momentum: float = 0.9,
                    nesterov: bool = False, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                    device: torch.device | None = None) -> Any:
    """The optimizer `name` (lenet.registry.OPTIMIZERS) over `params`; options it does not use are ignored."""
    return OPTIMIZERS.get(name)(params, lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                betas=betas, device=device)


__all__ = ["EpochHook", "build_optimizer", "lr_multiplier"]
