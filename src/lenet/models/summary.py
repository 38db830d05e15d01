"""The layer table, the way the paper tabulates LeNet-5: one row per stage with its output shape, trainable
parameters and connections.

"Connections" follow the paper's count (section II.B): every multiply-add from an input or a bias into an
output unit, per image. C1 of the 1998 network has 28*28*6*(25+1) = 122,304 of them. A layer that counts
its connections differently (partial C3, trainable subsampling, RBF) states `connections(output_shape)`.

FLOPs (`flop_table`, `flops_per_image`, what `lenet bench` divides by the time) come from the same stage
declaration, per image, a multiply-add counted as 2 FLOPs:
    weighted      conv / linear: 2 per weight tap (the "MACs") + 1 per output unit for the bias; these are
                  the compute-bound operations, and the only ones the CPU's FMA peak is compared against
    other         element-wise passes, memory-bound: pooling (k*k per output), trainable subsampling (its
                  connections), activations (ReLU 1, scaled tanh 3 per element), the RBF distances (3 per
                  connection)
    backward      weight gradients = the weighted forward again (bias gradients: 1 per output); input
                  gradients = the weighted forward again, except where no earlier stage has parameters
                  (the first layer: nothing upstream needs the gradient); element passes once more
The loss, the optimizer step (per parameter, per batch) and the input mapping are left out: per image
they are a few hundred operations at most. These are the network's FLOPs, not an implementation's: C3
(PartialConv2d) counts its Table I taps, although it runs as a dense convolution with zeroed kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..errors import ConfigError
from .layers import EuclideanRBF, PartialConv2d
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


# Element operations per activation output: ScaledTanh is multiply, tanh (counted as one), multiply.
ACTIVATION_OPS = {"ReLU": 1, "ScaledTanh": 3, "Negation": 1}


@dataclass(frozen=True)
class StageFlops:
    """One stage's operations per image (see the module docstring for what each counts)."""

    name: str
    macs: int  # weight multiply-adds of a conv / linear layer
    bias: int  # bias additions (one per output unit of a layer that has a bias)
    other: int  # element-wise operations of the forward pass: pooling, subsampling, activation, RBF
    trainable: bool  # the stage's layer has trainable parameters
    input_gradient: bool  # the backward pass computes this stage's input gradient (an earlier stage trains)

    @property
    def forward(self) -> int:
        """Weighted forward FLOPs: 2 per multiply-add plus the bias additions."""
        return 2 * self.macs + self.bias

    @property
    def backward(self) -> int:
        """Weighted backward FLOPs: weight (and bias) gradients, plus the input gradient where needed."""
        return self.forward + (2 * self.macs if self.input_gradient else 0)

    @property
    def other_backward(self) -> int:
        """The element-wise passes once more, wherever the backward pass reaches this stage at all."""
        return self.other if self.trainable or self.input_gradient else 0


@dataclass(frozen=True)
class NetworkFlops:
    """Per-image totals of a network's `flop_table`."""

    forward: int  # weighted layers only (conv, linear): the FMA-bound work
    backward: int
    other_forward: int  # element-wise, memory-bound passes
    other_backward: int

    @property
    def training_step(self) -> int:
        """Weighted FLOPs of one training image: forward + backward (the number `lenet bench` reports)."""
        return self.forward + self.backward


def _weighted_macs(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(weight multiply-adds, bias additions) per image of a conv / linear layer; (0, 0) for anything else."""
    units = math.prod(shape)
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, PartialConv2d):  # only the connected kernels of Table I are computed by the math
        return math.prod(shape[1:]) * sum(module.fan_in(k) for k in range(module.out_channels)), units * has_bias
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return units * (module.in_channels // module.groups) * kh * kw, units * has_bias
    if isinstance(module, nn.Linear):
        return units * module.in_features, units * has_bias
    return 0, 0


def _element_ops(module: nn.Module, shape: tuple[int, ...]) -> int:
    """Element-wise operations per image of a layer without weight taps (pooling, subsampling, RBF)."""
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        return math.prod(shape) * k * k
    if isinstance(module, EuclideanRBF):
        return 3 * _connections(module, shape)  # subtract, square, add per (class, component)
    return _connections(module, shape)  # trainable subsampling: block sum, coefficient, bias; else 0


def flop_table(model: StagedNetwork) -> list[StageFlops]:
    """Operations per image of every stage, in forward order, from the stages' declared modules and shapes."""
    _check_shapes(model)
    rows, upstream_trains = [], False
    for stage in model.stages:
        module = getattr(model, stage.name)
        macs, bias = _weighted_macs(module, stage.output)
        activation = 0 if stage.activation is None else \
            math.prod(stage.output) * ACTIVATION_OPS.get(type(stage.activation).__name__, 1)
        trainable = any(p.requires_grad for p in module.parameters())
        other = (0 if macs else _element_ops(module, stage.output)) + activation
        rows.append(StageFlops(stage.name, macs, bias, other, trainable, upstream_trains))
        upstream_trains = upstream_trains or trainable
    return rows


def flops_per_image(model: StagedNetwork) -> NetworkFlops:
    """The network's per-image FLOPs: weighted forward and backward, element-wise passes apart."""
    rows = flop_table(model)
    return NetworkFlops(forward=sum(r.forward for r in rows), backward=sum(r.backward for r in rows),
                        other_forward=sum(r.other for r in rows),
                        other_backward=sum(r.other_backward for r in rows))


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
