"""The model registry: every network is built by name, so the trainer, the CLI and the tools never
import a model class directly. A new network is one file with a builder decorated by `register_model`.

Every registered network honours the same contract, so that data, training, prediction and export
need no per-model code:
    input   float32 (N, 1, 28, 28), MNIST pixels / 255 (background 0, ink 1)
    output  (N, 10) scores, higher = more likely (logits, or negated RBF distances)
Anything network-specific (padding to 32x32, the paper's pixel map) happens inside `forward`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    # Training defaults the network needs to train well (e.g. the paper's loss for `classic`);
    # recipes and explicit flags override them.
    train_defaults: dict = field(default_factory=dict)
    # Initialisation rules the builder accepts as `init=` (empty: the network has one, fixed).
    init_choices: tuple[str, ...] = ()


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(name: str, description: str, train_defaults: dict | None = None,
                   init_choices: tuple[str, ...] = ()):
    """Decorator for a keyword-only builder `fn(**kwargs) -> nn.Module`."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, builder, description, dict(train_defaults or {}), tuple(init_choices))
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered networks, in registration order."""
    return list(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(_REGISTRY)}") from None


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the network registered as `name` with fresh (untrained) weights."""
    model = model_info(name).builder(**kwargs)
    # Recorded so a checkpoint can rebuild exactly this network from its file alone.
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model
