"""Training criteria by name. Every network returns scores (higher = more likely), so a loss takes
`(scores, labels)` and returns the batch mean."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES: dict[str, Callable[..., LossFn]] = {}


def register_loss(name: str):
    def wrap(factory: Callable[..., LossFn]) -> Callable[..., LossFn]:
        _LOSSES[name] = factory
        return factory

    return wrap


def list_losses() -> list[str]:
    return list(_LOSSES)


def get_loss(name: str, **options) -> LossFn:
    """Build the loss `name`; options it does not know are ignored (they belong to other losses)."""
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}; available: {', '.join(_LOSSES)}")
    return _LOSSES[name](**options)


@register_loss("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0, **_) -> LossFn:
    """Softmax cross-entropy on the scores, as in the tutorial."""

    def loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(scores, labels, label_smoothing=label_smoothing)

    return loss
