"""The layer table, the way the paper tabulates LeNet-5: one row per stage with its output shape, trainable
parameters and connections.

"Connections" follow the paper's count (section II.B): every multiply-add from an input or a bias into an
output unit, per image. C1 of the 1998 network has 28*28*6*(25+1) = 122,304 of them. A layer that counts
its connections differently (partial C3, trainable subsampling, RBF) states `connections(output_shape)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ConfigError
from .staged import StagedNetwork

SIDE = 28  # the common input is (N, 1, 28, 28)


@runtime_checkable
class CountsConnections(Protocol):
    """A layer whose connections are not those of a plain convolution, fully connected layer or pooling."""

    def connections(self, output_shape: tuple[int, ...]) -> int: ...


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    connections: int


def _connections(module: nn.Module, shape: tuple[int, ...]) -> int:
    per_image = math.prod(shape)
    if isinstance(module, CountsConnections):
        return int(module.connections(shape))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        fan_in = module.in_channels // module.groups * kh * kw
        return per_image * (fan_in + (module.bias is not None))
    if isinstance(module, nn.Linear):
        return per_image * (module.in_features + (module.bias is not None))
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return per_image * k * k
    return 0


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return f"{type(module).__name__} {module.kernel_size[0]}x{module.kernel_size[1]}"
    return type(module).__name__


def _check_shapes(model: StagedNetwork) -> None:
    """The declared output shapes are what one image actually produces (a wrong table would mislead)."""
    with torch.no_grad():
        maps = model.feature_maps(torch.zeros(1, 1, SIDE, SIDE, device=next(model.parameters()).device))
    for stage in model.stages:
        actual = tuple(maps[stage.name].shape[1:])
        if actual != stage.output:
            raise ConfigError(f"{type(model).__name__}: stage {stage.name!r} declares output {stage.output} but "
                              f"computes {actual}; correct its Stage(...) declaration")


def layer_table(model: StagedNetwork) -> list[LayerRow]:
    """One row per stage, in forward order."""
    _check_shapes(model)
    rows = []
    for stage in model.stages:
        module = getattr(model, stage.name)
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        rows.append(LayerRow(stage.name, _kind(module), stage.output, params, _connections(module, stage.output)))
    return rows


def format_table(model: StagedNetwork, title: str = "") -> str:
    """The table as text (what `lenet summary` prints), followed by the network's `summary_notes()`."""
    rows = layer_table(model)
    lines = [title] if title else []
    header = f"{'layer':<8}{'type':<22}{'output':>12}{'params':>10}{'connections':>14}"
    lines += [header, "-" * len(header)]
    lines.append(f"{'input':<8}{'':<22}{f'1x{SIDE}x{SIDE}':>12}{'-':>10}{'-':>14}")
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<8}{r.kind:<22}{shape:>12}{r.params:>10,}{r.connections:>14,}")
    lines.append("-" * len(header))
    total_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lines.append(f"{'total':<8}{'':<22}{'':>12}{total_params:>10,}{sum(r.connections for r in rows):>14,}")
    if fixed:
        lines.append(f"(plus {fixed:,} fixed, untrained weights)")
    notes = model.summary_notes()
    return "\n".join((lines + ["", notes]) if notes else lines)
