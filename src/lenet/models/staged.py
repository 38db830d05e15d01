"""A network written down once, as the ordered list of its stages.

A stage is one layer of the paper's (or the tutorial's) table: the module, the activation applied to its
output, and the output shape per image. A network subclasses `StagedNetwork` and declares `stages`, a
class-level tuple; everything that walks the layers derives from it, so no layer is written out twice:

    forward(x)        prepare(x), then every stage in order
    feature_maps(x)   the prepared input and every stage's output (after its activation), in order: viz, serve
    sdlm_layers()     the modules between prepare() and the output stage, for SDLM's second-derivative pass
    lenet summary     one row per stage (summary.py), the declared shapes checked against a forward pass

Only the layers hold parameters; a stage's name is the attribute that holds its layer, so it is also the
layer's prefix in the state_dict (`conv1.weight`). Layers are built in stage order, which fixes the order in
which their default initialisations draw from torch's random generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

INPUT_SHAPE = (1, 28, 28)  # every network's input per image: MNIST's 28x28 grey levels, one channel


@dataclass(frozen=True)
class Stage:
    name: str  # the attribute holding the layer, and the layer's state_dict prefix
    layer: Callable[[], nn.Module]  # builds the layer: called once per network, in stage order
    output: tuple[int, ...]  # output shape per image, e.g. (6, 28, 28); checked by `lenet summary` and tests
    activation: nn.Module | None = None  # applied to the layer's output; stateless, shared by all instances
    flatten: bool = False  # flatten the input to (N, features) before the layer (the first fully connected)


class StagedNetwork(nn.Module):
    """A network defined by its class-level `stages`; subclasses override `prepare` for their own input
    mapping and `summary_notes` for text that `lenet summary` prints under the layer table."""

    stages: ClassVar[tuple[Stage, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        for stage in self.stages:
            self.add_module(stage.name, stage.layer())

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The network-specific mapping of the common input (N, 1, 28, 28), pixels / 255: none by default."""
        return x

    def _stage(self, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        if stage.flatten:
            x = x.flatten(1)
        x = getattr(self, stage.name)(x)
        return x if stage.activation is None else stage.activation(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(self.check_input(x))
        for stage in self.stages:
            x = self._stage(stage, x)
        return x

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` if it is the common input, (N, 1, 28, 28) floats; else an error that says how to make it (each
        network would otherwise fail in its own way, or, given one unbatched image, run as if it were a batch)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} takes a tensor of shape (N, 1, 28, 28), got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise ValueError(f"{type(self).__name__} takes images of shape (N, 1, 28, 28), got {tuple(x.shape)}; "
                             "lenet.inference.to_input turns uint8 images (N, 28, 28) into that")
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__} takes float pixels in [0, 1] (pixels / 255), got {x.dtype}; "
                            "lenet.inference.to_input turns uint8 images (N, 28, 28) into that")
        return x

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"input": prepare(x), then each stage's name: its output}. The last entry equals forward(x)."""
        maps = {"input": self.prepare(self.check_input(x))}
        x = maps["input"]
        for stage in self.stages:
            x = maps[stage.name] = self._stage(stage, x)
        return maps

    def sdlm_layers(self) -> list[nn.Module]:
        """Every stage but the output stage, as the flat list of what it applies (flatten, layer, activation).

        SDLM starts its second-derivative pass at the output stage's input, where the criterion gives the
        curvature (classic: F6's outputs, whose squared distances to the RBF prototypes the loss reads)."""
        layers: list[nn.Module] = []
        for stage in self.stages[:-1]:
            if stage.flatten:
                layers.append(nn.Flatten())
            layers.append(getattr(self, stage.name))
            if stage.activation is not None:
                layers.append(stage.activation)
        return layers

    def summary_notes(self) -> str:
        """Text printed under the network's layer table by `lenet summary` (none by default)."""
        return ""
