"""The model registry and the functions every caller uses to reach a network, without importing torch.

A network is declared once in `MODELS` (lenet/models/__init__.py) with what it offers: its builder as
"module:attribute", its training defaults, its initialisation rules and, where it has one, its
matrix-product form. Callers ask the registry, never the model (`hasattr`), so the CLI can show every
network in its --help with torch unloaded, and the trainer knows a network's abilities before building it.

Every registered network honours the same contract, so data, training, prediction and export need no
per-model code:
    input   float32 (N, 1, 28, 28), MNIST pixels / 255 (background 0, ink 1)
    output  (N, 10) scores, higher = more likely (logits, or negated RBF distances)
Anything network-specific (padding to 32x32, the paper's pixel map) happens in the network's `prepare`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..registry import ModelEntry, Registry, resolve

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .staged import StagedNetwork
    from .summary import LayerRow

MODELS: Registry[ModelEntry] = Registry("model")


def register_model(name: str, description: str, train_defaults: dict[str, Any] | None = None,
                   init_choices: tuple[str, ...] = (), matmul_form: str | None = None) -> Callable:
    """Decorator for a plug-in's keyword-only builder `fn(**kwargs) -> nn.Module` (a class or a function)."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(ModelEntry(name, builder, description, dict(train_defaults or {}), tuple(init_choices),
                              matmul_form))
        return builder

    return wrap


def list_models() -> list[str]:
    """Names of all registered networks, in registration order."""
    return MODELS.names()


def model_entry(name: str) -> ModelEntry:
    """What the network `name` offers; ConfigError naming the available ones for an unknown name."""
    return MODELS.entry(name)


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as `name` with fresh (untrained) weights."""
    model = MODELS.get(name)(**kwargs)
    # Recorded so a checkpoint can rebuild exactly this network from its file alone.
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def _registered_name(model: nn.Module) -> str:
    try:
        return model.model_name
    except AttributeError:
        raise ConfigError(f"this {type(model).__name__} was not built by lenet.models.get_model, so lenet cannot "
                          "tell which registered network it is; build it with get_model(name)") from None


def matmul_form(model: nn.Module) -> nn.Module | None:
    """`model`'s forward pass as matrix products (the CPU bf16 training form), wrapping `model` and sharing its
    parameters; None when its network declares no such form.

    A matrix-product form takes the resident uint8 pixels (N, 28, 28) as well as the float input: a trainer
    that trains through it may feed it the raw bytes (what `ModelEntry.matmul_form` declares)."""
    target = model_entry(_registered_name(model)).matmul_form
    return None if target is None else resolve(target)(model)


def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"input": the network's prepared input, then every stage's output}, in order, computed without autograd;
    the last one is the scores. `x` is the common input (N, 1, 28, 28) (lenet.inference.to_input)."""
    import torch

    with torch.no_grad():
        return _staged(model).feature_maps(x)


def layer_table(model: nn.Module) -> list[LayerRow]:
    """One row per stage: output shape, trainable parameters, connections (summary.py)."""
    from .summary import layer_table as table

    return table(_staged(model))


def format_table(model: nn.Module, title: str = "") -> str:
    """`lenet summary`'s text: the layer table, then the network's own notes (classic: its RBF prototypes)."""
    from .summary import format_table as text

    return text(_staged(model), title)


def _staged(model: nn.Module) -> StagedNetwork:
    from .staged import StagedNetwork

    if not isinstance(model, StagedNetwork):
        raise ConfigError(f"network {type(model).__name__} does not declare its stages, so lenet cannot list its "
                          "layers or draw its feature maps; subclass lenet.models.staged.StagedNetwork")
    return model
