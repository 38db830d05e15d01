"""Batched data augmentation on the device, by name. An augmentation maps a float batch
(N, 1, 28, 28) in [0, 1] to one of the same shape, drawing its randomness from `generator` so a run
is reproducible (and a resumed run identical) given the config."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ConfigError

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: dict[str, Augmentation | None] = {"none": None}


def register_augmentation(name: str):
    def wrap(fn: Augmentation) -> Augmentation:
        AUGMENTATIONS[name] = fn
        return fn

    return wrap


def get_augmentation(name: str) -> Augmentation | None:
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
